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
