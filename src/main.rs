//! Binary entry point: parse the command line, set up logging, run until a signal.

use anyhow::Context;
use clap::Parser;
use kafka_s3_sink::cli::{Cli, Command, LogFormat};
use kafka_s3_sink::{app, config, demo, metrics::Metrics};
use tokio_util::sync::CancellationToken;

fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::CheckConfig { config } => match config::load(config) {
            Ok(c) => {
                print!("{}", config::render_redacted(&c.raw));
                eprintln!("config OK: {} destination(s)", c.destinations.len());
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        },
        Command::Run { config } => {
            let cfg = match config::load(config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(2);
                }
            };
            init_logging(&cli);
            let registry = prometheus::Registry::new();
            let metrics = Metrics::new(&registry).context("registering metrics")?;
            let shutdown = CancellationToken::new();
            spawn_signal_handler(shutdown.clone());
            let stats = app::run(cfg, metrics, shutdown).await?;
            tracing::info!(
                records_in = stats.records_in,
                objects = stats.objects,
                "stopped cleanly"
            );
            Ok(())
        }
        Command::Demo {
            dir,
            records,
            partitions,
            all_keys,
        } => {
            init_logging(&cli);
            let shutdown = CancellationToken::new();
            spawn_signal_handler(shutdown.clone());
            let opts = demo::DemoOptions {
                dir: dir.clone(),
                records: *records,
                partitions: *partitions,
                all_keys: *all_keys,
            };
            demo::run(opts, shutdown).await.context("demo failed")?;
            Ok(())
        }
    }
}
