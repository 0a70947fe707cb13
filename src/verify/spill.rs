//! Where `verify`'s external sorts spill: a private folder of its own under the system's temp
//! folder, removed with everything in it when dropped, and anonymous files in it (created, then
//! unlinked at once, so the kernel frees them when they are closed, even after a crash).
//!
//! Invariants: the folder is new (never an existing one) and only its owner may enter it
//! (mode 0700); an anonymous file is never opened by name again, and only its owner could have
//! (mode 0600).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A new private folder under [`std::env::temp_dir`], removed when dropped.
#[derive(Debug)]
pub struct SpillDir {
    path: PathBuf,
}

impl SpillDir {
    /// Creates the folder (`kafka-s3-sink-verify-<pid>-<random>`).
    pub fn new() -> io::Result<Self> {
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let path = base.join(format!(
                "kafka-s3-sink-verify-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("no new spill folder under {}", base.display()),
        ))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A new read-write file in `dir` that has no name: created under a name no other file has
/// (`create_new`, which also refuses a symbolic link in its place), then unlinked.
pub fn anonymous_file(dir: &Path) -> io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(
            ".kafka-s3-sink-spill-{}-{n}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    #[test]
    fn a_spill_folder_is_private_and_removed_with_its_files() {
        let dir = SpillDir::new().unwrap();
        let path = dir.path().to_path_buf();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o700
        );
        std::fs::write(path.join("named"), b"x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn an_anonymous_file_has_no_name_and_keeps_its_bytes() {
        let dir = SpillDir::new().unwrap();
        let mut a = anonymous_file(dir.path()).unwrap();
        let mut b = anonymous_file(dir.path()).unwrap();
        a.write_all(b"first").unwrap();
        b.write_all(b"second").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut s = String::new();
        a.seek(SeekFrom::Start(0)).unwrap();
        a.read_to_string(&mut s).unwrap();
        assert_eq!(s, "first");
    }
}
