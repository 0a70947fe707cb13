//! kafka-s3-sink: a Kafka consumer-group connector that writes date-foldered NDJSON files
//! (optionally gzip) to S3, committing offsets only once records are in S3 (at-least-once).
//!
//! The data path reads left to right, one module per stage:
//!
//! ```text
//! source::kafka → router (+ scan) → batch → upload (→ sink::s3) → offsets → commit (source)
//!                       pipeline drives it; metrics observe every stage
//! ```
//!
//! - [`config`]: TOML → validated typed config (with [`interpolate`] for `${VAR}`).
//! - [`model`]: topic-partitions and records.
//! - [`source`]: the Kafka thread (rdkafka) and the channels it shares with the pipeline.
//! - [`router`], [`scan`], [`template`], [`envelope`]: where a record goes and how it is named.
//! - [`batch`]: open files, compression and rotation.
//! - [`upload`], [`sink`]: S3 requests with retry, multipart, abort.
//! - [`offsets`]: the contiguous commit watermark.
//! - [`pipeline`]: the worker loop; [`app`] assembles it from a config and runs each worker on a
//!   thread of its own; [`malloc`] caps glibc's arenas at start-up.
//! - [`preflight`]: start-up checks beyond the config (librdkafka properties, key lengths).
//! - [`progress`]: `run`'s progress line and its stop once drained (`--until-drained`).
//! - [`redact`]: the config's secret values scrubbed from every log line and printed error.
//! - [`metrics`]: Prometheus metrics; [`health`]: readiness; [`lograte`]: repeated log lines
//!   rate-limited; [`connect`]: start-up checks that connect (credentials, buckets, topics);
//!   [`demo`] and [`s3server`]: the embedded demo; [`eventgen`]:
//!   the deterministic event generator of `demo`, `gen-events`, the tests and the benchmarks.
//! - [`ddl`]: the Athena table of a destination (partition projection from its folder template).
//! - [`verify`]: the `verify` audit (Kafka range vs. the objects in S3, external sort).
#![warn(missing_docs)]

pub mod app;
pub mod batch;
pub mod budget;
pub mod cli;
pub mod config;
pub mod connect;
pub mod ddl;
pub mod demo;
pub mod destination;
pub mod envelope;
pub mod eventgen;
pub mod health;
pub mod http;
pub mod interpolate;
pub mod lograte;
pub mod malloc;
pub mod metrics;
pub mod model;
pub mod offsets;
pub mod pipeline;
pub mod preflight;
pub mod progress;
pub mod redact;
pub mod router;
pub mod s3server;
pub mod scan;
pub mod sink;
pub mod source;
pub mod template;
pub mod upload;
pub mod verify;
