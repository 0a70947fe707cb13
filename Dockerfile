# syntax=docker/dockerfile:1
# kafka-s3-sink container image.
#
#   docker build --build-arg GIT_SHA="$(git rev-parse --short HEAD)" -t kafka-s3-sink .
#   docker run --rm -v "$PWD/sink.toml:/etc/kafka-s3-sink/config.toml:ro" -p 9464:9464 kafka-s3-sink
#
# The production build: `--no-default-features` leaves out the test kit (the in-process S3 server
# of `demo` and the tests, with s3s and s3s-fs), and the release profile strips the debug info
# (Cargo.toml; `--profile profiling` keeps line tables for perf).
#
# Builder: the crate needs no cmake: librdkafka is built by rdkafka-sys's configure/make, zstd
# from source, TLS against the system OpenSSL (libssl-dev). Cache mounts keep the cargo registry
# and target/ between builds (BuildKit).
#
# Base images are build args so that a release build can pin them by digest, e.g.
#   --build-arg RUNTIME_IMAGE=debian:bookworm-slim@sha256:<digest>
# (`docker buildx imagetools inspect debian:bookworm-slim` prints it).

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev make perl python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# GIT_SHA is read at compile time (`option_env!("GIT_SHA")` in src/metrics.rs) and exported as
# the git_sha label of kafka_s3_sink_build_info.
ARG GIT_SHA=unknown
ENV GIT_SHA=${GIT_SHA}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --bin kafka-s3-sink \
 && install -D -m 0755 target/release/kafka-s3-sink /out/kafka-s3-sink

FROM ${RUNTIME_IMAGE}
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="kafka-s3-sink" \
      org.opencontainers.image.description="Kafka consumer-group connector writing NDJSON or Parquet batches to S3 (at-least-once)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${GIT_SHA}"
# Runtime libraries of the binary: OpenSSL 3 (librdkafka TLS), CA roots (S3 and Kafka TLS).
# zlib and libgcc are part of the base image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 kafka-s3-sink \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin kafka-s3-sink \
 && mkdir -p /etc/kafka-s3-sink
COPY --from=builder /out/kafka-s3-sink /usr/local/bin/kafka-s3-sink
# Numeric user, so Kubernetes' runAsNonRoot can verify it. The process writes no files: the root
# file system can be mounted read-only.
USER 10001:10001
# [http] listen: /metrics, /healthz, /readyz.
EXPOSE 9464
# SIGTERM drains (flush, upload, commit) within pipeline.shutdown_deadline_secs.
STOPSIGNAL SIGTERM
ENTRYPOINT ["kafka-s3-sink"]
CMD ["run", "--config", "/etc/kafka-s3-sink/config.toml"]
