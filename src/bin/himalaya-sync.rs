//! `himalaya-sync`: the engine from the command line. Its commands are
//! listed in [`HELP`] (`himalaya-sync help`).
//!
//! Errors go to stderr, with a non-zero exit (2 for a bad argument).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use himalaya_sync::error::{Error, ErrorKind, Result};
use himalaya_sync::lock::{default_dir, LockDir, MAX_WAIT};
use himalaya_sync::manager::{Manager, Settings, StartOptions, SyncType};
use himalaya_sync::oauth::account::state_dir;
use himalaya_sync::oauth::Tokens;
use himalaya_sync::runtime;

const USAGE: &str = "usage: himalaya-sync {help | version | locks | cleanup-locks | with-lock NAME [-t SECS] -- CMD [ARGS...] | sync ACCOUNT [full|inbox] [-c MBSYNCRC] [-t SECS] | relay --kbps N HOST PORT | token ACCOUNT}";

/// What `himalaya-sync help` prints.
const HELP: &str = "\
himalaya-sync: the engine of himalaya-sync.nvim from the command line

  himalaya-sync help                     this text
  himalaya-sync version                  its version and build (also --version)
  himalaya-sync locks                    list named locks and their holders
  himalaya-sync cleanup-locks            remove lock files nobody holds
  himalaya-sync with-lock NAME [-t SECS] -- CMD [ARGS...]
                                         run CMD while holding lock NAME
  himalaya-sync sync ACCOUNT [full|inbox] [-c MBSYNCRC] [-t SECS]
                                         one sync, through the same lock as Neovim
  himalaya-sync relay --kbps N HOST PORT stdin/stdout <-> HOST:PORT at N kB/s each
                                         way (mbsync's Tunnel for throttled accounts)
  himalaya-sync token ACCOUNT            print a valid OAuth2 access token, refreshing
                                         it first if needed (mbsync's PassCmd)

Locks live in $HIMALAYA_SYNC_LOCK_DIR, else $XDG_RUNTIME_DIR/himalaya-sync/locks,
else $XDG_STATE_HOME (or ~/.local/state)/nvim/himalaya-sync/locks.
An error is told on stderr (a usage error with the usage line); the exit
status is 2 for a bad argument, 1 for any other failure. In Neovim:
:help himalaya-sync-cli";

/// Runs `prog` for `with-lock` and returns its exit code (128 + the signal
/// when a signal ended it). The lock must outlive the command: TERM, INT
/// and HUP sent to this tool go on to the command, and the tool waits for
/// it to end; should the tool die anyway (SIGKILL), the kernel sends the
/// command SIGTERM, so that it does not go on without the lock.
fn run_holding(prog: &str, args: &[String]) -> Result<u8> {
    use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use std::os::unix::process::CommandExt;

    let forwarded = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];
    let mut set = SigSet::empty();
    forwarded.iter().for_each(|s| set.add(*s));
    // Blocked here they wait to be read below. The child inherits the mask,
    // and a program that does not reset it (sleep, most of them) would
    // never get the signals passed on, nor the SIGTERM of its parent's
    // death: it is emptied before the command starts.
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| Error::io("cannot block signals", e))?;
    let mut command = std::process::Command::new(prog);
    command.args(args);
    // SAFETY: sigemptyset, sigprocmask and prctl are async-signal-safe and
    // touch only this process.
    unsafe {
        command.pre_exec(|| {
            let mut none: libc::sigset_t = std::mem::zeroed();
            if libc::sigemptyset(&mut none) == -1
                || libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) == -1
                || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| Error::io(format!("cannot run {prog}"), e))?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let wait = libc::timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    loop {
        // SAFETY: `set` is a valid signal set; no siginfo is asked for.
        let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &wait) };
        if let Ok(sig) = Signal::try_from(sig) {
            let _ = kill(pid, sig);
        }
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code.clamp(0, 255) as u8),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok((128 + sig as i32).min(255) as u8),
            Ok(_) => {}
            Err(e) => return Err(Error::io(format!("cannot wait for {prog}"), e)),
        }
    }
}

fn usage(msg: &str) -> Error {
    Error::invalid(format!("{msg}\n{USAGE}"))
}

fn seconds(v: Option<String>) -> Result<Duration> {
    let v = v.ok_or_else(|| usage("-t needs a number of seconds"))?;
    v.parse::<f64>()
        .ok()
        .filter(|s| (0.0..=MAX_WAIT).contains(s))
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| {
            usage(&format!(
                "invalid timeout {v:?}: expected seconds from 0 to {MAX_WAIT}"
            ))
        })
}

fn locks() -> Result<LockDir> {
    LockDir::open(default_dir()?)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("himalaya-sync: {}", e.message);
            ExitCode::from(if e.kind == ErrorKind::Invalid { 2 } else { 1 })
        }
    }
}

/// `-h` or `--help`: asked anywhere before a command to run (`with-lock`'s
/// after `--`), it is what the user wants, not an account or a host.
fn wants_help(args: &[String]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "-h" || a == "--help")
}

fn run(args: Vec<String>) -> Result<ExitCode> {
    if wants_help(&args)
        && args
            .first()
            .is_some_and(|c| !matches!(c.as_str(), "help" | "-h" | "--help"))
    {
        println!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut it = args.into_iter();
    match it.next().as_deref() {
        Some("help" | "--help" | "-h") => {
            no_more(it)?;
            println!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        Some("version" | "--version") => {
            no_more(it)?;
            println!(
                "himalaya-sync {} (build {})",
                himalaya_sync::VERSION,
                himalaya_sync::BUILD_ID
            );
            Ok(ExitCode::SUCCESS)
        }
        Some("locks") => {
            no_more(it)?;
            let dir = locks()?;
            println!("Locks in {}", dir.path().display());
            for l in dir.list()? {
                if l.held {
                    println!(
                        "  {:<24} held by pid {} ({}) {}",
                        l.name,
                        l.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                        l.process.unwrap_or_else(|| "?".into()),
                        l.purpose.unwrap_or_default()
                    );
                } else {
                    println!("  {:<24} free", l.name);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some("cleanup-locks") => {
            no_more(it)?;
            println!("removed {} stale lock files", locks()?.cleanup_stale()?);
            Ok(ExitCode::SUCCESS)
        }
        Some("with-lock") => {
            let name = it
                .next()
                .ok_or_else(|| usage("with-lock needs a lock name"))?;
            let mut timeout = Duration::ZERO;
            let mut cmd = Vec::new();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-t" => timeout = seconds(it.next())?,
                    "--" => {
                        cmd.extend(it.by_ref());
                    }
                    other => return Err(usage(&format!("unexpected argument {other:?}"))),
                }
            }
            let (prog, rest) = cmd
                .split_first()
                .ok_or_else(|| usage("with-lock needs a command after --"))?;
            let guard = locks()?.acquire(
                &name,
                timeout,
                &format!("himalaya-sync with-lock {prog}"),
                None,
            )?;
            let code = run_holding(prog, rest)?;
            drop(guard);
            Ok(ExitCode::from(code))
        }
        Some("sync") => sync(it),
        Some("relay") => relay(it),
        Some("token") => token(it),
        Some(other) => Err(usage(&format!("unknown command {other:?}"))),
        None => Err(usage("a command is needed")),
    }
}

/// A command that takes nothing more refuses what is left, rather than
/// ignore an argument the user meant something by.
fn no_more(mut it: impl Iterator<Item = String>) -> Result<()> {
    match it.next() {
        Some(extra) => Err(usage(&format!("unexpected argument {extra:?}"))),
        None => Ok(()),
    }
}

/// Prints the account's access token on stdout, nothing else: mbsync reads
/// it as the password (`PassCmd "himalaya-sync token ACCOUNT"`). The
/// account's settings are those Neovim wrote to the state folder.
fn token(mut it: impl Iterator<Item = String>) -> Result<ExitCode> {
    let account = it.next().ok_or_else(|| usage("token needs an account"))?;
    no_more(it)?;
    // Refused as a bad argument here, not as an account to configure.
    himalaya_sync::oauth::store::validate_account(&account)
        .map_err(|e| usage(&format!("invalid account {account:?}: {}", e.message)))?;
    let state = state_dir()?;
    let acct = himalaya_sync::oauth::account::load(&state, &account)?;
    let tokens = Tokens::new(Arc::new(locks()?), state);
    let token = runtime::handle()?.block_on(tokens.valid_token(&acct))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{token}")
        .and_then(|_| out.flush())
        .map_err(|e| Error::io("cannot write the token", e))?;
    Ok(ExitCode::SUCCESS)
}

/// A sync from the command line. INT, TERM and HUP cancel it, and it ends
/// as any cancelled sync: mbsync stopped, its message printed, its history
/// saved, the exit status 128 + the signal.
fn sync(mut it: impl Iterator<Item = String>) -> Result<ExitCode> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut stop = SigSet::empty();
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP]
        .iter()
        .for_each(|s| stop.add(*s));
    // Blocked before the runtime's threads start, so that every thread
    // inherits the block and the signals wait for the thread below
    // (mbsync starts with an empty mask: see `process`).
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stop), None)
        .map_err(|e| Error::io("cannot block signals", e))?;
    let account = it.next().ok_or_else(|| usage("sync needs an account"))?;
    let mut kind = SyncType::Full;
    // History and repair backups go where Neovim keeps them by default.
    let mut settings = Settings {
        state_dir: state_dir().ok(),
        ..Settings::default()
    };
    let mut wait = Duration::ZERO;
    while let Some(a) = it.next() {
        match a.as_str() {
            "full" | "inbox" => kind = SyncType::parse(&a)?,
            "-c" => {
                settings.mbsync_config =
                    Some(it.next().ok_or_else(|| usage("-c needs a path"))?.into())
            }
            "-t" => wait = seconds(it.next())?,
            other => return Err(usage(&format!("unexpected argument {other:?}"))),
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let emit = move |_id: u64, name: &str, data: serde_json::Value| {
        if name == "sync_done" {
            let _ = tx.send(data);
        } else if name == "sync_waiting" && data["waiting_for"].is_string() {
            // Says why nothing seems to happen (`-t`: another process syncs).
            eprintln!("{}", data["message"].as_str().unwrap_or(""));
        }
    };
    let manager = Arc::new(Manager::new(
        Arc::new(locks()?),
        Arc::new(emit),
        Box::new(runtime::next_id),
        runtime::handle()?,
    ));
    manager.configure(settings);
    manager.start(StartOptions {
        kind,
        account,
        folders: Vec::new(),
        wait_lock: wait,
    })?;
    let signalled = Arc::new(std::sync::atomic::AtomicI32::new(0));
    {
        let (manager, signalled) = (manager.clone(), signalled.clone());
        // Lives until the process exits; nothing to join.
        std::thread::spawn(move || {
            if let Ok(sig) = stop.wait() {
                signalled.store(sig as i32, std::sync::atomic::Ordering::SeqCst);
                manager.cancel(None);
            }
        });
    }
    let done = rx
        .recv()
        .map_err(|_| Error::new(ErrorKind::Unknown, "the sync ended without a result"))?;
    runtime::shutdown(Duration::from_millis(200));
    println!("{}", done["message"].as_str().unwrap_or(""));
    Ok(match signalled.load(std::sync::atomic::Ordering::SeqCst) {
        0 if done["status"] == "completed" => ExitCode::SUCCESS,
        0 => ExitCode::from(1),
        sig => ExitCode::from((128 + sig).min(255) as u8),
    })
}

/// Copies bytes from `from` to `to` at most `rate` bytes a second: after
/// each chunk it sleeps until the bytes sent fit the rate since the start.
fn pump(mut from: impl Read, mut to: impl Write, rate: u64) -> std::io::Result<()> {
    let started = Instant::now();
    let chunk = (rate / 20).clamp(64, 16 * 1024) as usize;
    let mut buf = vec![0u8; chunk];
    let mut sent: u64 = 0;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
        to.flush()?;
        sent += n as u64;
        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

fn relay(mut it: impl Iterator<Item = String>) -> Result<ExitCode> {
    let mut kbps = None;
    let mut rest = Vec::new();
    while let Some(a) = it.next() {
        if a == "--kbps" {
            let v = it.next().ok_or_else(|| usage("--kbps needs a number"))?;
            kbps = Some(
                v.parse::<u64>()
                    .ok()
                    .filter(|k| *k > 0)
                    .ok_or_else(|| usage(&format!("invalid --kbps {v:?}: expected kB/s >= 1")))?,
            );
        } else {
            rest.push(a);
        }
    }
    let (Some(kbps), [host, port]) = (kbps, rest.as_slice()) else {
        return Err(usage("relay needs --kbps N HOST PORT"));
    };
    let rate = kbps * 1024;
    let sock = TcpStream::connect((
        host.as_str(),
        port.parse::<u16>()
            .map_err(|_| usage(&format!("invalid port {port:?}")))?,
    ))
    .map_err(|e| {
        Error::new(
            ErrorKind::Network,
            format!("Cannot connect to {host}:{port}: {e}"),
        )
    })?;
    let upstream = sock
        .try_clone()
        .map_err(|e| Error::io("cannot share the connection", e))?;
    std::thread::spawn(move || {
        let _ = pump(std::io::stdin().lock(), &upstream, rate);
        let _ = upstream.shutdown(std::net::Shutdown::Write);
    });
    pump(&sock, std::io::stdout().lock(), rate)
        .map_err(|e| Error::new(ErrorKind::Network, format!("relay: {e}")))?;
    Ok(ExitCode::SUCCESS)
}
