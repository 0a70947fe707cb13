//! The C allocator's settings, applied first thing in `main`, before any thread starts.
//!
//! glibc's malloc gives threads arenas of their own (up to 8 per core), and an arena keeps the
//! memory freed into it for its own later use. With a thread per worker (`app.rs`) besides the
//! runtime's, the memory benchmark's backlog peaked well above its usual RSS in most runs,
//! although the memory the connector accounts for was the same; capped at 2 arenas it peaked as
//! before, and a tansu drain's CPU did not change (BENCHMARKS.md, "Measured and kept").
//!
//! Invariant: a `MALLOC_ARENA_MAX` set in the environment wins; other platforms and allocators
//! are left alone.

/// Arenas glibc's malloc may create unless `MALLOC_ARENA_MAX` says otherwise.
pub const ARENAS: i32 = 2;

/// Caps glibc malloc at [`ARENAS`] arenas unless `MALLOC_ARENA_MAX` is set. Call at the top of
/// `main`, before the runtime or any other thread starts (a thread keeps the arena it first
/// allocated from). Returns whether the cap was applied.
pub fn limit_arenas() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            return false;
        }
        // SAFETY: mallopt only sets an allocator parameter; it takes glibc's own locks.
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
