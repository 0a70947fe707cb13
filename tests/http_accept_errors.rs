//! The metrics listener out of file descriptors (EMFILE): `accept` fails for as long as the
//! process has no descriptor left, and the listener backs off instead of spinning on the
//! failure; once descriptors are free again it accepts the clients that waited and answers.
//!
//! Its own test binary (its own process): it lowers the process's open-file limit, which would
//! disturb any test running beside it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use kafka_s3_sink::http::{serve, HttpLimits};
use kafka_s3_sink::metrics::Metrics;

fn rlimit() -> libc::rlimit {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a plain struct.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
    l
}

fn set_soft_limit(n: u64) {
    let mut l = rlimit();
    l.rlim_cur = n;
    // SAFETY: setrlimit reads a plain struct; lowering the soft limit is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) }, 0);
}

/// CPU seconds this process has used (every thread).
fn cpu_secs() -> f64 {
    // SAFETY: getrusage writes a plain struct.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) }, 0);
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Highest file descriptor open in this process.
fn highest_fd() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_listener_backs_off_and_recovers() {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        registry,
        metrics,
        HttpLimits::default(),
        stop.clone(),
    ));
    // Clients in another process (its descriptors are its own): it connects when told to and
    // holds its connections open.
    let mut clients = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import socket, sys, time\n\
             sys.stdin.readline()\n\
             held = [socket.create_connection(('127.0.0.1', {port})) for _ in range(20)]\n\
             print('connected', flush=True)\n\
             sys.stdin.readline()\n",
            port = addr.port()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the clients");
    let mut to_clients = clients.stdin.take().unwrap();
    let mut from_clients = BufReader::new(clients.stdout.take().unwrap());
    let normal = rlimit().rlim_cur;

    // No descriptor left: every accept fails with EMFILE while the clients wait in the backlog.
    // (The limit caps descriptor numbers; the free ones below it are filled with /dev/null.)
    set_soft_limit(highest_fd() + 1);
    let mut filler = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        filler.push(f);
    }
    writeln!(to_clients).unwrap();
    let mut line = String::new();
    from_clients.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "connected");
    let (cpu0, t0) = (cpu_secs(), Instant::now());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (cpu, wall) = (cpu_secs() - cpu0, t0.elapsed().as_secs_f64());
    drop(filler);
    set_soft_limit(normal);
    eprintln!("accept failing: {cpu:.3} CPU-s in {wall:.3} s");
    assert!(
        cpu < 0.3 * wall,
        "the listener spun on accept errors: {cpu:.3} CPU-s in {wall:.3} s"
    );

    // Descriptors back: the listener accepts again and answers (within its longest backoff).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = async {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await?;
            let mut buf = String::new();
            s.read_to_string(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        match tokio::time::timeout(Duration::from_secs(2), answer).await {
            Ok(Ok(body)) if body.starts_with("HTTP/1.0 200") => break,
            _ => assert!(Instant::now() < deadline, "the listener did not recover"),
        }
    }
    writeln!(to_clients).unwrap();
    let _ = clients.wait();
    stop.cancel();
}
