//! Syncs run by other processes: the channels whose sync lock another
//! Neovim or the command-line tool holds, so that this Neovim's status line
//! shows them too, as the original plugin's sidebar did ("Syncing
//! (external)").
//!
//! The lock folder is watched with inotify, so nothing runs while nothing
//! changes. A holder of this plugin writes its note into the lock file after
//! locking and empties it before unlocking (`IN_MODIFY`), and it opens the
//! file for writing, so the kernel's close of a killed holder's file is seen
//! too (`IN_CLOSE_WRITE`). A look at the folder opens lock files read-only,
//! whose events are not watched: a look never wakes the watcher again.
//!
//! A burst of events is one change: the watcher looks once [`SETTLE`] after
//! the first, and tells only an answer that differs from the last one. A
//! holder that writes no note (`flock(1)`) is seen when it creates the lock
//! file; to see such a holder go, the watcher also looks every [`RECHECK`]
//! while another process's sync is shown.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::lock::LockDir;

/// How long after the first event of a burst the folder is looked at: a
/// holder writes its note right after it locks, and unlocks right after it
/// empties the note.
const SETTLE: Duration = Duration::from_millis(20);
/// How often the folder is looked at while another process's sync is shown.
const RECHECK: Duration = Duration::from_secs(5);

/// A sync another process runs: the holder of the lock `sync-CHANNEL`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Elsewhere {
    /// The mbsync channel (the account) it syncs.
    pub account: String,
    /// The holder's pid, when the kernel or its note tells it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The holder's process name (`nvim`, `himalaya-sync`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    /// When it took the lock, in Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// What it said it syncs (`sync full`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

/// The syncs whose lock a process other than `me` holds, by channel.
pub fn look(locks: &LockDir, me: u32) -> Result<Vec<Elsewhere>> {
    Ok(locks
        .list()?
        .into_iter()
        .filter(|l| l.held && l.pid != Some(me))
        .filter_map(|l| {
            let account = l.name.strip_prefix("sync-")?.to_string();
            Some(Elsewhere {
                account,
                pid: l.pid,
                process: l.process,
                since: l.since,
                purpose: l.purpose,
            })
        })
        .collect())
}

/// The inotify descriptor, as tokio's readiness wants it.
struct Watch(Inotify);

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Watches the lock folder of `locks` from a task on `rt`, calling `tell`
/// with the syncs of processes other than `me`: once at the start (a
/// library loaded in place of another replaces what that one told), then
/// at each change. Ends when the folder is removed, telling that nothing
/// is known then. An error means the folder cannot be watched (no
/// inotify, or its limit reached).
pub fn watch(
    locks: Arc<LockDir>,
    me: u32,
    rt: &Handle,
    tell: impl Fn(&[Elsewhere]) + Send + 'static,
) -> Result<()> {
    let context = || format!("cannot watch lock folder {}", locks.path().display());
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(|e| Error::io(context(), e))?;
    inotify
        .add_watch(
            locks.path(),
            AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_ONLYDIR,
        )
        .map_err(|e| Error::io(context(), e))?;
    // AsyncFd registers with the runtime's reactor: it must be made on it.
    let _entered = rt.enter();
    // SAFETY: `Watch` owns the inotify descriptor and never lets it go or
    // changes it, so it stays open and the same for the AsyncFd's life.
    let fd = unsafe { AsyncFd::register_with_interest(Watch(inotify), Interest::READABLE) }
        .map_err(|e| Error::io(context(), std::io::Error::from(e)))?;
    rt.spawn(async move {
        let mut shown: Option<Vec<Elsewhere>> = None;
        let mut changed = true;
        loop {
            if changed {
                tokio::time::sleep(SETTLE).await;
                if !drain(&fd) {
                    if shown.is_some_and(|s| !s.is_empty()) {
                        tell(&[]);
                    }
                    return;
                }
                // A folder that cannot be read now is told as empty: what
                // was shown can no longer be vouched for.
                let now = look(&locks, me).unwrap_or_default();
                if shown.as_ref() != Some(&now) {
                    tell(&now);
                    shown = Some(now);
                }
            }
            let ready = if shown.as_ref().is_none_or(Vec::is_empty) {
                fd.readable().await.map(Some)
            } else {
                tokio::time::timeout(RECHECK, fd.readable())
                    .await
                    .map_or(Ok(None), |r| r.map(Some))
            };
            changed = match ready {
                Ok(Some(mut guard)) => {
                    guard.clear_ready();
                    true
                }
                Ok(None) => true,
                Err(_) => return,
            };
        }
    });
    Ok(())
}

/// Reads every queued event; false once the folder is gone (its watch is
/// removed) or the descriptor fails.
fn drain(fd: &AsyncFd<Watch>) -> bool {
    loop {
        match fd.get_ref().0.read_events() {
            Ok(events) => {
                if events.iter().any(|e| {
                    e.mask
                        .intersects(AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_DELETE_SELF)
                }) {
                    return false;
                }
            }
            Err(Errno::EAGAIN) => return true,
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    /// A lock folder, and a second handle on it as another process would
    /// have.
    fn setup() -> (tempfile::TempDir, Arc<LockDir>, LockDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks");
        let locks = Arc::new(LockDir::open(&path).unwrap());
        let other = LockDir::open(&path).unwrap();
        (dir, locks, other)
    }

    #[test]
    fn only_sync_locks_of_other_processes_count() {
        let (_d, locks, other) = setup();
        let _sync = other
            .try_acquire("sync-demo", "sync full")
            .unwrap()
            .unwrap();
        let _history = other.try_acquire("history", "update").unwrap().unwrap();
        let me = std::process::id();
        assert_eq!(look(&locks, me).unwrap(), vec![]);
        // Seen from any other pid, the sync lock is another process's.
        let seen = look(&locks, 0).unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].account, "demo");
        assert_eq!(seen[0].pid, Some(me));
        assert_eq!(seen[0].purpose.as_deref(), Some("sync full"));
    }

    /// Waits for the next answer told, or fails after `secs`.
    fn next(rx: &mpsc::Receiver<Vec<Elsewhere>>, secs: u64) -> Vec<Elsewhere> {
        rx.recv_timeout(Duration::from_secs(secs))
            .expect("an answer told")
    }

    #[test]
    fn a_lock_taken_released_or_dropped_with_its_holder_is_told() {
        use std::os::unix::fs::OpenOptionsExt;
        let (_d, locks, other) = setup();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let early = other
            .try_acquire("sync-early", "sync full")
            .unwrap()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        watch(locks.clone(), 0, rt.handle(), move |l| {
            let _ = tx.send(l.to_vec());
        })
        .unwrap();
        let names = |l: &[Elsewhere]| l.iter().map(|e| e.account.clone()).collect::<Vec<_>>();
        assert_eq!(names(&next(&rx, 5)), ["early"], "told at the start");

        let t = Instant::now();
        let demo = other
            .try_acquire("sync-demo", "sync inbox")
            .unwrap()
            .unwrap();
        assert_eq!(names(&next(&rx, 5)), ["demo", "early"]);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        demo.release();
        assert_eq!(names(&next(&rx, 5)), ["early"]);
        drop(early);
        assert_eq!(names(&next(&rx, 5)), Vec::<String>::new());

        // A holder that dies leaves its note; the kernel's close of its
        // file (open for writing, as holders open it) is what is seen.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(locks.path().join("sync-gone.lock"))
            .unwrap();
        // SAFETY: flock on a descriptor this test owns.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
        assert_eq!(names(&next(&rx, 5)), ["gone"]);
        drop(file);
        assert_eq!(names(&next(&rx, 5)), Vec::<String>::new());

        // Locks that are not syncs change nothing told.
        let _history = other.try_acquire("history", "update").unwrap().unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());

        // A folder removed (a logout removes $XDG_RUNTIME_DIR) ends the
        // watch, and what it showed.
        let _last = other
            .try_acquire("sync-last", "sync full")
            .unwrap()
            .unwrap();
        assert_eq!(names(&next(&rx, 5)), ["last"]);
        std::fs::remove_dir_all(locks.path()).unwrap();
        assert_eq!(names(&next(&rx, 5)), Vec::<String>::new());
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    }

    #[test]
    fn nothing_elsewhere_is_told_at_the_start_too() {
        let (_d, locks, _other) = setup();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        watch(locks, 0, rt.handle(), move |l| {
            let _ = tx.send(l.to_vec());
        })
        .unwrap();
        assert_eq!(next(&rx, 5), vec![]);
    }
}
