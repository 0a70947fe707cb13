//! kafka-s3-sink: a Kafka consumer-group connector that writes date-foldered objects to S3
//! (NDJSON, uncompressed or gzip or zstd, or Parquet) and commits offsets only once their records
//! are in S3 (at-least-once).
//!
//! # Module map
//!
//! The data path reads left to right, one module per stage; the pipeline drives it, and
//! observability and the tools sit beside it:
//!
//! ```text
//! source → router → batch → upload → offsets → commit
//!              pipeline (one worker per shard), assembled by app
//! ```
//!
//! 1. **Source**: [`source`] (the Kafka thread on rdkafka and the channels it shares with the
//!    workers; MSK IAM signing; the file replay of the benchmarks); [`model`]: the
//!    topic-partitions and records every stage shares.
//! 2. **Router**: [`router`] decides per record and destination: written (to which folder),
//!    filtered out or quarantined; [`scan`] reads the routed fields in one JSON pass;
//!    [`template`] parses and renders the folder and file-name templates; [`envelope`] writes a
//!    quarantined record's line and the Kafka metadata member; [`decode`] turns a Schema
//!    Registry payload (Avro, Protobuf, JSON Schema) into the JSON text the router reads.
//! 3. **Batch**: [`batch`]: the open files (NDJSON or Parquet), their compression and rotation;
//!    [`budget`] shares the memory budget out between the Kafka fetch path and the files.
//! 4. **Upload**: [`upload`] puts each closed file in S3 (multipart while it fills, retries,
//!    conflicts, orphaned uploads) through [`sink`], the object-store seam (aws-sdk-s3);
//!    [`table`]: Apache Iceberg tables (schema, data files, the exactly-once commit protocol
//!    with the Kafka offsets in the snapshot), not yet a destination kind of the pipeline.
//! 5. **Offsets**: [`offsets`] keeps each partition's contiguous watermark of records in S3;
//!    [`destination`] is the destination-kind seam: what a kind does with a closed file and
//!    when its records count as durable (objects today; a table commit next).
//! 6. **Commit**: the watermark goes back to Kafka through [`source`].
//!
//! Driving the stages: [`pipeline`] is the worker loop; [`app`] assembles it from a config and
//! runs each worker on a thread of its own. Start-up: [`config`] (TOML → validated typed config,
//! with [`interpolate`] for `${VAR}`), [`preflight`] (checks beyond the config), [`connect`]
//! (checks that connect: credentials, buckets, topics), [`malloc`] (glibc's arenas capped),
//! [`redact`] (the config's secrets scrubbed from every log line and printed error).
//!
//! Observability: [`metrics`] (Prometheus), [`health`] (readiness), [`http`] (the `/metrics`,
//! `/healthz` and `/readyz` listener), [`progress`] (`run`'s progress line and its stop once
//! drained), [`lograte`] (repeated log lines rate-limited).
//!
//! Tools: [`cli`] (the command line), [`verify`] (the audit: a Kafka range against the objects
//! in S3), [`ddl`] (a destination's Athena table), [`eventgen`] (the deterministic events of
//! `gen-events`, `demo`, the tests and the benchmarks), [`catalogue`] (the metrics and S3 calls,
//! as JSON for the deployment checks). With the `test-kit` feature (on by default; the
//! production build leaves it out): `s3server` (the in-process S3 server with fault
//! injection), `schema_server` (a test-only Schema Registry) and `demo`, which runs the pipeline
//! on it and librdkafka's mock cluster.
#![warn(missing_docs)]

pub mod app;
pub mod batch;
pub mod budget;
pub mod catalogue;
pub mod cli;
pub mod config;
pub mod connect;
pub mod ddl;
pub mod decode;
#[cfg(feature = "test-kit")]
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
#[cfg(any(test, feature = "test-kit"))]
pub mod s3server;
pub mod scan;
#[cfg(any(test, feature = "test-kit"))]
pub mod schema_server;
pub mod sink;
pub mod source;
pub mod table;
pub mod template;
pub mod upload;
pub mod verify;
