//! The engine's log file (`stdpath('log')/himalaya-sync.log` from Neovim).
//!
//! One line per event, appended with a timestamp; the file is created 0600
//! and rotated to `.1` past 1 MiB. Only what callers pass is written, and
//! the callers pass mbsync lines through `redact` first: no password or
//! token ever reaches the log.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use std::sync::mpsc;
use std::time::Duration;

use once_cell::sync::OnceCell;
use parking_lot::Mutex;

use crate::error::{Error, Result};

const MAX_BYTES: u64 = 1024 * 1024;

static PATH: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Starts logging to `path` (None stops). The folder must exist.
pub fn open(path: Option<&Path>) -> Result<()> {
    if let Some(p) = path {
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = parent {
            // Folders made here are private; an existing one is left as the
            // user made it (stdpath('log') is normally there already).
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(format!("cannot create log folder {}", dir.display()), e))?;
        }
    }
    *PATH.lock() = path.map(Path::to_path_buf);
    Ok(())
}

/// Queues one line for the writer thread. Never blocks and never fails:
/// callers hold locks or run on Neovim's main loop, and a slow or broken
/// log folder must not stall a sync or the editor.
pub fn write(level: &str, message: &str) {
    if PATH.lock().is_none() {
        return;
    }
    let line = format!(
        "{} {level:<5} [{}] {}",
        timestamp(),
        std::process::id(),
        message.replace(['\n', '\r'], " ")
    );
    send(Msg::Line(line));
}

/// Waits up to `within` until every line queued so far is written; false
/// when the writer, which runs at the lowest priority, did not get to them
/// in time. Called at shutdown, so that the last lines (what Neovim's exit
/// stopped) reach the file before the process ends.
pub fn flush(within: Duration) -> bool {
    let Some(Some(tx)) = WRITER.get() else {
        return true;
    };
    let (done, wait) = mpsc::channel();
    if tx.lock().send(Msg::Flush(done)).is_err() {
        return true;
    }
    wait.recv_timeout(within).is_ok()
}

enum Msg {
    Line(String),
    Flush(mpsc::Sender<()>),
}

/// The writer thread's queue, made at the first line; None if the thread
/// could not be started.
static WRITER: OnceCell<Option<Mutex<mpsc::Sender<Msg>>>> = OnceCell::new();

fn send(msg: Msg) {
    let writer = WRITER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("himalaya-sync-log".into())
            .spawn(move || {
                // Lines come from the editor's thread too (a sync's start,
                // a cancel). A woken thread may take the CPU of the thread
                // that woke it at once: at normal priority every line cost
                // the editor the time to open and append to the file (0.15
                // ms, measured) before it went on. Lines are not urgent.
                crate::sched::idle_priority();
                for msg in rx {
                    match msg {
                        Msg::Line(line) => append(&line),
                        Msg::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    if let Some(tx) = writer {
        let _ = tx.lock().send(msg);
    }
}

fn append(line: &str) {
    let Some(path) = PATH.lock().clone() else {
        return;
    };
    if fs::metadata(&path).is_ok_and(|m| m.len() > MAX_BYTES) {
        let mut old = path.clone().into_os_string();
        old.push(".1");
        let _ = fs::rename(&path, old);
    }
    let Ok(mut f) = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    else {
        return;
    };
    if !private_enough(&f) {
        return;
    }
    let _ = writeln!(f, "{line}");
}

/// Whether the open log file may take a line: it must be ours (a file
/// someone else made there would get our messages), and a mode that lets
/// others read it is narrowed to 0600 first.
fn private_enough(f: &fs::File) -> bool {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = f.metadata() else {
        return false;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    if meta.uid() != unsafe { libc::geteuid() } {
        return false;
    }
    meta.mode() & 0o077 == 0 || f.set_permissions(fs::Permissions::from_mode(0o600)).is_ok()
}

extern "C" {
    fn tzset();
}

/// Reads the time zone (`TZ`) now, on the calling thread. glibc reads it
/// once, at the first local-time conversion; inside Neovim that must not
/// happen on an engine thread (see [`crate::env`]).
pub fn load_time_zone() {
    // SAFETY: tzset takes no arguments; it reads the environment and sets
    // libc's time-zone globals under libc's own lock.
    unsafe { tzset() };
}

/// Local time as `YYYY-MM-DD HH:MM:SS`.
fn timestamp() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: localtime_r only writes into the tm we pass.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return t.to_string();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_private_one_line_entries_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/h.log");
        open(Some(&p)).unwrap();
        write("info", "hello\nworld");
        assert!(flush(Duration::from_secs(60)), "the writer stalled");
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains("info  ["), "{text}");
        assert!(text.trim_end().ends_with("hello world"), "{text}");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::write(&p, vec![b'x'; (MAX_BYTES + 1) as usize]).unwrap();
        write("info", "after rotation");
        assert!(flush(Duration::from_secs(60)), "the writer stalled");
        assert!(fs::read_to_string(&p).unwrap().contains("after rotation"));
        assert!(dir.path().join("sub/h.log.1").exists());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("sub")), 0o700);
        // A log others can read is narrowed before the next line.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write("info", "private again");
        assert!(flush(Duration::from_secs(60)), "the writer stalled");
        assert_eq!(mode(&p), 0o600);
        assert!(fs::read_to_string(&p).unwrap().contains("private again"));
        // A log someone else owns gets nothing (only root can make one here).
        if std::os::unix::fs::chown(&p, Some(65534), Some(65534)).is_ok() {
            write("info", "for the owner only");
            assert!(flush(Duration::from_secs(60)), "the writer stalled");
            assert!(!fs::read_to_string(&p)
                .unwrap()
                .contains("for the owner only"));
        }
        open(None).unwrap();
        write("info", "not written");
        assert!(flush(Duration::from_secs(60)), "the writer stalled");
        assert!(!fs::read_to_string(&p).unwrap().contains("not written"));
    }
}
