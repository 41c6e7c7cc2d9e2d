//! Write turns between processes sharing one SQLite file.

use std::{fs::File, path::Path};

/// Write turns between processes sharing one file: two flocks on sidecar files. SQLite's busy
/// handler polls with sleeps, so a waiting process learns late that a commit ended (tens of ms
/// of tail latency); a blocked flock is woken by the kernel at once. A plain flock lets the
/// releasing process take it straight back and starve the others, so a waiter first holds
/// `queue` while it waits for `write`: the releaser then blocks on `queue` and the turn passes.
pub(super) struct Turn {
    queue: File,
    write: File,
}

impl Turn {
    pub(super) fn open(db: &Path) -> std::io::Result<Self> {
        let open = |suffix: &str| {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            File::options().create(true).truncate(false).write(true).open(p)
        };
        Ok(Self { queue: open("-queue.lock")?, write: open("-write.lock")? })
    }

    pub(super) fn take(&self) -> std::io::Result<TurnGuard<'_>> {
        self.queue.lock()?;
        let got = self.write.lock();
        let _ = self.queue.unlock();
        got.map(|()| TurnGuard(&self.write))
    }
}

/// Held for one transaction; released on drop, after COMMIT (or a failed BEGIN).
pub(super) struct TurnGuard<'a>(&'a File);

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}
