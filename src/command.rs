//! Short helper programs: user commands (`sh -c`), `gpg`, `secret-tool`.
//!
//! Each runs in a session and process group of its own, registered with
//! the runtime (so shutdown kills it), on a pseudo-terminal of its own (so
//! it also dies when Neovim is killed: see [`crate::process::spawn_helper`]),
//! with a deadline after which the whole group is stopped (SIGTERM, then
//! SIGKILL after [`STOP_GRACE`]): a command that left a child holding its
//! output open cannot hang us. Nobody can answer a
//! question asked on that terminal, so a program that writes to it (a
//! password prompt) is stopped at once with an error that says so. Input
//! goes through stdin, never through arguments, so secrets do not show up
//! in `ps`. Given a stop flag ([`Run::stop`], see [`off_thread`]), a
//! program is also stopped as soon as nobody waits for it any more (a
//! cancelled sync or check): SIGTERM, then SIGKILL after [`STOP_GRACE`], so
//! a script that stores a token itself can finish writing it.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};

use crate::error::{Error, ErrorKind, Result};
use crate::runtime;

/// The most output kept from one stream of a program.
pub const MAX_OUTPUT: u64 = 1 << 20;

/// How long a stopped program gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// One program run.
pub struct Run<'a> {
    /// Names the program in messages ("token load command", "gpg").
    pub what: &'a str,
    pub program: &'a str,
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    /// Written to stdin, which is then closed; `None` gives `/dev/null`.
    pub stdin: Option<&'a [u8]>,
    pub timeout: Duration,
    /// When it becomes true, the program is stopped (see the module docs)
    /// and the run ends as cancelled; already true, it is not started.
    pub stop: Option<&'a AtomicBool>,
}

/// How a program ended and what it printed.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// How the programs of the work running on a thread are to be treated,
/// for code that takes no flag of its own (the token stores).
#[derive(Clone)]
enum Ambient {
    Plain,
    /// [`off_thread_stoppable`] work: stopped when this flag is set.
    Stoppable(Arc<AtomicBool>),
    /// [`off_thread_finishing`] work: run, and go on running, once
    /// shutdown has begun.
    Finishing,
}

thread_local! {
    static AMBIENT: std::cell::RefCell<Ambient> = const { std::cell::RefCell::new(Ambient::Plain) };
}

/// Runs `f` with `ambient` set for this thread, and only while it runs
/// (blocking threads are reused by other work).
fn with_ambient<T>(ambient: Ambient, f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            AMBIENT.with(|a| *a.borrow_mut() = Ambient::Plain);
        }
    }
    let _reset = Reset;
    AMBIENT.with(|a| *a.borrow_mut() = ambient);
    f()
}

/// Runs a program in its own process group; kills the group when the time
/// is up, shutdown begins, `stop` (or the flag of the
/// [`off_thread_stoppable`] work it runs in) is set, or it asks for
/// terminal input.
pub fn run(r: &Run<'_>) -> Result<Output> {
    let ambient = AMBIENT.with(|a| a.borrow().clone());
    let finishing = matches!(ambient, Ambient::Finishing);
    if runtime::is_stopped() && !finishing {
        return Err(Error::new(
            ErrorKind::Cancelled,
            "himalaya-sync is shutting down",
        ));
    }
    let ambient_stop = match &ambient {
        Ambient::Stoppable(flag) => Some(flag.as_ref()),
        _ => None,
    };
    let stop = r.stop.or(ambient_stop);
    let stopped = || stop.is_some_and(|s| s.load(Ordering::SeqCst));
    let cancelled = || {
        Error::new(
            ErrorKind::Cancelled,
            format!("{} was stopped: nothing waits for it any more", r.what),
        )
    };
    if stopped() {
        return Err(cancelled());
    }
    let deadline = Instant::now() + r.timeout;
    // The environment comes from the snapshot (see crate::env), never from
    // this process's own, which Neovim's thread may be changing. The program
    // is located here too: given a changed environment and a bare name,
    // std would fork (copying Neovim's page tables) instead of using
    // posix_spawn.
    // A variable set here replaces Neovim's (a duplicate would be found
    // first by getenv(3)).
    let mut env: Vec<(OsString, OsString)> = crate::env::vars_os()
        .into_iter()
        .filter(|(k, _)| !r.env.iter().any(|(s, _)| OsStr::new(s) == k))
        .collect();
    env.extend(r.env.iter().map(|(k, v)| (k.into(), v.into())));
    let not_found = || {
        Error::new(
            ErrorKind::Config,
            format!("{} not found: install it or set its path", r.program),
        )
    };
    let file = crate::process::locate(Path::new(r.program), &env).ok_or_else(not_found)?;
    let argv: Vec<OsString> = std::iter::once(OsString::from(r.program))
        .chain(r.args.iter().map(OsString::from))
        .collect();
    let child = crate::process::spawn_helper(
        r.what,
        not_found,
        &file,
        &argv,
        env,
        r.stdin.is_some(),
        finishing,
    )?;
    let pid = child.pid;
    // The leader reaps the helper when this returns; until then its group
    // can be signalled safely (see `process::Group`).
    let (leader, terminal) = (child.leader, child.terminal);
    let group = leader.group().clone();
    // Polled below without blocking: anything on it is a question.
    let _ = nix::fcntl::fcntl(
        &terminal,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let kill = || {
        group.signal(Signal::SIGKILL);
    };
    let wait = || crate::process::wait_exit(pid);
    // SIGTERM first, so that the program can finish what it is writing (a
    // token store saving), SIGKILL for the group after [`STOP_GRACE`].
    let terminate = || {
        group.signal(Signal::SIGTERM);
        let grace = Instant::now() + STOP_GRACE;
        loop {
            match crate::process::exit_of(pid) {
                Ok(None) if Instant::now() < grace => thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    kill();
                    let _ = wait();
                    return;
                }
                // What it started in its group may still run.
                _ => return kill(),
            }
        }
    };
    if let (Some(data), Some(mut pipe)) = (r.stdin, child.stdin) {
        let data = data.to_vec();
        thread::spawn(move || {
            // Writing to a program that exited raises SIGPIPE, whose default
            // action would kill the host (Neovim may not ignore it). Blocked
            // in this thread, the write fails with EPIPE instead and the
            // pending signal goes away with the thread.
            let mut pipe_signal = SigSet::empty();
            pipe_signal.add(Signal::SIGPIPE);
            let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&pipe_signal), None);
            // A program that exits without reading all of stdin is its own
            // business; its exit status tells what happened.
            let _ = pipe.write_all(&data);
        });
    }
    let (tx, rx) = mpsc::channel();
    for (is_err, mut pipe) in [(false, child.stdout), (true, child.stderr)] {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut pipe).take(MAX_OUTPUT).read_to_end(&mut buf);
            // Keep draining so a chatty program is not stuck on a full pipe.
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            let _ = tx.send((is_err, buf));
        });
    }
    drop(tx);
    let timed_out = || {
        Error::new(
            ErrorKind::Timeout,
            format!(
                "{} did not finish within {} s and was killed",
                r.what,
                r.timeout.as_secs_f64()
            ),
        )
    };
    let status = loop {
        match crate::process::exit_of(pid) {
            Ok(Some(exit)) => break exit.status(),
            Ok(None) => {}
            Err(e) => {
                kill();
                let _ = wait();
                return Err(Error::io(format!("cannot wait for {}", r.what), e));
            }
        }
        if !finishing && runtime::stop_flag().load(Ordering::SeqCst) {
            // The shutdown bounds this: it sends every group SIGKILL once
            // its own grace is over.
            terminate();
            return Err(Error::new(
                ErrorKind::Cancelled,
                "himalaya-sync is shutting down",
            ));
        }
        if stopped() {
            terminate();
            return Err(cancelled());
        }
        let mut probe = [0u8; 64];
        if matches!(nix::unistd::read(&terminal, &mut probe), Ok(n) if n > 0) {
            kill();
            let _ = wait();
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{} asked for input on a terminal, which it cannot get here: set it up to \
                     work without one (for gpg: an agent with a graphical pinentry, or the \
                     passphrase cached)",
                    r.what
                ),
            ));
        }
        if Instant::now() >= deadline {
            terminate();
            return Err(timed_out());
        }
        thread::sleep(Duration::from_millis(5));
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        // Something the program started in the background may still hold
        // its output open; that counts against the same deadline.
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((false, buf)) => stdout = buf,
            Ok((true, buf)) => stderr = buf,
            Err(_) => {
                kill();
                return Err(timed_out());
            }
        }
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Runs blocking work on tokio's blocking threads and waits for it. `f`
/// gets a flag to pass on as [`Run::stop`]: dropping the returned future
/// (the task awaiting it was cancelled) sets it, so a program nobody waits
/// for any more is killed instead of running to its own time limit.
pub async fn off_thread<T: Send + 'static>(
    f: impl FnOnce(&AtomicBool) -> Result<T> + Send + 'static,
) -> Result<T> {
    off_thread_with(move |flag| f(flag)).await
}

/// [`off_thread`] handing `f` the flag itself.
async fn off_thread_with<T: Send + 'static>(
    f: impl FnOnce(&Arc<AtomicBool>) -> Result<T> + Send + 'static,
) -> Result<T> {
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let flag = stop.0.clone();
    tokio::task::spawn_blocking(move || f(&flag))
        .await
        .map_err(|e| Error::new(ErrorKind::Unknown, format!("internal error: {e}")))?
}

/// The environment variable that carries a user's shell command to `sh`
/// (see [`SHELL_ARGS`]).
pub const SHELL_CMD_ENV: &str = "HIMALAYA_SYNC_CMD";

/// `sh` arguments that run the command in [`SHELL_CMD_ENV`]. A command
/// such as `printf <key>` holds a secret, and a process's arguments are
/// readable by every local user (`/proc/PID/cmdline`), its environment
/// only by its owner. The variable is unset before the command runs, so
/// that what it starts does not inherit it.
pub const SHELL_ARGS: [&str; 2] = [
    "-c",
    "himalaya_sync_cmd=$HIMALAYA_SYNC_CMD; unset HIMALAYA_SYNC_CMD; eval \"$himalaya_sync_cmd\"",
];

/// [`off_thread`] for work that must finish once begun, even when shutdown
/// begins meanwhile (saving a token: a rotated refresh token that is not
/// saved is lost). Its programs are not refused or stopped by shutdown,
/// only by their time limit; shutdown waits a little for such work when it
/// holds [`runtime::must_finish`], and Neovim's exit ends the rest.
pub async fn off_thread_finishing<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    off_thread_with(move |_| with_ambient(Ambient::Finishing, f)).await
}

/// [`off_thread`] for work that runs programs without taking a stop flag
/// (a token store reading a token): every program it runs is stopped when
/// nobody waits for the work any more. Not for work that must finish once
/// begun (saving a token).
pub async fn off_thread_stoppable<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    off_thread_with(move |stop| with_ambient(Ambient::Stoppable(stop.clone()), f)).await
}

/// Runs the shell command `cmd` (through [`SHELL_ARGS`]) and returns the
/// first line of its stdout: a password or a secret. Errors never quote
/// anything the command printed.
pub fn first_line(
    what: &str,
    cmd: &str,
    timeout: Duration,
    stop: Option<&AtomicBool>,
) -> Result<String> {
    let out = run(&Run {
        what,
        program: "sh",
        args: &SHELL_ARGS,
        env: &[(SHELL_CMD_ENV, cmd)],
        stdin: None,
        timeout,
        stop,
    })?;
    if !out.status.success() {
        return Err(Error::new(
            ErrorKind::Auth,
            format!("{what} failed ({})", out.status),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().next().map(str::trim) {
        Some(line) if !line.is_empty() => Ok(line.to_string()),
        _ => Err(Error::new(
            ErrorKind::Auth,
            format!("{what} printed nothing"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Programs are found in PATH here (see `run`), keep the name they were
    /// given as argv[0], and a missing one is a one-line config error.
    #[test]
    fn programs_are_found_by_name_and_a_missing_one_is_named() {
        let argv0 = first_line(
            "cmd",
            "tr '\\0' ' ' < /proc/$$/cmdline",
            Duration::from_secs(5),
            None,
        )
        .unwrap();
        assert!(argv0.starts_with("sh -c "), "{argv0}");
        let start = |what, program| {
            run(&Run {
                what,
                program,
                args: &[],
                env: &[],
                stdin: None,
                timeout: Duration::from_secs(5),
                stop: None,
            })
            .err()
            .unwrap()
        };
        let e = start("helper", "himalaya-sync-no-such-program");
        assert_eq!(e.kind, ErrorKind::Config);
        assert_eq!(
            e.message,
            "himalaya-sync-no-such-program not found: install it or set its path"
        );
        // A file that is no program: the setting names the wrong file.
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("token.txt");
        std::fs::write(&text, "not a program\n").unwrap();
        let program = text.to_str().unwrap();
        let e = start("refresh_cmd", program);
        assert_eq!(e.kind, ErrorKind::Config, "{}", e.message);
        let named = format!("refresh_cmd {program} is not a program that can be run (");
        assert!(e.message.starts_with(&named), "{}", e.message);
    }

    #[test]
    fn first_line_and_failures_never_quote_output() {
        let line =
            first_line("cmd", "printf 'one\\ntwo\\n'", Duration::from_secs(5), None).unwrap();
        assert_eq!(line, "one");
        let err =
            first_line("cmd", "echo secret; exit 3", Duration::from_secs(5), None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Auth);
        assert!(!err.message.contains("secret"), "{err}");
        let err = first_line("cmd", "true", Duration::from_secs(5), None).unwrap_err();
        assert!(err.message.contains("printed nothing"));
    }

    /// The command text is in no process's arguments, where every local
    /// user can read it, and what it runs does not inherit it.
    #[test]
    fn the_command_text_stays_out_of_process_arguments() {
        let secret = "key-7d1e0c5a9b";
        let cmd = format!("sleep 2; printf '%s %s' {secret} \"${{{SHELL_CMD_ENV}-unset}}\"");
        let runner =
            std::thread::spawn(move || first_line("cmd", &cmd, Duration::from_secs(10), None));
        // Looked at until the shell was seen (a busy machine may take a
        // while to start it) and for as long as the command runs.
        let mut seen_sh = false;
        while !runner.is_finished() {
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(args) = std::fs::read(entry.path().join("cmdline")) else {
                    continue;
                };
                let args = String::from_utf8_lossy(&args).replace('\0', " ");
                assert!(!args.contains(secret), "visible in /proc: {args}");
                seen_sh |= args.contains("eval");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(seen_sh, "the shell was never seen running");
        let line = runner.join().unwrap().unwrap();
        assert_eq!(line, format!("{secret} unset"));
    }

    #[test]
    fn a_timeout_kills_the_whole_group() {
        let start = Instant::now();
        let err = first_line(
            "cmd",
            "sleep 30 & sleep 30",
            Duration::from_millis(300),
            None,
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert!(start.elapsed() < Duration::from_secs(5));

        // SIGTERM first: a program that is saving something finishes it.
        let dir = tempfile::tempdir().unwrap();
        let saved = dir.path().join("saved");
        let cmd = format!(
            "trap 'sleep 0.2; echo saved > {}; exit 1' TERM; while :; do sleep 0.05; done",
            saved.display()
        );
        // Long enough for the shell to set its trap on a busy machine.
        let err = first_line("cmd", &cmd, Duration::from_secs(1), None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
        assert!(saved.exists(), "killed before it could finish");
    }

    /// A cancelled sync or check drops the future that waits: the program
    /// (and what it started) is killed at once, not at its time limit.
    #[test]
    fn dropping_the_waiting_future_kills_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let saved = dir.path().join("saved");
        // It stores something when asked to stop, as a script that writes a
        // token would; the pid file appears whole (rename).
        let cmd = format!(
            "trap 'echo yes > {saved}; exit 1' TERM; sleep 30 & echo $! > {pid}.tmp; mv {pid}.tmp {pid}; wait",
            saved = saved.display(),
            pid = pid_file.display()
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let start = Instant::now();
        let (tx, rx) = mpsc::channel();
        rt.block_on(async {
            let run = off_thread(move |stop| {
                let r = first_line("cmd", &cmd, Duration::from_secs(30), Some(stop));
                let _ = tx.send(r);
                Ok(())
            });
            // Given up on once the program runs.
            let started = async {
                while !pid_file.exists() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::select! {
                _ = run => panic!("the program ended by itself"),
                _ = started => {}
            }
        });
        let err = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Cancelled, "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
        let pid: i32 = std::fs::read_to_string(dir.path().join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // It was asked first (SIGTERM), and its background child went with
        // it (the group was killed).
        assert!(saved.exists(), "the TERM handler did not run");
        assert!(gone(pid), "sleep {pid} still runs");
        drop(rt);
    }

    /// True once `pid` has exited (a zombie that nobody reaps counts: in a
    /// container, PID 1 may not reap orphans).
    fn gone(pid: i32) -> bool {
        (0..200).any(|_| {
            thread::sleep(Duration::from_millis(10));
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Ok(stat) => stat
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
                Err(_) => true,
            }
        })
    }

    /// Nobody can answer a question on the helper's terminal: a prompt
    /// ends the run at once with an error that says what happened.
    #[test]
    fn a_prompt_on_the_terminal_is_an_error_at_once() {
        let start = Instant::now();
        let err = first_line(
            "PassCmd",
            "printf 'Password: ' > /dev/tty; read -r p < /dev/tty; echo \"$p\"",
            Duration::from_secs(30),
            None,
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config, "{err}");
        assert!(
            err.message
                .starts_with("PassCmd asked for input on a terminal"),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    /// A program whose stop flag is already set is not started.
    #[test]
    fn a_stopped_run_starts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mark = dir.path().join("ran");
        let err = first_line(
            "cmd",
            &format!("touch {}", mark.display()),
            Duration::from_secs(5),
            Some(&AtomicBool::new(true)),
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Cancelled);
        assert!(!mark.exists());
    }

    /// What a command leaves running in the background ends when it exits
    /// (the kernel hangs up its terminal: SIGHUP), instead of living on
    /// after Neovim, or holding the output open until the deadline.
    #[test]
    fn background_children_end_with_the_command() {
        let start = Instant::now();
        let line = first_line(
            "cmd",
            "sleep 41.276 & echo token",
            Duration::from_secs(20),
            None,
        )
        .unwrap();
        assert_eq!(line, "token");
        assert!(start.elapsed() < Duration::from_secs(5));
        let running = || {
            std::process::Command::new("pgrep")
                .args(["-f", "-r", "R,S,D,T", "sleep 41.276"])
                .status()
                .unwrap()
                .success()
        };
        let ended = (0..200).any(|_| {
            thread::sleep(Duration::from_millis(10));
            !running()
        });
        assert!(ended, "the background sleep still runs");
    }
}
