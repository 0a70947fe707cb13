//! Binary entry point: parse the command line, set up logging, run until a signal.

use anyhow::Context;
use clap::Parser;
use kafka_s3_sink::cli::{Cli, Command, LogFormat};
#[cfg(feature = "test-kit")]
use kafka_s3_sink::demo;
use kafka_s3_sink::{app, config, ddl, eventgen, redact, verify};
use tokio_util::sync::CancellationToken;

/// Logging from the command line / environment, else the config file, else `info` plain.
/// Every line goes through `secrets` on its way out, whoever wrote it (librdkafka included).
fn init_logging(cli: &Cli, log: Option<&config::LogConfig>, secrets: &redact::Secrets) {
    init_logging_at(cli, log, secrets, "info");
}

/// [`init_logging`] with `default_level` when neither the command line nor a config sets one.
fn init_logging_at(
    cli: &Cli,
    log: Option<&config::LogConfig>,
    secrets: &redact::Secrets,
    default_level: &str,
) {
    let level = cli
        .log
        .clone()
        .or_else(|| log.map(|l| l.level.clone()))
        .unwrap_or_else(|| default_level.into());
    let json = match cli.log_format {
        Some(f) => f == LogFormat::Json,
        None => log.is_some_and(|l| l.json),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(secrets.writer(std::io::stderr));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A panic's message passes through `secrets` too: when it holds one, the scrubbed message is
/// printed instead of the standard report.
fn scrub_panics(secrets: &redact::Secrets) {
    if secrets.is_empty() {
        return;
    }
    let secrets = secrets.clone();
    let standard = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info.to_string();
        match secrets.scrub(&text) {
            std::borrow::Cow::Borrowed(_) => standard(info),
            std::borrow::Cow::Owned(clean) => eprintln!("{clean}"),
        }
    }));
}

/// Cancels `token` on the first SIGTERM/SIGINT; a second one exits at once.
fn spawn_signal_handler(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot install SIGTERM handler");
                    return;
                }
            };
        for n in 0..2 {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            if n == 0 {
                tracing::info!("signal received: draining (send again to exit at once)");
                token.cancel();
            } else {
                tracing::warn!("second signal: exiting without draining");
                std::process::exit(130);
            }
        }
    });
}

fn load_or_exit(path: &std::path::Path) -> config::Config {
    match app::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
}

fn main() -> anyhow::Result<()> {
    kafka_s3_sink::malloc::limit_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async_main())
}

async fn async_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::CheckConfig { config, connect } => {
            let c = load_or_exit(config);
            print!("{}", c.secrets.scrub(&config::render_resolved(&c)));
            for w in &c.kafka.warnings {
                eprintln!("warning: {}", c.secrets.scrub(w));
            }
            eprintln!("config OK: {} destination(s)", c.destinations.len());
            if *connect {
                let mut failed = false;
                for (what, r) in kafka_s3_sink::connect::connect_checks(&c).await {
                    match r {
                        Ok(seen) => eprintln!("{what}: {seen}"),
                        Err(fix) => {
                            failed = true;
                            eprintln!("{what}: FAILED: {fix}");
                        }
                    }
                }
                if failed {
                    std::process::exit(2);
                }
            }
            Ok(())
        }
        Command::Run {
            config,
            until_drained,
            progress_secs,
        } => {
            let cfg = load_or_exit(config);
            let secrets = cfg.secrets.clone();
            init_logging(&cli, Some(&cfg.log), &secrets);
            scrub_panics(&secrets);
            for w in &cfg.kafka.warnings {
                tracing::warn!("{w}");
            }
            let shutdown = CancellationToken::new();
            spawn_signal_handler(shutdown.clone());
            let watch = kafka_s3_sink::progress::RunWatch {
                progress_every: (*progress_secs > 0)
                    .then(|| std::time::Duration::from_secs(*progress_secs)),
                until_drained: *until_drained,
            };
            if let Err(e) = watch.check(&cfg) {
                eprintln!("{e}");
                std::process::exit(2);
            }
            let stats = match app::run(cfg, prometheus::Registry::new(), shutdown, watch).await {
                Ok(s) => s,
                Err(e) => {
                    let code = e.exit_code();
                    // The log writer scrubs the config's secrets from this line.
                    tracing::error!("{:#}", anyhow::Error::from(e));
                    std::process::exit(code);
                }
            };
            if stats.uncommitted > 0 {
                tracing::error!(
                    records_in = stats.records_in,
                    objects = stats.objects,
                    uncommitted = stats.uncommitted,
                    "stopped with {} records uncommitted: the shutdown deadline (pipeline.shutdown_deadline_secs) cancelled uploads; the next owner reads them again",
                    stats.uncommitted
                );
                std::process::exit(3);
            }
            tracing::info!(
                records_in = stats.records_in,
                objects = stats.objects,
                "stopped cleanly"
            );
            Ok(())
        }
        Command::Verify {
            config,
            destination,
            topics,
            from,
            to,
            json,
            max_memory_mb,
        } => {
            let cfg = load_or_exit(config);
            init_logging(&cli, Some(&cfg.log), &cfg.secrets);
            scrub_panics(&cfg.secrets);
            let opts = verify::VerifyOptions {
                destination: destination.clone(),
                topics: topics.clone(),
                from: *from,
                to: *to,
                max_memory_mb: *max_memory_mb,
                ..verify::VerifyOptions::default()
            };
            match verify::run(&cfg, &opts).await {
                Ok(report) => {
                    if *json {
                        println!("{}", report.to_json());
                    } else {
                        print!("{}", report.to_text());
                    }
                    std::process::exit(report.exit_code());
                }
                Err(e) => {
                    eprintln!("{}", cfg.secrets.scrub(&e.to_string()));
                    std::process::exit(e.exit_code());
                }
            }
        }
        #[cfg(feature = "test-kit")]
        Command::Demo {
            dir,
            records,
            partitions,
            all_keys,
            compression,
            folder_template,
            format,
            verbose,
        } => {
            // The progress line and the summary are printed; the pipeline's INFO lines (a flush
            // per file) only with --verbose.
            let level = if *verbose { "info" } else { "warn" };
            init_logging_at(&cli, None, &redact::Secrets::default(), level);
            let shutdown = CancellationToken::new();
            spawn_signal_handler(shutdown.clone());
            let opts = demo::DemoOptions {
                dir: dir.clone(),
                records: *records,
                partitions: *partitions,
                all_keys: *all_keys,
                compression: compression.clone(),
                folder_template: folder_template.clone(),
                format: format.clone(),
            };
            demo::run(opts, shutdown).await.context("demo failed")?;
            Ok(())
        }
        #[cfg(not(feature = "test-kit"))]
        Command::Demo { .. } => {
            eprintln!(
                "demo: this build has no in-process S3 server; build with the `test-kit` feature (on by default: `cargo run -- demo`)"
            );
            std::process::exit(2);
        }
        Command::Catalogue { json } => {
            let c = kafka_s3_sink::catalogue::catalogue().context("metric catalogue")?;
            if *json {
                println!("{}", c.to_json());
            } else {
                print!("{}", c.to_text());
            }
            Ok(())
        }
        Command::Ddl {
            config,
            destination,
            table,
            columns,
            since,
        } => {
            // The destinations only: `[kafka]`'s variables need not be set.
            let cfg = config::load_destinations_only(config).unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(2)
            });
            let d = match destination {
                None => cfg.destinations.first(),
                Some(n) => cfg.destinations.iter().find(|d| &d.name == n),
            };
            let Some(d) = d else {
                eprintln!("ddl: no destination named {destination:?}");
                std::process::exit(2);
            };
            let columns = match columns {
                Some(c) => ddl::parse_columns(c).unwrap_or_else(|e| {
                    eprintln!("{e}");
                    std::process::exit(2)
                }),
                None => ddl::default_columns(d),
            };
            let opts = ddl::DdlOptions {
                table: table.clone().unwrap_or_else(|| d.name.replace('-', "_")),
                columns,
                since: *since,
            };
            match ddl::athena_ddl(d, &opts) {
                Ok(s) => print!("{s}"),
                Err(e) => {
                    eprintln!("{}", cfg.secrets.scrub(&e.to_string()));
                    std::process::exit(2);
                }
            }
            Ok(())
        }
        Command::GenEvents {
            count,
            seed,
            start,
            days,
            late_pct,
            users,
            out,
        } => {
            let opts = eventgen::GenOptions {
                count: *count,
                seed: *seed,
                start: *start,
                days: *days,
                late_pct: *late_pct,
                users: *users,
            };
            if let Err(e) = opts.validate() {
                eprintln!("gen-events: {e}");
                std::process::exit(2);
            }
            match out {
                Some(path) => {
                    let file = std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    eventgen::write_ndjson(
                        &opts,
                        &mut std::io::BufWriter::with_capacity(1 << 20, file),
                    )?;
                }
                None => {
                    let stdout = std::io::stdout().lock();
                    eventgen::write_ndjson(
                        &opts,
                        &mut std::io::BufWriter::with_capacity(1 << 20, stdout),
                    )?;
                }
            }
            Ok(())
        }
    }
}
