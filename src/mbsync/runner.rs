//! Runs one mbsync process and reports what it does.
//!
//! mbsync runs under a pseudo-terminal (it prints progress counters only to
//! a TTY) in its own process group (see [`crate::process`]). Its output is
//! split into progress frames and lines by [`StreamParser`]; a watchdog kills
//! the group when nothing arrives and mbsync moves no data for
//! `idle_timeout` (see [`io_probe_every`]); the one known hang
//! (`IMAP wants more steps despite successful SASL authentication.`, after
//! which mbsync waits about 180 s) is killed as soon as the line arrives
//! (lines come from the reader in batches, at most [`OUTPUT_BATCH`] apart).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::errors::{
    classify_line, classify_output, is_hang_line, is_maildir_uid_error, locate_maildir_uid_error,
    redact, Classified, PASSCMD_PROMPT, PASSCMD_SILENT,
};
use super::progress::{Progress, StreamItem, StreamParser};
use crate::error::{Error, ErrorKind};
use crate::imap::mutf7::decode_mutf7;
use crate::process::{self, Exit, Spec};

/// Wide enough that mbsync never truncates its counters.
const COLUMNS: u16 = 250;
/// What the reader read (lines, progress frames) is handed to the runtime at
/// most this often.
const OUTPUT_BATCH: Duration = Duration::from_millis(20);
/// How long the reader waits for output at a time while it holds nothing.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// After a read that found little, the reader waits this long before the
/// next one (see `read_terminal`).
const READ_PACE: Duration = Duration::from_millis(5);
/// A read at least this large means output arrives fast: read again at once.
const READ_PACE_BELOW: usize = 2048;
/// Lines kept for the error report.
const TAIL: usize = 50;
/// How long mbsync gets to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(2);
/// Text without a line end that stays this long on the terminal while
/// mbsync waits for its PassCmd is the PassCmd's question (see `run`).
const PROMPT_WAIT: Duration = Duration::from_secs(1);

/// One mbsync invocation.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub program: PathBuf,
    pub config: Option<PathBuf>,
    /// Channels, groups or `channel:box,box` selections.
    pub targets: Vec<String>,
    pub extra_args: Vec<String>,
    /// Kill mbsync when it prints nothing for this long.
    pub idle_timeout: Duration,
    /// List the targets' boxes (`mbsync -l`) instead of syncing.
    pub list: bool,
}

impl RunSpec {
    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(c) = &self.config {
            args.push("-c".to_string());
            args.push(c.display().to_string());
        }
        if self.list {
            args.push("-l".to_string());
        } else {
            // -V names each box as it is opened (`Opening far side box X...`),
            // which the status shows as the current folder.
            args.push("-V".to_string());
        }
        args.extend(self.extra_args.iter().cloned());
        args.extend(self.targets.iter().cloned());
        args
    }
}

/// Something mbsync reported while running.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// mbsync was started (sent once per run, before anything else).
    Started,
    Progress(Progress),
    /// The box mbsync is working on now.
    Box(String),
    /// mbsync has exited (its last output may still be on its way): it
    /// touches no folder any more.
    Exited,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub exit: Option<Exit>,
    /// None on success.
    pub error: Option<Classified>,
    pub last_progress: Option<Progress>,
    /// The last lines mbsync printed (redacted), oldest first; for a
    /// listing (`RunSpec::list`), all of them as printed: the box names
    /// (see [`list_boxes`]), never shown or logged.
    pub tail: Vec<String>,
    pub duration: Duration,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.error.is_none()
    }
}

/// The reader thread's loop (see `run`): read, parse, send batches.
///
/// mbsync writes one progress frame per message and, with `-V`, a few lines
/// per box, each its own `write`. Every batch sent wakes the runtime, and a
/// reader that wakes for every write costs a context switch each time, in
/// the reader and in mbsync: on a busy machine that is time taken from
/// both. So what was read is held and sent at most every
/// [`OUTPUT_BATCH`] (lines in order, and only the latest progress frame
/// of a run of frames), and after a read that found less than
/// [`READ_PACE_BELOW`] bytes the reader waits [`READ_PACE`] and lets output
/// gather. A Linux terminal buffers about 20 KiB, some 270 progress frames
/// (a frame per message, far more than mbsync pulls in a pause), so mbsync
/// never waits for the reader; when output comes faster, reads come back
/// large and the reader stops waiting.
/// Once mbsync has exited (`exited`, set by the waiter, which also unparks
/// this thread) it never waits: the last output is read at once, and the
/// sync's end is not held up by a pause. From then on it also stops as
/// soon as the sync no longer listens, even if a process that escaped
/// mbsync's group keeps the terminal open (and maybe writes to it): that
/// would otherwise hold this thread and the terminal for as long as it lives.
///
/// mbsync asks for a password on its terminal when the mbsyncrc gives it
/// none (no `Pass`, no `PassCmd`). Nobody can type it in there, so the
/// reader answers with an empty line at once: mbsync skips that account
/// ("Skipping account X, no password", a `config` error that says what to
/// add) instead of waiting until the watchdog kills it.
///
/// `pending_since` tells the runner since when text without a line end has
/// stood at the end of the output: milliseconds after `base`, plus one; 0
/// while there is none.
fn read_terminal(
    mut reader: std::fs::File,
    tx: mpsc::UnboundedSender<Vec<StreamItem>>,
    exited: &AtomicBool,
    pending_since: &AtomicU64,
    base: Instant,
) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut parser = StreamParser::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out: Vec<StreamItem> = Vec::new();
    let mut latest: Option<Progress> = None;
    let mut last_sent = Instant::now();
    let mut answered = false;
    loop {
        let over = exited.load(Ordering::Acquire);
        if over && tx.is_closed() {
            return;
        }
        // With something held, wait for more output only until it is due.
        // Otherwise wait for output a while at a time, never in a blocking
        // read: the end of the sync must be noticed (at the top) even when
        // nothing comes any more.
        let held = latest.is_some() || !out.is_empty();
        let wait = if held {
            OUTPUT_BATCH.saturating_sub(last_sent.elapsed())
        } else {
            IDLE_POLL
        };
        let mut fds = [PollFd::new(reader.as_fd(), PollFlags::POLLIN)];
        let ready = !wait.is_zero()
            && match poll(
                &mut fds,
                PollTimeout::try_from(wait.as_millis() as i32).unwrap_or(PollTimeout::ZERO),
            ) {
                Ok(n) => n > 0,
                Err(_) => continue,
            };
        if !ready {
            if held {
                out.extend(latest.take().map(StreamItem::Progress));
                if tx.send(std::mem::take(&mut out)).is_err() {
                    return;
                }
                last_sent = Instant::now();
            }
            continue;
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let items = parser.feed(&buf[..n]);
        // A finished line ends the prompt answered before (getpass writes
        // its newline after the answer): a prompt seen now is a new one,
        // even when it came in the same read (the next account's).
        if !items.is_empty() {
            answered = false;
        }
        for item in items {
            match item {
                StreamItem::Progress(p) => latest = Some(p),
                line => {
                    // Keep order: the frame before a line goes first.
                    out.extend(latest.take().map(StreamItem::Progress));
                    out.push(line);
                }
            }
        }
        if !answered && is_password_prompt(parser.unfinished()) {
            answered = true;
            let _ = (&reader).write_all(b"\n");
        }
        let since = if parser.unfinished().is_empty() {
            0
        } else {
            base.elapsed().as_millis() as u64 + 1
        };
        pending_since.store(since, Ordering::Relaxed);
        if n < READ_PACE_BELOW && !exited.load(Ordering::Acquire) {
            std::thread::park_timeout(READ_PACE);
        }
    }
    out.extend(latest.take().map(StreamItem::Progress));
    for item in parser.finish() {
        out.push(item);
    }
    if !out.is_empty() {
        let _ = tx.send(out);
    }
}

/// mbsync's own password question, `Password (ACCOUNT): `, still waiting
/// for its answer.
fn is_password_prompt(unfinished: &[u8]) -> bool {
    unfinished.starts_with(b"Password (") && unfinished.ends_with(b"): ")
}

/// Where mbsync is, as its `-V` lines say: `Channel demo`, then `Opening
/// near side box Archive...` (`Opening slave box Archive...` before 1.4)
/// for each box, the name as mbsync takes it in `channel:box`.
#[derive(Default)]
struct Place {
    channel: Option<String>,
    near_box: Option<String>,
}

impl Place {
    /// Notes what `line` says of the place, and returns it, with the place
    /// put in front if it is an error that does not say where it happened
    /// (see [`locate_maildir_uid_error`]).
    fn locate(&mut self, line: String) -> String {
        if let Some(channel) = line.strip_prefix("Channel ") {
            if !channel.is_empty() && !channel.contains(char::is_whitespace) {
                self.channel = Some(channel.to_string());
                self.near_box = None;
            }
        } else if let Some(name) = ["Opening near side box ", "Opening slave box "]
            .iter()
            .find_map(|p| line.strip_prefix(p))
        {
            let name = name.strip_suffix("...").unwrap_or(name);
            self.near_box = (!name.is_empty()).then(|| name.to_string());
        } else if is_maildir_uid_error(&line) && !line.starts_with("Error: channel ") {
            if let (Some(channel), Some(near_box)) = (&self.channel, &self.near_box) {
                return locate_maildir_uid_error(&line, channel, near_box);
            }
        }
        line
    }
}

/// Extracts the box name from `Opening far side box X...` style lines,
/// decoded for display (mbsync 1.4 prints IMAP's modified UTF-7).
fn box_of(line: &str) -> Option<String> {
    let rest = line.strip_prefix("Opening ")?;
    let at = rest.find(" box ")?;
    let name = rest[at + 5..].trim_end_matches("...").trim();
    (!name.is_empty()).then(|| decode_mutf7(name))
}

fn failed(kind: ErrorKind, line: String) -> Option<Classified> {
    Some(Classified { kind, line })
}

/// Runs mbsync to the end, calling `on_update` as it goes. `cancel` turning
/// true stops it (kind `cancelled`).
pub async fn run(
    spec: RunSpec,
    mut cancel: watch::Receiver<bool>,
    mut on_update: impl FnMut(Update) + Send,
) -> Outcome {
    let started = Instant::now();
    let mut outcome = Outcome {
        exit: None,
        error: None,
        last_progress: None,
        tail: Vec::new(),
        duration: Duration::ZERO,
    };
    let pspec = Spec {
        program: spec.program.clone(),
        args: spec.args(),
        env: vec![("LC_ALL".into(), "C".into())],
        columns: COLUMNS,
    };
    let child = match process::spawn_pty(&pspec) {
        Ok(c) => c,
        Err(Error { kind, message }) => {
            outcome.error = failed(kind, message);
            return outcome;
        }
    };
    // Dropped when this returns, however it returns (even unwinding from a
    // panic): the group is killed and mbsync reaped, so no process is left.
    let process::PtyChild {
        pid,
        master,
        leader,
    } = child;
    let group = leader.group().clone();
    on_update(Update::Started);

    // Reader thread: reads the terminal's master side continuously (a
    // reader that lags makes mbsync block on its writes) until the child
    // and everything it started have closed it (EIO). It parses here, so
    // the thousands of per-message progress frames and the lines cost the
    // runtime only a few batches, at most one per OUTPUT_BATCH.
    let (items_tx, mut batches) = mpsc::unbounded_channel::<Vec<StreamItem>>();
    let reader = std::fs::File::from(master);
    let exited = Arc::new(AtomicBool::new(false));
    let reader_exited = exited.clone();
    let pending_since = Arc::new(AtomicU64::new(0));
    let reader_pending = pending_since.clone();
    let base = Instant::now();
    // Without either thread the run could not be followed: mbsync is
    // stopped (the leader's guard kills its group) and the sync fails
    // rather than run blind.
    let no_thread = |what: &str, e: std::io::Error| {
        failed(
            ErrorKind::Io,
            format!("cannot start the thread that {what}: {e}"),
        )
    };
    let reader_thread = match std::thread::Builder::new()
        .name("himalaya-sync-pty".into())
        .spawn(move || read_terminal(reader, items_tx, &reader_exited, &reader_pending, base))
    {
        Ok(h) => h.thread().clone(),
        Err(e) => {
            outcome.error = no_thread("reads mbsync's output", e);
            outcome.duration = started.elapsed();
            return outcome;
        }
    };
    let (exit_tx, mut exit_rx) = oneshot::channel::<Exit>();
    if let Err(e) = std::thread::Builder::new()
        .name("himalaya-sync-wait".into())
        .spawn(move || {
            let status = process::wait_exit(pid);
            // The reader may be pausing between reads: wake it for the
            // last output.
            exited.store(true, Ordering::Release);
            reader_thread.unpark();
            if let Ok(status) = status {
                let _ = exit_tx.send(status);
            }
        })
    {
        outcome.error = no_thread("waits for mbsync's exit", e);
        outcome.duration = started.elapsed();
        return outcome;
    }

    // A listing is the output itself; a sync keeps the last lines for errors.
    let (list, keep) = (spec.list, if spec.list { 100_000 } else { TAIL });
    let mut lines: VecDeque<String> = VecDeque::new();
    // Lines that name a failure, from the whole run: mbsync goes on after a
    // box or an account fails, and the line that decides the error's kind
    // (UIDVALIDITY, a failed login) may have left the tail by the end.
    let mut failures: Vec<String> = Vec::new();
    // The channel and the local box mbsync works on, from its `-V` lines:
    // they locate a Maildir UID error, which names neither.
    let mut place = Place::default();
    let mut stopped_by_us: Option<Classified> = None;
    let mut exit: Option<Exit> = None;
    let mut output_open = true;
    let mut last_activity = tokio::time::Instant::now();
    // mbsync prints nothing while one message transfers, which on a slow or
    // throttled link can take longer than the watchdog's limit. Its I/O
    // counters show the difference from a hang: while nothing is printed,
    // each probe that finds them moved since the one before counts as
    // activity. (A probe after output has no "before": it only notes them.)
    let probe_every = io_probe_every(spec.idle_timeout);
    // A PassCmd that asks on the terminal (a pinentry for it, `read` in a
    // script) waits for an answer nobody can give: mbsync then reads the
    // command's pipe, and the question stands without a line end. Looked
    // for once a PROMPT_WAIT, so it ends the sync in seconds rather than at
    // the watchdog's limit.
    let mut prompt_probe = tokio::time::interval(PROMPT_WAIT);
    prompt_probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_probe = tokio::time::Instant::now() + probe_every;
    let mut io_before: Option<u64> = None;

    let handle_items = |items: Vec<StreamItem>,
                        lines: &mut VecDeque<String>,
                        failures: &mut Vec<String>,
                        place: &mut Place,
                        outcome: &mut Outcome,
                        on_update: &mut dyn FnMut(Update)|
     -> Option<Classified> {
        let mut hang = None;
        for item in items {
            match item {
                StreamItem::Progress(p) => {
                    outcome.last_progress = Some(p.clone());
                    on_update(Update::Progress(p));
                }
                StreamItem::Line(line) => {
                    if let Some(b) = box_of(&line) {
                        on_update(Update::Box(b));
                    }
                    let line = place.locate(line);
                    if is_hang_line(&line) {
                        hang = failed(ErrorKind::Auth, redact(&line));
                    }
                    if failures.len() < TAIL && classify_line(&line).is_some() {
                        failures.push(redact(&line));
                    }
                    if lines.len() == keep {
                        lines.pop_front();
                    }
                    // A listing's lines are box names, which redaction
                    // could take for tokens (`Archive/2023/Q4-Report-v2...`).
                    lines.push_back(if list { line } else { redact(&line) });
                }
            }
        }
        hang
    };

    // After mbsync exits, its output gets a moment to arrive; a process that
    // escaped the group and still holds the terminal must not keep the sync
    // open.
    let mut drain_deadline = None;
    while exit.is_none() || output_open {
        if exit.is_some() && drain_deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
        // A huge timeout means "no watchdog" rather than an overflow.
        let idle_deadline = last_activity
            .checked_add(spec.idle_timeout)
            .unwrap_or_else(|| last_activity + Duration::from_secs(86_400 * 365));
        let drain_until = drain_deadline.unwrap_or(idle_deadline);
        tokio::select! {
            batch = batches.recv(), if output_open => match batch {
                Some(items) => {
                    last_activity = tokio::time::Instant::now();
                    io_before = None;
                    if let Some(hang) = handle_items(items, &mut lines, &mut failures, &mut place, &mut outcome, &mut on_update) {
                        if stopped_by_us.is_none() {
                            stopped_by_us = Some(hang);
                            signal_now(&group);
                        }
                    }
                }
                None => output_open = false,
            },
            _ = tokio::time::sleep_until(drain_until), if exit.is_some() => {},
            status = &mut exit_rx, if exit.is_none() => {
                exit = Some(status.unwrap_or(Exit { code: None, signal: None }));
                on_update(Update::Exited);
                drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                // Anything mbsync started (PassCmd, Tunnel) goes with it,
                // which also closes the terminal so the reader ends.
                group.signal(nix::sys::signal::Signal::SIGKILL);
            },
            _ = tokio::time::sleep_until(next_probe), if exit.is_none() && stopped_by_us.is_none() => {
                let now = tokio::time::Instant::now();
                let io = process::io_bytes(pid);
                if io_before.is_some() && io != io_before {
                    last_activity = now;
                }
                io_before = io;
                next_probe = now + probe_every;
            },
            _ = prompt_probe.tick(), if exit.is_none() && stopped_by_us.is_none() => {
                let since = pending_since.load(Ordering::Relaxed);
                let standing = since > 0
                    && base.elapsed() >= Duration::from_millis(since - 1) + PROMPT_WAIT;
                if standing && process::reading_pipe(pid) {
                    stopped_by_us = failed(ErrorKind::Config, PASSCMD_PROMPT.to_string());
                    tokio::spawn(process::terminate_group(group.clone(), GRACE));
                }
            },
            _ = tokio::time::sleep_until(idle_deadline), if exit.is_none() && stopped_by_us.is_none() => {
                let waited = fmt_secs(spec.idle_timeout);
                // Waiting for the password command is no server's fault: a
                // retry would only run it (and its passphrase dialog) again.
                stopped_by_us = if process::reading_pipe(pid) {
                    failed(ErrorKind::Auth, format!("{PASSCMD_SILENT} for {waited} s and was stopped"))
                } else {
                    failed(
                        ErrorKind::Timeout,
                        format!("mbsync printed nothing and moved no data for {waited} s and was stopped"),
                    )
                };
                tokio::spawn(process::terminate_group(group.clone(), GRACE));
            },
            changed = cancel.changed(), if exit.is_none() && stopped_by_us.is_none() => {
                if changed.is_err() || *cancel.borrow() {
                    stopped_by_us = failed(ErrorKind::Cancelled, String::new());
                    tokio::spawn(process::terminate_group(group.clone(), GRACE));
                }
            },
        }
    }

    outcome.exit = exit;
    outcome.tail = lines.into_iter().collect();
    outcome.duration = started.elapsed();
    outcome.error = match stopped_by_us {
        Some(c) => Some(c),
        None => {
            let code = exit.and_then(|e| e.code);
            match (code, exit.and_then(|e| e.signal)) {
                (None, Some(sig)) => killed_by(sig),
                _ => {
                    // A listing's tail is kept as printed (see `handle_items`).
                    failures.extend(outcome.tail.iter().map(|l| {
                        if list {
                            redact(l)
                        } else {
                            l.clone()
                        }
                    }));
                    classify_output(&failures, code)
                }
            }
        }
    };
    outcome
}

/// The error of an mbsync killed by a signal the runner did not send. At
/// shutdown it was the engine's (Neovim exits): a cancel, not a failure.
/// SIGPIPE means the other end of its connection (the server, or the
/// throttle relay) went away while mbsync wrote to it: a network failure,
/// worth a retry.
fn killed_by(sig: i32) -> Option<Classified> {
    if crate::runtime::is_stopped() {
        failed(ErrorKind::Cancelled, String::new())
    } else if sig == libc::SIGPIPE {
        failed(
            ErrorKind::Network,
            "the connection to the server broke while mbsync wrote to it (SIGPIPE)".to_string(),
        )
    } else {
        failed(
            ErrorKind::Unknown,
            format!("mbsync was killed by signal {sig}"),
        )
    }
}

/// The boxes of one channel, as `mbsync -l` lists them (far side names).
pub async fn list_boxes(
    spec: &RunSpec,
    channel: &str,
    cancel: watch::Receiver<bool>,
) -> Result<Vec<String>, Classified> {
    let listing = RunSpec {
        targets: vec![channel.to_string()],
        list: true,
        ..spec.clone()
    };
    let out = run(listing, cancel, |_| {}).await;
    if let Some(e) = out.error {
        return Err(e);
    }
    // mbsync prints notices on the same stream (the terminal), each a word
    // or two and a colon (`Error: `, `IMAP warning: `, `Socket error: `,
    // `IMAP command 'LIST' returned an error`); a box may well be named
    // `Errors` or `IMAP Archive`, so only those exact forms are left out.
    // Those about the mbsyncrc start with its path (1.5:
    // `/home/u/.mbsyncrc: notice: SSLType is deprecated. ...`).
    const NOISE: [&str; 13] = [
        "Error: ",
        "Warning: ",
        "Notice: ",
        "Maildir error: ",
        "Maildir warning: ",
        "Maildir notice: ",
        "IMAP error: ",
        "IMAP warning: ",
        "IMAP notice: ",
        "IMAP command '",
        "Socket error: ",
        "Socket warning: ",
        "Socket notice: ",
    ];
    let about_config = spec.config.as_ref().map(|c| format!("{}:", c.display()));
    Ok(out
        .tail
        .into_iter()
        .filter(|l| {
            !l.is_empty()
                && !NOISE.iter().any(|n| l.starts_with(n))
                && !l.starts_with("***")
                && !about_config.as_ref().is_some_and(|c| l.starts_with(c))
        })
        .collect())
}

/// How often the watchdog looks at mbsync's I/O counters: an eighth of its
/// limit, within 0.1–15 s. A hang is then stopped at most two probes late
/// (the probe after the last output only notes the counters, and data
/// still in flight may move them once more): a quarter of the limit.
fn io_probe_every(idle_timeout: Duration) -> Duration {
    (idle_timeout / 8).clamp(Duration::from_millis(100), Duration::from_secs(15))
}

/// Seconds for messages: whole numbers when whole, else one decimal.
fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

/// The hang is certain: no grace period.
fn signal_now(group: &process::Group) {
    group.signal(nix::sys::signal::Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_is_a_network_error_other_signals_unknown() {
        let pipe = killed_by(libc::SIGPIPE).unwrap();
        assert_eq!(pipe.kind, ErrorKind::Network);
        assert!(pipe.line.contains("SIGPIPE"), "{}", pipe.line);
        let segv = killed_by(libc::SIGSEGV).unwrap();
        assert_eq!(segv.kind, ErrorKind::Unknown);
        assert_eq!(
            segv.line,
            format!("mbsync was killed by signal {}", libc::SIGSEGV)
        );
    }

    #[test]
    fn box_names_come_from_opening_lines() {
        assert_eq!(
            box_of("Opening far side box Work/Projects..."),
            Some("Work/Projects".into())
        );
        assert_eq!(
            box_of("Opening near side box INBOX..."),
            Some("INBOX".into())
        );
        assert_eq!(box_of("Opening far side store demo-remote..."), None);
        assert_eq!(box_of("C: 1/2"), None);
        assert_eq!(
            box_of("Opening far side box Entw&APw-rfe..."),
            Some("Entwürfe".into())
        );
    }

    /// A stand-in for mbsync: a script that ignores its arguments.
    fn sh(body: &str, timeout: Duration) -> (RunSpec, tempfile::TempDir) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake-mbsync");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let spec = RunSpec {
            program: path,
            config: None,
            targets: vec!["demo".into()],
            extra_args: vec![],
            idle_timeout: timeout,
            list: false,
        };
        (spec, dir)
    }

    fn run_blocking(spec: RunSpec, cancel_after: Option<Duration>) -> (Outcome, Vec<Update>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (tx, rx) = watch::channel(false);
            if let Some(d) = cancel_after {
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = tx.send(true);
                });
            } else {
                std::mem::forget(tx);
            }
            let mut updates = Vec::new();
            let out = run(spec, rx, |u| updates.push(u)).await;
            (out, updates)
        })
    }

    /// Every write of mbsync's would otherwise wake the runtime: what the
    /// reader hands over comes in at most one batch per OUTPUT_BATCH, in
    /// order and complete.
    #[test]
    fn output_is_handed_over_in_few_batches() {
        use std::io::Write;
        let (rx_end, tx_end) = std::io::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            let mut tx_end = tx_end;
            for i in 0..150 {
                let frame = format!("C: 0/1  B: 0/2  F: +0/0 *0/0 #0/0  N: +{i}/150 *0/0 #0/0\r");
                tx_end.write_all(frame.as_bytes()).unwrap();
                tx_end.write_all(format!("line {i}\n").as_bytes()).unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        let (tx, mut batches) = mpsc::unbounded_channel();
        let started = Instant::now();
        read_terminal(
            std::fs::File::from(std::os::fd::OwnedFd::from(rx_end)),
            tx,
            &AtomicBool::new(false),
            &AtomicU64::new(0),
            Instant::now(),
        );
        let elapsed = started.elapsed();
        writer.join().unwrap();
        let mut sent = Vec::new();
        while let Ok(batch) = batches.try_recv() {
            sent.push(batch);
        }
        let lines: Vec<String> = sent
            .iter()
            .flatten()
            .filter_map(|item| match item {
                StreamItem::Line(l) => Some(l.clone()),
                StreamItem::Progress(_) => None,
            })
            .collect();
        let expected: Vec<String> = (0..150).map(|i| format!("line {i}")).collect();
        assert_eq!(lines, expected);
        let most = (elapsed.as_millis() / OUTPUT_BATCH.as_millis()) as usize + 2;
        assert!(
            sent.len() <= most,
            "{} batches in {elapsed:?} for 300 writes",
            sent.len()
        );
    }

    #[test]
    fn progress_boxes_and_exit_are_reported() {
        let script = r#"printf 'Opening far side box INBOX...\n'; printf 'C: 0/1  B: 0/2  F: +0/0 *0/0 #0/0  N: +1/4 *0/0 #0/0\r'; printf 'C: 1/1  B: 2/2  F: +0/0 *0/0 #0/0  N: +4/4 *0/0 #0/0\n'"#;
        let (spec, _dir) = sh(script, Duration::from_secs(10));
        let (out, updates) = run_blocking(spec, None);
        assert!(out.success(), "{:?}", out.error);
        assert_eq!(out.exit.unwrap().code, Some(0));
        assert!(updates.contains(&Update::Box("INBOX".into())));
        assert_eq!(out.last_progress.unwrap().near.new.done, 4);
    }

    /// mbsync's password questions (no Pass or PassCmd) are answered with
    /// an empty line at once, also a second account's that comes in the
    /// same read as the end of the first (a group of two accounts).
    #[test]
    fn password_questions_are_answered_at_once() {
        let started = Instant::now();
        let script = r#"stty -echo
printf 'Password (a): '; read -r x
printf '\nSkipping account a, no password\nPassword (b): '; read -r y
printf '\nSkipping account b, no password\n'; exit 1"#;
        let (spec, _dir) = sh(script, Duration::from_secs(30));
        let (out, _) = run_blocking(spec, None);
        let err = out.error.unwrap();
        assert_eq!(err.kind, ErrorKind::Config, "{err:?}");
        assert_eq!(err.line, "Skipping account a, no password");
        assert!(
            out.tail
                .contains(&"Skipping account b, no password".to_string()),
            "{:?}",
            out.tail
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_maildir_uid_error_is_located_in_its_channel_and_box() {
        // As isync 1.4 prints it with -V: the error names no box.
        let script = r#"echo 'Channel other'
echo 'Opening near side box INBOX...'
echo 'Channel demo'
echo 'Opening far side box Archive/2023/Project-Alpha-Meeting-Notes...'
echo 'Opening near side box Archive/2023/Project-Alpha-Meeting-Notes...'
echo 'Loading near side box...'
echo 'Maildir error: duplicate UID 3.'
echo 'Opening near side box Work...'
echo 'near side: 4 messages, 0 recent'
exit 1"#;
        let (spec, _dir) = sh(script, Duration::from_secs(10));
        let (out, _) = run_blocking(spec, None);
        let err = out.error.unwrap();
        assert_eq!(err.kind, ErrorKind::Uidvalidity, "{err:?}");
        assert_eq!(
            err.line,
            "Error: channel demo, near side box Archive/2023/Project-Alpha-Meeting-Notes: \
             Maildir error: duplicate UID 3."
        );
        assert_eq!(
            crate::manager::repair::parse_error_line(&err.line),
            Some((
                "demo".to_string(),
                "Archive/2023/Project-Alpha-Meeting-Notes".to_string()
            ))
        );
    }

    #[test]
    fn the_deciding_line_counts_however_much_follows_it() {
        // mbsync goes on with the other boxes after one fails.
        let script = r#"echo 'Error: channel demo, near side box Archive: UIDVALIDITY genuinely changed (at UID 42).'
for i in $(seq 1 200); do echo "Opening far side box Box$i..."; done
echo 'Warning: lost track of 3 pulled message(s)'
exit 1"#;
        let (spec, _dir) = sh(script, Duration::from_secs(10));
        let (out, _) = run_blocking(spec, None);
        let err = out.error.unwrap();
        assert_eq!(err.kind, ErrorKind::Uidvalidity, "{err:?}");
        assert!(err.line.contains("box Archive"), "{err:?}");
        assert_eq!(out.tail.len(), TAIL);
    }

    /// mbsync 1.5 tells of a deprecated setting on the terminal it lists the
    /// boxes on: that line is no box.
    #[test]
    fn box_lists_leave_out_notices_but_not_boxes_named_like_them() {
        let (mut spec, dir) = sh(
            r#"echo INBOX; echo "$2: notice: SSLType is deprecated. Use TLSType instead." >&2
echo 'Work/Café'; echo "Sent: notice: not about the mbsyncrc"
echo Archive/2023/Project-Alpha-Meeting-Notes
echo 'Error: channel demo: cannot list'; echo 'IMAP warning: slow server' >&2
echo "IMAP command 'LIST' returned an error: NO busy"; echo 'Socket error: reset'
echo Errors; echo 'IMAP Archive'; echo 'Warnings'; echo 'Notices 2023'; echo 'Socket Wrench'
echo 'Maildir Import'"#,
            Duration::from_secs(10),
        );
        // Even where a part of its path looks like a token (which the
        // redaction of other lines would hide).
        let rc = dir.path().join("Ab1cD2eF3gH4iJ5kL6mN7oP8qR9/mbsyncrc");
        assert_ne!(redact(&rc.to_string_lossy()), rc.to_string_lossy());
        spec.config = Some(rc);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (_tx, rx) = watch::channel(false);
        let boxes = rt.block_on(list_boxes(&spec, "demo", rx)).unwrap();
        assert_eq!(
            boxes,
            [
                "INBOX",
                "Work/Café",
                "Sent: notice: not about the mbsyncrc",
                "Archive/2023/Project-Alpha-Meeting-Notes",
                "Errors",
                "IMAP Archive",
                "Warnings",
                "Notices 2023",
                "Socket Wrench",
                "Maildir Import"
            ]
        );
    }

    #[test]
    fn silence_trips_the_watchdog() {
        let started = Instant::now();
        let (spec, _dir) = sh("sleep 30", Duration::from_millis(300));
        let (out, _) = run_blocking(spec, None);
        assert_eq!(out.error.unwrap().kind, ErrorKind::Timeout);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// A PassCmd waiting for a passphrase: mbsync reads its pipe. Stopped
    /// as an auth failure, which the manager does not retry.
    #[test]
    fn a_silent_password_command_trips_the_watchdog_as_auth() {
        // Room for a busy machine to start the shell and its `sleep`: the
        // classification needs it reading the pipe when the limit comes.
        let (spec, _dir) = sh("x=$(sleep 30)", Duration::from_secs(2));
        let (out, _) = run_blocking(spec, None);
        let error = out.error.unwrap();
        assert_eq!(error.kind, ErrorKind::Auth);
        assert!(error.line.starts_with(PASSCMD_SILENT), "{}", error.line);
    }

    /// A PassCmd that asks on the terminal, as a pinentry for the terminal
    /// would: stopped in seconds as a config error, long before the limit.
    #[test]
    fn a_password_command_asking_on_the_terminal_is_stopped_at_once() {
        let started = Instant::now();
        let (spec, _dir) = sh(
            "x=$(printf 'Passphrase: ' > /dev/tty; sleep 30)",
            Duration::from_secs(60),
        );
        let (out, _) = run_blocking(spec, None);
        let error = out.error.unwrap();
        assert_eq!(error.kind, ErrorKind::Config);
        assert_eq!(error.line, PASSCMD_PROMPT);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// Diagnostics with a line end (gpg's "encrypted with ..." on stderr)
    /// are no question: the command goes on and its answer counts.
    #[test]
    fn a_password_command_that_prints_lines_is_left_alone() {
        let (spec, _dir) = sh(
            "x=$(echo 'gpg: note' > /dev/tty; sleep 2; echo pw); echo \"got $x\"",
            Duration::from_secs(60),
        );
        let (out, _) = run_blocking(spec, None);
        assert!(out.error.is_none(), "{:?}", out.error);
        assert_eq!(out.tail, ["gpg: note", "got pw"]);
    }

    /// A large message on a slow link: mbsync prints nothing for longer
    /// than the limit, but it keeps reading, so it is not a hang.
    #[test]
    fn moving_data_keeps_the_watchdog_quiet() {
        let started = Instant::now();
        // The shell itself reads (`read` is a builtin): 2.5 s without a
        // line of output, against a 0.5 s limit.
        let (spec, _dir) = sh(
            "i=0; while [ $i -lt 25 ]; do read -r x < /proc/self/stat; sleep 0.1; i=$((i+1)); done; echo done",
            Duration::from_millis(500),
        );
        let (out, _) = run_blocking(spec, None);
        assert!(out.error.is_none(), "{:?}", out.error);
        assert_eq!(out.tail, ["done"]);
        assert!(started.elapsed() >= Duration::from_secs(2));
    }

    #[test]
    fn cancel_stops_the_whole_group() {
        let (spec, _dir) = sh("sleep 30 & sleep 30; wait", Duration::from_secs(60));
        let (out, _) = run_blocking(spec, Some(Duration::from_millis(200)));
        assert_eq!(out.error.unwrap().kind, ErrorKind::Cancelled);
    }

    #[test]
    fn the_sasl_hang_is_killed_at_once_as_auth() {
        let started = Instant::now();
        let (spec, _dir) = sh(
            "echo 'Error: IMAP wants more steps despite successful SASL authentication.'; sleep 30",
            Duration::from_secs(60),
        );
        let (out, _) = run_blocking(spec, None);
        assert_eq!(out.error.unwrap().kind, ErrorKind::Auth);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_process_that_escaped_the_group_does_not_keep_the_sync_open() {
        let started = Instant::now();
        // It holds the terminal and prints nothing. The stand-in exits once
        // it runs in a session of its own (so that killing the stand-in's
        // group does not reach it).
        let (spec, dir) = sh(
            "d=$(dirname \"$0\")
             setsid sh -c 'echo $$ > \"$1/escaped.pid\"; exec sleep 30' sh \"$d\" &
             while [ ! -s \"$d/escaped.pid\" ]; do sleep 0.01; done
             echo done; sleep 0.3",
            Duration::from_secs(60),
        );
        let (out, _) = run_blocking(spec, None);
        let ended = started.elapsed();
        let escaped = std::fs::read_to_string(dir.path().join("escaped.pid")).unwrap_or_default();
        let pid = escaped.trim().parse::<i32>().ok();
        // Its terminal, and whether this process still has the master side
        // of it open (the reader thread owns that).
        let terminal = pid.and_then(|p| std::fs::read_link(format!("/proc/{p}/fd/1")).ok());
        let index = terminal
            .as_ref()
            .and_then(|t| t.to_str()?.strip_prefix("/dev/pts/")?.parse::<u32>().ok());
        let master_open = |index: u32| {
            std::fs::read_dir("/proc/self/fdinfo")
                .unwrap()
                .flatten()
                .any(|e| {
                    std::fs::read_to_string(e.path()).is_ok_and(|info| {
                        info.lines().any(|l| {
                            l.strip_prefix("tty-index:").map(str::trim) == Some(&index.to_string())
                        })
                    })
                })
        };
        let released = index.map(|i| {
            (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(10));
                !master_open(i)
            })
        });
        if let Some(pid) = pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(out.success(), "{:?}", out.error);
        assert!(ended < Duration::from_secs(5), "{ended:?}");
        assert!(index.is_some(), "the escaped process holds {terminal:?}");
        assert_eq!(released, Some(true), "the reader still holds the terminal");
    }

    #[test]
    fn sub_second_watchdog_is_named_in_tenths() {
        assert_eq!(fmt_secs(Duration::from_millis(300)), "0.3");
        assert_eq!(fmt_secs(Duration::from_secs(120)), "120");
    }

    #[test]
    fn a_missing_program_is_a_config_error() {
        let (mut spec, _dir) = sh("true", Duration::from_secs(1));
        spec.program = "/nonexistent/mbsync".into();
        let (out, _) = run_blocking(spec, None);
        let err = out.error.unwrap();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.line.contains("/nonexistent/mbsync"));
    }
}
