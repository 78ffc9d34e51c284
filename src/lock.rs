//! Named cross-process locks.
//!
//! A lock named `acct` is an `flock(2)` exclusive lock on the file
//! `<dir>/acct.lock`. The kernel is the only source of truth: a lock is held
//! exactly while some open file description has `LOCK_EX` on that file, and
//! the kernel drops it when the description is closed, including when the
//! holder crashes or is killed. So there is never a "stale" lock to break;
//! a dead holder's lock is free at once.
//!
//! # Holder note
//!
//! So that a waiter can say who is in the way, the holder writes a note into
//! the lock file after locking it and empties it before unlocking. The note
//! is `key=value` lines, for example:
//!
//! ```text
//! pid=1234
//! process=nvim
//! since=1712345678
//! purpose=sync full
//! ```
//!
//! `since` is in Unix seconds. In values, `\` is written `\\`, a newline
//! `\n` and a carriage return `\r`, so every field stays on one line.
//! Readers ignore unknown keys and treat missing ones as unknown. The note
//! is only a description: whether a lock is held always comes from the
//! kernel, never from the note (a killed holder leaves its note behind, and
//! a foreign holder such as `flock(1)` writes none).
//!
//! # Safety properties
//!
//! - The directory must be private: a real directory (not a symlink), owned
//!   by the effective user, with no group or other permissions. It is checked
//!   once when opened, and every later access goes through a descriptor of
//!   that checked directory, so renaming paths around it cannot redirect us.
//! - Lock files are opened with `O_NOFOLLOW`: a symlink planted at a lock
//!   path is refused, never followed, so we never create or truncate a file
//!   somewhere else.
//! - Lock files are never removed on release. Only [`LockDir::cleanup_stale`]
//!   unlinks them, and only while holding the lock; holders re-check after
//!   locking that the path still names the file they locked. Together this
//!   means two processes can never both believe they hold the same name (see
//!   [`LockDir::cleanup_stale`] for the argument).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, FileStat, Mode};
use nix::unistd::{self, UnlinkatFlags};
use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};

/// Environment variable that overrides the lock directory (used by tests).
const LOCK_DIR_ENV: &str = "HIMALAYA_SYNC_LOCK_DIR";
/// Our directory under the runtime and state directories.
const APP_DIR: &str = "himalaya-sync";
/// Suffix that turns a lock name into a file name.
const LOCK_SUFFIX: &str = ".lock";
/// Longest lock name accepted, in bytes. Well under `NAME_MAX` even with the
/// suffix, and long enough for any account or mailbox key we build.
const MAX_NAME_LEN: usize = 100;
/// How much of a holder note we read; a real note is far smaller.
const MAX_NOTE_LEN: u64 = 4096;
/// The longest wait, in seconds, accepted from a user anywhere (a day);
/// longer is surely a mistake.
pub const MAX_WAIT: f64 = 86_400.0;

/// First and longest pause between attempts in [`LockDir::acquire`]: short
/// at first so a lock released quickly is picked up quickly, then capped so
/// a long wait doesn't spin but still notices a release within 25 ms.
const FIRST_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_millis(25);

/// The rhythm of a lock wait: pauses between tries that grow from
/// [`FIRST_PAUSE`] to [`MAX_PAUSE`], until the timeout is used up.
struct Patience {
    /// None: a timeout too large to add to the clock, "wait forever".
    deadline: Option<Instant>,
    pause: Duration,
}

impl Patience {
    fn new(timeout: Duration) -> Patience {
        Patience {
            deadline: Instant::now().checked_add(timeout),
            pause: FIRST_PAUSE,
        }
    }

    /// The pause before the next try, or None when the time is up.
    fn next_pause(&mut self) -> Option<Duration> {
        let remaining = match self.deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => self.pause,
        };
        if remaining.is_zero() {
            return None;
        }
        let pause = self.pause.min(remaining);
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        Some(pause)
    }
}
/// How often [`LockDir::try_acquire`] starts over because the file it locked
/// was removed or replaced meanwhile. Each restart means another process
/// just worked on this lock, so after this many we report it as busy.
const MAX_REPLACED_RETRIES: usize = 50;
/// The kernel's table of file locks (Linux only; elsewhere we probe).
const PROC_LOCKS: &str = "/proc/locks";
/// How long a try waits out a shared lock on the file. Nobody holds one
/// but a look at the folder ([`LockDir::list`], in this process or
/// another), which probes a file with it for a few microseconds; without
/// this wait, a try that met a probe reported the free lock held "by
/// another process" (`acquire_lock(name, 0)` failed 4 times in 150,000
/// while another Neovim called `list_locks()` in a loop). A holder that
/// keeps a shared lock (`flock -s`) costs a try this long before it is
/// reported.
const PROBE_GRACE: Duration = Duration::from_millis(2);
/// The first pause while waiting out a probe; later ones double.
const PROBE_PAUSE: Duration = Duration::from_micros(50);
/// The buffer `/proc/locks` is read into: well over the page the kernel
/// fills per read, so the first read takes all it will give at once.
const PROC_LOCKS_READ: usize = 64 * 1024;

/// The directory where locks live when the caller doesn't choose one.
///
/// In order: `$HIMALAYA_SYNC_LOCK_DIR`; `$XDG_RUNTIME_DIR/himalaya-sync/locks`
/// when that variable names an existing directory (a per-user tmpfs, cleared
/// at logout); otherwise `${XDG_STATE_HOME:-$HOME/.local/state}/nvim/
/// himalaya-sync/locks`, which is Neovim's `stdpath("state")` for the default
/// app name, so a plain process and Neovim pick the same directory.
pub fn default_dir() -> Result<PathBuf> {
    dir_from_env(|name| crate::env::var_os(name))
}

/// [`default_dir`] with the environment passed in, so it can be tested
/// without mutating the process environment.
fn dir_from_env(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    if let Some(value) = var(LOCK_DIR_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        if !path.is_absolute() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{LOCK_DIR_ENV} must be an absolute path, got {path:?}"),
            ));
        }
        return Ok(path);
    }
    // The XDG base directory spec says relative paths in these variables are
    // invalid and must be ignored.
    let absolute = |name: &str| var(name).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(runtime) = absolute("XDG_RUNTIME_DIR").filter(|p| p.is_dir()) {
        return Ok(runtime.join(APP_DIR).join("locks"));
    }
    let state = absolute("XDG_STATE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".local").join("state")))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "cannot choose a lock directory: HOME is not set to an absolute path and \
                     neither XDG_RUNTIME_DIR nor XDG_STATE_HOME is usable; set {LOCK_DIR_ENV}"
                ),
            )
        })?;
    Ok(state.join("nvim").join(APP_DIR).join("locks"))
}

/// Checks that `name` can be used as a lock name.
///
/// A name becomes a file name, so it must not be able to reach outside the
/// directory or hide: no `/`, no NUL or other control characters, no `..`,
/// no leading `.`, not empty and at most 100 bytes.
pub fn validate_name(name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        "it must not be empty".to_owned()
    } else if name.len() > MAX_NAME_LEN {
        format!(
            "it is {} bytes long; the limit is {MAX_NAME_LEN}",
            name.len()
        )
    } else if name.contains('/') {
        "'/' is not allowed".to_owned()
    } else if name.contains('\0') {
        "'\\0' is not allowed".to_owned()
    } else if let Some(c) = name.chars().find(|c| c.is_control()) {
        format!("control character {c:?} is not allowed")
    } else if name == "." || name == ".." {
        "\".\" and \"..\" are not allowed".to_owned()
    } else if name.contains("..") {
        "\"..\" is not allowed".to_owned()
    } else if name.starts_with('.') {
        "it must not start with '.'".to_owned()
    } else {
        return Ok(());
    };
    Err(Error::invalid(format!(
        "invalid lock name {}: {problem}",
        crate::error::quoted(name, 2 * MAX_NAME_LEN)
    )))
}

/// A checked, private directory of lock files.
#[derive(Debug)]
pub struct LockDir {
    /// The path as given; used for messages and for listing entries.
    path: PathBuf,
    /// The directory opened after checking it. Files are opened, inspected
    /// and removed relative to this, so they are always in the directory we
    /// checked even if the path is later renamed or replaced.
    fd: OwnedFd,
}

impl LockDir {
    /// Opens the lock directory at `path`, creating it if missing.
    ///
    /// A missing directory is created with mode 0700; so is a missing direct
    /// parent named `himalaya-sync`, which holds nothing but our private
    /// data. Other missing ancestors are created normally. The directory must
    /// then be a real directory, owned by the effective user, with mode
    /// `0700` or stricter; otherwise this fails with a [`ErrorKind::Config`]
    /// error saying what is wrong and how to fix it.
    pub fn open(path: impl Into<PathBuf>) -> Result<LockDir> {
        let path = path.into();
        if path.as_os_str().is_empty() {
            return Err(Error::invalid("lock directory path is empty"));
        }
        if path.is_relative() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "lock directory {} is a relative path; use an absolute one",
                    path.display()
                ),
            ));
        }
        create_missing_dir(&path)?;
        let checked = stat::lstat(&path).map_err(|e| {
            Error::io(
                format!("cannot inspect lock directory {}", path.display()),
                e,
            )
        })?;
        check_private_dir(&path, &checked, "lock directory")?;
        let fd = fcntl::open(
            &path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(format!("cannot open lock directory {}", path.display()), e))?;
        // The checks above were on the path; make sure the descriptor we keep
        // is the very directory that passed them.
        let opened = stat::fstat(&fd).map_err(|e| {
            Error::io(
                format!("cannot inspect lock directory {}", path.display()),
                e,
            )
        })?;
        if (opened.st_dev, opened.st_ino) != (checked.st_dev, checked.st_ino) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "lock directory {} was replaced while it was being opened; try again",
                    path.display()
                ),
            ));
        }
        Ok(LockDir { path, fd })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the lock `name` if nobody holds it; `Ok(None)` if somebody does.
    /// A look at the folder that probes the file meanwhile is waited out
    /// (see [`PROBE_GRACE`]).
    ///
    /// `purpose` is recorded in the holder note for others to see. Locks are
    /// per open file, not per process: a second attempt from this same
    /// process fails like anybody else's. Also `Ok(None)` if the file keeps
    /// being removed under us, which only happens while others are busy
    /// with this lock.
    pub fn try_acquire(&self, name: &str, purpose: &str) -> Result<Option<LockGuard>> {
        self.try_acquire_within(name, purpose, PROBE_GRACE)
    }

    /// [`LockDir::try_acquire`], waiting out a shared lock up to `grace`.
    fn try_acquire_within(
        &self,
        name: &str,
        purpose: &str,
        grace: Duration,
    ) -> Result<Option<LockGuard>> {
        validate_name(name)?;
        for _ in 0..MAX_REPLACED_RETRIES {
            let file = self.open_lock_file(name)?;
            match lock_exclusive(&file, grace) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) => return Err(Error::io(format!("cannot lock {}", self.shown(name)), e)),
            }
            // Between our open and our flock, `cleanup_stale` may have
            // unlinked the file (and someone may have created a new one). A
            // lock on an unlinked inode protects nothing, so start over.
            if !self.still_names(&file, name)? {
                continue;
            }
            let guard = LockGuard {
                name: name.to_owned(),
                file,
            };
            guard.write_note(purpose).map_err(|e| {
                Error::io(
                    format!("cannot record the holder in {}", self.shown(name)),
                    e,
                )
            })?;
            return Ok(Some(guard));
        }
        Ok(None)
    }

    /// Takes the lock `name`, waiting up to `timeout` for it.
    ///
    /// A zero timeout tries once. While waiting, retries with pauses that
    /// grow from 1 ms to 25 ms. Fails with [`ErrorKind::Locked`], naming the
    /// holder, when the time is up, and with [`ErrorKind::Cancelled`] within
    /// one pause of `cancel` becoming true.
    pub fn acquire(
        &self,
        name: &str,
        timeout: Duration,
        purpose: &str,
        cancel: Option<&AtomicBool>,
    ) -> Result<LockGuard> {
        validate_name(name)?;
        let mut patience = Patience::new(timeout);
        loop {
            if let Some(guard) = self.try_unless_cancelled(name, purpose, cancel)? {
                return Ok(guard);
            }
            match patience.next_pause() {
                Some(pause) => thread::sleep(pause),
                None => return Err(self.locked_error(name, timeout)),
            }
        }
    }

    /// [`LockDir::acquire`] for async code: the pauses are timers, so a
    /// wait holds no thread. (Waits on blocking threads would fill the
    /// runtime's pool: enough of them and nothing else that needs one
    /// could run, syncs included.) Each try is a few calls on a small
    /// local file, done on the calling worker (with a pause of at most
    /// [`PROBE_GRACE`] when a look at the folder is in the way).
    pub async fn acquire_async(
        &self,
        name: &str,
        timeout: Duration,
        purpose: &str,
        cancel: Option<&AtomicBool>,
    ) -> Result<LockGuard> {
        self.acquire_async_within(name, || timeout, purpose, cancel)
            .await
    }

    /// [`LockDir::acquire_async`] with a wait that may grow while it runs:
    /// `timeout` is asked again before every pause and counts from the
    /// start (a sync waiting for another process's lock waits longer when
    /// a more patient request joins it).
    pub async fn acquire_async_within(
        &self,
        name: &str,
        timeout: impl Fn() -> Duration,
        purpose: &str,
        cancel: Option<&AtomicBool>,
    ) -> Result<LockGuard> {
        validate_name(name)?;
        let started = Instant::now();
        let mut patience = Patience::new(timeout());
        loop {
            if let Some(guard) = self.try_unless_cancelled(name, purpose, cancel)? {
                return Ok(guard);
            }
            let timeout = timeout();
            patience.deadline = started.checked_add(timeout);
            match patience.next_pause() {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(self.locked_error(name, timeout)),
            }
        }
    }

    /// One try of a wait: cancelled when `cancel` says so, else
    /// [`LockDir::try_acquire`].
    fn try_unless_cancelled(
        &self,
        name: &str,
        purpose: &str,
        cancel: Option<&AtomicBool>,
    ) -> Result<Option<LockGuard>> {
        // The flag carries no data, it only asks us to stop, so relaxed
        // ordering is enough.
        if cancel.is_some_and(|flag| flag.load(Ordering::Relaxed)) {
            return Err(Error::new(
                ErrorKind::Cancelled,
                format!("waiting for lock {name:?} was cancelled"),
            ));
        }
        self.try_acquire(name, purpose)
    }

    /// Every lock file in the directory, sorted by name, with whether it is
    /// held and, if so, by whom.
    ///
    /// Held-ness comes from the kernel: on Linux from `/proc/locks`,
    /// elsewhere (or if `/proc/locks` can't be used for this directory) by
    /// trying a shared lock on the file. That try is also made for a file
    /// `/proc/locks` leaves out while its note names a living process,
    /// since the table can miss locks that changed while it was read.
    /// Files that are not regular files, including symlinks, are skipped
    /// and never followed.
    pub fn list(&self) -> Result<Vec<LockInfo>> {
        let kernel = self.kernel_locks();
        let mut infos = Vec::new();
        for name in self.lock_names()? {
            if let Some(info) = self.inspect(&name, kernel.as_ref())? {
                infos.push(info);
            }
        }
        Ok(infos)
    }

    /// Removes the lock files nobody holds; returns how many were removed.
    ///
    /// Each file is removed only while we hold its lock, after checking that
    /// the path still names the file we locked, and holders do the same
    /// check after locking. That is what rules out two holders of one name:
    ///
    /// - If a holder H locked the file first, our `LOCK_EX | LOCK_NB` fails
    ///   and we leave the file alone.
    /// - If we locked it first, H (who may have opened the file before we
    ///   unlinked it) can only get its lock after we drop ours, i.e. after
    ///   the unlink. H's check then finds the path gone or naming a new file
    ///   and H starts over with a fresh file.
    ///
    /// So whoever holds the lock on the file the path currently names is the
    /// only holder, and the path can't change under a holder because
    /// unlinking needs that same lock. (Someone deleting lock files by hand
    /// while they are held can still break this; nothing can prevent that.)
    pub fn cleanup_stale(&self) -> Result<usize> {
        let mut removed = 0;
        for name in self.lock_names()? {
            if self.remove_if_free(&name)? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes the lock file for `name` if nobody holds it.
    fn remove_if_free(&self, name: &str) -> Result<bool> {
        let file_name = lock_file_name(name);
        let file = match fcntl::openat(
            &self.fd,
            file_name.as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => File::from(fd),
            // Gone already, or a symlink that we must not follow (acquire
            // reports it to the user); either way not ours to remove.
            Err(Errno::ENOENT | Errno::ELOOP) => return Ok(false),
            Err(e) => return Err(Error::io(format!("cannot open {}", self.shown(name)), e)),
        };
        if !is_regular(&self.fstat(&file, name)?) {
            return Ok(false);
        }
        match flock(file.as_fd(), libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => {}
            Err(Errno::EWOULDBLOCK) => return Ok(false),
            Err(e) => return Err(Error::io(format!("cannot lock {}", self.shown(name)), e)),
        }
        if !self.still_names(&file, name)? {
            return Ok(false);
        }
        match unistd::unlinkat(&self.fd, file_name.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(Error::io(format!("cannot remove {}", self.shown(name)), e)),
        }
        // `file` closes here, after the unlink, releasing our lock.
    }

    /// Opens (creating if needed) the lock file for `name`, refusing
    /// symlinks, non-regular files and files owned by someone else.
    fn open_lock_file(&self, name: &str) -> Result<File> {
        let fd = fcntl::openat(
            &self.fd,
            lock_file_name(name).as_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| match e {
            Errno::ELOOP => Error::new(
                ErrorKind::Config,
                format!(
                    "lock file {0} is a symlink; refusing to follow it: remove it (rm {0})",
                    self.shown(name)
                ),
            ),
            // O_CREAT of a plain name fails so only when the directory
            // itself is gone.
            Errno::ENOENT => self.removed(),
            e => Error::io(format!("cannot open lock file {}", self.shown(name)), e),
        })?;
        let file = File::from(fd);
        let st = self.fstat(&file, name)?;
        if !is_regular(&st) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "lock file {} is not a regular file: remove it",
                    self.shown(name)
                ),
            ));
        }
        let me = unistd::geteuid().as_raw();
        if st.st_uid != me {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "lock file {0} is owned by uid {1}, not you (uid {me}): remove it (rm {0})",
                    self.shown(name),
                    st.st_uid
                ),
            ));
        }
        Ok(file)
    }

    /// Whether the path of lock `name` still names the file `file` is open on.
    fn still_names(&self, file: &File, name: &str) -> Result<bool> {
        let open = self.fstat(file, name)?;
        match stat::fstatat(
            &self.fd,
            lock_file_name(name).as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(now) => Ok(now.st_dev == open.st_dev && now.st_ino == open.st_ino),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(Error::io(format!("cannot inspect {}", self.shown(name)), e)),
        }
    }

    /// Describes lock `name`, or `None` if there is no such regular file.
    fn inspect(&self, name: &str, kernel: Option<&KernelLocks>) -> Result<Option<LockInfo>> {
        let file_name = lock_file_name(name);
        let st = match stat::fstatat(&self.fd, file_name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(Error::io(format!("cannot inspect {}", self.shown(name)), e)),
        };
        if !is_regular(&st) {
            return Ok(None);
        }
        let holding = match kernel.map(|kernel| kernel.holding(st.st_ino)) {
            Some(Holding::Free) if self.note_names_a_living_process(name) => {
                // `/proc/locks` comes in page-sized reads, and a lock taken
                // or released between two of them shifts the rest of the
                // table: a held lock can be missing from the snapshot. A
                // note naming a living process says this one may be, so
                // ask the kernel about this file directly. (A killed
                // holder's note names a dead process and is not probed:
                // probing takes a shared lock for a moment, which would
                // make a concurrent `try_acquire` of a free lock fail.)
                self.probe(name)?
            }
            Some(holding) => holding,
            None => self.probe(name)?,
        };
        let Holding::Held { pid: kernel_pid } = holding else {
            return Ok(Some(LockInfo {
                name: name.to_owned(),
                held: false,
                pid: None,
                process: None,
                since: None,
                purpose: None,
            }));
        };
        let note = self.read_note(name);
        // If the kernel names a different process than the note, the note
        // was left by an earlier holder that was killed, and the current
        // holder is something that writes no note; its details don't apply.
        let note = if kernel_pid.is_none() || kernel_pid == note.pid {
            note
        } else {
            Note::default()
        };
        let pid = kernel_pid.or(note.pid);
        Ok(Some(LockInfo {
            name: name.to_owned(),
            held: true,
            pid,
            process: pid.and_then(process_name_of).or(note.process),
            since: note.since,
            purpose: note.purpose,
        }))
    }

    /// Asks the kernel whether anybody holds `name` by trying a shared lock
    /// on a fresh descriptor; it fails exactly when someone holds
    /// `LOCK_EX`. Our shared lock lasts only until this returns.
    fn probe(&self, name: &str) -> Result<Holding> {
        let file = match fcntl::openat(
            &self.fd,
            lock_file_name(name).as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) => return Ok(Holding::Free),
            Err(e) => return Err(Error::io(format!("cannot open {}", self.shown(name)), e)),
        };
        match flock(file.as_fd(), libc::LOCK_SH | libc::LOCK_NB) {
            Ok(()) => {
                // Unlocked before closing, as LockGuard does: a child forked
                // meanwhile would otherwise hold our shared lock until exec.
                let _ = flock(file.as_fd(), libc::LOCK_UN);
                Ok(Holding::Free)
            }
            Err(Errno::EWOULDBLOCK) => Ok(Holding::Held { pid: None }),
            Err(e) => Err(Error::io(format!("cannot lock {}", self.shown(name)), e)),
        }
    }

    /// Whether the note of `name` names a process that is still running.
    fn note_names_a_living_process(&self, name: &str) -> bool {
        self.read_note(name)
            .pid
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }

    /// Reads the holder note of `name`. Best effort: the note only
    /// describes the holder, so an unreadable one is reported as unknown
    /// fields rather than failing a listing or an error message.
    fn read_note(&self, name: &str) -> Note {
        let Ok(fd) = fcntl::openat(
            &self.fd,
            lock_file_name(name).as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        ) else {
            return Note::default();
        };
        let mut bytes = Vec::new();
        if File::from(fd)
            .take(MAX_NOTE_LEN)
            .read_to_end(&mut bytes)
            .is_err()
        {
            return Note::default();
        }
        Note::parse(&String::from_utf8_lossy(&bytes))
    }

    /// A snapshot of which files in this directory the kernel says are
    /// locked, or `None` if `/proc/locks` can't be used here.
    ///
    /// `/proc/locks` names files by `MAJ:MIN:INODE`, where the device is the
    /// filesystem's, which is not always what `stat` reports (btrfs
    /// subvolumes, for one, report a different `st_dev`). Rather than
    /// decoding `st_dev`, we take a shared lock on the directory itself,
    /// find that lock's line (our pid, the directory's inode) and use its
    /// device text for the files. If that line can't be found, say because
    /// `/proc` is missing or belongs to another pid namespace, the table
    /// can't be trusted for this directory and callers probe instead.
    fn kernel_locks(&self) -> Option<KernelLocks> {
        let dir = fcntl::openat(
            &self.fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let dir_ino = stat::fstat(&dir).ok()?.st_ino;
        flock(dir.as_fd(), libc::LOCK_SH | libc::LOCK_NB).ok()?;
        // One read of a page holds a consistent table; reading with a
        // small first buffer (as `read_to_string` on a file of size 0
        // does) would split even a short table across two reads.
        let mut table = String::with_capacity(PROC_LOCKS_READ);
        File::open(PROC_LOCKS)
            .ok()?
            .read_to_string(&mut table)
            .ok()?;
        drop(dir);
        let entries: Vec<KernelLock<'_>> =
            table.lines().filter_map(parse_proc_locks_line).collect();
        let me = Some(std::process::id());
        let mut devices = entries
            .iter()
            .filter(|e| e.pid == me && e.ino == dir_ino)
            .map(|e| e.device);
        let device = devices.next()?;
        if devices.any(|other| other != device) {
            return None;
        }
        // Only exclusive locks hold one of ours: a shared one is somebody
        // looking (another process listing the locks), and the lock may be
        // free.
        let holders = entries
            .iter()
            .filter(|e| e.device == device && e.exclusive)
            .map(|e| (e.ino, e.pid))
            .collect();
        Some(KernelLocks { holders })
    }

    /// The names of all `*.lock` entries whose stem is a valid lock name,
    /// sorted. Listing goes by path; everything after that goes through the
    /// directory descriptor and re-checks each entry.
    fn lock_names(&self) -> Result<Vec<String>> {
        let context = || format!("cannot read lock directory {}", self.path.display());
        let mut names = Vec::new();
        let entries = fs::read_dir(&self.path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => self.removed(),
            _ => Error::io(context(), e),
        })?;
        for entry in entries {
            let file_name = entry.map_err(|e| Error::io(context(), e))?.file_name();
            let Some(name) = file_name.to_str().and_then(|f| f.strip_suffix(LOCK_SUFFIX)) else {
                continue;
            };
            if validate_name(name).is_ok() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// The `Locked` error for `name`, naming the current holder if known.
    fn locked_error(&self, name: &str, timeout: Duration) -> Error {
        let kernel = self.kernel_locks();
        let mut message = match self.inspect(name, kernel.as_ref()) {
            Ok(Some(info)) if info.held => describe_holder(&info),
            // Released (or unreadable) since our last attempt; we still
            // didn't get it in time.
            _ => format!("lock {name:?} is held by another process"),
        };
        if !timeout.is_zero() {
            message.push_str(&format!("; gave up after {}", human_duration(timeout)));
        }
        Error::new(ErrorKind::Locked, message)
    }

    fn fstat(&self, file: &File, name: &str) -> Result<FileStat> {
        stat::fstat(file).map_err(|e| Error::io(format!("cannot inspect {}", self.shown(name)), e))
    }

    /// The path of lock `name`'s file, for messages.
    fn shown(&self, name: &str) -> String {
        self.path.join(lock_file_name(name)).display().to_string()
    }

    /// Whether the directory was removed (it has no name left), as a
    /// logout removes `$XDG_RUNTIME_DIR`.
    pub fn is_removed(&self) -> bool {
        stat::fstat(&self.fd).is_ok_and(|st| st.st_nlink == 0)
    }

    /// The error once the directory was removed under a running process
    /// (a logout removes `$XDG_RUNTIME_DIR`). A new directory would not
    /// help: the locks held in the old one no longer exclude anybody, so
    /// only a restart brings back a sound state.
    fn removed(&self) -> Error {
        Error::new(
            ErrorKind::Config,
            format!(
                "the lock folder {} was removed while this process ran (a logout removes \
                 $XDG_RUNTIME_DIR): restart Neovim",
                self.path.display()
            ),
        )
    }
}

/// A held lock. Dropping it (or calling [`LockGuard::release`]) empties the
/// holder note, unlocks and closes the file. The file is left in place:
/// removing it on release would open the race described at
/// [`LockDir::cleanup_stale`].
#[derive(Debug)]
pub struct LockGuard {
    name: String,
    file: File,
}

impl LockGuard {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Releases the lock now; same as dropping the guard.
    pub fn release(self) {
        drop(self);
    }

    /// Replaces the holder note with one describing this process.
    fn write_note(&self, purpose: &str) -> std::io::Result<()> {
        let note = Note {
            pid: Some(std::process::id()),
            process: Some(own_process_name()),
            since: Some(unix_now()),
            purpose: Some(purpose.to_owned()),
        };
        let text = note.encode();
        self.file.write_all_at(text.as_bytes(), 0)?;
        // Cut only what a killed holder's longer note left behind: the file
        // is empty as a rule, and a truncate is one more change for those
        // who watch the folder.
        let len = text.len() as u64;
        if self.file.metadata()?.len() > len {
            self.file.set_len(len)?;
        }
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Errors are ignored: nothing can be done about them here, and a note
        // left behind is harmless because held-ness always comes from the
        // kernel and the next holder overwrites the note.
        let _ = self.file.set_len(0);
        // Unlocked explicitly: closing `file` alone would leave the lock
        // held while a child forked a moment ago still has the file open
        // (until its exec closes it), so a lock given up just as a sync
        // spawns a process would look busy to everyone else.
        let _ = flock(self.file.as_fd(), libc::LOCK_UN);
    }
}

/// One lock file as reported by [`LockDir::list`].
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct LockInfo {
    /// The lock's name (file name without `.lock`).
    pub name: String,
    /// Whether some process holds it, according to the kernel.
    pub held: bool,
    /// The holder's pid: the kernel's when it shows one, else the note's.
    pub pid: Option<u32>,
    /// The holder's process name, from `/proc/<pid>/comm` or the note.
    pub process: Option<String>,
    /// When the holder took the lock, in Unix seconds.
    pub since: Option<u64>,
    /// What the holder said it needs the lock for.
    pub purpose: Option<String>,
}

/// The per-process table of held locks behind the Lua API, so that a lock
/// taken by one call can be released by name from another.
#[derive(Debug)]
pub struct LockTable {
    dir: LockDir,
    held: Mutex<HashMap<String, LockGuard>>,
}

impl LockTable {
    /// An empty table for locks in `dir`.
    pub fn new(dir: LockDir) -> LockTable {
        LockTable {
            dir,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The directory the locks live in.
    pub fn dir(&self) -> &LockDir {
        &self.dir
    }

    /// Takes lock `name` and keeps it until [`LockTable::release`].
    ///
    /// Like [`LockDir::acquire`]. If this process already holds `name`
    /// through the table, this waits like any other contender (another
    /// thread may release it) and then fails with [`ErrorKind::Locked`]
    /// saying this process holds it. The table is not locked while waiting.
    pub fn acquire(
        &self,
        name: &str,
        timeout: Duration,
        purpose: &str,
        cancel: Option<&AtomicBool>,
    ) -> Result<()> {
        let guard = self.dir.acquire(name, timeout, purpose, cancel)?;
        self.store(guard);
        Ok(())
    }

    /// [`LockTable::acquire`] without holding a thread while it waits (see
    /// [`LockDir::acquire_async`]).
    pub async fn acquire_async(
        &self,
        name: &str,
        timeout: Duration,
        purpose: &str,
        cancel: Option<&AtomicBool>,
    ) -> Result<()> {
        let guard = self
            .dir
            .acquire_async(name, timeout, purpose, cancel)
            .await?;
        self.store(guard);
        Ok(())
    }

    /// Takes lock `name` if it is free; `Ok(false)` if somebody holds it.
    pub fn try_acquire(&self, name: &str, purpose: &str) -> Result<bool> {
        match self.dir.try_acquire(name, purpose)? {
            Some(guard) => {
                self.store(guard);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Releases lock `name`; `Ok(false)` if the table doesn't hold it.
    pub fn release(&self, name: &str) -> Result<bool> {
        validate_name(name)?;
        // Take the guard out under the mutex, drop it after: the entry is
        // gone before the lock is free, so a thread that gets the lock next
        // can't have its fresh entry removed by us.
        let guard = self.held.lock().remove(name);
        let Some(guard) = guard else {
            return Ok(false);
        };
        guard.release();
        Ok(true)
    }

    /// The names of the locks the table holds, sorted.
    pub fn held_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.held.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether this table holds lock `name` now.
    pub fn holds(&self, name: &str) -> bool {
        self.held.lock().contains_key(name)
    }

    fn store(&self, guard: LockGuard) {
        // There can't be an entry for this name already: it would be a
        // second guard on a lock we just took, and `release` removes entries
        // before unlocking.
        self.held.lock().insert(guard.name.clone(), guard);
    }
}

/// Whether a lock file is held, as far as the kernel says.
enum Holding {
    Free,
    /// Held, by `pid` if the kernel told us.
    Held {
        pid: Option<u32>,
    },
}

/// Snapshot of the kernel's flock holders in one lock directory.
struct KernelLocks {
    /// Inode number to holder pid (`None` if the kernel shows none).
    holders: HashMap<libc::ino_t, Option<u32>>,
}

impl KernelLocks {
    fn holding(&self, ino: libc::ino_t) -> Holding {
        match self.holders.get(&ino) {
            Some(&pid) => Holding::Held { pid },
            None => Holding::Free,
        }
    }
}

/// One held flock from `/proc/locks`.
#[derive(Debug, PartialEq)]
struct KernelLock<'a> {
    pid: Option<u32>,
    /// An exclusive lock (`WRITE`): a holder. A shared one (`READ`) is a
    /// look at the file (see [`lock_exclusive`], [`LockDir::list`]), or
    /// ours on the directory (see [`LockDir::kernel_locks`]).
    exclusive: bool,
    /// The `MAJ:MIN` text (hex), compared as text, never decoded.
    device: &'a str,
    ino: libc::ino_t,
}

/// Parses one `/proc/locks` line, keeping only granted `flock` locks:
/// `1: FLOCK  ADVISORY  WRITE 1234 fe:00:10010642 0 EOF`. Waiters are shown
/// as `1: -> FLOCK ...` and drop out because their second field is `->`.
fn parse_proc_locks_line(line: &str) -> Option<KernelLock<'_>> {
    let mut fields = line.split_whitespace().skip(1);
    if fields.next()? != "FLOCK" {
        return None;
    }
    // Skip ADVISORY/MANDATORY.
    let exclusive = fields.nth(1)? == "WRITE";
    let pid: i64 = fields.next()?.parse().ok()?;
    let (device, ino) = fields.next()?.rsplit_once(':')?;
    Some(KernelLock {
        // The kernel shows 0 or -1 when it can't name the holder.
        pid: u32::try_from(pid).ok().filter(|&pid| pid > 0),
        exclusive,
        device,
        ino: ino.parse().ok()?,
    })
}

/// The holder note stored in a lock file (format in the module docs).
#[derive(Debug, Default, PartialEq)]
struct Note {
    pid: Option<u32>,
    process: Option<String>,
    since: Option<u64>,
    purpose: Option<String>,
}

impl Note {
    fn encode(&self) -> String {
        let mut text = String::new();
        if let Some(pid) = self.pid {
            text.push_str(&format!("pid={pid}\n"));
        }
        if let Some(process) = &self.process {
            text.push_str(&format!("process={}\n", escape(process)));
        }
        if let Some(since) = self.since {
            text.push_str(&format!("since={since}\n"));
        }
        if let Some(purpose) = &self.purpose {
            text.push_str(&format!("purpose={}\n", escape(purpose)));
        }
        text
    }

    /// Parses a note leniently: it may be partly written, since the holder
    /// truncates and then writes without excluding readers.
    fn parse(text: &str) -> Note {
        let mut note = Note::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "pid" => note.pid = value.parse().ok(),
                "process" => note.process = Some(unescape(value)).filter(|p| !p.is_empty()),
                "since" => note.since = value.parse().ok(),
                "purpose" => note.purpose = Some(unescape(value)),
                _ => {}
            }
        }
        note
    }
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            // A note cut short in the middle of an escape.
            None => out.push('\\'),
        }
    }
    out
}

/// What a `Locked` message says when the holder is the process itself
/// (another handle of its own, such as a script's lock in Neovim).
pub const HELD_BY_THIS_PROCESS: &str = "is held by this process";

/// `Locked` message text for a held lock, e.g.
/// `lock "acct" is held by pid 1234 (nvim) for "sync full" (taken 12 s ago)`.
fn describe_holder(info: &LockInfo) -> String {
    let mut text = format!("lock {:?} ", info.name);
    let process = info.process.as_deref();
    match (info.pid, process) {
        (Some(pid), Some(process)) if pid == std::process::id() => {
            text.push_str(&format!("{HELD_BY_THIS_PROCESS} (pid {pid}, {process})"));
        }
        (Some(pid), None) if pid == std::process::id() => {
            text.push_str(&format!("{HELD_BY_THIS_PROCESS} (pid {pid})"));
        }
        (Some(pid), Some(process)) => text.push_str(&format!("is held by pid {pid} ({process})")),
        (Some(pid), None) => text.push_str(&format!("is held by pid {pid}")),
        (None, _) => text.push_str("is held by another process"),
    }
    if let Some(purpose) = info.purpose.as_deref().filter(|p| !p.is_empty()) {
        text.push_str(&format!(" for {purpose:?}"));
    }
    if let Some(since) = info.since {
        // `since` has whole seconds, so "0 s" really means "under a second".
        match unix_now().saturating_sub(since) {
            0 => text.push_str(" (taken just now)"),
            age => text.push_str(&format!(
                " (taken {} ago)",
                human_duration(Duration::from_secs(age))
            )),
        }
    }
    text
}

/// A short rough duration for messages: `250 ms`, `1.5 s`, `12 s`, `5 min`, `3 h`.
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        format!("{} ms", d.as_millis())
    } else if secs < 10 && d.subsec_millis() >= 100 {
        // "1 s" for a wait of 1.5 s reads as the wrong limit.
        format!("{:.1} s", d.as_secs_f64())
    } else if secs < 120 {
        format!("{secs} s")
    } else if secs < 2 * 3600 {
        format!("{} min", secs / 60)
    } else {
        format!("{} h", secs / 3600)
    }
}

/// Creates `path` (0700) if missing and checks it the way [`LockDir::open`]
/// checks the lock directory: a real directory, ours, private. Used for the
/// engine's other private data (sync history, logs).
pub fn ensure_private_dir(path: &Path, what: &str) -> Result<()> {
    create_missing_dir(path)?;
    let st = stat::lstat(path)
        .map_err(|e| Error::io(format!("cannot inspect {what} {}", path.display()), e))?;
    check_private_dir(path, &st, what)
}

/// Creates `path` if it is missing (see [`LockDir::open`] for which parts
/// are created private). An existing path is left alone for the checks.
fn create_missing_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io(
                format!("cannot inspect directory {}", path.display()),
                e,
            ))
        }
    }
    let non_empty = |p: &&Path| !p.as_os_str().is_empty();
    if let Some(parent) = path.parent().filter(non_empty) {
        if parent.file_name() == Some(OsStr::new(APP_DIR)) && fs::symlink_metadata(parent).is_err()
        {
            if let Some(grandparent) = parent.parent().filter(non_empty) {
                create_dir_all(grandparent)?;
            }
            create_private_dir(parent)?;
        } else {
            create_dir_all(parent)?;
        }
    }
    create_private_dir(path)
}

fn create_dir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path)
        .map_err(|e| Error::io(format!("cannot create directory {}", path.display()), e))
}

/// Creates one directory with mode 0700. Another process creating it at the
/// same moment is fine; the caller checks whatever ends up there.
fn create_private_dir(path: &Path) -> Result<()> {
    let context = || format!("cannot create directory {}", path.display());
    match DirBuilder::new().mode(0o700).create(path) {
        // The umask may have taken away owner bits; set exactly 0700, on
        // the directory itself: by path, a symlink put in its place
        // meanwhile would pass the mode on to whatever it points to.
        Ok(()) => fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .and_then(|fd| stat::fchmod(&fd, Mode::from_bits_truncate(0o700)))
        .map_err(|e| Error::io(context(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(context(), e)),
    }
}

/// Refuses a directory that others could tamper with; `what` names it in
/// messages ("lock directory", "state directory").
fn check_private_dir(path: &Path, st: &FileStat, what: &str) -> Result<()> {
    let shown = path.display();
    let me = unistd::geteuid().as_raw();
    let problem = if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        format!(
            "{what} {shown} is a symlink; refusing to follow it: \
             remove it (rm {shown}) and it will be recreated"
        )
    } else if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        format!("{what} {shown} is not a directory: remove or rename it")
    } else if st.st_uid != me {
        format!(
            "{what} {shown} is owned by uid {}, not you (uid {me}): \
             remove it or set {LOCK_DIR_ENV} to a directory of your own",
            st.st_uid
        )
    } else if st.st_mode & 0o077 != 0 {
        format!(
            "{what} {shown} has mode {:04o}; it must be 0700 (owner only): \
             run chmod 700 {shown}",
            st.st_mode & 0o7777
        )
    } else {
        return Ok(());
    };
    Err(Error::new(ErrorKind::Config, problem))
}

/// Takes `LOCK_EX` on `file` without blocking; false when somebody holds
/// the file exclusively, or holds a shared lock longer than `grace` (see
/// [`PROBE_GRACE`]).
fn lock_exclusive(file: &File, grace: Duration) -> nix::Result<bool> {
    let started = Instant::now();
    let mut pause = PROBE_PAUSE;
    loop {
        match flock(file.as_fd(), libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => return Ok(true),
            Err(Errno::EWOULDBLOCK) => {}
            Err(e) => return Err(e),
        }
        // A shared lock is granted exactly while nobody holds an exclusive
        // one: then only lookers (or a shared holder) are in the way.
        match flock(file.as_fd(), libc::LOCK_SH | libc::LOCK_NB) {
            Ok(()) => flock(file.as_fd(), libc::LOCK_UN)?,
            Err(Errno::EWOULDBLOCK) => return Ok(false),
            Err(e) => return Err(e),
        }
        if started.elapsed() >= grace {
            return Ok(false);
        }
        thread::sleep(pause);
        pause *= 2;
    }
}

/// `flock(2)` on a borrowed descriptor. (nix's `Flock` wrapper panics if
/// unlocking fails on drop; we release by closing instead.)
fn flock(fd: BorrowedFd<'_>, operation: libc::c_int) -> nix::Result<()> {
    // SAFETY: flock only acts on the descriptor number, and `fd` is borrowed,
    // so it stays open for the duration of the call.
    let rc = unsafe { libc::flock(fd.as_raw_fd(), operation) };
    Errno::result(rc).map(drop)
}

fn lock_file_name(name: &str) -> String {
    format!("{name}{LOCK_SUFFIX}")
}

fn is_regular(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

fn unix_now() -> u64 {
    // A clock before 1970 is broken beyond what a lock note can fix.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A process's name from `/proc/<pid>/comm` (Linux); `None` elsewhere or if
/// the process is gone.
fn process_name_of(pid: u32) -> Option<String> {
    read_comm(&format!("/proc/{pid}/comm"))
}

/// This process's name for the holder note.
fn own_process_name() -> String {
    // Read once: a process does not rename itself while holding locks, and
    // every acquire would otherwise pay for the read.
    static NAME: once_cell::sync::OnceCell<String> = once_cell::sync::OnceCell::new();
    NAME.get_or_init(|| read_comm("/proc/self/comm").unwrap_or_else(|| "unknown".to_string()))
        .clone()
}

fn read_comm(path: &str) -> Option<String> {
    let comm = fs::read_to_string(path).ok()?;
    Some(comm.trim_end_matches('\n').to_owned()).filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;

    /// A fresh temporary directory and a lock directory inside it.
    fn setup() -> (tempfile::TempDir, LockDir) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let locks = LockDir::open(tmp.path().join("locks")).expect("open lock dir");
        (tmp, locks)
    }

    /// A process forked while a lock is held has the lock file open until
    /// it execs (close-on-exec): releasing must free the lock at once all
    /// the same, or a lock given up just as a sync spawns mbsync stays
    /// held by the child for a moment and another Neovim's try fails.
    #[test]
    fn release_frees_the_lock_that_a_forked_child_still_has_open() {
        let (_tmp, locks) = setup();
        let guard = locks.try_acquire("a", "x").expect("try").expect("free");
        // What fork gives the child: another descriptor of the same open file.
        let child_copy = guard.file.try_clone().expect("dup");
        guard.release();
        let info = locks.list().expect("list");
        assert!(!info[0].held, "{info:?}");
        assert!(locks.try_acquire("a", "x").expect("try").is_some());
        drop(child_copy);
    }

    /// A lock folder removed under a running process (a logout removes
    /// $XDG_RUNTIME_DIR) is told as such, with the way out.
    #[test]
    fn a_removed_folder_says_so() {
        let (tmp, locks) = setup();
        fs::remove_dir_all(tmp.path().join("locks")).expect("remove");
        for err in [
            locks.try_acquire("acct", "x").map(|_| ()).unwrap_err(),
            locks.list().map(|_| ()).unwrap_err(),
        ] {
            assert_eq!(err.kind, ErrorKind::Config);
            assert!(
                err.message.contains("was removed while this process ran")
                    && err.message.ends_with("restart Neovim"),
                "{}",
                err.message
            );
        }
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("stat").mode() & 0o7777
    }

    /// Kills and reaps a child process and its process group (it is
    /// spawned as a group leader) even if the test fails half-way.
    struct KillOnDrop(Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Ok(pid) = i32::try_from(self.0.id()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = self.0.wait();
        }
    }

    #[test]
    fn bad_names_are_rejected_with_the_name_in_the_message() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let cases = [
            ("", "empty"),
            (long.as_str(), "101 bytes"),
            ("a/b", "'/'"),
            ("a\0b", "'\\0'"),
            ("a\u{7}b", "control character"),
            ("tab\there", "control character"),
            (".", "not allowed"),
            ("..", "not allowed"),
            ("a..b", "\"..\""),
            (".hidden", "start with '.'"),
        ];
        for (name, problem) in cases {
            let err = validate_name(name).expect_err(name);
            assert_eq!(err.kind, ErrorKind::Invalid, "{name:?}");
            assert!(
                err.message.contains(&format!("{name:?}")),
                "message {:?} should contain {name:?}",
                err.message
            );
            assert!(
                err.message.contains(problem),
                "message {:?} should contain {problem:?}",
                err.message
            );
        }
    }

    #[test]
    fn huge_bad_names_are_shortened_in_messages() {
        let huge = "é".repeat(10_000);
        let err = validate_name(&huge).expect_err("too long");
        assert!(err.message.len() < 400, "{}", err.message);
        assert!(err.message.contains("\"éééé"), "{}", err.message);
        assert!(err.message.contains("20000 bytes"), "{}", err.message);
    }

    #[test]
    fn good_names_are_accepted() {
        let longest = "x".repeat(MAX_NAME_LEN);
        for name in [
            "acct",
            "work-imap_1",
            "a.b",
            "ünïcode",
            "sync:gmail",
            &longest,
        ] {
            validate_name(name).expect(name);
        }
    }

    #[test]
    fn default_dir_follows_the_environment() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let runtime = tmp.path().to_path_buf();
        let env = |pairs: Vec<(&'static str, PathBuf)>| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.clone().into_os_string())
            }
        };

        let explicit = dir_from_env(env(vec![
            (LOCK_DIR_ENV, PathBuf::from("/x/locks")),
            ("XDG_RUNTIME_DIR", runtime.clone()),
        ]));
        assert_eq!(explicit, Ok(PathBuf::from("/x/locks")));

        let relative = dir_from_env(env(vec![(LOCK_DIR_ENV, PathBuf::from("x/locks"))]))
            .expect_err("relative override");
        assert_eq!(relative.kind, ErrorKind::Config);
        assert!(
            relative.message.contains("\"x/locks\""),
            "{}",
            relative.message
        );

        let from_runtime = dir_from_env(env(vec![
            ("XDG_RUNTIME_DIR", runtime.clone()),
            ("HOME", PathBuf::from("/home/u")),
        ]));
        assert_eq!(from_runtime, Ok(runtime.join("himalaya-sync/locks")));

        let missing_runtime = dir_from_env(env(vec![
            ("XDG_RUNTIME_DIR", runtime.join("does-not-exist")),
            ("HOME", PathBuf::from("/home/u")),
        ]));
        assert_eq!(
            missing_runtime,
            Ok(PathBuf::from(
                "/home/u/.local/state/nvim/himalaya-sync/locks"
            ))
        );

        let from_state = dir_from_env(env(vec![
            ("XDG_STATE_HOME", PathBuf::from("/s")),
            ("HOME", PathBuf::from("/home/u")),
        ]));
        assert_eq!(from_state, Ok(PathBuf::from("/s/nvim/himalaya-sync/locks")));

        let nothing = dir_from_env(env(vec![("HOME", PathBuf::from("relative"))]))
            .expect_err("no usable variable");
        assert_eq!(nothing.kind, ErrorKind::Config);
        assert!(
            nothing.message.contains(LOCK_DIR_ENV),
            "{}",
            nothing.message
        );
    }

    #[test]
    fn open_creates_private_directories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("state/nvim/himalaya-sync/locks");
        let locks = LockDir::open(&path).expect("open");
        assert_eq!(locks.path(), path);
        assert_eq!(mode_of(&path), 0o700);
        assert_eq!(mode_of(&tmp.path().join("state/nvim/himalaya-sync")), 0o700);
        // Ordinary ancestors get ordinary permissions.
        assert!(fs::metadata(tmp.path().join("state/nvim"))
            .expect("stat")
            .is_dir());
        // Opening again is fine.
        LockDir::open(&path).expect("reopen");
    }

    #[test]
    fn open_refuses_a_group_or_world_accessible_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("locks");
        fs::create_dir(&path).expect("mkdir");
        fs::set_permissions(&path, Permissions::from_mode(0o777)).expect("chmod");
        let err = LockDir::open(&path).expect_err("0777 must be refused");
        assert_eq!(err.kind, ErrorKind::Config);
        let shown = path.display().to_string();
        assert_eq!(
            err.message,
            format!(
                "lock directory {shown} has mode 0777; it must be 0700 (owner only): \
                 run chmod 700 {shown}"
            )
        );
    }

    #[test]
    fn open_refuses_a_symlinked_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let real = tmp.path().join("real");
        fs::create_dir(&real).expect("mkdir");
        fs::set_permissions(&real, Permissions::from_mode(0o700)).expect("chmod");
        let link = tmp.path().join("locks");
        symlink(&real, &link).expect("symlink");
        let err = LockDir::open(&link).expect_err("symlink must be refused");
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(
            err.message.contains(&link.display().to_string()),
            "{}",
            err.message
        );
        assert!(err.message.contains("is a symlink"), "{}", err.message);
    }

    #[test]
    fn open_refuses_a_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("locks");
        fs::write(&path, "").expect("write");
        let err = LockDir::open(&path).expect_err("a file is not a directory");
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(
            err.message.contains("is not a directory"),
            "{}",
            err.message
        );
    }

    #[test]
    fn open_refuses_a_directory_owned_by_someone_else() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("locks");
        fs::create_dir(&path).expect("mkdir");
        fs::set_permissions(&path, Permissions::from_mode(0o700)).expect("chmod");
        if std::os::unix::fs::chown(&path, Some(4242), None).is_err() {
            eprintln!("skipping: cannot chown (not root)");
            return;
        }
        let err = LockDir::open(&path).expect_err("foreign directory must be refused");
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("owned by uid 4242"), "{}", err.message);
    }

    #[test]
    fn a_symlink_at_the_lock_path_is_refused_and_not_followed() {
        let (tmp, locks) = setup();
        let target = tmp.path().join("precious");
        fs::write(&target, "keep me").expect("write");
        fs::set_permissions(&target, Permissions::from_mode(0o644)).expect("chmod");
        symlink(&target, locks.path().join("acct.lock")).expect("symlink");

        let err = locks
            .try_acquire("acct", "test")
            .expect_err("symlink must be refused");
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(
            err.message.contains("acct.lock is a symlink"),
            "{}",
            err.message
        );
        let err = locks
            .acquire("acct", Duration::from_millis(50), "test", None)
            .expect_err("symlink must be refused");
        assert_eq!(err.kind, ErrorKind::Config);

        assert_eq!(fs::read_to_string(&target).expect("read"), "keep me");
        assert_eq!(mode_of(&target), 0o644);
        // Listing and cleanup leave it alone too.
        assert_eq!(locks.list().expect("list"), vec![]);
        assert_eq!(locks.cleanup_stale().expect("cleanup"), 0);
        assert!(fs::symlink_metadata(locks.path().join("acct.lock")).is_ok());
        assert_eq!(fs::read_to_string(&target).expect("read"), "keep me");
    }

    #[test]
    fn a_lock_file_owned_by_someone_else_is_refused() {
        let (_tmp, locks) = setup();
        let path = locks.path().join("acct.lock");
        fs::write(&path, "").expect("write");
        if std::os::unix::fs::chown(&path, Some(4242), None).is_err() {
            eprintln!("skipping: cannot chown (not root)");
            return;
        }
        let err = locks.try_acquire("acct", "test").expect_err("foreign file");
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("owned by uid 4242"), "{}", err.message);
    }

    #[test]
    fn try_acquire_is_exclusive_and_release_frees() {
        let (_tmp, first) = setup();
        let second = LockDir::open(first.path()).expect("second handle");

        let guard = first
            .try_acquire("acct", "sync")
            .expect("try")
            .expect("free");
        assert_eq!(guard.name(), "acct");
        assert!(second.try_acquire("acct", "sync").expect("try").is_none());
        // The same handle is no different: locks belong to open files.
        assert!(first.try_acquire("acct", "sync").expect("try").is_none());
        // Other names are independent.
        assert!(second.try_acquire("other", "sync").expect("try").is_some());

        let path = first.path().join("acct.lock");
        assert_eq!(mode_of(&path), 0o600);
        assert!(fs::read_to_string(&path)
            .expect("read")
            .contains("purpose=sync\n"));

        guard.release();
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            "",
            "note is cleared"
        );
        assert!(path.exists(), "the file stays on release");
        assert!(second.try_acquire("acct", "sync").expect("try").is_some());
    }

    /// Opens `name`'s lock file apart from any handle and takes a shared
    /// lock on it, as a look at the folder does to probe it.
    fn shared_holder(locks: &LockDir, name: &str) -> File {
        let file = File::open(locks.path().join(format!("{name}.lock"))).expect("open");
        flock(file.as_fd(), libc::LOCK_SH | libc::LOCK_NB).expect("shared lock");
        file
    }

    #[test]
    fn a_longer_note_left_by_a_killed_holder_is_replaced_whole() {
        let (_tmp, locks) = setup();
        let path = locks.path().join("acct.lock");
        fs::write(&path, format!("pid=1\npurpose={}\n", "x".repeat(500))).expect("old note");
        fs::set_permissions(&path, Permissions::from_mode(0o600)).expect("mode");
        let guard = locks
            .try_acquire("acct", "sync")
            .expect("try")
            .expect("free");
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.ends_with("purpose=sync\n"), "{text:?}");
        assert!(!text.contains("xxx"), "{text:?}");
        assert_eq!(text.lines().count(), 4, "{text:?}");
        guard.release();
        assert_eq!(fs::read_to_string(&path).expect("read"), "");
    }

    #[test]
    fn a_try_that_meets_a_probe_waits_it_out() {
        let (_tmp, locks) = setup();
        locks.try_acquire("acct", "x").expect("try").expect("free");
        let probe = shared_holder(&locks, "acct");
        // Without the grace, the probe's shared lock reads as a holder.
        assert!(locks
            .try_acquire_within("acct", "x", Duration::ZERO)
            .expect("try")
            .is_none());
        let prober = thread::spawn(move || {
            thread::sleep(Duration::from_millis(5));
            flock(probe.as_fd(), libc::LOCK_UN).expect("unlock");
        });
        // A generous grace: the prober thread may wait for a CPU.
        let guard = locks
            .try_acquire_within("acct", "x", Duration::from_secs(30))
            .expect("try");
        prober.join().expect("prober");
        assert!(guard.is_some());
    }

    #[test]
    fn a_look_at_a_free_lock_is_no_holder() {
        let (_tmp, locks) = setup();
        locks.try_acquire("acct", "x").expect("try").expect("free");
        // Another process listing the locks, caught in its probe.
        let _probe = shared_holder(&locks, "acct");
        let list = locks.list().expect("list");
        let acct = list.iter().find(|i| i.name == "acct").expect("listed");
        assert!(!acct.held, "{acct:?}");
    }

    #[test]
    fn a_shared_holder_that_stays_is_reported_after_the_grace() {
        let (_tmp, locks) = setup();
        locks.try_acquire("acct", "x").expect("try").expect("free");
        let _holder = shared_holder(&locks, "acct");
        assert!(locks
            .try_acquire_within("acct", "x", Duration::from_millis(20))
            .expect("try")
            .is_none());
    }

    #[test]
    fn an_exclusive_holder_is_reported_without_waiting_out_the_grace() {
        let (_tmp, first) = setup();
        let second = LockDir::open(first.path()).expect("second handle");
        let _guard = first.try_acquire("acct", "x").expect("try").expect("free");
        let started = Instant::now();
        let grace = Duration::from_secs(60);
        assert!(second
            .try_acquire_within("acct", "x", grace)
            .expect("try")
            .is_none());
        assert!(started.elapsed() < grace / 2, "{:?}", started.elapsed());
    }

    /// What `make bench` met: a try while another thread looks at the
    /// folder. Every try must get the free lock, however the probes fall.
    #[test]
    fn probes_never_make_a_free_lock_look_held() {
        let (_tmp, locks) = setup();
        let locks = Arc::new(locks);
        locks.try_acquire("acct", "x").expect("try").expect("free");
        let done = Arc::new(AtomicBool::new(false));
        let prober = {
            let (locks, done) = (locks.clone(), done.clone());
            thread::spawn(move || {
                let mut probes = 0u32;
                while !done.load(Ordering::Relaxed) {
                    assert!(matches!(
                        locks.probe("acct"),
                        Ok(Holding::Free | Holding::Held { .. })
                    ));
                    probes += 1;
                }
                probes
            })
        };
        for i in 0..2000 {
            let guard = locks
                .try_acquire_within("acct", "x", Duration::from_secs(30))
                .expect("try");
            assert!(guard.is_some(), "try {i} found the free lock held");
        }
        done.store(true, Ordering::Relaxed);
        assert!(prober.join().expect("prober") > 0);
    }

    #[test]
    fn list_reports_holders_from_the_kernel() {
        let (_tmp, locks) = setup();
        let _held = locks
            .try_acquire("b-held", "sync full")
            .expect("try")
            .expect("free");
        drop(
            locks
                .try_acquire("a-free", "x")
                .expect("try")
                .expect("free"),
        );
        fs::write(locks.path().join("notes.txt"), "ignored").expect("write");
        fs::write(locks.path().join(".hidden.lock"), "").expect("write");
        symlink("/etc/passwd", locks.path().join("c-link.lock")).expect("symlink");

        let infos = locks.list().expect("list");
        assert_eq!(infos.len(), 2, "{infos:?}");
        assert_eq!(
            infos[0],
            LockInfo {
                name: "a-free".into(),
                held: false,
                pid: None,
                process: None,
                since: None,
                purpose: None,
            }
        );
        let held = &infos[1];
        assert_eq!(held.name, "b-held");
        assert!(held.held);
        assert_eq!(held.pid, Some(std::process::id()));
        assert_eq!(held.purpose.as_deref(), Some("sync full"));
        assert_eq!(held.process, process_name_of(std::process::id()));
        let since = held.since.expect("since");
        assert!(unix_now().abs_diff(since) < 60, "since {since}");
    }

    #[test]
    fn probing_agrees_with_the_kernel_table() {
        let (_tmp, locks) = setup();
        let _held = locks.try_acquire("held", "x").expect("try").expect("free");
        drop(locks.try_acquire("free", "x").expect("try").expect("free"));
        assert!(matches!(
            locks.probe("held"),
            Ok(Holding::Held { pid: None })
        ));
        assert!(matches!(locks.probe("free"), Ok(Holding::Free)));
        // Probing must not leave anything behind that blocks a holder.
        assert!(locks.try_acquire("free", "x").expect("try").is_some());
        if cfg!(target_os = "linux") {
            let ino = |name: &str| {
                fs::metadata(locks.path().join(lock_file_name(name)))
                    .expect("stat")
                    .ino()
            };
            // On a busy machine the table can shift between the page-sized
            // reads of one snapshot (see `inspect`), which then misses a
            // line or is refused: the kernel must agree in one of a few.
            let agrees = (0..50).any(|_| {
                locks.kernel_locks().is_some_and(|kernel| {
                    matches!(
                        kernel.holding(ino("held")),
                        Holding::Held { pid: Some(pid) } if pid == std::process::id()
                    ) && matches!(kernel.holding(ino("free")), Holding::Free)
                })
            });
            assert!(agrees, "/proc/locks never showed the held lock alone");
        }
    }

    #[test]
    fn a_held_lock_missing_from_the_kernel_snapshot_is_still_held() {
        let (_tmp, locks) = setup();
        let _held = locks
            .try_acquire("held", "sync full")
            .expect("try")
            .expect("free");
        drop(locks.try_acquire("free", "x").expect("try").expect("free"));
        // A killed holder's note: its process is gone, the lock is free.
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        child.wait().expect("wait");
        fs::write(
            locks.path().join(lock_file_name("killed")),
            format!("pid={}\nprocess=nvim\n", child.id()),
        )
        .expect("write");
        // A note naming a living process on a lock nobody holds.
        fs::write(
            locks.path().join(lock_file_name("note-only")),
            format!("pid={}\n", std::process::id()),
        )
        .expect("write");
        // What a read of `/proc/locks` that skipped every entry looks like.
        let skipped = KernelLocks {
            holders: HashMap::new(),
        };
        let info = |name: &str| {
            locks
                .inspect(name, Some(&skipped))
                .expect("inspect")
                .expect("exists")
        };
        let held = info("held");
        assert!(held.held);
        assert_eq!(held.pid, Some(std::process::id()));
        assert_eq!(held.purpose.as_deref(), Some("sync full"));
        for name in ["free", "killed", "note-only"] {
            assert!(!info(name).held, "{name}");
        }
    }

    #[test]
    fn list_sees_held_locks_while_other_locks_come_and_go() {
        let (_tmp, locks) = setup();
        // Enough held locks that the table no longer fits the page the
        // kernel fills per read.
        let held: Vec<LockGuard> = (0..150)
            .map(|i| {
                locks
                    .try_acquire(&format!("held{i}"), "x")
                    .expect("try")
                    .expect("free")
            })
            .collect();
        let stop = AtomicBool::new(false);
        thread::scope(|s| {
            // Other locks taken and released all the time, as Neovims
            // trying a busy lock do: they shift `/proc/locks` while we read.
            s.spawn(|| {
                let files: Vec<File> = (0..3)
                    .map(|i| File::create(locks.path().join(format!("other{i}"))).expect("create"))
                    .collect();
                while !stop.load(Ordering::Relaxed) {
                    for file in &files {
                        flock(file.as_fd(), libc::LOCK_SH).expect("lock");
                    }
                    for file in &files {
                        flock(file.as_fd(), libc::LOCK_UN).expect("unlock");
                    }
                }
            });
            let me = Some(std::process::id());
            let missed = (0..200)
                .filter(|_| {
                    let infos = locks.list().expect("list");
                    infos.iter().filter(|i| i.held && i.pid == me).count() != held.len()
                })
                .count();
            stop.store(true, Ordering::Relaxed);
            assert_eq!(missed, 0, "lists that missed a held lock");
        });
    }

    #[test]
    fn cleanup_stale_removes_only_unheld_files() {
        let (_tmp, locks) = setup();
        let _held = locks.try_acquire("held", "x").expect("try").expect("free");
        for name in ["old1", "old2"] {
            drop(locks.try_acquire(name, "x").expect("try").expect("free"));
        }
        fs::write(locks.path().join("keep.txt"), "").expect("write");

        assert_eq!(locks.cleanup_stale().expect("cleanup"), 2);
        assert!(locks.path().join("held.lock").exists());
        assert!(!locks.path().join("old1.lock").exists());
        assert!(!locks.path().join("old2.lock").exists());
        assert!(locks.path().join("keep.txt").exists());
        let names: Vec<String> = locks
            .list()
            .expect("list")
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["held"]);
        // A removed lock can be taken again.
        assert!(locks.try_acquire("old1", "x").expect("try").is_some());
    }

    #[test]
    fn a_file_removed_between_open_and_lock_is_not_a_lock() {
        let (_tmp, locks) = setup();
        // Simulate losing the race with cleanup_stale: lock a file, unlink it.
        let stale = locks.open_lock_file("acct").expect("open");
        flock(stale.as_fd(), libc::LOCK_EX | libc::LOCK_NB).expect("lock");
        fs::remove_file(locks.path().join("acct.lock")).expect("unlink");
        assert!(!locks.still_names(&stale, "acct").expect("check"));
        // The orphaned lock doesn't block the name.
        let guard = locks.try_acquire("acct", "x").expect("try").expect("free");
        assert!(locks.still_names(&guard.file, "acct").expect("check"));
    }

    /// Set in a re-run of this test binary to make `lock_holder_child`
    /// take lock "acct" in the given directory and wait to be killed.
    const HOLDER_ENV: &str = "HIMALAYA_LOCK_TEST_HOLDER_DIR";
    /// What the holder child prints once it has the lock.
    const HOLDER_READY: &str = "HOLDER-READY";

    /// Not a test on its own: the child half of
    /// `a_killed_holder_frees_the_lock_at_once`.
    #[test]
    fn lock_holder_child() {
        let Some(dir) = std::env::var_os(HOLDER_ENV) else {
            return;
        };
        let locks = LockDir::open(PathBuf::from(dir)).expect("open");
        let _guard = locks
            .try_acquire("acct", "child work")
            .expect("try")
            .expect("free");
        println!("{HOLDER_READY}");
        thread::sleep(Duration::from_secs(30));
    }

    /// Spawns `command` in its own process group and waits until it prints
    /// a line ending in `ready`; `None` if it exits first.
    fn spawn_holder(command: &mut Command, ready: &str) -> Option<KillOnDrop> {
        use std::os::unix::process::CommandExt;
        let mut child = KillOnDrop(
            command
                .process_group(0)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn holder"),
        );
        let stdout = BufReader::new(child.0.stdout.take().expect("stdout"));
        for line in stdout.lines() {
            // libtest prints the test's name on the same line first.
            if line
                .expect("read holder output")
                .trim_end()
                .ends_with(ready)
            {
                return Some(child);
            }
        }
        None
    }

    #[test]
    fn a_killed_holder_frees_the_lock_at_once() {
        let (_tmp, locks) = setup();
        let exe = std::env::current_exe().expect("current_exe");
        let mut command = Command::new(exe);
        command
            .args(["--exact", "lock::tests::lock_holder_child"])
            .args(["--nocapture", "--test-threads=1"])
            .env(HOLDER_ENV, locks.path());
        let mut child = spawn_holder(&mut command, HOLDER_READY).expect("holder child");
        let pid = child.0.id();

        assert!(locks.try_acquire("acct", "x").expect("try").is_none());
        let info = locks.list().expect("list").remove(0);
        assert!(info.held);
        assert_eq!(info.pid, Some(pid));
        assert_eq!(info.process, Some(own_process_name()));
        assert_eq!(info.purpose.as_deref(), Some("child work"));
        let err = locks
            .acquire("acct", Duration::from_millis(30), "x", None)
            .expect_err("held");
        assert_eq!(err.kind, ErrorKind::Locked);
        assert!(
            err.message
                .starts_with(&format!("lock \"acct\" is held by pid {pid} (")),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("for \"child work\""),
            "{}",
            err.message
        );

        child.0.kill().expect("kill");
        child.0.wait().expect("wait");
        let started = Instant::now();
        assert!(locks.try_acquire("acct", "x").expect("try").is_some());
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_foreign_holder_is_named_by_the_kernel() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let (_tmp, locks) = setup();
        drop(
            locks
                .try_acquire("acct", "create")
                .expect("try")
                .expect("free"),
        );
        // flock(1) takes the lock itself, writes no note, and with `-o` its
        // child doesn't inherit the descriptor, so the kernel's holder is
        // the flock process we spawned.
        let mut command = Command::new("flock");
        command
            .args(["-o", "-x"])
            .arg(locks.path().join("acct.lock"))
            .args(["sh", "-c", "echo ready; exec sleep 30"]);
        let Some(child) = spawn_holder(&mut command, "ready") else {
            eprintln!("skipping: flock(1) with -o is not available");
            return;
        };
        let pid = child.0.id();
        let info = locks.list().expect("list").remove(0);
        assert_eq!(
            info,
            LockInfo {
                name: "acct".into(),
                held: true,
                pid: Some(pid),
                process: Some("flock".into()),
                since: None,
                purpose: None,
            }
        );
        let err = locks
            .acquire("acct", Duration::ZERO, "x", None)
            .expect_err("held");
        assert_eq!(
            err.message,
            format!("lock \"acct\" is held by pid {pid} (flock)")
        );
    }

    #[test]
    fn acquire_times_out_naming_the_holder() {
        let (_tmp, locks) = setup();
        let _held = locks
            .try_acquire("acct", "sync full")
            .expect("try")
            .expect("free");
        let other = LockDir::open(locks.path()).expect("second handle");

        let timeout = Duration::from_millis(200);
        let started = Instant::now();
        let err = other.acquire("acct", timeout, "x", None).expect_err("held");
        let waited = started.elapsed();
        assert_eq!(err.kind, ErrorKind::Locked);
        assert!(waited >= timeout, "gave up early: {waited:?}");
        assert!(
            waited < timeout + Duration::from_secs(1),
            "too slow: {waited:?}"
        );
        let me = std::process::id();
        assert!(
            err.message
                .starts_with(&format!("lock \"acct\" is held by this process (pid {me}")),
            "{}",
            err.message
        );
        // `since` has whole seconds: a second boundary may pass meanwhile.
        assert!(
            err.message.contains("for \"sync full\" (taken just now)")
                || err.message.contains("for \"sync full\" (taken 1 s ago)"),
            "{}",
            err.message
        );
        assert!(
            err.message.ends_with("; gave up after 200 ms"),
            "{}",
            err.message
        );

        // A zero timeout tries once: held fails, free succeeds.
        let err = other
            .acquire("acct", Duration::ZERO, "x", None)
            .expect_err("held");
        assert_eq!(err.kind, ErrorKind::Locked);
        assert!(
            err.message.ends_with("(taken just now)") || err.message.ends_with("(taken 1 s ago)"),
            "{}",
            err.message
        );
        assert!(other.acquire("free", Duration::ZERO, "x", None).is_ok());
    }

    #[test]
    fn acquire_waits_for_a_release() {
        let (_tmp, locks) = setup();
        let held = locks.try_acquire("acct", "x").expect("try").expect("free");
        let releaser = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            held.release();
        });
        let guard = locks.acquire("acct", Duration::from_secs(5), "y", None);
        releaser.join().expect("join");
        assert!(guard.is_ok());
    }

    /// On one thread, waits take turns: none holds the thread, a free lock
    /// is taken at once meanwhile, and each wait ends at its own timeout.
    #[tokio::test(flavor = "current_thread")]
    async fn async_waits_share_one_thread() {
        let (_tmp, locks) = setup();
        let locks = Arc::new(locks);
        let _held = locks.try_acquire("acct", "x").expect("try").expect("free");
        let started = Instant::now();
        let waits: Vec<_> = (0..50)
            .map(|_| {
                let locks = Arc::clone(&locks);
                tokio::spawn(async move {
                    locks
                        .acquire_async("acct", Duration::from_millis(300), "y", None)
                        .await
                        .map(|_| ())
                })
            })
            .collect();
        tokio::task::yield_now().await;
        let free = locks.acquire_async("free", Duration::ZERO, "z", None).await;
        assert!(free.is_ok());
        assert!(started.elapsed() < Duration::from_millis(300));
        for wait in waits {
            let err = wait.await.expect("join").expect_err("held");
            assert_eq!(err.kind, ErrorKind::Locked);
        }
        // Side by side: 50 waits of 300 ms, not one after another.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    /// A zero timeout tries once and answers in the first poll; a cancel
    /// ends a wait, as in the blocking form.
    #[tokio::test(flavor = "current_thread")]
    async fn async_wait_tries_once_without_a_timeout_and_stops_when_cancelled() {
        use std::future::Future;
        let (_tmp, locks) = setup();
        let _held = locks.try_acquire("acct", "x").expect("try").expect("free");
        let mut once = std::pin::pin!(locks.acquire_async("acct", Duration::ZERO, "y", None));
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match once.as_mut().poll(&mut context) {
            std::task::Poll::Ready(Err(e)) => assert_eq!(e.kind, ErrorKind::Locked),
            other => panic!(
                "not answered in the first poll: {:?}",
                other.map(|r| r.map(|_| ()))
            ),
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::Relaxed);
        });
        let started = Instant::now();
        let err = locks
            .acquire_async("acct", Duration::from_secs(10), "y", Some(&cancel))
            .await
            .expect_err("cancelled");
        assert_eq!(err.kind, ErrorKind::Cancelled);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn acquire_stops_when_cancelled() {
        let (_tmp, locks) = setup();
        let _held = locks.try_acquire("acct", "x").expect("try").expect("free");

        let cancel = AtomicBool::new(true);
        let err = locks
            .acquire("acct", Duration::from_secs(10), "x", Some(&cancel))
            .expect_err("cancelled");
        assert_eq!(err.kind, ErrorKind::Cancelled);

        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let canceller = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            flag.store(true, Ordering::Relaxed);
        });
        let started = Instant::now();
        let err = locks
            .acquire("acct", Duration::from_secs(10), "x", Some(&cancel))
            .expect_err("cancelled");
        canceller.join().expect("join");
        assert_eq!(err.kind, ErrorKind::Cancelled);
        assert!(err.message.contains("\"acct\""), "{}", err.message);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn bad_names_fail_before_touching_the_directory() {
        let (_tmp, locks) = setup();
        for result in [
            locks.try_acquire("../x", "x").map(|_| ()),
            locks.acquire("a/b", Duration::ZERO, "x", None).map(|_| ()),
        ] {
            assert_eq!(result.expect_err("invalid").kind, ErrorKind::Invalid);
        }
        assert_eq!(fs::read_dir(locks.path()).expect("read_dir").count(), 0);
    }

    #[test]
    fn table_tracks_locks_by_name() {
        let (_tmp, locks) = setup();
        let table = LockTable::new(locks);
        table
            .acquire("b", Duration::ZERO, "x", None)
            .expect("acquire");
        assert!(table.try_acquire("a", "x").expect("try"));
        assert_eq!(table.held_names(), ["a", "b"]);

        // A second acquire through the table waits like anybody else and
        // then says who holds it.
        let started = Instant::now();
        let err = table
            .acquire("b", Duration::from_millis(100), "x", None)
            .expect_err("already held");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(err.kind, ErrorKind::Locked);
        assert!(
            err.message.contains("held by this process"),
            "{}",
            err.message
        );
        assert!(!table.try_acquire("a", "x").expect("try"));

        assert!(table.release("a").expect("release"));
        assert!(!table.release("a").expect("release"));
        assert!(!table.release("never").expect("release"));
        assert_eq!(
            table.release("a/b").expect_err("invalid").kind,
            ErrorKind::Invalid
        );
        assert_eq!(table.held_names(), ["b"]);

        assert!(table.release("b").expect("release"));
        assert!(table.held_names().is_empty());
        assert!(table.dir().try_acquire("b", "x").expect("try").is_some());
    }

    #[test]
    fn table_is_not_locked_while_waiting() {
        let (_tmp, locks) = setup();
        let table = Arc::new(LockTable::new(locks));
        table
            .acquire("acct", Duration::ZERO, "x", None)
            .expect("acquire");
        let waiter = {
            let table = Arc::clone(&table);
            thread::spawn(move || table.acquire("acct", Duration::from_secs(5), "y", None))
        };
        thread::sleep(Duration::from_millis(50));
        // If the waiter held the table's mutex this would block until it
        // gave up, and the waiter would fail.
        assert!(table.release("acct").expect("release"));
        waiter.join().expect("join").expect("waiter gets the lock");
        assert_eq!(table.held_names(), ["acct"]);
    }

    #[test]
    fn guards_and_tables_can_cross_threads() {
        fn assert_send<T: Send>() {}
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send::<LockGuard>();
        assert_send_sync::<LockTable>();
        assert_send_sync::<LockDir>();
    }

    #[test]
    fn notes_round_trip_and_tolerate_damage() {
        let note = Note {
            pid: Some(42),
            process: Some("nvim".into()),
            since: Some(1_700_000_000),
            purpose: Some("two\nlines \\ and\r more".into()),
        };
        let text = note.encode();
        assert_eq!(text.lines().count(), 4, "{text:?}");
        assert_eq!(Note::parse(&text), note);
        assert_eq!(Note::parse(""), Note::default());
        let cut = Note::parse("pid=42\nprocess=nv\nsince=17\npurpose=a\\");
        assert_eq!(cut.purpose.as_deref(), Some("a\\"));
        assert_eq!(cut.pid, Some(42));
        let junk = Note::parse("pid=x\nfuture=1\nnonsense\nsince=-3");
        assert_eq!(junk, Note::default());
    }

    #[test]
    fn proc_locks_lines_are_parsed() {
        let table = "\
1: FLOCK  ADVISORY  WRITE 1234 fe:00:10010642 0 EOF
1: -> FLOCK  ADVISORY  WRITE 999 fe:00:10010642 0 EOF
2: POSIX  ADVISORY  WRITE 5678 00:1a:99 0 EOF
3: FLOCK  ADVISORY  READ 0 00:2b:7 0 EOF
4: OFDLCK ADVISORY  READ -1 00:2b:8 0 EOF
garbage
";
        let entries: Vec<KernelLock<'_>> =
            table.lines().filter_map(parse_proc_locks_line).collect();
        assert_eq!(
            entries,
            [
                KernelLock {
                    pid: Some(1234),
                    exclusive: true,
                    device: "fe:00",
                    ino: 10010642
                },
                KernelLock {
                    pid: None,
                    exclusive: false,
                    device: "00:2b",
                    ino: 7
                },
            ]
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(human_duration(Duration::from_secs(12)), "12 s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human_duration(Duration::from_millis(2050)), "2 s");
        assert_eq!(human_duration(Duration::from_secs(300)), "5 min");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600 + 5)), "3 h");
    }
}
