//! Observability against a running pipeline (mock cluster + in-process S3): the `/metrics`
//! scrape agrees with what reached S3, lag reaches 0 after the drain, `/healthz` and `/readyz`
//! answer, every metric the dashboard and the alert rules use is in the scrape, and no crowd
//! of idle or slow clients can lock a scrape out of the listener.

// The in-process S3 server (tests/support) and `demo` are the test kit (Cargo.toml).
#![cfg(feature = "test-kit")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use kafka_s3_sink::metrics::Metrics;
use support::*;

/// One GET over plain HTTP/1.0; returns (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Parsed text exposition: metric name → [(labels, value)].
type Scrape = BTreeMap<String, Vec<(String, f64)>>;

fn parse(text: &str) -> Scrape {
    let mut out = Scrape::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n.to_string(), l.trim_end_matches('}').to_string()),
            None => (series.to_string(), String::new()),
        };
        out.entry(name)
            .or_default()
            .push((labels, value.parse().unwrap()));
    }
    out
}

fn sum(s: &Scrape, name: &str) -> f64 {
    s.get(name).map_or(0.0, |v| v.iter().map(|(_, x)| x).sum())
}

fn series(s: &Scrape, name: &str) -> usize {
    s.get(name).map_or(0, Vec::len)
}

/// Every `kafka_s3_sink_*` name in a text, histogram suffixes stripped.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("kafka_s3_sink_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let mut name = &tail[..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(stripped) = name.strip_suffix(suffix) {
                name = stripped;
            }
        }
        out.insert(name.to_string());
        rest = &tail[end..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_matches_s3_lag_drains_to_zero_and_dashboards_use_exported_metrics() {
    const PARTITIONS: i32 = 3;
    let kafka = Kafka::start();
    kafka.create_topic("events", PARTITIONS);
    let s3 = TestS3::start().await;
    let good = gen_events(&GenOptions::new(900));
    let bad = malformed(8, "obs");
    let mut msgs: Vec<Msg> = good
        .iter()
        .enumerate()
        .map(|(i, v)| Msg::new(i as i32 % PARTITIONS, v.clone()))
        .collect();
    msgs.extend(
        bad.iter()
            .enumerate()
            .map(|(i, m)| Msg::new(i as i32 % PARTITIONS, m.value.clone())),
    );
    let total = msgs.len() as i64;
    kafka.produce("events", msgs).await;

    let group = unique_group("obs");
    let mut cfg = TestConfig::new(&kafka.brokers(), &group, &["events"], &s3.endpoint());
    let mut props = toml::Table::new();
    props.insert("statistics.interval.ms".into(), "200".into());
    cfg.table["kafka"]
        .as_table_mut()
        .unwrap()
        .insert("properties".into(), toml::Value::Table(props));
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http_stop = CancellationToken::new();
    tokio::spawn(kafka_s3_sink::http::serve(
        listener,
        registry.clone(),
        metrics.clone(),
        kafka_s3_sink::http::HttpLimits::default(),
        http_stop.clone(),
    ));
    assert_eq!(get(addr, "/healthz").await.0, 200);

    let mut run = start_pipeline_with_metrics(cfg.build(), metrics).await;
    run.wait_committed_total(total, GROUP_DEADLINE).await;

    // Lag is computed from librdkafka's statistics (every 200 ms) and our commits.
    let deadline = Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        let s = parse(&body);
        let lag_series = series(&s, "kafka_s3_sink_consumer_lag_committed");
        if lag_series == PARTITIONS as usize
            && sum(&s, "kafka_s3_sink_consumer_lag_committed") == 0.0
            && sum(&s, "kafka_s3_sink_consumer_lag_consumed") == 0.0
        {
            break s;
        }
        assert!(Instant::now() < deadline, "lag did not reach 0: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(get(addr, "/readyz").await.0, 200, "joined and S3 answered");

    let objects = s3.objects(BUCKET);
    let records_in_s3: usize = objects.iter().map(|o| o.lines().len()).sum();
    assert_eq!(records_in_s3 as i64, total);
    assert_eq!(
        sum(&scrape, "kafka_s3_sink_records_consumed_total") as i64,
        total
    );
    assert_eq!(
        sum(&scrape, "kafka_s3_sink_records_written_total") as i64,
        total,
        "consumed = in S3 (quarantined included)"
    );
    assert_eq!(
        sum(&scrape, "kafka_s3_sink_records_quarantined_total") as usize,
        bad.len()
    );
    assert_eq!(
        sum(&scrape, "kafka_s3_sink_objects_uploaded_total") as usize,
        objects.len()
    );
    assert!(sum(&scrape, "kafka_s3_sink_flushes_total") >= objects.len() as f64);
    assert_eq!(sum(&scrape, "kafka_s3_sink_committed_offset") as i64, total);
    assert_eq!(sum(&scrape, "kafka_s3_sink_high_watermark") as i64, total);
    assert_eq!(sum(&scrape, "kafka_s3_sink_ready"), 1.0);
    assert_eq!(series(&scrape, "kafka_s3_sink_build_info"), 1);
    assert_eq!(
        series(&scrape, "kafka_s3_sink_flushes_total"),
        kafka_s3_sink::batch::FlushReason::ALL.len(),
        "every flush reason is exported from the start"
    );

    // Every metric a panel or an alert uses must be exported.
    let exported: BTreeSet<String> = scrape.keys().flat_map(|k| metric_names(k)).collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "dashboards/kafka-s3-sink.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let text =
            std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let used = metric_names(&text);
        assert!(!used.is_empty(), "{file} uses no metric");
        let missing: Vec<&String> = used.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics that are never exported: {missing:?}"
        );
    }

    run.stop().await;
    http_stop.cancel();
}

/// 1,000 clients hold connections to the listener, half idle and half sending a request one
/// byte every 100 ms (slowloris), while the pipeline keeps consuming and committing: `/metrics`
/// still answers each of 20 scrapes within a second (the listener closes the oldest connection
/// beyond `http.max_connections` and drops headers slower than `http.header_read_timeout_ms`),
/// and the hanging connections are closed by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_while_a_thousand_clients_hang_on() {
    const HANGERS: usize = 1_000;
    raise_fd_limit(4 * HANGERS as u64);
    let kafka = Kafka::start();
    kafka.create_topic("events", 2);
    let s3 = TestS3::start().await;
    let group = unique_group("http-limits");
    let cfg = TestConfig::new(&kafka.brokers(), &group, &["events"], &s3.endpoint()).build();
    let limits = kafka_s3_sink::http::HttpLimits {
        max_connections: cfg.http.max_connections,
        header_read_timeout: cfg.http.header_read_timeout,
    };
    assert_eq!(limits, kafka_s3_sink::http::HttpLimits::default());
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http_stop = CancellationToken::new();
    tokio::spawn(kafka_s3_sink::http::serve(
        listener,
        registry,
        metrics.clone(),
        limits,
        http_stop.clone(),
    ));
    let events = gen_events(&GenOptions::new(2_000));
    let (first, second) = events.split_at(1_000);
    kafka
        .produce("events", round_robin(first.to_vec(), 2))
        .await;
    let mut run = start_pipeline_with_metrics(cfg, metrics).await;
    run.wait_committed_total(1_000, GROUP_DEADLINE).await;

    // The crowd: each client holds its connection until the server closes it.
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut crowd = Vec::new();
    for i in 0..HANGERS {
        let closed = closed.clone();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        crowd.push(tokio::spawn(async move {
            let mut buf = [0u8; 64];
            if i % 2 == 1 {
                for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                    .iter()
                    .cycle()
                    .take(600)
                {
                    if s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            // Closed by the server: a read returns 0 (or an error after a reset).
            if matches!(s.read(&mut buf).await, Ok(0) | Err(_)) {
                closed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }

    // Data keeps flowing while the crowd hangs on.
    kafka
        .produce("events", round_robin(second.to_vec(), 2))
        .await;
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t0 = Instant::now();
        let (status, body) = tokio::time::timeout(Duration::from_secs(1), get(addr, "/metrics"))
            .await
            .expect("/metrics answers within a second with 1,000 clients hanging on");
        assert_eq!(status, 200);
        assert!(body.contains("kafka_s3_sink_records_consumed_total"));
        slowest = slowest.max(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.wait_committed_total(2_000, GROUP_DEADLINE).await;

    // Every hanging connection is closed by the server (pushed out or timed out), none hangs
    // for ever: the header timeout is 5 s, the slow writers would need 60 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while closed.load(std::sync::atomic::Ordering::Relaxed) < HANGERS {
        assert!(
            Instant::now() < deadline,
            "{} of {HANGERS} hanging connections still open",
            closed.load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("http limits: slowest of 20 scrapes {slowest:?} with {HANGERS} clients hanging on");
    for c in crowd {
        let _ = c.await;
    }
    run.stop().await;
    http_stop.cancel();
    s3.stop().await;
}

/// Raises this process's open-file limit to at least `want` (up to the hard limit).
fn raise_fd_limit(want: u64) {
    // SAFETY: getrlimit/setrlimit read and write a plain struct for this process.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < want {
            l.rlim_cur = want.min(l.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}
