//! `himalaya-sync with-lock`: the lock outlives the command it guards. A
//! signal to the tool goes on to the command and the tool waits for it;
//! a tool killed outright takes the command with it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use himalaya_sync::error::ErrorKind;
use himalaya_sync::lock::LockDir;

/// The command: notes its start, and on SIGTERM takes 0.4 s to finish.
const SLOW_TO_STOP: &str =
    "trap 'echo term >> \"$OUT\"; sleep 0.4; echo done >> \"$OUT\"; exit 0' TERM; \
     echo started >> \"$OUT\"; while :; do sleep 0.05; done";

struct Tool(Child);

impl Drop for Tool {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(locks: &Path, out: &Path) -> Tool {
    let tool = Command::new(env!("CARGO_BIN_EXE_himalaya-sync"))
        .args(["with-lock", "guarded", "--", "sh", "-c", SLOW_TO_STOP])
        .env("HIMALAYA_SYNC_LOCK_DIR", locks)
        .env("OUT", out)
        .spawn()
        .expect("the tool starts");
    let tool = Tool(tool);
    wait_for(out, "started");
    tool
}

fn wait_for(out: &Path, word: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(out)
        .unwrap_or_default()
        .contains(word)
    {
        assert!(
            Instant::now() < deadline,
            "the command never wrote {word:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn held(locks: &Path) -> bool {
    match LockDir::open(locks.to_path_buf()).unwrap().acquire(
        "guarded",
        Duration::ZERO,
        "test",
        None,
    ) {
        Ok(_) => false,
        Err(e) if e.kind == ErrorKind::Locked => true,
        Err(e) => panic!("{e}"),
    }
}

fn kill(tool: &Tool, signal: i32) {
    // SAFETY: kill only sends a signal.
    assert_eq!(unsafe { libc::kill(tool.0.id() as i32, signal) }, 0);
}

#[test]
fn a_signal_to_the_tool_goes_to_the_command_and_the_lock_waits_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let locks = tmp.path().join("locks");
    std::fs::create_dir(&locks).unwrap();
    std::fs::set_permissions(&locks, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = tmp.path().join("out");
    let mut tool = start(&locks, &out);
    assert!(held(&locks));
    kill(&tool, libc::SIGTERM);
    wait_for(&out, "term");
    assert!(held(&locks), "released while the command still ran");
    let status = tool.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the command's own exit code");
    assert!(std::fs::read_to_string(&out).unwrap().contains("done"));
    assert!(!held(&locks));

    // Killed outright, the tool cannot wait: the command is told to stop.
    std::fs::remove_file(&out).unwrap();
    let tool = start(&locks, &out);
    kill(&tool, libc::SIGKILL);
    wait_for(&out, "done");
}

/// A command that leaves its signal mask as it finds it (sleep, as most
/// programs): it used to start with TERM, INT and HUP blocked, so it never
/// got the signal the tool passes on, nor the SIGTERM of the tool's death,
/// and went on without the lock.
#[test]
fn a_command_that_keeps_its_signal_mask_still_gets_the_signals() {
    let tmp = tempfile::tempdir().unwrap();
    let locks = tmp.path().join("locks");
    std::fs::create_dir(&locks).unwrap();
    std::fs::set_permissions(&locks, std::fs::Permissions::from_mode(0o700)).unwrap();
    let start_sleep = || {
        let tool = Tool(
            Command::new(env!("CARGO_BIN_EXE_himalaya-sync"))
                .args(["with-lock", "guarded", "--", "sleep", "30"])
                .env("HIMALAYA_SYNC_LOCK_DIR", &locks)
                .spawn()
                .expect("the tool starts"),
        );
        // The command: the tool's one child, once it runs sleep (before
        // that it is the tool's fork, with the tool's mask).
        let children = format!("/proc/{0}/task/{0}/children", tool.0.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = pids.split_whitespace().next() {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "sleep" {
                    return (tool, pid.parse::<i32>().unwrap());
                }
            }
            assert!(Instant::now() < deadline, "the command never started");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let gone = |pid: i32| {
        let deadline = Instant::now() + Duration::from_secs(5);
        // SAFETY: signal 0 only asks whether the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            });
            if zombie || Instant::now() > deadline {
                return zombie;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    };

    /// Kills the command at the end, should the test fail before it ends.
    struct Reaped(i32);
    impl Drop for Reaped {
        fn drop(&mut self) {
            // SAFETY: kill only sends a signal.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }

    let (mut tool, sleep) = start_sleep();
    let _reaped = Reaped(sleep);
    let blocked = std::fs::read_to_string(format!("/proc/{sleep}/status")).unwrap();
    assert!(
        blocked.contains("SigBlk:\t0000000000000000"),
        "the command starts with no signal blocked: {blocked}"
    );
    kill(&tool, libc::SIGTERM);
    let status = tool.0.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "sleep ended by the TERM passed on"
    );
    assert!(!held(&locks));

    let (tool, sleep) = start_sleep();
    let _reaped = Reaped(sleep);
    kill(&tool, libc::SIGKILL);
    assert!(gone(sleep), "the command outlived the tool killed outright");
}
