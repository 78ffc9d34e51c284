//! A latency hint for the editor's thread while syncs run.
//!
//! A sync keeps several things busy at once: mbsync, the kernel moving its
//! progress output through the pseudo-terminal, our reader thread, and on a
//! small machine often the IMAP server or a compiler too. When every CPU is
//! taken, Neovim's main thread waits for one each time it wakes (a key
//! press, a timer), up to a whole time slice of whatever runs there: 1.5 ms
//! and more on a 2-CPU machine, which is what a user feels as lag.
//!
//! Since Linux 6.12 a thread can ask for a shorter slice (`sched_setattr`
//! with `sched_runtime` for the normal policy, no privileges needed). A
//! woken thread with a shorter slice than the running one preempts it at
//! once. The thread gets no more CPU time than before (its weight, hence
//! its share, is unchanged); it only gets it sooner.
//!
//! So while at least one sync runs, the editor thread registered with
//! [`set_editor_thread`] asks for [`EDITOR_SLICE`]; when the last one ends,
//! its previous setting comes back. Older kernels accept the call and
//! ignore the value. A thread with a real-time or other special policy is
//! left alone: someone chose it on purpose.

use std::time::Duration;

use parking_lot::Mutex;

/// The slice the editor thread asks for while syncs run (the kernel
/// accepts 0.1 to 100 ms). Not the shortest possible: the thread is also
/// preempted once it has run this long while others wait, and handling a
/// key or a sync update often takes longer than 0.1 ms. Tried in the
/// scenario of `make bench` section 2 (a 10,000-message sync on 2 CPUs):
/// of 0.1, 0.2, 0.3, 0.4, 0.5 and 0.7 ms, 0.3 ms gave the lowest p99 lag.
pub const EDITOR_SLICE: Duration = Duration::from_micros(300);

struct State {
    /// The editor's main thread (its kernel thread id), when known.
    tid: Option<i32>,
    /// Whether syncs may shorten its slice (the `responsive` option).
    enabled: bool,
    /// Syncs running now.
    active: usize,
    /// The slice it had before the first of them started, while shortened.
    saved: Option<u64>,
}

static STATE: Mutex<State> = Mutex::new(State {
    tid: None,
    enabled: true,
    active: 0,
    saved: None,
});

/// Registers the calling thread as the editor's: the glue calls this on
/// Neovim's main thread when the library is loaded.
pub fn set_editor_thread() {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    STATE.lock().tid = Some(tid);
}

/// Puts the calling thread at idle priority (`SCHED_IDLE`): it then runs
/// only when a CPU has nothing else to do, and never takes the CPU from
/// the thread that woke it. For threads of their own that do work nobody
/// waits for (the log writer, an early count); an unprivileged thread
/// cannot come back from it. Best effort: without the policy the work is
/// done at normal priority.
pub fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}

/// Turns the hint on or off; off restores the slice at once if a sync runs.
pub fn set_enabled(enabled: bool) {
    let mut s = STATE.lock();
    if s.enabled == enabled {
        return;
    }
    s.enabled = enabled;
    if enabled && s.active > 0 {
        shorten(&mut s);
    } else if !enabled {
        restore(&mut s);
    }
}

/// Held by every running sync: the editor thread keeps the short slice
/// while at least one guard lives.
#[must_use = "the hint ends when the guard is dropped"]
pub struct Busy(());

/// Marks a sync as running (see the module docs).
pub fn busy() -> Busy {
    let mut s = STATE.lock();
    s.active += 1;
    if s.active == 1 && s.enabled {
        shorten(&mut s);
    }
    Busy(())
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = STATE.lock();
        s.active = s.active.saturating_sub(1);
        if s.active == 0 {
            restore(&mut s);
        }
    }
}

fn shorten(s: &mut State) {
    let Some(tid) = s.tid else { return };
    if s.saved.is_some() {
        return;
    }
    let Some(attr) = get_attr(tid) else { return };
    // Only the normal and batch policies take a slice hint.
    if attr.sched_policy != libc::SCHED_OTHER as u32
        && attr.sched_policy != libc::SCHED_BATCH as u32
    {
        return;
    }
    let wanted = EDITOR_SLICE.as_nanos() as u64;
    if attr.sched_runtime != 0 && attr.sched_runtime <= wanted {
        return;
    }
    if set_runtime(tid, attr, wanted) {
        s.saved = Some(attr.sched_runtime);
    }
}

fn restore(s: &mut State) {
    let (Some(tid), Some(previous)) = (s.tid, s.saved.take()) else {
        return;
    };
    if let Some(attr) = get_attr(tid) {
        set_runtime(tid, attr, previous);
    }
}

/// `struct sched_attr` (linux/sched/types.h), first published size.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

fn get_attr(tid: i32) -> Option<SchedAttr> {
    let mut attr = SchedAttr::default();
    // SAFETY: the kernel writes at most `size` bytes into `attr`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            &mut attr as *mut SchedAttr,
            std::mem::size_of::<SchedAttr>() as u32,
            0u32,
        )
    };
    (r == 0).then_some(attr)
}

/// Sets the slice, keeping policy and nice value as they are.
fn set_runtime(tid: i32, mut attr: SchedAttr, runtime: u64) -> bool {
    attr.size = std::mem::size_of::<SchedAttr>() as u32;
    attr.sched_flags = 0;
    attr.sched_runtime = runtime;
    // SAFETY: the kernel reads one `sched_attr` of the given size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            tid,
            &attr as *const SchedAttr,
            0u32,
        )
    };
    r == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test: the state is process-wide.
    #[test]
    fn the_editor_thread_has_a_short_slice_exactly_while_syncs_run() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let editor = std::thread::spawn(move || {
            set_editor_thread();
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let _ = stop_rx.recv();
        });
        let tid = rx.recv().unwrap();
        let before = get_attr(tid)
            .expect("sched_getattr works here")
            .sched_runtime;
        if before == 0 {
            // Before Linux 6.12 the kernel reports no slice (and ignores one).
            eprintln!("skipped: this kernel has no per-thread slices");
            stop_tx.send(()).unwrap();
            return;
        }
        let slice = || get_attr(tid).unwrap().sched_runtime;

        let first = busy();
        let second = busy();
        assert_eq!(slice(), EDITOR_SLICE.as_nanos() as u64);
        drop(first);
        assert_eq!(
            slice(),
            EDITOR_SLICE.as_nanos() as u64,
            "one sync still runs"
        );
        drop(second);
        assert_eq!(slice(), before, "restored after the last sync");

        set_enabled(false);
        let off = busy();
        assert_eq!(slice(), before, "off: left alone");
        set_enabled(true);
        assert_eq!(
            slice(),
            EDITOR_SLICE.as_nanos() as u64,
            "on again while one runs"
        );
        drop(off);
        assert_eq!(slice(), before);

        stop_tx.send(()).unwrap();
        editor.join().unwrap();
    }

    #[test]
    fn idle_priority_applies_to_the_calling_thread_only() {
        let policy = || {
            // SAFETY: pid 0 is the calling thread.
            unsafe { libc::sched_getscheduler(0) }
        };
        let before = policy();
        let inside = std::thread::spawn(move || {
            idle_priority();
            policy()
        })
        .join()
        .unwrap();
        assert_eq!(inside, libc::SCHED_IDLE);
        assert_eq!(policy(), before);
    }
}
