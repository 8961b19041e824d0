//! One active writer per state database: an advisory lock on `<state>.lock`, held by the
//! daemon for its lifetime and by `sync` for one cycle. The OS releases it when the process
//! dies, so a crashed instance never blocks the standby.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

pub struct StateLock {
    file: File,
    pub path: PathBuf,
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

impl StateLock {
    /// The lock, or `Ok(None)` with the holder's pid when another process has it.
    pub fn try_acquire(state: &Path) -> std::io::Result<Result<StateLock, String>> {
        let path = lock_path(state);
        let mut file = open(&path)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                file.rewind()?;
                write!(file, "{}", std::process::id())?;
                Ok(Ok(StateLock { file, path }))
            }
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                Ok(Err(holder.trim().to_string()))
            }
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// Waits until the lock is free (the standby's wait), then takes it.
    pub async fn acquire_waiting(state: &Path) -> std::io::Result<StateLock> {
        let path = lock_path(state);
        let file = open(&path)?;
        let file =
            tokio::task::spawn_blocking(move || file.lock().map(|_| file)).await.map_err(std::io::Error::other)??;
        let mut lock = StateLock { file, path };
        lock.file.set_len(0)?;
        write!(lock.file, "{}", std::process::id())?;
        Ok(lock)
    }

    /// False when someone removed the lock file: another instance could then take a new one.
    pub fn intact(&self) -> bool {
        self.path.exists()
    }
}
