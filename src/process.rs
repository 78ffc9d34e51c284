//! Child processes that can always be stopped.
//!
//! Every child the engine starts under a terminal ([`spawn_pty`]):
//!
//! * runs in its own session, hence its own process group, so one signal
//!   reaches it and everything it started (`PassCmd`, `Tunnel`);
//! * has the pseudo-terminal as its controlling terminal, so it dies even
//!   when Neovim is killed with SIGKILL and has no chance to clean up: the
//!   kernel closes the master side, hangs the terminal up and sends SIGHUP
//!   to the session (every signal starts at its default action, so a
//!   Neovim started under `nohup` does not pass on an ignored SIGHUP);
//! * is registered with the runtime so shutdown can kill its group (all
//!   but a helper saving a token, which shutdown lets finish);
//! * is signalled only through its [`Leader`]: see there why the group is
//!   never signalled once the child is reaped.
//!
//! The terminal is stdin/stdout/stderr: mbsync prints its progress counters
//! only to a TTY. Helper programs ([`spawn_helper`]: a user's command, gpg)
//! get a session and terminal of their own the same way, so they die with
//! Neovim too, but their standard descriptors are pipes; the terminal is
//! held open as descriptor 3 only to stay their controlling one (the kernel
//! drops that link when the last descriptor of a terminal is closed).
//!
//! Children start through `posix_spawn`, which does not copy Neovim's page
//! tables the way `fork` does (measured: mbsync's `exec` comes 2 ms sooner
//! after the command), and then cannot run code of ours before `exec`: all
//! of the above is set up with spawn attributes and file actions. The program is found in PATH here, and the environment comes
//! from [`crate::env`]'s snapshot: the child shares this process's memory
//! until its `exec`, so it must not read the environment Neovim changes.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, Winsize};
use nix::sys::signal::{killpg, Signal};

use nix::unistd::{access, AccessFlags, Pid};
use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::runtime;

/// What follows "PROGRAM not found" when a program to start is missing
/// (`mbsync::errors::summary` puts mbsync's own advice in its place).
pub const NOT_FOUND_ADVICE: &str = ": install it or set its path in the configuration";

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Terminal width; mbsync truncates its counters to fit.
    pub columns: u16,
}

/// A running child with the master side of its terminal. Its pid is also
/// its session and process group id.
pub struct PtyChild {
    pub pid: i32,
    pub master: OwnedFd,
    /// Kills the group and reaps the child when dropped.
    pub leader: Leader,
}

/// Starts `spec` under a new pseudo-terminal, in its own session.
pub fn spawn_pty(spec: &Spec) -> Result<PtyChild> {
    if runtime::is_stopped() {
        return Err(Error::new(
            ErrorKind::Cancelled,
            "himalaya-sync is shutting down",
        ));
    }
    let program = spec.program.display().to_string();
    let (master, slave, terminal) = open_pty(spec.columns)?;
    let argv: Vec<OsString> = std::iter::once(spec.program.clone().into_os_string())
        .chain(spec.args.iter().map(OsString::from))
        .collect();
    let mut set: Vec<(OsString, OsString)> = vec![
        ("COLUMNS".into(), spec.columns.to_string().into()),
        ("LINES".into(), "50".into()),
    ];
    set.extend(spec.env.iter().map(|(k, v)| (k.into(), v.into())));
    let mut vars: Vec<(OsString, OsString)> = crate::env::vars_os()
        .into_iter()
        .filter(|(k, _)| !set.iter().any(|(s, _)| s == k))
        .collect();
    vars.extend(set);
    let not_found = || {
        Error::new(
            ErrorKind::Config,
            format!("{program} not found{NOT_FOUND_ADVICE}"),
        )
    };
    let file = locate(&spec.program, &vars).ok_or_else(not_found)?;
    let env = environ(vars);
    let pid = posix_spawn_on_terminal(&terminal, Fds::Terminal, &file, &argv, &env)
        .map_err(|e| start_error(e, &program, not_found))?;
    // The child has its own descriptors now (the spawn returns after its
    // exec); the master sees EIO once the child and its own children close
    // theirs.
    drop(slave);
    Ok(PtyChild {
        pid,
        master,
        leader: Leader::new(pid, true, true),
    })
}

/// `KEY=value` strings for `posix_spawn`.
fn environ(vars: Vec<(OsString, OsString)>) -> Vec<OsString> {
    vars.into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            OsString::from_vec(kv)
        })
        .collect()
}

/// The terminal side of a pseudo-terminal: its path, opened again by the
/// child (a session leader opening a terminal makes it its controlling one).
struct Terminal {
    path: CString,
}

/// A running helper program: its own session and process group (its pid),
/// pipes to its standard descriptors.
pub struct HelperChild {
    pub pid: i32,
    pub stdin: Option<std::fs::File>,
    pub stdout: std::fs::File,
    pub stderr: std::fs::File,
    /// Reaps the helper when dropped; what it left running in its group is
    /// killed only if it had not exited (see [`Leader::new`]).
    pub leader: Leader,
    /// The master side of its controlling terminal. Keep it until the
    /// child is reaped: when it closes (also when Neovim is killed), the
    /// kernel hangs the terminal up and SIGHUP ends the helper's group.
    pub terminal: OwnedFd,
}

/// Starts `file` (located with [`locate`]) as `argv` with exactly the
/// environment `vars`, in a session of its own on a new pseudo-terminal,
/// with a pipe for stdin (`/dev/null` without `stdin`), stdout and stderr.
/// `what` names it in errors; `not_found` is the error when `file` is
/// missing. With `finishing`, shutdown leaves it alone (it saves a token;
/// see [`crate::command::off_thread_finishing`]).
pub fn spawn_helper(
    what: &str,
    not_found: impl Fn() -> Error,
    file: &Path,
    argv: &[OsString],
    vars: Vec<(OsString, OsString)>,
    stdin: bool,
    finishing: bool,
) -> Result<HelperChild> {
    let (master, _slave, terminal) = open_pty(80)?;
    spawn_helper_on(&terminal, file, argv, vars, stdin)
        .map(|(pid, stdin, stdout, stderr)| HelperChild {
            pid,
            stdin,
            stdout,
            stderr,
            leader: Leader::new(pid, false, !finishing),
            terminal: master,
        })
        .map_err(|e| start_error(e, &format!("{what} {}", file.display()), not_found))
}

/// Why a program `named` could not be started: missing (`not_found`), no
/// program at all (a text file, a folder, no x bit: the setting names the
/// wrong file, and no file permission is to be fixed), or what the system
/// says.
fn start_error(e: Errno, named: &str, not_found: impl Fn() -> Error) -> Error {
    match e {
        Errno::ENOENT => not_found(),
        Errno::EACCES | Errno::ENOEXEC | Errno::EISDIR | Errno::ENOTDIR => Error::new(
            ErrorKind::Config,
            format!(
                "{named} is not a program that can be run ({}){NOT_FOUND_ADVICE}",
                e.desc()
            ),
        ),
        e => Error::io(format!("cannot start {named}"), e),
    }
}

type HelperFiles = (i32, Option<std::fs::File>, std::fs::File, std::fs::File);

fn spawn_helper_on(
    terminal: &Terminal,
    file: &Path,
    argv: &[OsString],
    vars: Vec<(OsString, OsString)>,
    stdin: bool,
) -> std::result::Result<HelperFiles, Errno> {
    let pipe = || -> std::result::Result<(OwnedFd, OwnedFd), Errno> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        Ok((above_stdio(r)?, above_stdio(w)?))
    };
    let input = if stdin { Some(pipe()?) } else { None };
    let null = if stdin {
        None
    } else {
        Some(above_stdio(nix::fcntl::open(
            "/dev/null",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?)?)
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let child_stdin = match (&input, &null) {
        (Some((r, _)), _) => r.as_raw_fd(),
        (None, Some(n)) => n.as_raw_fd(),
        (None, None) => return Err(Errno::EINVAL),
    };
    let env = environ(vars);
    let fds = Fds::Pipes([child_stdin, out_w.as_raw_fd(), err_w.as_raw_fd()]);
    let pid = posix_spawn_on_terminal(terminal, fds, file, argv, &env)?;
    Ok((
        pid,
        input.map(|(_, w)| std::fs::File::from(w)),
        std::fs::File::from(out_r),
        std::fs::File::from(err_r),
    ))
}

/// `fd`, moved to a number above 2 if it is one of the standard ones (a
/// host started with one of them closed): the child's file actions put
/// its descriptors on 0–2, which must not overwrite each other.
fn above_stdio(fd: OwnedFd) -> std::result::Result<OwnedFd, Errno> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let moved = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// A child's standard descriptors.
enum Fds {
    /// All three on the terminal.
    Terminal,
    /// stdin, stdout and stderr from these descriptors of ours; the
    /// terminal is open as descriptor 3.
    Pipes([libc::c_int; 3]),
}

fn cstrings(items: &[OsString]) -> std::result::Result<Vec<CString>, Errno> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| Errno::EINVAL))
        .collect()
}

/// Owns a `posix_spawn_file_actions_t` and a `posix_spawnattr_t`.
struct SpawnSetup {
    actions: libc::posix_spawn_file_actions_t,
    attr: libc::posix_spawnattr_t,
}

impl Drop for SpawnSetup {
    fn drop(&mut self) {
        // SAFETY: both were initialised by SpawnSetup::new.
        unsafe {
            libc::posix_spawn_file_actions_destroy(&mut self.actions);
            libc::posix_spawnattr_destroy(&mut self.attr);
        }
    }
}

/// Turns a `posix_spawn*` return value (an error number, not -1) into a result.
fn check(rc: libc::c_int) -> std::result::Result<(), Errno> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw(rc))
    }
}

/// The file that runs `program` for a child whose whole environment is
/// `env` (the last PATH in it counts): see [`find_program`]. Every child
/// the engine starts is located here, from the environment snapshot.
pub(crate) fn locate(program: &Path, env: &[(OsString, OsString)]) -> Option<PathBuf> {
    let search = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str());
    find_program(program, search)
}

/// Finds `program` as `execvp` would, in `search` (a PATH value; unset
/// means glibc's default, `/bin:/usr/bin`): a name with a slash is used as
/// it is, otherwise the first executable file of that name in the listed
/// folders (an empty entry is the current folder).
///
/// glibc's `posix_spawnp` would look PATH up itself, in the child, which
/// shares this process's memory while Neovim's thread may be changing the
/// environment (see [`crate::env`]); the caller passes PATH from the
/// environment snapshot instead.
fn find_program(program: &Path, search: Option<&OsStr>) -> Option<PathBuf> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return Some(program.to_path_buf());
    }
    if program.as_os_str().is_empty() {
        return None;
    }
    let search = search.unwrap_or(OsStr::new("/bin:/usr/bin"));
    search
        .as_bytes()
        .split(|&b| b == b':')
        .map(|dir| {
            if dir.is_empty() {
                Path::new(".").join(program)
            } else {
                Path::new(OsStr::from_bytes(dir)).join(program)
            }
        })
        .find(|candidate| {
            candidate.is_file() && access(candidate.as_path(), AccessFlags::X_OK).is_ok()
        })
}

fn posix_spawn_on_terminal(
    terminal: &Terminal,
    fds: Fds,
    file: &Path,
    argv: &[OsString],
    env: &[OsString],
) -> std::result::Result<i32, Errno> {
    let file = CString::new(file.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let argv = cstrings(argv)?;
    let env = cstrings(env)?;
    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|s| s.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut env_ptrs: Vec<*mut libc::c_char> = env.iter().map(|s| s.as_ptr().cast_mut()).collect();
    env_ptrs.push(std::ptr::null_mut());
    // SAFETY: every struct is initialised before use and destroyed by
    // SpawnSetup's Drop; the strings and pointer arrays outlive the call.
    unsafe {
        let mut setup = std::mem::MaybeUninit::<SpawnSetup>::uninit();
        let p = setup.as_mut_ptr();
        check(libc::posix_spawn_file_actions_init(std::ptr::addr_of_mut!(
            (*p).actions
        )))?;
        if let Err(e) = check(libc::posix_spawnattr_init(std::ptr::addr_of_mut!(
            (*p).attr
        ))) {
            libc::posix_spawn_file_actions_destroy(std::ptr::addr_of_mut!((*p).actions));
            return Err(e);
        }
        let mut setup = setup.assume_init();
        // The session comes first (glibc applies it before the file
        // actions), so opening the terminal makes it the controlling one.
        match fds {
            Fds::Terminal => {
                check(libc::posix_spawn_file_actions_addopen(
                    &mut setup.actions,
                    0,
                    terminal.path.as_ptr(),
                    libc::O_RDWR,
                    0,
                ))?;
                for fd in [1, 2] {
                    check(libc::posix_spawn_file_actions_adddup2(
                        &mut setup.actions,
                        0,
                        fd,
                    ))?;
                }
            }
            Fds::Pipes(ours) => {
                // All of ours are above 2 (see `above_stdio`), so no dup2
                // overwrites one still to be copied.
                for (target, fd) in ours.into_iter().enumerate() {
                    check(libc::posix_spawn_file_actions_adddup2(
                        &mut setup.actions,
                        fd,
                        target as libc::c_int,
                    ))?;
                }
                check(libc::posix_spawn_file_actions_addopen(
                    &mut setup.actions,
                    3,
                    terminal.path.as_ptr(),
                    libc::O_RDWR,
                    0,
                ))?;
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        check(libc::posix_spawnattr_setsigmask(&mut setup.attr, &none))?;
        check(libc::posix_spawnattr_setsigdefault(&mut setup.attr, &all))?;
        check(libc::posix_spawnattr_setflags(
            &mut setup.attr,
            (libc::POSIX_SPAWN_SETSID
                | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
                | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short) as libc::c_short,
        ))?;
        let mut pid: libc::pid_t = 0;
        check(libc::posix_spawn(
            &mut pid,
            file.as_ptr(),
            &setup.actions,
            &setup.attr,
            argv_ptrs.as_ptr(),
            env_ptrs.as_ptr(),
        ))?;
        Ok(pid)
    }
}

/// A child that leads its own process group: its pid is the group's id.
///
/// Once a child is reaped its pid, and with it the number of its group, may
/// go to a new process, and a signal sent to the group after that would hit
/// a stranger. So the group is signalled only through this handle, under a
/// lock, and never once the leader is reaped; and the leader is reaped in
/// one place, when its [`Leader`] guard drops. Until then an exited leader
/// stays a zombie, which keeps its number reserved. Waiting for the exit
/// ([`wait_exit`], [`exit_of`]) does not reap.
#[derive(Clone)]
pub struct Group(Arc<GroupState>);

struct GroupState {
    pid: i32,
    /// True once the leader is reaped; signals are sent holding this lock.
    reaped: Mutex<bool>,
}

impl Group {
    /// The group's id (the leader's pid).
    pub fn id(&self) -> i32 {
        self.0.pid
    }

    /// Sends `sig` to the whole group; false when the group is gone.
    pub fn signal(&self, sig: Signal) -> bool {
        let reaped = self.0.reaped.lock();
        !*reaped && killpg(Pid::from_raw(self.0.pid), sig).is_ok()
    }

    /// The leader has not exited yet.
    pub fn running(&self) -> bool {
        !*self.0.reaped.lock() && matches!(exit_of(self.0.pid), Ok(None))
    }
}

/// Owns a [`Group`]: registered with the runtime (for shutdown) while it
/// lives; when dropped, it kills the group if asked to (or if the leader
/// still runs: nobody waits for it any more), then reaps the leader.
pub struct Leader {
    group: Group,
    kill_on_drop: bool,
}

impl Leader {
    /// `kill_on_drop`: also kill what the leader left running in its group
    /// after it exited (mbsync's `PassCmd`, `Tunnel`). A helper's group is
    /// left alone once it exited by itself, as a shell would. `tracked`:
    /// shutdown stops the group.
    fn new(pid: i32, kill_on_drop: bool, tracked: bool) -> Self {
        let group = Group(Arc::new(GroupState {
            pid,
            reaped: Mutex::new(false),
        }));
        if tracked {
            runtime::track_group(&group);
        }
        Leader {
            group,
            kill_on_drop,
        }
    }

    /// A handle for signalling the group (it may outlive the guard).
    pub fn group(&self) -> &Group {
        &self.group
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let pid = self.group.id();
        runtime::untrack_group(pid);
        let mut reaped = self.group.0.reaped.lock();
        let exited = !matches!(exit_of(pid), Ok(None));
        if self.kill_on_drop || !exited {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if exited {
            reap(pid);
            *reaped = true;
            return;
        }
        drop(reaped);
        // Killed just now: it exits shortly, but possibly not at once (a
        // process in uninterruptible sleep), and a drop must not block.
        let group = self.group.clone();
        let _ = std::thread::Builder::new()
            .name("himalaya-sync-reap".into())
            .spawn(move || {
                let _ = wait_exit(pid);
                let mut reaped = group.0.reaped.lock();
                reap(pid);
                *reaped = true;
            });
    }
}

/// Reaps child `pid`, which has exited.
fn reap(pid: i32) {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes one int to the pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 && Errno::last() == Errno::EINTR {}
}

/// Waits for child `pid` to exit, without reaping it (blocking; run it on
/// a thread of its own).
pub fn wait_exit(pid: i32) -> std::io::Result<Exit> {
    loop {
        if let Some(exit) = exit_state(pid, true)? {
            return Ok(exit);
        }
    }
}

/// How child `pid` ended, or `None` while it runs; it is not reaped.
pub fn exit_of(pid: i32) -> std::io::Result<Option<Exit>> {
    exit_state(pid, false)
}

fn exit_state(pid: i32, block: bool) -> std::io::Result<Option<Exit>> {
    let flags = libc::WEXITED | libc::WNOWAIT | if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: an all-zero siginfo_t is valid; waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes one siginfo_t to the pointer.
        if unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid filled in the SIGCHLD fields (si_pid 0: no child
        // has exited, with WNOHANG).
        let (child, status) = unsafe { (info.si_pid(), info.si_status()) };
        if child == 0 {
            return Ok(None);
        }
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => Exit {
                code: Some(status),
                signal: None,
            },
            _ => Exit {
                code: None,
                signal: Some(status),
            },
        }));
    }
}

/// Opens a pseudo-terminal whose both ends are close-on-exec from the
/// start: `openpty(3)` leaves a window in which a process started by
/// another thread (another sync, or anything Neovim starts) inherits the
/// terminal and keeps it open, so a sync would wait for that process to
/// exit. Returns the master side, the terminal side (opened here to set
/// the size; close it once the child has it) and the terminal's path.
fn open_pty(columns: u16) -> Result<(OwnedFd, OwnedFd, Terminal)> {
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
        return Err(err(Errno::last()));
    }
    let path = CString::new(name).map_err(|_| err(Errno::EINVAL))?;
    // SAFETY: the master descriptor is owned by `master`, which we consume.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    Ok((master, slave, Terminal { path }))
}

/// Bytes `pid` has read and written so far, by any means (files, sockets,
/// pipes, its terminal): `rchar + wchar` of `/proc/PID/io`. `None` when
/// that cannot be read (the process is gone, or /proc hides it).
pub fn io_bytes(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some(field("rchar:")?.wrapping_add(field("wchar:")?))
}

/// Whether `pid` is blocked reading a pipe: `/proc/PID/syscall` names
/// `read` on a descriptor that is a pipe. mbsync is there while it waits
/// for the output of a `PassCmd` (or `UserCmd`), which it runs with
/// `popen`; while it waits for the server it sits in `poll` instead.
/// `false` when this cannot be read (the process is gone, or the system
/// hides another process's system call), and for a program not named like
/// mbsync: a wrapper set as `mbsync.cmd` that reads mbsync's output from a
/// pipe is waiting for mbsync, not for a password.
pub fn reading_pipe(pid: i32) -> bool {
    let is_mbsync = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|name| name.contains("mbsync"));
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) else {
        return false;
    };
    if !is_mbsync {
        return false;
    }
    let mut fields = text.split_whitespace();
    let nr = fields.next().and_then(|n| n.parse::<libc::c_long>().ok());
    let fd = fields
        .next()
        .and_then(|a| a.strip_prefix("0x"))
        .and_then(|a| i64::from_str_radix(a, 16).ok());
    match (nr, fd) {
        (Some(nr), Some(fd)) if nr == libc::SYS_read => {
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .is_ok_and(|target| target.to_string_lossy().starts_with("pipe:"))
        }
        _ => false,
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl Exit {
    /// The same as a [`std::process::ExitStatus`].
    pub fn status(self) -> ExitStatus {
        ExitStatus::from_raw(match (self.code, self.signal) {
            (Some(code), _) => (code & 0xff) << 8,
            (None, sig) => sig.unwrap_or(libc::SIGKILL) & 0x7f,
        })
    }
}

/// TERM to the group, then KILL if its leader still runs after `grace`.
pub async fn terminate_group(group: Group, grace: Duration) {
    if !group.signal(Signal::SIGTERM) {
        return;
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !group.running() {
            return;
        }
    }
    group.signal(Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn programs_are_found_in_the_given_path_as_execvp_would() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (plain, exec, sub) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        for d in [&plain, &exec, &sub] {
            std::fs::create_dir(d).unwrap();
        }
        // Not executable, a folder, then the real one: only the last counts.
        std::fs::write(plain.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::create_dir(sub.join("tool")).unwrap();
        std::fs::write(exec.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(exec.join("tool"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let search = OsString::from(format!(
            "{}:{}:{}",
            plain.display(),
            sub.display(),
            exec.display()
        ));
        assert_eq!(
            find_program(Path::new("tool"), Some(&search)),
            Some(exec.join("tool"))
        );
        assert_eq!(find_program(Path::new("nothing"), Some(&search)), None);
        assert_eq!(find_program(Path::new(""), Some(&search)), None);
        assert_eq!(
            find_program(Path::new("./x/tool"), Some(&search)),
            Some(PathBuf::from("./x/tool")),
            "a name with a slash is used as it is"
        );
        assert_eq!(
            find_program(Path::new("sh"), None),
            Some(PathBuf::from("/bin/sh")),
            "no PATH: glibc's default"
        );
    }

    fn sh(script: &str) -> Spec {
        Spec {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("HIMALAYA_SYNC_TEST".into(), "passed".into())],
            columns: 123,
        }
    }

    /// Everything the child wrote, up to the EIO that follows its exit.
    fn output(child: PtyChild) -> (String, Exit) {
        let mut text = Vec::new();
        let mut master = std::fs::File::from(child.master);
        let _ = master.read_to_end(&mut text);
        let exit = wait_exit(child.pid).unwrap();
        (String::from_utf8_lossy(&text).replace('\r', ""), exit)
    }

    #[test]
    fn the_child_leads_a_session_on_its_terminal() {
        let child = spawn_pty(&sh(
            ": </dev/tty && echo ctty; cat /proc/$$/stat; echo \"$COLUMNS $LINES $HIMALAYA_SYNC_TEST $PATH\"",
        ))
        .unwrap();
        let pid = child.pid;
        let (text, exit) = output(child);
        assert_eq!(exit.code, Some(0), "{text}");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("ctty"), "/dev/tty opens: {text}");
        // /proc/PID/stat: pid (comm) state ppid pgrp session tty_nr ...
        let stat = lines.next().unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(fields[2], pid.to_string(), "own process group: {stat}");
        assert_eq!(fields[3], pid.to_string(), "own session: {stat}");
        assert_ne!(fields[4], "0", "a controlling terminal: {stat}");
        let path = std::env::var("PATH").unwrap();
        assert_eq!(lines.next(), Some(format!("123 50 passed {path}").as_str()));
    }

    #[test]
    fn the_child_dies_with_its_terminal_even_when_sighup_was_ignored() {
        // As under `nohup`: the child must not inherit the ignored SIGHUP.
        // SAFETY: setting a disposition; restored before the test ends.
        let old = unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
        let child = spawn_pty(&sh("echo started; exec sleep 30"));
        // SAFETY: restores the previous disposition.
        unsafe { libc::signal(libc::SIGHUP, old) };
        let child = child.unwrap();
        let mut master = std::fs::File::from(child.master);
        let mut buf = [0u8; 64];
        let n = master.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("started"));
        // What happens to the terminal when Neovim is killed.
        drop(master);
        let exit = wait_exit(child.pid).unwrap();
        assert_eq!(exit.signal, Some(libc::SIGHUP), "{exit:?}");
    }

    /// The state letter of `/proc/PID/stat` (`Z` for a zombie), if any.
    fn proc_state(pid: i32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit(')').next()?.trim_start().chars().next()
    }

    #[test]
    fn the_group_is_signalled_only_until_its_leader_is_reaped() {
        // The leader exits at once and leaves a process in its group.
        let child = spawn_pty(&sh("sleep 30 & echo $!")).unwrap();
        let (pid, leader) = (child.pid, child.leader);
        let mut master = std::fs::File::from(child.master);
        let mut buf = [0u8; 64];
        let n = master.read(&mut buf).unwrap();
        let left: i32 = String::from_utf8_lossy(&buf[..n]).trim().parse().unwrap();
        let exit = wait_exit(pid).unwrap();
        assert_eq!(exit.code, Some(0));
        // Waiting did not reap: the zombie keeps the group's number taken,
        // so signalling the group still reaches only what it left.
        assert_eq!(proc_state(pid), Some('Z'));
        let group = leader.group().clone();
        assert!(!group.running(), "the leader has exited");
        assert!(group.signal(Signal::SIGKILL));
        let gone = std::time::Instant::now() + Duration::from_secs(5);
        while proc_state(left).is_some_and(|s| s != 'Z') && std::time::Instant::now() < gone {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_ne!(
            proc_state(left),
            Some('S'),
            "the process left in the group was killed"
        );
        // Dropping the guard reaps the leader; after that the handle never
        // signals the number again, whoever may get it next.
        drop(leader);
        assert_eq!(proc_state(pid), None, "reaped");
        assert!(!group.signal(Signal::SIGTERM));
        assert!(!group.running());
    }

    #[test]
    fn a_dropped_leader_kills_a_group_still_running_and_reaps_it() {
        let child = spawn_pty(&sh("exec sleep 30")).unwrap();
        let (pid, group) = (child.pid, child.leader.group().clone());
        assert!(group.running());
        drop(child.leader);
        // Reaped by a thread of its own once SIGKILL has ended it.
        let gone = std::time::Instant::now() + Duration::from_secs(5);
        while proc_state(pid).is_some() && std::time::Instant::now() < gone {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(proc_state(pid), None, "killed and reaped");
        assert!(!group.signal(Signal::SIGTERM));
    }

    #[test]
    fn exit_statuses_convert_as_the_kernel_reports_them() {
        let code = Exit {
            code: Some(3),
            signal: None,
        }
        .status();
        assert_eq!((code.code(), code.signal()), (Some(3), None));
        let sig = Exit {
            code: None,
            signal: Some(libc::SIGTERM),
        }
        .status();
        assert_eq!((sig.code(), sig.signal()), (None, Some(libc::SIGTERM)));
    }

    #[test]
    fn a_missing_program_is_a_config_error_naming_it() {
        let spec = Spec {
            program: "himalaya-sync-no-such-program".into(),
            args: vec![],
            env: vec![],
            columns: 80,
        };
        let Err(e) = spawn_pty(&spec) else {
            panic!("started a program that does not exist");
        };
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(
            e.message
                .starts_with("himalaya-sync-no-such-program not found"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_file_that_is_no_program_is_a_config_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("mbsyncrc");
        std::fs::write(&text, "IMAPAccount x\n").unwrap();
        for program in [text, dir.path().to_path_buf()] {
            let spec = Spec {
                program: program.clone(),
                args: vec![],
                env: vec![],
                columns: 80,
            };
            let Err(e) = spawn_pty(&spec) else {
                panic!("started {}", program.display());
            };
            assert_eq!(e.kind, ErrorKind::Config, "{}", e.message);
            let named = format!("{} is not a program that can be run (", program.display());
            assert!(e.message.starts_with(&named), "{}", e.message);
            assert!(e.message.ends_with(NOT_FOUND_ADVICE), "{}", e.message);
        }
    }
}
