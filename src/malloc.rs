//! The C allocator's settings, applied first thing in `main`, before any thread starts.
//!
//! glibc's malloc gives threads arenas of their own (up to 8 per core), and an arena keeps the
//! memory freed into it for its own later use. With a thread per worker (`app.rs`) besides the
//! runtime's, the memory benchmark's backlog peaked well above its usual RSS in most runs,
//! although the memory the connector accounts for was the same; capped at 2 arenas it peaked as
//! before, and a tansu drain's CPU did not change (BENCHMARKS.md, "Measured and kept").
//!
//! Large blocks (1 MiB and more: a Parquet row group's column chunks and the part they are
//! copied into, a record chunk, a compressed part) are mapped and unmapped on their own
//! ([`MMAP_THRESHOLD`]). glibc otherwise raises that threshold as such blocks are freed (up to
//! 32 MiB), after which they come from an arena and their freed pages stay with the process:
//! a drain into four large Parquet files peaked at 390 MiB of RSS for a heap that peaked at
//! 246 MiB, and at 253 MiB with the fixed threshold (BENCHMARKS.md, "Memory").
//!
//! Invariant: `MALLOC_ARENA_MAX` or `MALLOC_MMAP_THRESHOLD_` set in the environment wins over the
//! setting it names; other platforms and allocators are left alone.

/// Arenas glibc's malloc may create unless `MALLOC_ARENA_MAX` says otherwise.
pub const ARENAS: i32 = 2;

/// Blocks at least this large are mapped on their own and returned when freed, unless
/// `MALLOC_MMAP_THRESHOLD_` says otherwise (setting it also stops glibc from raising it).
pub const MMAP_THRESHOLD: i32 = 1 << 20;

/// Fixes glibc malloc's mmap threshold at [`MMAP_THRESHOLD`] unless `MALLOC_MMAP_THRESHOLD_` is
/// set, and caps it at [`ARENAS`] arenas unless `MALLOC_ARENA_MAX` is set. Call at the top of
/// `main`, before the runtime or any other thread starts (a thread keeps the arena it first
/// allocated from). Returns whether the arena cap was applied.
pub fn limit_arenas() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: mallopt only sets an allocator parameter; it takes glibc's own locks.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        }
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return false;
        }
        // SAFETY: as above.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cap_is_applied_unless_the_environment_sets_one() {
        let applied = super::limit_arenas();
        let env_set = std::env::var_os("MALLOC_ARENA_MAX").is_some();
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert_eq!(applied, !env_set);
        } else {
            assert!(!applied);
        }
    }
}
