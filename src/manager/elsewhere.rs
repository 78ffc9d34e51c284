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
//! the first, and tells only an answer that differs from the last one.
//! Looks are at least [`GAP`] apart: a process that waits for a lock tries
//! it again every few milliseconds, and each try opens the file for
//! writing. A holder that writes no note (`flock(1)`) is seen at the next
//! change in the folder; to see such a holder go, the watcher also looks
//! every [`RECHECK`] while another process's sync is shown.
//!
//! The descriptor is with the runtime's reactor only while the watcher
//! waits on it. Registered all the time, it woke the reactor's thread for
//! every event (two per lock taken, here or by another process), which
//! cost a Neovim taking locks in a loop 40 % of its rate on two cores.

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
/// The shortest time from one look to the next.
const GAP: Duration = Duration::from_millis(250);
/// How often the folder is looked at while another process's sync is shown
/// (a look costs about 40 µs).
const RECHECK: Duration = Duration::from_secs(1);

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
    /// What it said it does (`full sync of demo`).
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
/// at each change. Ends when the folder is removed (no lock in it excludes
/// anybody then), telling that nothing runs. An error means the folder
/// cannot be watched (no inotify, or its limit reached).
pub fn watch(
    locks: Arc<LockDir>,
    me: u32,
    rt: &Handle,
    tell: impl Fn(&[Elsewhere]) + Send + 'static,
) -> Result<()> {
    watch_every(locks, me, rt, RECHECK, tell)
}

/// [`watch`], looking every `recheck` while something is shown.
fn watch_every(
    locks: Arc<LockDir>,
    me: u32,
    rt: &Handle,
    recheck: Duration,
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
    // This first registration only finds out whether the reactor takes it.
    let _entered = rt.enter();
    let mut watch = register(Watch(inotify))
        .map_err(|e| Error::io(context(), e))?
        .into_inner();
    rt.spawn(async move {
        let mut shown: Option<Vec<Elsewhere>> = None;
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::time::sleep_until((tokio::time::Instant::now() + SETTLE).max(last + GAP)).await;
            let readable = drain(&watch);
            last = tokio::time::Instant::now();
            if !readable || locks.is_removed() {
                if shown.is_some_and(|s| !s.is_empty()) {
                    tell(&[]);
                }
                return;
            }
            // A folder that cannot be read now is told as empty: what was
            // shown can no longer be vouched for.
            let now = look(&locks, me).unwrap_or_default();
            if shown.as_ref() != Some(&now) {
                tell(&now);
                shown = Some(now);
            }
            // Registering reports events that came after the drain at once.
            let Ok(fd) = register(watch) else {
                if shown.is_some_and(|s| !s.is_empty()) {
                    tell(&[]);
                }
                return;
            };
            let woke = if shown.as_ref().is_none_or(Vec::is_empty) {
                fd.readable().await.map(drop)
            } else {
                tokio::time::timeout(recheck, fd.readable())
                    .await
                    .map_or(Ok(()), |r| r.map(drop))
            };
            watch = fd.into_inner();
            if woke.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Registers `watch` with the runtime's reactor (on the runtime's thread).
fn register(watch: Watch) -> std::io::Result<AsyncFd<Watch>> {
    // SAFETY: `Watch` owns the inotify descriptor and never lets it go or
    // changes it, so it stays open and the same while registered.
    unsafe { AsyncFd::register_with_interest(watch, Interest::READABLE) }
        .map_err(std::io::Error::from)
}

/// Reads every queued event: what they were does not matter, only that
/// something changed. False when the descriptor fails.
fn drain(watch: &Watch) -> bool {
    loop {
        match watch.0.read_events() {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return true,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::mpsc;

    /// A lock folder, and a second handle on it as another process would
    /// have.
    fn setup() -> (tempfile::TempDir, Arc<LockDir>, LockDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks");
        let locks = Arc::new(LockDir::open(&path).unwrap());
        let other = LockDir::open(&path).unwrap();
        (dir, locks, other)
    }

    /// Watches `locks` as another process's (pid 0 is nobody's), looking
    /// every `recheck` while something is shown; the answers told arrive
    /// on the receiver.
    fn watching(
        locks: &Arc<LockDir>,
        recheck: Duration,
    ) -> (tokio::runtime::Runtime, mpsc::Receiver<Vec<String>>) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        watch_every(locks.clone(), 0, rt.handle(), recheck, move |l| {
            let _ = tx.send(l.iter().map(|e| e.account.clone()).collect());
        })
        .unwrap();
        (rt, rx)
    }

    /// The next answer told, or a failure after 5 s.
    fn next(rx: &mpsc::Receiver<Vec<String>>) -> Vec<String> {
        rx.recv_timeout(Duration::from_secs(5))
            .expect("an answer told")
    }

    /// Holds `name` as a process without the plugin would: an exclusive
    /// flock on a file it opens (and creates) itself, writing no note.
    fn flock(locks: &LockDir, name: &str, write: bool) -> File {
        // O_CREAT by hand: std creates files only when opened for writing.
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_CREAT)
            .mode(0o600)
            .open(locks.path().join(format!("{name}.lock")))
            .unwrap();
        // SAFETY: flock on a descriptor this test owns.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
        file
    }

    #[test]
    fn only_sync_locks_of_other_processes_count() {
        let (_d, locks, other) = setup();
        let _sync = other
            .try_acquire("sync-demo", "full sync of demo")
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
        assert_eq!(seen[0].purpose.as_deref(), Some("full sync of demo"));
    }

    /// Everything here is seen through its events alone: no recheck runs.
    #[test]
    fn a_lock_taken_released_or_dropped_with_its_holder_is_told() {
        let (_d, locks, other) = setup();
        let early = other
            .try_acquire("sync-early", "full sync of early")
            .unwrap()
            .unwrap();
        let (_rt, rx) = watching(&locks, Duration::from_secs(3600));
        assert_eq!(next(&rx), ["early"], "told at the start");
        let demo = other
            .try_acquire("sync-demo", "inbox sync of demo")
            .unwrap()
            .unwrap();
        assert_eq!(next(&rx), ["demo", "early"]);
        demo.release();
        assert_eq!(next(&rx), ["early"]);
        drop(early);
        assert_eq!(next(&rx), Vec::<String>::new());

        // A holder that dies leaves its note; the kernel's close of its
        // file (open for writing, as the plugin's holders open it) is what
        // is seen.
        let file = flock(&locks, "sync-gone", true);
        assert_eq!(next(&rx), ["gone"]);
        drop(file);
        assert_eq!(next(&rx), Vec::<String>::new());

        // Locks that are not syncs change nothing told.
        let _history = other.try_acquire("history", "update").unwrap().unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());

        // A folder removed (a logout removes $XDG_RUNTIME_DIR) ends the
        // watch, and what it showed.
        let _last = other
            .try_acquire("sync-last", "full sync of last")
            .unwrap()
            .unwrap();
        assert_eq!(next(&rx), ["last"]);
        std::fs::remove_dir_all(locks.path()).unwrap();
        assert_eq!(next(&rx), Vec::<String>::new());
        assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
    }

    /// A holder that reads only (`flock(1)`) is seen when it creates the
    /// file, and its end, which makes no event, by the recheck.
    #[test]
    fn a_holder_that_reads_only_is_rechecked() {
        let (_d, locks, _other) = setup();
        let (_rt, rx) = watching(&locks, Duration::from_millis(100));
        assert_eq!(next(&rx), Vec::<String>::new(), "told at the start");
        let file = flock(&locks, "sync-ro", false);
        assert_eq!(next(&rx), ["ro"]);
        drop(file);
        assert_eq!(next(&rx), Vec::<String>::new());
    }
}
