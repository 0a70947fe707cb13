//! `scan`: the connector's JSON scan alone, against what it replaced (serde_json's validating
//! walk, plus the two byte passes that found deep nesting and line breaks), on one thread.

use crate::measure;
use anyhow::Context;
use kafka_s3_sink::scan::{scan_fields_into, Scalar};
use serde::de::IgnoredAny;
use std::path::Path;

/// MB per CPU-second of each way, the fastest of `runs` (taken in turns, so drift hits both).
pub fn run(input: &Path, runs: usize) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("cannot read {} as UTF-8", input.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let mb = lines.iter().map(|l| l.len()).sum::<usize>() as f64 / 1e6;
    // The default routing reads one field: `timestamp`.
    let paths = vec![vec!["timestamp".to_string()]];
    let ours = || {
        lines
            .iter()
            .filter(|l| {
                let mut out: [Option<Scalar>; 1] = Default::default();
                scan_fields_into(l, &paths, &mut out).is_ok()
            })
            .count()
    };
    let serde = || {
        lines
            .iter()
            .filter(|l| {
                let b = l.as_bytes();
                let deep = memchr::memchr2_iter(b'{', b'[', b).take(65).count() > 64;
                let breaks = memchr::memchr2(b'\n', b'\r', b).is_some();
                !deep && !breaks && serde_json::from_str::<IgnoredAny>(l).is_ok()
            })
            .count()
    };
    let time = |f: &dyn Fn() -> usize| {
        let cpu0 = measure::thread_cpu_secs();
        let n = f();
        (measure::thread_cpu_secs() - cpu0, n)
    };
    let (mut best_ours, mut best_serde) = (f64::MAX, f64::MAX);
    let mut accepted = (0, 0);
    for _ in 0..runs.max(1) {
        let (c, n) = time(&ours);
        best_ours = best_ours.min(c);
        let (d, m) = time(&serde);
        best_serde = best_serde.min(d);
        accepted = (n, m);
    }
    let rate = |cpu: f64| measure::round3(mb / cpu.max(1e-3));
    Ok(serde_json::json!({
        "mode": "scan",
        "lines": lines.len(),
        "input_mb": measure::round3(mb),
        "accepted": {"scan": accepted.0, "serde_json": accepted.1},
        "scan_mb_per_cpu_sec": rate(best_ours),
        "serde_json_and_prescans_mb_per_cpu_sec": rate(best_serde),
        "speedup": measure::round3(best_serde / best_ours.max(1e-3)),
    }))
}
