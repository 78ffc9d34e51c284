//! Sync history per account, shared by every process on the machine and
//! kept across restarts: last success, last error, syncs today, duration.
//!
//! One JSON file in a private state directory. Every update is a
//! read-modify-write under the named lock `history` and lands with an atomic
//! rename, so concurrent Neovims never lose each other's entries and a crash
//! never leaves half a file.
//!
//! A new entry is first saved in a pending file of its own, which needs no
//! lock, and then merged under the lock. A process that exits or dies
//! while another holds the lock (Neovim waits only so long at exit) thus
//! loses nothing: the next update merges what it left, and reading the
//! history includes it meanwhile.
//!
//! Before even that file is written, the entry is held in memory
//! ([`History::hold`]): a sync's end is announced first, and whoever reads
//! the history on hearing of it must find the sync there. Reads and the
//! steps by which this process moves an entry between memory, its pending
//! file and the history file exclude each other, so those moves never make
//! a reader here count an entry twice or miss it. Nor does a merge by
//! another process, which replaces the history file first and removes the
//! pending files it took in after: the history file names those files
//! (for [`MERGED_KEEP`]), and a read leaves out a pending file it names.
//! Reads take the pending files first, so that such a merge can never make
//! them miss one either.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::lock::{ensure_private_dir, LockDir};

const FILE: &str = "history.json";
const LOCK: &str = "history";
/// How a pending entry's file name starts (see [`History::record`]).
const PENDING: &str = "history.json.pending-";
/// How long an update waits for another process's update.
const WAIT: Duration = Duration::from_secs(5);
/// Seconds a stored time may lie ahead of the clock before it is taken
/// for one written while the clock was set ahead (see [`apply`]).
const CLOCK_SLACK: f64 = 60.0;
/// Seconds the history file keeps naming a pending file it took in, once
/// that file is gone. A reader needs the name only between its listing of
/// the pending files and its read of the history file, microseconds apart.
const MERGED_KEEP: f64 = 60.0;

/// Numbers the files this process names, so that no two names meet even
/// when the clock is coarse.
static SEQ: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    pub kind: ErrorKind,
    pub message: String,
    /// Unix seconds.
    pub time: f64,
}

/// What is remembered about one account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountHistory {
    /// Unix seconds of the last successful sync.
    pub last_success: Option<f64>,
    /// Unix seconds of the last sync, whatever its end.
    pub last_sync: Option<f64>,
    pub last_type: Option<String>,
    /// Unix seconds of the last successful full sync: when every folder
    /// was last brought up to date (auto-sync skips a full sync before it
    /// is due again).
    #[serde(default)]
    pub last_full: Option<f64>,
    /// Unix seconds of the last successful sync of the INBOX (an inbox or
    /// a full sync).
    #[serde(default)]
    pub last_inbox: Option<f64>,
    pub last_error: Option<LastError>,
    /// Seconds the last sync took.
    pub last_duration: Option<f64>,
    pub syncs_today: u32,
    /// Local date `syncs_today` counts for (YYYY-MM-DD).
    pub day: String,
}

/// An account as the history file keeps it: its history, and the pending
/// files recent merges took into it, each with the unix seconds of its
/// merge. Older versions of the plugin read the file too: they ignore
/// `merged`, and a merge of theirs drops it (their readers count a merge
/// in progress twice, as they always did).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    history: AccountHistory,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    merged: BTreeMap<String, f64>,
}

/// One finished sync, as recorded (and as a pending file holds it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub account: String,
    pub kind: String,
    /// Unix seconds.
    pub end: f64,
    pub duration: f64,
    pub error: Option<(ErrorKind, String)>,
}

/// The history file and the lock that guards it.
pub struct History {
    path: PathBuf,
    locks: Arc<LockDir>,
    wait: Duration,
    /// Entries held in memory (see [`History::hold`]). Its lock is also
    /// taken by every read and by each step that moves entries, so that a
    /// read sees an entry in exactly one place.
    unsaved: Mutex<Vec<Unsaved>>,
}

/// An entry in memory only.
struct Unsaved {
    ticket: u64,
    record: Record,
    /// Its pending file could not be written: the next merge of this
    /// process takes it in from here.
    failed: bool,
}

/// An entry held in memory by [`History::hold`], to be recorded with
/// [`History::record_held`], or let go with [`History::forget`].
#[derive(Debug)]
pub struct Held(u64);

impl History {
    /// Uses `<dir>/history.json`; `dir` is created private (0700) if missing.
    pub fn open(dir: &Path, locks: Arc<LockDir>) -> Result<History> {
        ensure_private_dir(dir, "state directory")?;
        Ok(History {
            path: dir.join(FILE),
            locks,
            wait: WAIT,
            unsaved: Mutex::new(Vec::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every account's history, pending and held entries included; an
    /// unreadable file is an error that names it.
    pub fn load(&self) -> Result<BTreeMap<String, AccountHistory>> {
        let unsaved = self.unsaved.lock();
        // The pending files first: another process's merge in between is
        // then in the history file, which names the files it took in,
        // rather than in neither.
        let pending = self.pending().0;
        let file = self.load_file()?;
        let pending: Vec<Record> = pending
            .into_iter()
            .filter(|(path, r)| !taken_in(&file, path, r))
            .map(|(_, r)| r)
            .collect();
        let mut all: BTreeMap<String, AccountHistory> = file
            .into_iter()
            .map(|(a, stored)| (a, stored.history))
            .collect();
        let now = super::now();
        for r in &pending {
            apply(&mut all, r, now);
        }
        for u in unsaved.iter() {
            apply(&mut all, &u.record, now);
        }
        Ok(all)
    }

    /// The history file alone.
    fn load_file(&self) -> Result<BTreeMap<String, Stored>> {
        // Read on the editor's thread (`sync_history`): a regular file only,
        // of bounded size (see `files`).
        match crate::files::read_regular(&self.path, crate::files::MAX_CONFIG_BYTES) {
            Ok(bytes) if bytes.is_empty() => Ok(BTreeMap::new()),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "sync history {} is corrupt ({e}); the next sync keeps it aside and \
                         starts a new one",
                        self.path.display()
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Error::io(format!("cannot read {}", self.path.display()), e)),
        }
    }

    /// Every account's history as of `now` (unix seconds): `syncs_today`
    /// counts only syncs of `now`'s local date. The file keeps the count of
    /// the last day anything was synced, which may be an earlier one.
    pub fn load_as_of(&self, now: f64) -> Result<BTreeMap<String, AccountHistory>> {
        let mut all = self.load()?;
        let today = local_date(now);
        for h in all.values_mut() {
            if h.day != today {
                h.day = today.clone();
                h.syncs_today = 0;
            }
        }
        Ok(all)
    }

    /// Adds one finished sync. The entry is saved at once in a pending file
    /// of its own (no lock needed), then merged into the history under the
    /// lock with every pending entry, and those files are removed. While
    /// another process holds the lock (past [`WAIT`], or until this process
    /// exits) the pending file keeps the entry for the next update: that is
    /// not an error, unless the entry could not even be saved.
    ///
    /// A corrupt history (or pending entry) is moved aside rather than
    /// blocking the history forever, or being overwritten unseen: the
    /// returned notice says so. A history that cannot be read is left
    /// alone, and nothing is merged.
    pub fn record(&self, r: &Record) -> Result<Option<String>> {
        self.record_held(self.hold(r.clone()), || ())
    }

    /// Holds `r` in memory, where [`load`](Self::load) finds it, until
    /// [`record_held`](Self::record_held) has saved it: at once, without
    /// I/O, so that it can be done before the sync's end is announced.
    pub fn hold(&self, r: Record) -> Held {
        let ticket = SEQ.fetch_add(1, Ordering::Relaxed);
        self.unsaved.lock().push(Unsaved {
            ticket,
            record: r,
            failed: false,
        });
        Held(ticket)
    }

    /// Lets go of a held entry that will not be recorded (the sync's end
    /// could not be told).
    pub fn forget(&self, held: Held) {
        self.unsaved.lock().retain(|u| u.ticket != held.0);
    }

    /// [`record`](Self::record) for a held entry, calling `on_saved` as soon
    /// as the entry is safe in its pending file, before the merge (which
    /// may wait for the lock). When that file could not be written, the
    /// entry lives only in memory until a merge of this process takes it
    /// in (this one, or the next): `on_saved` is then kept, uncalled, until
    /// this returns (a guard it holds lasts as long as the entry is at
    /// risk).
    pub fn record_held(&self, held: Held, on_saved: impl FnOnce()) -> Result<Option<String>> {
        let Some(r) = self
            .unsaved
            .lock()
            .iter()
            .find(|u| u.ticket == held.0)
            .map(|u| u.record.clone())
        else {
            return Ok(None);
        };
        let (saved, _kept) = match self.save_pending(&r, &held) {
            Ok(()) => {
                on_saved();
                (Ok(()), None)
            }
            Err(e) => {
                if let Some(u) = self.unsaved.lock().iter_mut().find(|u| u.ticket == held.0) {
                    u.failed = true;
                }
                (Err(e), Some(on_saved))
            }
        };
        let _guard = match self
            .locks
            .acquire(LOCK, self.wait, "update sync history", None)
        {
            Ok(guard) => guard,
            Err(e) if e.kind == ErrorKind::Locked => return saved.map(|()| None),
            Err(e) => return Err(e),
        };
        // A merge is short once it has the lock: an exit waits for it, so
        // that the history file holds this process's syncs when it is gone.
        let _finishing = crate::runtime::must_finish();
        let mut notices = Vec::new();
        let mut all = match self.load_file() {
            Ok(all) => all,
            Err(e) if e.kind == ErrorKind::Config => {
                let kept = self.move_aside(&self.path)?;
                notices.push(format!(
                    "sync history {} was corrupt; it is kept as {}, and a new one was started",
                    self.path.display(),
                    kept.display()
                ));
                BTreeMap::new()
            }
            Err(e) => return Err(e),
        };
        let (pending, corrupt) = self.pending();
        for path in corrupt {
            let kept = self.move_aside(&path)?;
            notices.push(format!(
                "a saved sync history entry {} was corrupt and is left out; it is kept as {}",
                path.display(),
                kept.display()
            ));
        }
        let now = super::now();
        // A name is kept while its file is there: a merge cut short
        // between its history file and the removal leaves files that the
        // next merge (this one) removes without taking them in again.
        let present: Vec<&str> = pending.iter().filter_map(|(p, _)| name(p)).collect();
        for stored in all.values_mut() {
            stored
                .merged
                .retain(|n, t| present.contains(&n.as_str()) || (now - *t).abs() < MERGED_KEEP);
        }
        for (path, p) in &pending {
            if !taken_in(&all, path, p) {
                let stored = all.entry(p.account.clone()).or_default();
                apply_to(&mut stored.history, p, now);
                if let Some(n) = name(path) {
                    stored.merged.insert(n.to_string(), now);
                }
            }
        }
        // Entries whose pending file failed, this one's or earlier ones':
        // merges are one at a time (the lock), so each is taken in once.
        let failed: Vec<u64> = {
            let unsaved = self.unsaved.lock();
            unsaved
                .iter()
                .filter(|u| u.failed)
                .map(|u| {
                    apply_to(
                        &mut all.entry(u.record.account.clone()).or_default().history,
                        &u.record,
                        now,
                    );
                    u.ticket
                })
                .collect()
        };
        self.write(&all, |unsaved| {
            // Removed only once the history holds them (and names them).
            for (path, _) in pending {
                let _ = fs::remove_file(path);
            }
            unsaved.retain(|u| !failed.contains(&u.ticket));
        })?;
        Ok((!notices.is_empty()).then(|| notices.join("; ")))
    }

    /// Moves a corrupt file aside, to a name of its own (so that one kept
    /// before is not overwritten); returns that name.
    fn move_aside(&self, path: &Path) -> Result<PathBuf> {
        let kept = self.path.with_file_name(format!(
            "{FILE}.corrupt-{}-{}",
            unix_nanos(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::rename(path, &kept)
            .map_err(|io| Error::io(format!("cannot move aside {}", path.display()), io))?;
        Ok(kept)
    }

    /// Saves `r` as a pending entry: written under a hidden name, then
    /// renamed, so that a reader never sees half of it. Not synced to the
    /// disk: it only has to outlive this process (the history file it is
    /// merged into is synced).
    fn save_pending(&self, r: &Record, held: &Held) -> Result<()> {
        let name = format!(
            "{PENDING}{}-{}-{}",
            std::process::id(),
            unix_nanos(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.path.with_file_name(&name);
        let data = serde_json::to_vec(r)
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        self.replace_file(
            &self.path.with_file_name(format!(".{name}.tmp")),
            &path,
            &data,
            false,
            |unsaved| unsaved.retain(|u| u.ticket != held.0),
        )
    }

    /// The pending entries with their files, oldest first, and the pending
    /// files that are not an entry. A file that cannot be read is left out
    /// of both (and kept for a later update); an empty one (its data never
    /// reached the disk before a power cut) is removed.
    fn pending(&self) -> (Vec<(PathBuf, Record)>, Vec<PathBuf>) {
        let mut entries = Vec::new();
        let mut corrupt = Vec::new();
        let Some(dir) = self.path.parent() else {
            return (entries, corrupt);
        };
        for dirent in fs::read_dir(dir).into_iter().flatten().flatten() {
            if !dirent.file_name().to_string_lossy().starts_with(PENDING) {
                continue;
            }
            let path = dirent.path();
            match crate::files::read_regular(&path, crate::files::MAX_CONFIG_BYTES) {
                Ok(bytes) if bytes.is_empty() => {
                    let _ = fs::remove_file(&path);
                }
                Ok(bytes) => match serde_json::from_slice::<Record>(&bytes) {
                    Ok(r) => entries.push((path, r)),
                    Err(_) => corrupt.push(path),
                },
                Err(_) => continue,
            }
        }
        entries.sort_by(|a, b| a.1.end.total_cmp(&b.1.end));
        (entries, corrupt)
    }

    /// Replaces the history file with `all`; `then` (the rest of the
    /// merge) runs with it, out of any reader's sight.
    fn write(
        &self,
        all: &BTreeMap<String, Stored>,
        then: impl FnOnce(&mut Vec<Unsaved>),
    ) -> Result<()> {
        let data = serde_json::to_vec_pretty(all)
            .map_err(|e| Error::io(format!("cannot write {}", self.path.display()), e))?;
        let tmp = self
            .path
            .with_file_name(format!(".{FILE}.{}.tmp", std::process::id()));
        self.replace_file(&tmp, &self.path, &data, true, then)
    }

    /// Puts `data` at `path` through the file `tmp` (mode 0600, never
    /// through a symlink) and a rename, so that a reader sees the old file
    /// or the new one, never half; with `durable` the data reaches the disk
    /// first. The rename and `then` (given the held entries) happen
    /// together for readers of this process (see [`History::load`]).
    fn replace_file(
        &self,
        tmp: &Path,
        path: &Path,
        data: &[u8],
        durable: bool,
        then: impl FnOnce(&mut Vec<Unsaved>),
    ) -> Result<()> {
        let context = || format!("cannot write {}", path.display());
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(tmp)
            .map_err(|e| Error::io(context(), e))?;
        f.write_all(data)
            .and_then(|()| if durable { f.sync_all() } else { Ok(()) })
            .and_then(|()| {
                let mut unsaved = self.unsaved.lock();
                fs::rename(tmp, path)?;
                then(&mut unsaved);
                Ok(())
            })
            .map_err(|e| {
                let _ = fs::remove_file(tmp);
                Error::io(context(), e)
            })
    }
}

/// Adds one finished sync to `all`, `now` being the time of the merge. The
/// order entries are added in does not matter: a pending entry may be
/// merged after a later one, so an older entry changes no "last" field
/// that a newer one set, and counts for `syncs_today` only if its day is
/// still the one counted. Except for a time ahead of `now` (beyond
/// [`CLOCK_SLACK`]), written while the clock was set ahead: any entry
/// replaces it, or it would hold the history (and an auto-sync that asks
/// when an account was last synced) until that time.
fn apply(all: &mut BTreeMap<String, AccountHistory>, r: &Record, now: f64) {
    apply_to(all.entry(r.account.clone()).or_default(), r, now);
}

/// [`apply`] to the history of `r`'s account.
fn apply_to(h: &mut AccountHistory, r: &Record, now: f64) {
    let newer = |stored: f64| r.end >= stored || stored > now + CLOCK_SLACK;
    let day = local_date(r.end);
    if h.day < day || h.day > local_date(now + CLOCK_SLACK) {
        h.day.clone_from(&day);
        h.syncs_today = 0;
    }
    if h.day == day {
        h.syncs_today += 1;
    }
    if h.last_sync.is_none_or(newer) {
        h.last_sync = Some(r.end);
        h.last_type = Some(r.kind.clone());
        h.last_duration = Some(r.duration);
    }
    match &r.error {
        None => {
            if h.last_success.is_none_or(newer) {
                h.last_success = Some(r.end);
            }
            if r.kind == "full" && h.last_full.is_none_or(newer) {
                h.last_full = Some(r.end);
            }
            if (r.kind == "full" || r.kind == "inbox") && h.last_inbox.is_none_or(newer) {
                h.last_inbox = Some(r.end);
            }
        }
        Some((kind, message)) => {
            if h.last_error.as_ref().is_none_or(|e| newer(e.time)) {
                h.last_error = Some(LastError {
                    kind: *kind,
                    message: message.clone(),
                    time: r.end,
                });
            }
        }
    }
}

/// Whether the history file `file` already holds the pending entry `r`,
/// saved at `path`: a merge took it in and has yet to remove that file.
fn taken_in(file: &BTreeMap<String, Stored>, path: &Path, r: &Record) -> bool {
    name(path).is_some_and(|n| {
        file.get(&r.account)
            .is_some_and(|stored| stored.merged.contains_key(n))
    })
}

/// A pending file's name.
fn name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

/// Nanoseconds since the epoch, for file names of their own.
fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The local calendar date of a unix time, as YYYY-MM-DD.
fn local_date(unix: f64) -> String {
    let t = unix as libc::time_t;
    // SAFETY: localtime_r only writes into the tm we pass.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return String::new();
    }
    format!(
        "{:04}-{:02}-{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, History) {
        let dir = tempfile::tempdir().unwrap();
        let locks = Arc::new(LockDir::open(dir.path().join("locks")).unwrap());
        let h = History::open(&dir.path().join("state"), locks).unwrap();
        (dir, h)
    }

    /// A successful full sync of account `a` that ended at `end`.
    fn full_sync(end: f64) -> Record {
        Record {
            account: "a".into(),
            kind: "full".into(),
            end,
            duration: 1.0,
            error: None,
        }
    }

    /// [`setup`] with the history lock held as by another process, and a
    /// short wait for it.
    fn setup_held_elsewhere() -> (tempfile::TempDir, History, crate::lock::LockGuard) {
        let (dir, mut h) = setup();
        h.wait = Duration::from_millis(100);
        let held = LockDir::open(dir.path().join("locks"))
            .unwrap()
            .acquire(LOCK, Duration::ZERO, "another process's entry", None)
            .unwrap();
        (dir, h, held)
    }

    #[test]
    fn records_success_error_and_counts_the_day() {
        let (_d, h) = setup();
        let now = 1_700_000_000.0;
        h.record(&Record {
            account: "a".into(),
            kind: "full".into(),
            end: now,
            duration: 2.0,
            error: None,
        })
        .unwrap();
        h.record(&Record {
            account: "a".into(),
            kind: "inbox".into(),
            end: now + 10.0,
            duration: 1.0,
            error: Some((ErrorKind::Network, "cannot connect".into())),
        })
        .unwrap();
        let all = h.load().unwrap();
        let a = &all["a"];
        assert_eq!(a.last_success, Some(now));
        assert_eq!(a.last_sync, Some(now + 10.0));
        assert_eq!(a.syncs_today, 2);
        assert_eq!(a.last_error.as_ref().unwrap().kind, ErrorKind::Network);
        assert_eq!(a.last_type.as_deref(), Some("inbox"));
        // The failed inbox sync brought nothing up to date.
        assert_eq!((a.last_full, a.last_inbox), (Some(now), Some(now)));
        h.record(&Record {
            account: "a".into(),
            kind: "inbox".into(),
            end: now + 20.0,
            duration: 1.0,
            error: None,
        })
        .unwrap();
        let a = &h.load().unwrap()["a"];
        assert_eq!((a.last_full, a.last_inbox), (Some(now), Some(now + 20.0)));
        // A new day starts a new count.
        h.record(&Record {
            account: "a".into(),
            kind: "full".into(),
            end: now + 86_400.0 * 2.0,
            duration: 1.0,
            error: None,
        })
        .unwrap();
        assert_eq!(h.load().unwrap()["a"].syncs_today, 1);
    }

    #[test]
    fn a_count_from_an_earlier_day_is_not_today() {
        let (_d, h) = setup();
        let then = 1_700_000_000.0;
        for end in [then, then + 1.0] {
            h.record(&Record {
                account: "a".into(),
                kind: "full".into(),
                end,
                duration: 1.0,
                error: None,
            })
            .unwrap();
        }
        assert_eq!(h.load_as_of(then + 60.0).unwrap()["a"].syncs_today, 2);
        let later = h.load_as_of(then + 86_400.0 * 2.0).unwrap();
        assert_eq!(later["a"].syncs_today, 0);
        assert_eq!(later["a"].last_sync, Some(then + 1.0));
    }

    #[test]
    fn file_is_private_and_corruption_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, h) = setup();
        h.record(&Record {
            account: "a".into(),
            kind: "full".into(),
            end: 1.0,
            duration: 1.0,
            error: None,
        })
        .unwrap();
        let mode = fs::metadata(h.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::write(h.path(), b"{not json").unwrap();
        let e = h.load().unwrap_err();
        assert!(
            e.message.contains("history.json") && e.message.contains("corrupt"),
            "{e}"
        );
        // Recording starts a new file instead of failing forever, and keeps
        // the corrupt one.
        let notice = h
            .record(&Record {
                account: "b".into(),
                kind: "full".into(),
                end: 2.0,
                duration: 1.0,
                error: None,
            })
            .unwrap();
        let notice = notice.unwrap();
        let kept = notice
            .split_once(" is kept as ")
            .and_then(|(_, rest)| rest.split_once(", and a new one"))
            .map(|(kept, _)| PathBuf::from(kept))
            .expect(&notice);
        assert_eq!(fs::read(&kept).unwrap(), b"{not json");
        let all = h.load().unwrap();
        assert!(all.contains_key("b") && !all.contains_key("a"), "{all:?}");
        // A second corrupt file is kept too, next to the first.
        fs::write(h.path(), b"[").unwrap();
        let second = h
            .record(&Record {
                account: "c".into(),
                kind: "full".into(),
                end: 3.0,
                duration: 1.0,
                error: None,
            })
            .unwrap()
            .unwrap();
        assert!(!second.contains(&kept.display().to_string()), "{second}");
        assert_eq!(fs::read(&kept).unwrap(), b"{not json");
    }

    /// The history file alone, as [`History::load`] gives it.
    fn saved(h: &History) -> BTreeMap<String, AccountHistory> {
        h.load_file()
            .unwrap()
            .into_iter()
            .map(|(account, stored)| (account, stored.history))
            .collect()
    }

    fn pending_files(h: &History) -> Vec<PathBuf> {
        fs::read_dir(h.path().parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(PENDING)
            })
            .collect()
    }

    /// Neovim waits only so long at exit; an entry whose process gives up
    /// on the lock (or dies waiting) is kept, shown, and merged later.
    #[test]
    fn an_entry_is_kept_while_another_process_holds_the_lock() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, h, held) = setup_held_elsewhere();
        let first = Record {
            account: "a".into(),
            kind: "full".into(),
            end: 1_700_000_000.0,
            duration: 2.0,
            error: None,
        };
        assert_eq!(h.record(&first).unwrap(), None);
        assert!(!h.path().exists());
        let pending = pending_files(&h);
        assert_eq!(pending.len(), 1, "{pending:?}");
        let mode = fs::metadata(&pending[0]).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(h.load().unwrap()["a"].last_success, Some(first.end));

        drop(held);
        let second = Record {
            end: first.end + 5.0,
            kind: "inbox".into(),
            ..first.clone()
        };
        assert_eq!(h.record(&second).unwrap(), None);
        assert!(pending_files(&h).is_empty());
        let file = saved(&h);
        assert_eq!(file["a"].syncs_today, 2);
        assert_eq!(file["a"].last_type.as_deref(), Some("inbox"));
        assert_eq!(file, h.load().unwrap());
    }

    /// Another process's merge replaces the history file, then removes the
    /// pending files it took in. A read in between (its pending file
    /// restored here) counts each entry once, and a merge cut short there
    /// leaves files the next merge removes without taking them in again.
    /// Older versions still read the file, and names of merges long past
    /// are let go.
    #[test]
    fn a_merge_by_another_process_is_never_counted_twice() {
        let (dir, h, held) = setup_held_elsewhere();
        let other = History::open(
            h.path().parent().unwrap(),
            Arc::new(LockDir::open(dir.path().join("locks")).unwrap()),
        )
        .unwrap();
        // Far from a midnight: the entries count for one day.
        let now = 1_700_000_000.0;
        h.record(&full_sync(now)).unwrap();
        let [left] = pending_files(&h).try_into().unwrap();
        let bytes = fs::read(&left).unwrap();
        drop(held);
        other.record(&full_sync(now + 1.0)).unwrap();
        assert!(pending_files(&h).is_empty());
        fs::write(&left, &bytes).unwrap();
        assert_eq!(h.load().unwrap()["a"].syncs_today, 2);
        assert_eq!(other.load().unwrap()["a"].syncs_today, 2);

        h.record(&full_sync(now + 2.0)).unwrap();
        assert!(pending_files(&h).is_empty());
        assert_eq!(saved(&h)["a"].syncs_today, 3);
        assert_eq!(h.load().unwrap()["a"].syncs_today, 3);
        let old: BTreeMap<String, AccountHistory> =
            serde_json::from_slice(&fs::read(h.path()).unwrap()).unwrap();
        assert_eq!(old, saved(&h), "as an older version reads it");

        let mut file = h.load_file().unwrap();
        let names = &mut file.get_mut("a").unwrap().merged;
        assert_eq!(names.len(), 3, "{names:?}");
        for t in names.values_mut() {
            *t -= MERGED_KEEP + 1.0;
        }
        h.write(&file, |_| ()).unwrap();
        h.record(&full_sync(now + 3.0)).unwrap();
        assert_eq!(h.load_file().unwrap()["a"].merged.len(), 1);
        assert_eq!(h.load().unwrap()["a"].syncs_today, 4);
    }

    /// Neovim quits once the entry is saved, not once it is merged: the
    /// caller hears of the save while another process still holds the lock,
    /// and never when nothing could be saved.
    #[test]
    fn the_save_is_told_before_the_merge_and_only_when_it_worked() {
        use std::cell::Cell;
        let (_dir, h, held) = setup_held_elsewhere();
        let entry = Record {
            account: "a".into(),
            kind: "full".into(),
            end: 1_700_000_000.0,
            duration: 2.0,
            error: None,
        };
        let told = Cell::new(0);
        let saved = h.record_held(h.hold(entry.clone()), || {
            assert_eq!(pending_files(&h).len(), 1, "told before the save");
            assert!(!h.path().exists(), "told after the merge");
            told.set(told.get() + 1);
        });
        assert_eq!(saved.unwrap(), None);
        assert_eq!(told.get(), 1);
        drop(held);

        /// Counts its drops: the closure's guard.
        struct Guard<'a>(&'a Cell<u32>);
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        fs::remove_dir_all(h.path().parent().unwrap()).unwrap();
        let dropped = Cell::new(0);
        let guard = Guard(&dropped);
        let saved = h.record_held(h.hold(entry.clone()), move || {
            drop(guard);
            panic!("told of a save that failed");
        });
        assert!(saved.is_err());
        assert_eq!(
            dropped.get(),
            1,
            "the guard is let go once the entry is given up"
        );
    }

    /// Pending entries may be merged after later ones: any order gives the
    /// same history.
    #[test]
    fn entries_merged_in_any_order_give_one_history() {
        let t = 1_700_000_000.0;
        let entry = |end: f64, kind: &str, error: Option<ErrorKind>| Record {
            account: "a".into(),
            kind: kind.into(),
            end,
            duration: 1.0,
            error: error.map(|k| (k, format!("{k:?} at {end}"))),
        };
        let entries = [
            entry(t - 86_400.0 * 2.0, "full", None),
            entry(t, "full", None),
            entry(t + 10.0, "inbox", Some(ErrorKind::Network)),
            entry(t + 5.0, "inbox", Some(ErrorKind::Timeout)),
            entry(t + 20.0, "folder", None),
        ];
        let mut first: Option<BTreeMap<String, AccountHistory>> = None;
        // Every rotation, forwards and backwards.
        for start in 0..entries.len() {
            for reverse in [false, true] {
                let mut order: Vec<&Record> = entries.iter().cycle().skip(start).take(5).collect();
                if reverse {
                    order.reverse();
                }
                let mut all = BTreeMap::new();
                for r in order {
                    apply(&mut all, r, t + 100.0);
                }
                match &first {
                    None => first = Some(all),
                    Some(f) => assert_eq!(f, &all, "start {start}, reverse {reverse}"),
                }
            }
        }
        let a = &first.unwrap()["a"];
        assert_eq!(a.syncs_today, 4);
        assert_eq!(a.day, local_date(t));
        assert_eq!(a.last_sync, Some(t + 20.0));
        assert_eq!(a.last_type.as_deref(), Some("folder"));
        assert_eq!(a.last_success, Some(t + 20.0));
        assert_eq!(a.last_error.as_ref().unwrap().time, t + 10.0);
        assert_eq!(a.last_error.as_ref().unwrap().kind, ErrorKind::Network);
    }

    #[test]
    fn a_corrupt_pending_entry_is_kept_aside_and_named() {
        let (_d, h) = setup();
        let bad = h.path().with_file_name(format!("{PENDING}1-2-3"));
        fs::write(&bad, b"{").unwrap();
        let notice = h
            .record(&Record {
                account: "a".into(),
                kind: "full".into(),
                end: 1.0,
                duration: 1.0,
                error: None,
            })
            .unwrap()
            .unwrap();
        assert!(
            notice.starts_with(&format!(
                "a saved sync history entry {} was corrupt and is left out; it is kept as ",
                bad.display()
            )),
            "{notice}"
        );
        assert!(pending_files(&h).is_empty());
        assert_eq!(h.load().unwrap()["a"].syncs_today, 1);
        // An empty one (cut off by a power loss) is no entry, and no alarm.
        fs::write(&bad, b"").unwrap();
        assert_eq!(h.load().unwrap()["a"].syncs_today, 1);
        assert!(pending_files(&h).is_empty());
    }

    /// One entry written while the clock was set a month ahead must not
    /// hold "last sync" (and the day's count) until that date.
    #[test]
    fn a_time_from_a_clock_set_ahead_does_not_hold_the_history() {
        let t = 1_700_000_000.0;
        let entry = |end: f64| Record {
            account: "a".into(),
            kind: "inbox".into(),
            end,
            duration: 1.0,
            error: None,
        };
        let mut all = BTreeMap::new();
        apply(&mut all, &entry(t + 30.0 * 86_400.0), t + 30.0 * 86_400.0);
        apply(&mut all, &entry(t), t);
        let a = &all["a"];
        assert_eq!((a.last_sync, a.last_success), (Some(t), Some(t)));
        assert_eq!((a.day.as_str(), a.syncs_today), (local_date(t).as_str(), 1));
        // Within a minute it is an ordinary reordering: the later one stays.
        apply(&mut all, &entry(t + 30.0), t);
        apply(&mut all, &entry(t + 1.0), t);
        assert_eq!(all["a"].last_sync, Some(t + 30.0));
        assert_eq!(all["a"].syncs_today, 3);
    }

    #[test]
    fn writers_in_many_threads_lose_nothing() {
        let (_d, h) = setup();
        let h = Arc::new(h);
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        let name = format!("acct{i}");
                        h.record(&Record {
                            account: name.clone(),
                            kind: "full".into(),
                            end: 5.0,
                            duration: 1.0,
                            error: None,
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Had a thread given up on the lock, this merge takes its entry in.
        h.record(&Record {
            account: "last".into(),
            kind: "full".into(),
            end: 6.0,
            duration: 1.0,
            error: None,
        })
        .unwrap();
        assert!(pending_files(&h).is_empty());
        let all = saved(&h);
        assert_eq!(all.len(), 5);
        assert!((0..4).all(|i| all[&format!("acct{i}")].syncs_today == 10));
    }

    /// An entry whose pending file could not be written, and that could
    /// not be merged then either (another process held the lock), is kept
    /// in memory and taken in by the next merge, once; one let go of is
    /// gone.
    #[test]
    fn an_entry_that_could_not_be_saved_is_merged_by_the_next_update() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, h, held) = setup_held_elsewhere();
        let state = h.path().parent().unwrap().to_path_buf();
        fs::remove_dir_all(&state).unwrap();
        assert!(h.record(&full_sync(1_700_000_000.0)).is_err());
        assert_eq!(h.load().unwrap()["a"].syncs_today, 1, "kept in memory");
        drop(held);

        fs::create_dir(&state).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
        let forgotten = h.hold(full_sync(1_700_000_001.0));
        assert_eq!(h.load().unwrap()["a"].syncs_today, 2);
        h.forget(forgotten);
        h.record(&full_sync(1_700_000_002.0)).unwrap();
        let file = saved(&h);
        assert_eq!(file["a"].syncs_today, 2, "{file:?}");
        assert_eq!(file, h.load().unwrap(), "nothing left in memory");
        h.record(&full_sync(1_700_000_003.0)).unwrap();
        assert_eq!(saved(&h)["a"].syncs_today, 3, "taken in once");
    }

    /// An entry is in the history from the moment it is held (before the
    /// sync's end is announced), and a reader of this process sees it in
    /// exactly one place as it moves to its pending file and into the
    /// history file: counts only grow, and never pass the entries held.
    #[test]
    fn a_reader_here_sees_each_entry_once_from_its_hold_on() {
        use std::sync::atomic::AtomicBool;
        let (_d, h) = setup();
        let h = Arc::new(h);
        let entry = Record {
            account: "a".into(),
            kind: "full".into(),
            end: 1_700_000_000.0,
            duration: 1.0,
            error: None,
        };
        let first = h.hold(entry.clone());
        assert_eq!(h.load().unwrap()["a"].syncs_today, 1, "held, not saved");
        h.record_held(first, || ()).unwrap();
        assert_eq!(h.load().unwrap()["a"].syncs_today, 1);

        let given = Arc::new(AtomicU64::new(1));
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (h, given, done) = (h.clone(), given.clone(), done.clone());
            std::thread::spawn(move || {
                let mut seen = 0;
                let mut reads = 0;
                while !done.load(Ordering::SeqCst) || reads == 0 {
                    let count = u64::from(h.load().unwrap()["a"].syncs_today);
                    // Read after: an entry is counted as given before it is held.
                    let limit = given.load(Ordering::SeqCst);
                    assert!(count >= seen, "a count went down: {seen} then {count}");
                    assert!(count <= limit, "{count} counted of {limit} given");
                    seen = count;
                    reads += 1;
                }
            })
        };
        for _ in 0..200 {
            given.fetch_add(1, Ordering::SeqCst);
            let held = h.hold(entry.clone());
            h.record_held(held, || ()).unwrap();
        }
        done.store(true, Ordering::SeqCst);
        reader.join().unwrap();
        assert_eq!(h.load().unwrap()["a"].syncs_today, 201);
        assert_eq!(saved(&h)["a"].syncs_today, 201);
    }
}
