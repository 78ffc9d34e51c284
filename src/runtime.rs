//! The engine's single tokio runtime, its event bus and its shutdown.
//!
//! Everything is created on first use, never at library load, so requiring
//! the Lua module stays cheap. [`shutdown`] is called from Neovim's
//! `VimLeavePre`: it stops event delivery, kills every child process group
//! the engine started and stops the runtime within a bounded time, so
//! quitting Neovim never leaves mbsync behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use once_cell::sync::OnceCell;
use parking_lot::{Condvar, Mutex};
use tokio::runtime::{Handle, Runtime};

use crate::error::{Error, ErrorKind, Result};
use crate::events::{Event, EventBus};
use crate::process::Group;

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);
static BUS: OnceCell<EventBus> = OnceCell::new();
static STOPPED: AtomicBool = AtomicBool::new(false);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Process groups of children not yet reaped, by id.
static GROUPS: Mutex<Option<HashMap<i32, Group>>> = Mutex::new(None);

/// A handle to the runtime, starting it on first use.
pub fn handle() -> Result<Handle> {
    if STOPPED.load(Ordering::SeqCst) {
        return Err(stopped());
    }
    let mut rt = RUNTIME.lock();
    if rt.is_none() {
        let built = tokio::runtime::Builder::new_multi_thread()
            // Syncs are I/O bound; two workers keep a 2-core laptop responsive.
            .worker_threads(2)
            .max_blocking_threads(64)
            .thread_name("himalaya-sync")
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the sync runtime", e))?;
        *rt = Some(built);
    }
    rt.as_ref().map(|r| r.handle().clone()).ok_or_else(stopped)
}

fn stopped() -> Error {
    Error::new(ErrorKind::Cancelled, "himalaya-sync is shutting down")
}

/// The process-wide event bus.
pub fn bus() -> Result<&'static EventBus> {
    BUS.get_or_try_init(EventBus::new)
}

/// Pushes an event if the bus exists; events before first use have no reader.
pub fn emit(id: u64, name: &str, data: serde_json::Value) {
    if let Ok(bus) = bus() {
        bus.push(Event::new(id, name, data));
    }
}

/// A fresh id for a request or a sync; never 0 (0 marks broadcast events).
pub fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Makes every later id greater than `n`. A rebuilt library loaded in place
/// of a running one (`:HimalayaSync build`) continues after the ids the
/// editor has seen, so that sync ids stay unique within one Neovim.
pub fn ids_after(n: u64) {
    NEXT_ID.fetch_max(n.saturating_add(1), Ordering::Relaxed);
}

/// Set once shutdown begins; long waits poll it so they end promptly.
pub fn stop_flag() -> &'static AtomicBool {
    &STOPPED
}

/// Registers a child's process group so shutdown can kill it (until
/// [`untrack_group`], which its [`Leader`](crate::process::Leader) calls).
pub fn track_group(group: &Group) {
    GROUPS
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(group.id(), group.clone());
}

/// Forgets the process group `id` (see [`track_group`]).
pub fn untrack_group(id: i32) {
    if let Some(map) = GROUPS.lock().as_mut() {
        map.remove(&id);
    }
}

fn tracked() -> Vec<Group> {
    GROUPS
        .lock()
        .as_ref()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default()
}

/// Sends `sig` to every tracked group; returns how many were there.
fn signal_groups(sig: Signal) -> usize {
    tracked().iter().filter(|g| g.signal(sig)).count()
}

/// Work that must not be cut off at shutdown, running now, and the signal
/// that the count fell to 0: shutdown wakes the moment the last one ends
/// instead of polling (a poll every 5 ms kept every `:qa` after a sync
/// waiting that long for a history merge of 1–2 ms).
static MUST_FINISH: Mutex<usize> = Mutex::new(0);
static MUST_FINISH_DONE: Condvar = Condvar::new();

/// The longest [`shutdown`] waits for work that must finish, beyond its
/// own timeout.
const MUST_FINISH_GRACE: Duration = Duration::from_secs(2);

/// Held by work that must not be cut off at shutdown: a token refresh
/// whose answer may carry a rotated refresh token, which is lost unless
/// saved; the history entry of a sync that just ended, until it is saved,
/// and a merge of the history once it has the lock. [`shutdown`] waits for
/// it (at most [`MUST_FINISH_GRACE`]).
pub struct MustFinish(());

impl Drop for MustFinish {
    fn drop(&mut self) {
        let mut running = MUST_FINISH.lock();
        *running -= 1;
        if *running == 0 {
            MUST_FINISH_DONE.notify_all();
        }
    }
}

/// Marks the caller's work as one that must finish (see [`MustFinish`]).
pub fn must_finish() -> MustFinish {
    *MUST_FINISH.lock() += 1;
    MustFinish(())
}

/// Stops everything: no more events, every child group gets SIGTERM and,
/// if still alive shortly after, SIGKILL; then the runtime stops. Bounded
/// by `timeout` (Neovim waits for this in `VimLeavePre`), plus up to
/// [`MUST_FINISH_GRACE`] while work that must finish runs. Idempotent.
pub fn shutdown(timeout: Duration) {
    let deadline = Instant::now() + timeout;
    STOPPED.store(true, Ordering::SeqCst);
    if let Some(bus) = BUS.get() {
        bus.close();
    }
    if signal_groups(Signal::SIGTERM) > 0 {
        // Give mbsync a moment to exit cleanly (it saves its sync state on
        // TERM), then make sure.
        let grace = Instant::now() + timeout / 2;
        while Instant::now() < grace && signal_groups_alive() {
            std::thread::sleep(Duration::from_millis(5));
        }
        signal_groups(Signal::SIGKILL);
    }
    let hold = Instant::now() + MUST_FINISH_GRACE;
    let mut running = MUST_FINISH.lock();
    while *running > 0 && !MUST_FINISH_DONE.wait_until(&mut running, hold).timed_out() {}
    drop(running);
    let rt = RUNTIME.lock().take();
    if let Some(rt) = rt {
        rt.shutdown_timeout(deadline.saturating_duration_since(Instant::now()));
    }
    // The log is written by a thread of the lowest priority: the lines of
    // what the exit stopped would be lost with the process. A short wait
    // at most, even past the deadline.
    crate::log::flush(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(200)),
    );
}

fn signal_groups_alive() -> bool {
    tracked().iter().any(Group::running)
}

/// True once [`shutdown`] ran.
pub fn is_stopped() -> bool {
    STOPPED.load(Ordering::SeqCst)
}
