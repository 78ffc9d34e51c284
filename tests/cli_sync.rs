//! `himalaya-sync sync ACCOUNT -t SECONDS`: while another process syncs the
//! account (holds its lock), the tool says so on stderr instead of seeming
//! to hang, then gives up with a clear `locked` answer.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use himalaya_sync::lock::LockDir;

#[test]
fn a_sync_that_waits_for_another_process_says_who_holds_the_account() {
    let tmp = tempfile::tempdir().unwrap();
    let locks = tmp.path().join("locks");
    std::fs::create_dir(&locks).unwrap();
    std::fs::set_permissions(&locks, std::fs::Permissions::from_mode(0o700)).unwrap();
    // mbsync never runs: the lock is held for the whole wait.
    let rc = tmp.path().join("mbsyncrc");
    std::fs::write(
        &rc,
        "IMAPAccount demo\nHost 127.0.0.1\nPort 1\nUser demo\nPass x\nSSLType None\n\n\
         IMAPStore demo-remote\nAccount demo\n\n\
         MaildirStore demo-local\nPath /nonexistent/\nInbox /nonexistent/INBOX\n\n\
         Channel demo\nFar :demo-remote:\nNear :demo-local:\nPatterns *\n",
    )
    .unwrap();
    let _held = LockDir::open(locks.clone())
        .unwrap()
        .acquire("sync-demo", Duration::ZERO, "the test's sync", None)
        .unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_himalaya-sync"))
        .args(["sync", "demo", "full", "-c"])
        .arg(&rc)
        .args(["-t", "1"])
        .env("HIMALAYA_SYNC_LOCK_DIR", &locks)
        .env("HIMALAYA_SYNC_STATE_DIR", tmp.path().join("state"))
        .output()
        .expect("the tool runs");

    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let me = std::process::id();
    assert!(
        stderr.starts_with(&format!(
            "waiting for another process to finish syncing demo: lock \"sync-demo\" is held by \
             pid {me} ("
        )) && stderr.contains("for \"the test's sync\""),
        "stderr: {stderr}"
    );
    assert!(!out.status.success(), "stdout: {stdout}");
    assert!(
        stdout.starts_with("demo is being synced by another process: lock \"sync-demo\"")
            && stdout.contains("gave up after 1 s"),
        "stdout: {stdout}"
    );
}
