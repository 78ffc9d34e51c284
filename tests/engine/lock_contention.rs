//! Several processes hammer one lock to show it really excludes.
//!
//! Each child process does `ROUNDS` rounds of: take the lock "counter",
//! read a number from a file, write it back plus one through a separate
//! open, release. The read-modify-write is deliberately not atomic, so any
//! moment where two processes held the lock at once would lose an increment
//! and the final count would come out short.
//!
//! The children are this same test binary, re-run with `CHILD_ENV` set so
//! that `contention_child` does the work; without it that test does nothing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use himalaya_sync::lock::LockDir;

const CHILD_ENV: &str = "HIMALAYA_LOCK_CHILD_DIR";
const CHILDREN: usize = 4;
const ROUNDS: usize = 200;
/// Far more than the few seconds the whole test needs; only a hang gets here.
const DEADLINE: Duration = Duration::from_secs(60);

/// Kills and reaps every child still running, so a failing test leaves no
/// processes behind.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn counter_path(dir: &Path) -> PathBuf {
    dir.join("counter")
}

/// Overwrites the counter in place through a fresh open. The value is
/// fixed-width so the file never needs truncating: truncate-and-rewrite
/// makes ext4 start writeback on every close, which would make this test
/// take seconds instead of a fraction of one.
fn write_counter(path: &Path, value: u64) {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open counter");
    file.write_all(format!("{value:010}\n").as_bytes())
        .expect("write counter");
}

/// The work of one child; does nothing unless run as a child.
#[test]
fn contention_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    let locks = LockDir::open(dir.join("locks")).expect("open lock dir");
    let counter = counter_path(&dir);
    for round in 0..ROUNDS {
        let guard = locks
            .acquire("counter", Duration::from_secs(30), "contention test", None)
            .expect("acquire");
        let text = fs::read_to_string(&counter).expect("read counter");
        let value: u64 = text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("round {round}: counter holds {text:?}: {e}"));
        // Give another process every chance to sneak in if the lock is broken.
        thread::yield_now();
        write_counter(&counter, value + 1);
        guard.release();
    }
}

#[test]
fn processes_take_turns() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::write(counter_path(tmp.path()), "").expect("create counter");
    write_counter(&counter_path(tmp.path()), 0);
    let exe = std::env::current_exe().expect("current_exe");

    let mut children = Children(Vec::new());
    for _ in 0..CHILDREN {
        let child = Command::new(&exe)
            .args([
                "--exact",
                "lock_contention::contention_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child");
        children.0.push(child);
    }

    let started = Instant::now();
    while children
        .0
        .iter_mut()
        .any(|child| matches!(child.try_wait(), Ok(None)))
    {
        assert!(
            started.elapsed() < DEADLINE,
            "children still running after {DEADLINE:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    for child in children.0.drain(..) {
        let output = child.wait_with_output().expect("wait");
        assert!(
            output.status.success(),
            "child failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let total = fs::read_to_string(counter_path(tmp.path())).expect("read counter");
    assert_eq!(total.trim().parse::<usize>(), Ok(CHILDREN * ROUNDS));
}
