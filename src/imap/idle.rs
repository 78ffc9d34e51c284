//! IDLE watcher: push notification of new mail.
//!
//! [`watch`] keeps one connection per folder: it opens the folder with
//! `EXAMINE`, enters `IDLE` (RFC 2177) and reports [`IdleEvent::NewMail`]
//! when the server's `* N EXISTS` count grows. `RECENT` is not used: a
//! delivery always raises EXISTS too, and RECENT is per-session and
//! unreliable. Before the re-IDLE interval (default 25 min, under the
//! server's 30 min inactivity limit) it leaves IDLE with `DONE` and enters
//! it again, which also proves the connection is still alive.
//!
//! A lost connection is reported ([`IdleEvent::Error`]) and retried with
//! exponential backoff; wrong credentials and configuration problems
//! (no IDLE support, unknown folder) end the watcher, since retrying cannot
//! fix them. A [`CancelToken`] stops it at once, even mid-backoff.
//!
//! Timers here stand still while the computer sleeps (they count in
//! `CLOCK_MONOTONIC`), and a connection that slept through the server's
//! timeout, or a NAT's, looks alive until TCP keepalive gives up on it,
//! minutes after the computer woke. So a watcher in IDLE compares that
//! clock with one that counts sleep ([`BootClock`]) every
//! [`IdleOptions::sleep_check`]; after a sleep it reconnects at once, and
//! mail that arrived meanwhile is announced as on any reconnect.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::imap::client::{Connection, Session};

/// A cloneable stop signal; every clone sees [`CancelToken::cancel`].
#[derive(Debug, Clone)]
pub struct CancelToken(Arc<watch::Sender<bool>>);

impl Default for CancelToken {
    fn default() -> Self {
        CancelToken::new()
    }
}

impl CancelToken {
    pub fn new() -> Self {
        CancelToken(Arc::new(watch::Sender::new(false)))
    }

    /// Signals every holder; idempotent.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }

    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once [`CancelToken::cancel`] was called (at once if it was).
    pub async fn cancelled(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in self, so wait_for cannot fail.
        let _ = rx.wait_for(|&c| c).await;
    }
}

/// Timing of a watcher.
#[derive(Debug, Clone, Copy)]
pub struct IdleOptions {
    /// Leave and re-enter IDLE after this long.
    pub reidle: Duration,
    /// First reconnect delay; doubled after each failure.
    pub backoff_base: Duration,
    /// Longest reconnect delay.
    pub backoff_cap: Duration,
    /// How often a watcher in IDLE looks whether the computer slept.
    pub sleep_check: Duration,
    /// The clock that also counts time asleep.
    pub boot_clock: BootClock,
}

impl Default for IdleOptions {
    fn default() -> Self {
        IdleOptions {
            reidle: Duration::from_secs(25 * 60),
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(5 * 60),
            sleep_check: Duration::from_secs(15),
            boot_clock: BootClock::default(),
        }
    }
}

/// A clock that goes on while the computer sleeps: time since boot,
/// `CLOCK_BOOTTIME`, unless a test gives another.
#[derive(Debug, Clone, Copy)]
pub struct BootClock(pub fn() -> Duration);

impl Default for BootClock {
    fn default() -> Self {
        BootClock(boot_time)
    }
}

/// Time since boot, sleep included (`CLOCK_BOOTTIME`).
pub fn boot_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Sleep longer than this counts: the clocks drift apart a little anyway,
/// and a connection survives a short nap.
const NAP: Duration = Duration::from_secs(5);

/// Tells how long the computer slept since it last looked.
struct SleepWatch {
    clock: BootClock,
    boot: Duration,
    awake: Instant,
}

impl SleepWatch {
    fn new(clock: BootClock) -> Self {
        SleepWatch {
            clock,
            boot: (clock.0)(),
            awake: Instant::now(),
        }
    }

    /// The time slept since the last look, when longer than a [`NAP`].
    fn slept(&mut self) -> Option<Duration> {
        let (boot, awake) = ((self.clock.0)(), Instant::now());
        let asleep = boot
            .saturating_sub(self.boot)
            .saturating_sub(awake.duration_since(self.awake));
        (self.boot, self.awake) = (boot, awake);
        (asleep > NAP).then_some(asleep)
    }
}

/// What a watcher reports.
#[derive(Debug, Clone, PartialEq)]
pub enum IdleEvent {
    /// IDLE is active on `folder` (after each (re)connect).
    Watching { folder: String },
    /// The folder's message count grew.
    NewMail { folder: String },
    /// The connection failed; the watcher retries after `retry_in`.
    Error {
        folder: String,
        error: Error,
        retry_in: Duration,
    },
    /// The watcher stopped for good: an error retrying cannot fix (wrong
    /// credentials, a folder that does not exist, no IDLE on the server).
    Stopped { folder: String, error: Error },
}

/// Watches `folder` until `cancel` fires (then `Ok`) or an error retrying
/// cannot fix (Auth, Config, Invalid), which is returned. `on_event` is
/// called from the watcher's task.
pub async fn watch<F>(
    connection: &Connection,
    folder: &str,
    options: IdleOptions,
    cancel: &CancelToken,
    on_event: F,
) -> Result<()>
where
    F: Fn(IdleEvent) + Send + Sync,
{
    let mut between = Between::default();
    loop {
        if cancel.is_cancelled() {
            return Ok(());
        }
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            outcome = session_round(connection, folder, options, cancel, &on_event, &mut between) => outcome,
        };
        let error = match outcome {
            Ok(()) => return Ok(()),
            Err(e) if is_fatal(e.kind) => {
                on_event(IdleEvent::Stopped {
                    folder: folder.to_owned(),
                    error: e.clone(),
                });
                return Err(e);
            }
            Err(e) => e,
        };
        let retry_in = if std::mem::take(&mut between.woke) {
            Duration::ZERO
        } else {
            let delay = backoff(options, between.failures);
            between.failures = between.failures.saturating_add(1);
            delay
        };
        on_event(IdleEvent::Error {
            folder: folder.to_owned(),
            error,
            retry_in,
        });
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(retry_in) => {}
        }
    }
}

/// How long a connection must stay in IDLE before its success resets the
/// reconnect backoff.
const STABLE: Duration = Duration::from_secs(60);

/// Delay before reconnect attempt number `failures` (0-based).
pub fn backoff(options: IdleOptions, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    options
        .backoff_base
        .checked_mul(factor)
        .unwrap_or(options.backoff_cap)
        .min(options.backoff_cap)
}

fn is_fatal(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Auth | ErrorKind::Config | ErrorKind::Invalid
    )
}

/// What a watcher carries from one connection to the next.
#[derive(Default)]
struct Between {
    /// Failed connections in a row (the backoff's exponent).
    failures: u32,
    /// The folder as the previous connection left it, so that mail
    /// delivered while the watcher was disconnected is announced when it
    /// is back.
    last_seen: Option<Seen>,
    /// The previous connection was given up because the computer slept:
    /// that is no failure, and the next one starts at once (a network still
    /// coming up after the wake fails that one, and backoff follows).
    woke: bool,
}

/// One connection's life: returns `Ok` only on cancel.
async fn session_round<F>(
    connection: &Connection,
    folder: &str,
    options: IdleOptions,
    cancel: &CancelToken,
    on_event: &F,
    between: &mut Between,
) -> Result<()>
where
    F: Fn(IdleEvent) + Send + Sync,
{
    let mut session = connection.connect().await?;
    if !session.has("IDLE") {
        session.logout().await;
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "IMAP server {} does not support IDLE; use polling instead",
                connection.host
            ),
        ));
    }
    let opened = session.examine(folder).await?;
    let seen = Seen {
        uidvalidity: opened.uidvalidity,
        uidnext: opened.uidnext,
        exists: opened.exists,
    };
    if between
        .last_seen
        .is_some_and(|before| seen.has_new_since(before))
    {
        on_event(IdleEvent::NewMail {
            folder: folder.to_owned(),
        });
    }
    between.last_seen = Some(seen);
    let mut exists = opened.exists;
    // When IDLE was first reached on this connection.
    let mut announced: Option<Instant> = None;
    loop {
        let (tag, pending) = session.idle_start().await?;
        for raw in pending {
            update(&raw, &mut exists, folder, on_event, &session)?;
        }
        let up_since = *announced.get_or_insert_with(|| {
            on_event(IdleEvent::Watching {
                folder: folder.to_owned(),
            });
            Instant::now()
        });
        let idling_since = Instant::now();
        let deadline = idling_since + options.reidle;
        // Set when the server ended IDLE itself (a tagged answer to it).
        let mut ended = false;
        // A connection that stays up resets the backoff; one that a server,
        // proxy or NAT drops right after IDLE begins does not, or the
        // watcher would log in again every few seconds for good.
        let stable_at = up_since + STABLE;
        let mut sleep_watch = SleepWatch::new(options.boot_clock);
        let mut next_look = Instant::now() + options.sleep_check;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => {
                    // Leave at once: DONE and LOGOUT without waiting.
                    let _ = session.send_raw(b"DONE\r\nz LOGOUT\r\n").await;
                    return Ok(());
                }
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tokio::time::sleep_until(stable_at), if between.failures > 0 => between.failures = 0,
                _ = tokio::time::sleep_until(next_look) => {
                    if let Some(asleep) = sleep_watch.slept() {
                        between.woke = true;
                        return Err(Error::new(
                            ErrorKind::Network,
                            format!(
                                "the computer slept for {:.0} s: reconnecting to {}",
                                asleep.as_secs_f64(),
                                session.address()
                            ),
                        ));
                    }
                    next_look = Instant::now() + options.sleep_check;
                }
                raw = session.next_response() => {
                    let raw = raw?;
                    if raw.starts_with(format!("{tag} ").as_bytes()) {
                        ended = true;
                        break;
                    }
                    update(&raw, &mut exists, folder, on_event, &session)?;
                }
            }
        }
        if !ended {
            for raw in session.idle_done(&tag).await? {
                update(&raw, &mut exists, folder, on_event, &session)?;
            }
        } else if idling_since.elapsed() < Duration::from_secs(1) {
            // Ending it again at once each time would loop without a pause:
            // reconnect with backoff instead.
            return Err(Error::new(
                ErrorKind::Network,
                format!("IMAP server {} ended IDLE at once", session.address()),
            ));
        }
        // Ended by the server after a while (some end IDLE every few
        // minutes): it is entered again at once, not at the next renewal.
    }
}

/// What a connection saw of the folder when it opened it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    uidvalidity: u32,
    /// 0 when the server did not say.
    uidnext: u32,
    exists: u32,
}

impl Seen {
    /// Whether mail arrived between `before` and this: a higher UIDNEXT
    /// (a delivery, even when as many messages were expunged), a new
    /// UIDVALIDITY (the sync has to look), or, without UIDNEXT, more
    /// messages.
    fn has_new_since(self, before: Seen) -> bool {
        if self.uidvalidity != before.uidvalidity {
            return true;
        }
        if self.uidnext != 0 && before.uidnext != 0 {
            return self.uidnext > before.uidnext;
        }
        self.exists > before.exists
    }
}

/// Applies one untagged response to the EXISTS count.
fn update<F>(
    raw: &[u8],
    exists: &mut u32,
    folder: &str,
    on_event: &F,
    session: &Session,
) -> Result<()>
where
    F: Fn(IdleEvent) + Send + Sync,
{
    let text = String::from_utf8_lossy(raw);
    let mut words = text.split(' ');
    if words.next() != Some("*") {
        return Ok(());
    }
    let first = words.next().unwrap_or("");
    let second = words.next().unwrap_or("").to_ascii_uppercase();
    if first.eq_ignore_ascii_case("BYE") {
        return Err(Error::new(
            ErrorKind::Network,
            format!("IMAP server {} closed the connection", session.address()),
        ));
    }
    let Ok(n) = first.parse::<u32>() else {
        return Ok(());
    };
    match second.as_str() {
        "EXISTS" => {
            if n > *exists {
                on_event(IdleEvent::NewMail {
                    folder: folder.to_owned(),
                });
            }
            *exists = n;
        }
        "EXPUNGE" => *exists = exists.saturating_sub(1),
        _ => {}
    }
    Ok(())
}

/// A watcher running on its own task.
pub struct IdleWatcher {
    cancel: CancelToken,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl IdleWatcher {
    /// Spawns [`watch`] on the current tokio runtime.
    pub fn spawn<F>(
        connection: Connection,
        folder: String,
        options: IdleOptions,
        on_event: F,
    ) -> IdleWatcher
    where
        F: Fn(IdleEvent) + Send + Sync + 'static,
    {
        let cancel = CancelToken::new();
        let token = cancel.clone();
        let task =
            tokio::spawn(
                async move { watch(&connection, &folder, options, &token, on_event).await },
            );
        IdleWatcher { cancel, task }
    }

    /// Asks the watcher to stop (it does at once).
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Stops the watcher and waits for it; its result (Ok after a cancel).
    pub async fn join(self) -> Result<()> {
        self.cancel.cancel();
        self.task
            .await
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::Unknown, "IDLE watcher task failed")))
    }

    /// Whether the watcher ended (cancelled or a fatal error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_delivered_while_away_is_new() {
        let before = Seen {
            uidvalidity: 7,
            uidnext: 100,
            exists: 50,
        };
        let after = |uidvalidity, uidnext, exists| Seen {
            uidvalidity,
            uidnext,
            exists,
        };
        assert!(!after(7, 100, 50).has_new_since(before));
        assert!(!after(7, 100, 40).has_new_since(before), "only expunged");
        assert!(after(7, 101, 50).has_new_since(before), "one in, one out");
        assert!(after(8, 1, 0).has_new_since(before), "renumbered");
        let no_uidnext = |exists| after(7, 0, exists);
        assert!(no_uidnext(51).has_new_since(before));
        assert!(!no_uidnext(50).has_new_since(before));
    }

    static SKEW_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    fn skewed() -> Duration {
        boot_time() + Duration::from_millis(SKEW_MS.load(std::sync::atomic::Ordering::SeqCst))
    }

    #[test]
    fn a_sleep_longer_than_a_nap_is_told_once() {
        let mut watch = SleepWatch::new(BootClock(skewed));
        assert_eq!(watch.slept(), None, "awake");
        SKEW_MS.fetch_add(4_000, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(watch.slept(), None, "a nap");
        SKEW_MS.fetch_add(600_000, std::sync::atomic::Ordering::SeqCst);
        let slept = watch.slept().expect("ten minutes asleep");
        assert!(
            slept >= Duration::from_secs(599) && slept <= Duration::from_secs(601),
            "{slept:?}"
        );
        assert_eq!(watch.slept(), None, "told once");
        // The real clock's boot time never runs behind the monotonic one.
        let mut real = SleepWatch::new(BootClock::default());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(real.slept(), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let o = IdleOptions {
            reidle: Duration::from_secs(60),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
            ..IdleOptions::default()
        };
        let d: Vec<u128> = (0..6).map(|i| backoff(o, i).as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(o, 200), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn cancel_token_wakes_all_clones() {
        let a = CancelToken::new();
        let b = a.clone();
        let waiter = tokio::spawn(async move { b.cancelled().await });
        a.cancel();
        waiter.await.unwrap();
        assert!(a.is_cancelled());
        a.cancelled().await;
    }
}
