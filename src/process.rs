//! Child processes that can always be stopped.
//!
//! Every child the engine starts:
//!
//! * runs in its own session, hence its own process group, so one signal
//!   reaches it and everything it started (`PassCmd`, `Tunnel`);
//! * gets `PR_SET_PDEATHSIG(SIGKILL)` on Linux, so it dies even when Neovim
//!   is killed with SIGKILL and has no chance to clean up. The death signal
//!   fires when the *thread* that forked exits, so all forks happen on one
//!   dedicated thread that lives as long as the process;
//! * is registered with the runtime so shutdown can kill its group.
//!
//! [`spawn_pty`] also gives the child a pseudo-terminal as stdin/stdout/
//! stderr: mbsync prints its progress counters only to a TTY.

use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, Winsize};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use once_cell::sync::OnceCell;
use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::runtime::{self, GroupGuard};

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Terminal width; mbsync truncates its counters to fit.
    pub columns: u16,
}

/// A running child with the master side of its terminal.
pub struct PtyChild {
    pub child: Child,
    pub master: OwnedFd,
    pub pgid: i32,
    pub group: GroupGuard,
}

type SpawnJob = Box<dyn FnOnce() + Send>;

/// The one thread that forks (see the module docs for why).
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnJob>> {
    static SPAWNER: OnceCell<Mutex<mpsc::Sender<SpawnJob>>> = OnceCell::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("himalaya-sync-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map(|_| ())
            .unwrap_or_else(|_| {
                // Could not start the thread: jobs sent later fail with a
                // clear error (the receiver is gone) instead of hanging.
            });
        Mutex::new(tx)
    })
}

/// Starts `spec` under a new pseudo-terminal, in its own session. The
/// fork happens on the spawner thread; the caller awaits its answer
/// without holding a thread of its own (one thread hop less before mbsync
/// runs).
pub async fn spawn_pty(spec: &Spec) -> Result<PtyChild> {
    if runtime::is_stopped() {
        return Err(Error::new(
            ErrorKind::Cancelled,
            "himalaya-sync is shutting down",
        ));
    }
    let (master, slave) = open_pty(spec.columns)?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env("COLUMNS", spec.columns.to_string())
        .env("LINES", "50")
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::from(dup(&slave)?))
        .stdout(Stdio::from(dup(&slave)?))
        .stderr(Stdio::from(slave));
    let parent = std::process::id() as i32;
    // SAFETY: only async-signal-safe calls (setsid, ioctl, prctl, getppid,
    // _exit) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Make the terminal the controlling one, as a real terminal
            // session would have it; failure is harmless.
            libc::ioctl(0, libc::TIOCSCTTY as _, 0);
            #[cfg(target_os = "linux")]
            {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            let _ = parent;
            Ok(())
        });
    }
    let program = spec.program.display().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: SpawnJob = Box::new(move || {
        let _ = tx.send(cmd.spawn());
    });
    spawner()
        .lock()
        .send(job)
        .map_err(|_| Error::io("cannot start processes", "spawner thread is gone"))?;
    let child = rx
        .await
        .map_err(|_| Error::io("cannot start processes", "spawner thread is gone"))?
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::new(
                    ErrorKind::Config,
                    format!("{program} not found: install it or set its path in the configuration"),
                )
            } else {
                Error::io(format!("cannot start {program}"), e)
            }
        })?;
    let pgid = child.id() as i32;
    Ok(PtyChild {
        child,
        master,
        pgid,
        group: runtime::track_group(pgid),
    })
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd> {
    fd.try_clone()
        .map_err(|e| Error::io("cannot duplicate a descriptor", e))
}

/// Opens a pseudo-terminal whose both ends are close-on-exec from the
/// start: `openpty(3)` leaves a window in which a process forked by another
/// thread (another sync, or anything Neovim starts) inherits the terminal
/// and keeps it open, so a sync would wait for that process to exit.
fn open_pty(columns: u16) -> Result<(OwnedFd, OwnedFd)> {
    let err = |e| Error::io("cannot open a pseudo-terminal", e);
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).map_err(err)?;
    grantpt(&master).map_err(err)?;
    unlockpt(&master).map_err(err)?;
    let name = ptsname_r(&master).map_err(err)?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(err)?;
    let winsize = Winsize {
        ws_row: 50,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize struct from the pointer.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &winsize) } < 0 {
        return Err(err(nix::errno::Errno::last()));
    }
    // SAFETY: the master descriptor is owned by `master`, which we consume.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    Ok((master, slave))
}

/// Sends `sig` to the whole group; false when the group is gone.
pub fn signal_group(pgid: i32, sig: Signal) -> bool {
    killpg(Pid::from_raw(pgid), sig).is_ok()
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl From<std::process::ExitStatus> for Exit {
    fn from(s: std::process::ExitStatus) -> Self {
        Exit {
            code: s.code(),
            signal: s.signal(),
        }
    }
}

/// TERM to the group, then KILL if it is still there after `grace`.
pub async fn terminate_group(pgid: i32, grace: Duration) {
    if !signal_group(pgid, Signal::SIGTERM) {
        return;
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !signal_group_alive(pgid) {
            return;
        }
    }
    signal_group(pgid, Signal::SIGKILL);
}

fn signal_group_alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Kills a process group when dropped: a sync that ends any way at all,
/// even by a panic unwinding through it, leaves no process behind.
pub struct KillOnDrop(pub i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        signal_group(self.0, Signal::SIGKILL);
    }
}
