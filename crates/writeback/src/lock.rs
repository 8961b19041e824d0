//! One active writer per state database: an advisory lock on `<state>.lock`, held by the
//! daemon for its lifetime and by `sync` for one cycle. The OS releases it when the process
//! dies, so a crashed instance never blocks the standby.
//!
//! The lock is the file held, not its name: if someone removes or replaces `<state>.lock`,
//! another instance can lock the new file, so the holder checks, before every apply, that the
//! name still leads to the file it locked (same device and inode) and stops writing if not.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

pub struct StateLock {
    /// Held open: closing it releases the lock.
    _file: File,
    pub path: PathBuf,
    /// (device, inode) of the file locked.
    id: (u64, u64),
}

pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "writeback.db".into());
    name.push(".lock");
    state.with_file_name(name)
}

fn open(path: &Path) -> std::io::Result<File> {
    writeback_store::private_file(path)?;
    OpenOptions::new().read(true).write(true).truncate(false).open(path)
}

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

impl StateLock {
    fn held(mut file: File, path: PathBuf) -> std::io::Result<StateLock> {
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        let id = file_id(&file.metadata()?);
        Ok(StateLock { _file: file, path, id })
    }

    /// The lock, or `Ok(Err)` with the holder's pid when another process has it.
    pub fn try_acquire(state: &Path) -> std::io::Result<Result<StateLock, String>> {
        let path = lock_path(state);
        loop {
            let mut file = open(&path)?;
            match file.try_lock() {
                Ok(()) => match StateLock::held(file, path.clone())? {
                    lock if lock.intact() => return Ok(Ok(lock)),
                    _ => continue, // the file was replaced while we locked it: lock the new one
                },
                Err(TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    return Ok(Err(holder.trim().to_string()));
                }
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
    }

    /// Waits until the lock is free (the standby's wait), then takes it.
    pub async fn acquire_waiting(state: &Path) -> std::io::Result<StateLock> {
        let path = lock_path(state);
        loop {
            let file = open(&path)?;
            let file = tokio::task::spawn_blocking(move || file.lock().map(|_| file))
                .await
                .map_err(std::io::Error::other)??;
            let lock = StateLock::held(file, path.clone())?;
            // Someone replaced the file while we waited on the old one: wait on the new one.
            if lock.intact() {
                return Ok(lock);
            }
        }
    }

    /// True while the lock file's name still leads to the file this process locked: false
    /// once it is removed or replaced (another instance could then lock the new one).
    pub fn intact(&self) -> bool {
        self.watch().intact()
    }

    /// What a task writing for this holder checks before each write (see `intact`).
    pub fn watch(&self) -> LockWatch {
        LockWatch { path: self.path.clone(), id: self.id }
    }

    /// `intact`, as the reason to stop writing when it is not.
    pub fn check(&self) -> Result<(), String> {
        if self.intact() {
            Ok(())
        } else {
            Err(format!(
                "the state lock file {} was removed or replaced since this instance \
                    locked it: it stopped writing (another instance may hold the new file); \
                    restart it",
                self.path.display()
            ))
        }
    }
}

/// The lock file's name and the file locked, for a task that writes while its holder reads.
#[derive(Clone, Debug)]
pub struct LockWatch {
    path: PathBuf,
    id: (u64, u64),
}

impl LockWatch {
    pub fn intact(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| file_id(&m) == self.id)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_or_replaced_lock_file_is_noticed() {
        let dir = std::env::temp_dir().join(format!("writeback-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let state = dir.join("state.db");
        let lock = StateLock::try_acquire(&state).expect("io").expect("free");
        assert!(lock.intact() && lock.check().is_ok());
        assert!(StateLock::try_acquire(&state).expect("io").is_err(), "held");
        // Replaced: a new file under the same name (another instance could lock it).
        std::fs::remove_file(&lock.path).expect("rm");
        std::fs::write(&lock.path, b"").expect("new file");
        assert!(!lock.intact());
        assert!(lock.check().is_err_and(|e| e.contains("removed or replaced")));
        std::fs::remove_file(&lock.path).expect("rm");
        assert!(!lock.intact(), "removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
