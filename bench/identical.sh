#!/usr/bin/env bash
# Byte-identical output check: replays the same generated events through the real workers of
# two builds (a git revision and the work tree) into the crate's S3 server (s3s-fs over a
# folder) and compares the objects, sha256 per object key. A refactoring that keeps behaviour
# leaves every key and every byte unchanged. Not a benchmark: no timing is taken.
#
#   bash bench/identical.sh REV          # e.g. bash bench/identical.sh main
#
# Cases (each a `kafka-s3-sink-bench replay`, 8 partitions, 2 workers, time flushes disabled so
# files close only on size, record count, open-file bound and the final drain):
#   gzip      NDJSON, gzip (the default destination), files closed at 1 MB
#   zstd-det  NDJSON, zstd, deterministic offset windows of 1000 records (N must be a multiple of
#             8 × 1000 so every window closes and commits)
#   parquet   Parquet (columns of examples/parquet.toml), files closed at 2 MB
# REV's bench binary must know `--extra-toml` (added with this script); the check fails early
# otherwise. Env: N (events, default 40000), IDENT_DIR (work folder, default target/identical).
# Exit 0 when every case matches, 1 with a diff of the differing keys.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REV=${1:?usage: bench/identical.sh REV}
N=${N:-40000}
DIR=${IDENT_DIR:-$REPO/target/identical}
log() { printf 'identical: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

PIDS=()
cleanup() {
  local rc=$? p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  exit "$rc"
}
trap cleanup EXIT

mkdir -p "$DIR"
SHA=$(git -C "$REPO" rev-parse --verify "$REV^{commit}") || fail "unknown revision $REV"

# build SRC OUT: builds both binaries of the crate at SRC (debug; target/ shared with the work
# tree so only the crate itself compiles) and copies them to OUT/. Both copies of the crate get
# the same artifact names in the shared target/, and cargo would take one copy's build for the
# other's: the crate's artifacts are cleaned first, so each build compiles its own sources.
build() {
  log "building $1"
  (cd "$1" && CARGO_TARGET_DIR="$REPO/target" cargo clean --quiet -p kafka-s3-sink &&
    CARGO_TARGET_DIR="$REPO/target" cargo build --quiet --bin kafka-s3-sink \
      --bin kafka-s3-sink-bench)
  mkdir -p "$2"
  cp "$REPO/target/debug/kafka-s3-sink" "$REPO/target/debug/kafka-s3-sink-bench" "$2/"
  # The debug info names the folder the crate was compiled from (a NUL-terminated string).
  python3 - "$2/kafka-s3-sink-bench" "$(cd "$1" && pwd)" <<'PY' ||
import mmap, sys
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    sys.exit(0 if m.find(b"\0" + sys.argv[2].encode() + b"\0") >= 0 else 1)
PY
    fail "the binaries copied for $1 were not compiled from it"
}

# The revision's binaries are built once per commit and kept.
BASE="$DIR/bin-$SHA"
if [ ! -x "$BASE/kafka-s3-sink-bench" ]; then
  rm -rf "$DIR/base-src"
  mkdir -p "$DIR/base-src"
  git -C "$REPO" archive "$SHA" | tar -x -C "$DIR/base-src"
  build "$DIR/base-src" "$BASE.tmp"
  mv "$BASE.tmp" "$BASE"
fi
build "$REPO" "$DIR/bin-tree"
"$BASE/kafka-s3-sink-bench" replay --help | grep -q -- --extra-toml ||
  fail "$REV's bench has no --extra-toml; compare against a revision that has this script"

EVENTS="$DIR/events-$N.ndjson"
if [ ! -s "$EVENTS" ]; then
  "$DIR/bin-tree/kafka-s3-sink" gen-events --count "$N" --seed 42 --out "$EVENTS.tmp"
  mv "$EVENTS.tmp" "$EVENTS"
fi

printf '' >"$DIR/case-gzip.toml"
cat >"$DIR/case-zstd-det.toml" <<'EOF'
compression = "zstd"
deterministic = true
max_records = 1000
EOF
{
  printf 'format = "parquet"\nmax_bytes = 2000000\n'
  sed -n '/^\[destinations.parquet\]/,$p' "$REPO/examples/parquet.toml"
} >"$DIR/case-parquet.toml"
printf 'max_bytes = 1000000\n' >>"$DIR/case-gzip.toml"

# replay BIN CASE OUT: runs one case with BIN's binaries; writes "sha256  key" lines to OUT
replay() {
  local bin=$1 case=$2 out=$3 root="$DIR/s3-$2-$(basename "$1" | cut -c1-12)" pid url i
  rm -rf "$root" "$root.hello"
  "$bin/kafka-s3-sink-bench" s3-server --root "$root" --bucket bench >"$root.hello" 2>"$root.log" &
  pid=$!
  PIDS+=("$pid")
  for i in $(seq 300); do [ -s "$root.hello" ] && break; sleep 0.1; done
  [ -s "$root.hello" ] || fail "s3-server did not start (see $root.log)"
  url=$(head -1 "$root.hello" | python3 -c 'import json,sys;print(json.load(sys.stdin)["endpoint"])')
  "$bin/kafka-s3-sink-bench" replay --input "$EVENTS" --partitions 8 --run-length 50 \
    --workers 2 --budget 4000000000 --max-age 3000 --idle 3000 --sink s3 \
    --endpoint "$url" --bucket bench --extra-toml "$DIR/case-$case.toml" \
    >"$root.json" 2>"$root.replay.log" || fail "replay $case with $bin failed (see $root.replay.log)"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  (cd "$root/bench" && find . -type f ! -name '.*' -printf '%P\n' | LC_ALL=C sort |
    while IFS= read -r k; do printf '%s  %s\n' "$(sha256sum <"$k" | cut -d' ' -f1)" "$k"; done) >"$out"
  [ -s "$out" ] || fail "replay $case with $bin wrote no object"
}

status=0
for case in gzip zstd-det parquet; do
  replay "$BASE" "$case" "$DIR/$case.base.sha256"
  replay "$DIR/bin-tree" "$case" "$DIR/$case.tree.sha256"
  n=$(wc -l <"$DIR/$case.base.sha256")
  if cmp -s "$DIR/$case.base.sha256" "$DIR/$case.tree.sha256"; then
    log "$case: $n objects, identical (sha256 of all: $(sha256sum <"$DIR/$case.tree.sha256" | cut -c1-16))"
  else
    log "$case: DIFFERENT"
    diff "$DIR/$case.base.sha256" "$DIR/$case.tree.sha256" | head -20 >&2 || true
    status=1
  fi
done
exit "$status"
