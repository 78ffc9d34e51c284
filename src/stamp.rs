//! File stamps: how the engine tells that a file or directory may have
//! changed since it last read it, without reading it again.
//!
//! Two caches use them: the parsed mbsyncrc (read at every sync start) and
//! the Maildir folder counts (two directories per folder after every sync).
//! Both follow one rule, kept here so that it is written once:
//!
//! * the stamp is taken **before** the read, so a change during the read
//!   shows as a new stamp next time;
//! * a result is kept only if its stamp is [settled](Stamp::settled): file
//!   times come from a coarse clock (a tick of a few milliseconds, or whole
//!   seconds on some file systems), so a second change within the same tick
//!   as the read could leave the stamp exactly as it was.
//!
//! A stamp holds the inode's identity, size, modification time and change
//! time. The change time cannot be set from user space, so a file written
//! again and given back its old modification time (as `cp -p` or `touch -d`
//! do) still gets a new stamp.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a stamp must be unchanged before a result read under it is
/// kept (see the module docs).
pub const SETTLE: Duration = Duration::from_secs(2);

/// What identifies one state of a file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    /// Seconds and nanoseconds since the epoch, as `stat` gives them.
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The stamp of `path` (following a symbolic link, as a read would), or
    /// `None` when it cannot be read: then nothing can be kept for it.
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// Whether both times are at least `settle` before `now`, so that no
    /// later change can fall into the same clock tick and leave the stamp as
    /// it is. A clock before 1970 settles nothing.
    pub fn settled(&self, now: SystemTime, settle: Duration) -> bool {
        let Some(cutoff) = now
            .checked_sub(settle)
            .and_then(|c| c.duration_since(UNIX_EPOCH).ok())
        else {
            return false;
        };
        let cutoff = (cutoff.as_secs() as i64, i64::from(cutoff.subsec_nanos()));
        self.mtime.max(self.ctime) <= cutoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_file_settles_after_the_delay() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, "one").unwrap();
        let stamp = Stamp::of(&file).unwrap();
        let now = SystemTime::now();
        assert!(!stamp.settled(now, SETTLE), "just written");
        assert!(stamp.settled(now + SETTLE, SETTLE));
        assert!(stamp.settled(now, Duration::ZERO));
    }

    #[test]
    fn an_old_modification_time_does_not_settle_a_rewrite() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, "two").unwrap();
        // Written now, modification time put back as `cp -p` would: the
        // change time is now, so the stamp is not settled. A stamp kept
        // earlier was settled, so its change time differs from this one.
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let stamp = Stamp::of(&file).unwrap();
        assert!(stamp.mtime < stamp.ctime);
        assert!(!stamp.settled(SystemTime::now(), SETTLE));
    }

    #[test]
    fn a_missing_path_has_no_stamp() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(Stamp::of(&tmp.path().join("gone")), None);
    }
}
