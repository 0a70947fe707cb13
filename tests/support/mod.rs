//! Test fixtures shared by the scenario tests, one file per concern: Kafka ([`kafka`]: the mock
//! cluster, a producer that reports each record's offset, committed offsets read back), S3
//! ([`s3`]: the in-process server over a temp dir and readers of its objects), the config
//! ([`config`]: a TOML builder), the pipeline run ([`run`]), test data ([`events`]; Schema
//! Registry records in [`avro`]) and what S3 must hold ([`expected`]).
//!
//! Rules every helper follows: no fixed ports (everything binds `127.0.0.1:0`), no sleeping to
//! wait for something (poll with a deadline), blocking rdkafka calls and consumer drops inside
//! `spawn_blocking`.
//!
//! Each test file compiles this module and uses a part of it, so what one file leaves unused is
//! allowed; a helper no test file calls is deleted.
#![allow(dead_code)]

pub mod avro;
pub mod config;
pub mod events;
pub mod expected;
pub mod kafka;
pub mod run;
pub mod s3;

// Every fixture is `support::name` to the test files; a file uses some of them.
#[allow(unused_imports)]
pub use {avro::*, config::*, events::*, expected::*, kafka::*, run::*, s3::*};

use std::sync::Once;
use std::time::Duration;

/// Bucket every test writes to unless it says otherwise.
pub const BUCKET: &str = "sink-test";
/// Keys the local S3 server accepts.
pub const ACCESS_KEY: &str = "local-access-key";
/// Secret of [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "local-secret-key";
/// Deadline for anything involving a consumer group (rebalances take 5–10 s on the mock).
pub const GROUP_DEADLINE: Duration = Duration::from_secs(30);

/// Installs a tracing subscriber once (level from `RUST_LOG`, default `warn`), printing through
/// the test harness so output shows only for failing tests.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// A group id no other test uses (name + process id + counter).
pub fn unique_group(name: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{name}-{}-{n}", std::process::id())
}
