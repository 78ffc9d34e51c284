//! Sync history per account, shared by every process on the machine and
//! kept across restarts: last success, last error, syncs today, duration.
//!
//! One JSON file in a private state directory. Every update is a
//! read-modify-write under the named lock `history` and lands with an atomic
//! rename, so concurrent Neovims never lose each other's entries and a crash
//! never leaves half a file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::lock::{ensure_private_dir, LockDir};

const FILE: &str = "history.json";
const LOCK: &str = "history";

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
    pub last_error: Option<LastError>,
    /// Seconds the last sync took.
    pub last_duration: Option<f64>,
    pub syncs_today: u32,
    /// Local date `syncs_today` counts for (YYYY-MM-DD).
    pub day: String,
}

/// One finished sync, as recorded.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub account: &'a str,
    pub kind: &'a str,
    pub end: f64,
    pub duration: f64,
    pub error: Option<(ErrorKind, &'a str)>,
}

/// The history file and the lock that guards it.
pub struct History {
    path: PathBuf,
    locks: Arc<LockDir>,
}

impl History {
    /// Uses `<dir>/history.json`; `dir` is created private (0700) if missing.
    pub fn open(dir: &Path, locks: Arc<LockDir>) -> Result<History> {
        ensure_private_dir(dir, "state directory")?;
        Ok(History {
            path: dir.join(FILE),
            locks,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every account's history; an unreadable file is an error that names it.
    pub fn load(&self) -> Result<BTreeMap<String, AccountHistory>> {
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

    /// Where a corrupt history is kept when a new one is started: a name of
    /// its own (the time), so that one kept before is not overwritten.
    fn corrupt_path(&self) -> PathBuf {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.path.with_file_name(format!("{FILE}.corrupt-{now}"))
    }

    /// Adds one finished sync. A corrupt file is moved aside (see
    /// [`History::load`]) rather than blocking the history forever, or
    /// being overwritten unseen: the returned notice says so. A file that
    /// cannot be read is left alone, and the entry is not saved.
    pub fn record(&self, r: &Record<'_>) -> Result<Option<String>> {
        let _guard =
            self.locks
                .acquire(LOCK, Duration::from_secs(5), "update sync history", None)?;
        let (mut all, notice) = match self.load() {
            Ok(all) => (all, None),
            Err(e) if e.kind == ErrorKind::Config => {
                let kept = self.corrupt_path();
                fs::rename(&self.path, &kept).map_err(|io| {
                    Error::io(format!("cannot move aside {}", self.path.display()), io)
                })?;
                let notice = format!(
                    "sync history {} was corrupt; it is kept as {}, and a new one was started",
                    self.path.display(),
                    kept.display()
                );
                (BTreeMap::new(), Some(notice))
            }
            Err(e) => return Err(e),
        };
        let day = local_date(r.end);
        let h = all.entry(r.account.to_string()).or_default();
        if h.day != day {
            h.day = day;
            h.syncs_today = 0;
        }
        h.syncs_today += 1;
        h.last_sync = Some(r.end);
        h.last_type = Some(r.kind.to_string());
        h.last_duration = Some(r.duration);
        match r.error {
            None => h.last_success = Some(r.end),
            Some((kind, message)) => {
                h.last_error = Some(LastError {
                    kind,
                    message: message.to_string(),
                    time: r.end,
                })
            }
        }
        self.write(&all)?;
        Ok(notice)
    }

    fn write(&self, all: &BTreeMap<String, AccountHistory>) -> Result<()> {
        let tmp = self
            .path
            .with_file_name(format!(".{FILE}.{}.tmp", std::process::id()));
        let context = || format!("cannot write {}", self.path.display());
        let data = serde_json::to_vec_pretty(all).map_err(|e| Error::io(context(), e))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io(context(), e))?;
        f.write_all(&data)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(context(), e))?;
        fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(context(), e)
        })
    }
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

    #[test]
    fn records_success_error_and_counts_the_day() {
        let (_d, h) = setup();
        let now = 1_700_000_000.0;
        h.record(&Record {
            account: "a",
            kind: "full",
            end: now,
            duration: 2.0,
            error: None,
        })
        .unwrap();
        h.record(&Record {
            account: "a",
            kind: "inbox",
            end: now + 10.0,
            duration: 1.0,
            error: Some((ErrorKind::Network, "cannot connect")),
        })
        .unwrap();
        let all = h.load().unwrap();
        let a = &all["a"];
        assert_eq!(a.last_success, Some(now));
        assert_eq!(a.last_sync, Some(now + 10.0));
        assert_eq!(a.syncs_today, 2);
        assert_eq!(a.last_error.as_ref().unwrap().kind, ErrorKind::Network);
        assert_eq!(a.last_type.as_deref(), Some("inbox"));
        // A new day starts a new count.
        h.record(&Record {
            account: "a",
            kind: "full",
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
                account: "a",
                kind: "full",
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
            account: "a",
            kind: "full",
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
                account: "b",
                kind: "full",
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
                account: "c",
                kind: "full",
                end: 3.0,
                duration: 1.0,
                error: None,
            })
            .unwrap()
            .unwrap();
        assert!(!second.contains(&kept.display().to_string()), "{second}");
        assert_eq!(fs::read(&kept).unwrap(), b"{not json");
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
                            account: &name,
                            kind: "full",
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
        let all = h.load().unwrap();
        assert_eq!(all.len(), 4);
        assert!(all.values().all(|a| a.syncs_today == 10));
    }
}
