//! Process measurements from /proc (Linux): CPU time of the process and of the calling thread,
//! CPU per thread name, resident set size and its peak (resettable), and summaries of sizes.
//!
//! CPU times come from `/proc/*/stat` in USER_HZ ticks (100 per second on Linux, fixed by the
//! kernel ABI), so they are exact to 10 ms: fine for runs of seconds, not for micro-benchmarks.

use std::collections::BTreeMap;
use std::fs;

/// Ticks per second of the `utime`/`stime` fields of `/proc/*/stat` (USER_HZ).
const USER_HZ: f64 = 100.0;

/// utime + stime in seconds from the text of a `/proc/*/stat` file.
fn stat_cpu_secs(stat: &str) -> Option<f64> {
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// User + system CPU seconds of this process so far (every thread).
pub fn process_cpu_secs() -> f64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_cpu_secs(&s))
        .unwrap_or(0.0)
}

/// User + system CPU seconds of the calling thread so far.
pub fn thread_cpu_secs() -> f64 {
    fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|s| stat_cpu_secs(&s))
        .unwrap_or(0.0)
}

/// CPU seconds per thread name (threads of one name summed), for threads alive now.
pub fn threads_cpu() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let p = entry.path();
        let name = fs::read_to_string(p.join("comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if let Some(cpu) = fs::read_to_string(p.join("stat"))
            .ok()
            .and_then(|s| stat_cpu_secs(&s))
        {
            *out.entry(name).or_insert(0.0) += cpu;
        }
    }
    out
}

/// CPU seconds per thread name spent between two [`threads_cpu`] samples (threads that ended
/// in between are missing from the second sample and so not counted).
pub fn threads_delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), round3(v - before.get(k).copied().unwrap_or(0.0))))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

fn status_kib(field: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident set size now, in bytes (`VmRSS`).
pub fn rss_bytes() -> u64 {
    status_kib("VmRSS:") * 1024
}

/// Peak resident set size since start or the last [`reset_peak_rss`], in bytes (`VmHWM`).
pub fn peak_rss_bytes() -> u64 {
    status_kib("VmHWM:") * 1024
}

/// Resets the peak RSS to the current RSS (`echo 5 > /proc/self/clear_refs`, Linux ≥ 4.0).
/// Returns whether it worked.
pub fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Rounds to 3 decimals (for readable JSON).
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Bytes to MiB, 1 decimal.
pub fn mib(bytes: u64) -> f64 {
    (bytes as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
}

/// Count, total and quantiles of a list of sizes.
pub fn size_summary(sizes: &[u64]) -> serde_json::Value {
    let mut v = sizes.to_vec();
    v.sort_unstable();
    let q = |p: f64| -> u64 {
        if v.is_empty() {
            0
        } else {
            v[((v.len() - 1) as f64 * p).round() as usize]
        }
    };
    let total: u64 = v.iter().sum();
    serde_json::json!({
        "count": v.len(),
        "total_bytes": total,
        "mean_bytes": if v.is_empty() { 0 } else { total / v.len() as u64 },
        "min_bytes": q(0.0),
        "p10_bytes": q(0.1),
        "p50_bytes": q(0.5),
        "p90_bytes": q(0.9),
        "max_bytes": q(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_skips_names_with_spaces_and_parens() {
        let s = "123 (tokio (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(stat_cpu_secs(s), Some(3.0));
    }

    #[test]
    fn size_summary_quantiles() {
        let s = size_summary(&[5, 1, 3, 2, 4]);
        assert_eq!(s["count"], 5);
        assert_eq!(s["min_bytes"], 1);
        assert_eq!(s["p50_bytes"], 3);
        assert_eq!(s["max_bytes"], 5);
        assert_eq!(s["total_bytes"], 15);
    }
}
