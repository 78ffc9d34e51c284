//! `himalaya-sync sync`: while another process syncs the account (holds its
//! lock), the tool says so on stderr instead of seeming to hang, then gives
//! up with a clear `locked` answer (`-t SECONDS`); and it exits only once
//! the sync's history entry is saved.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use himalaya_sync::error::ErrorKind;
use himalaya_sync::lock::{LockDir, LockGuard};
use himalaya_sync::manager::history::{History, Record};

/// A private lock folder and an mbsyncrc whose one account has neither a
/// server (port 1) nor a local folder: a sync of it fails at once.
fn serverless_account(tmp: &Path) -> (PathBuf, PathBuf) {
    let locks = tmp.join("locks");
    std::fs::create_dir(&locks).unwrap();
    std::fs::set_permissions(&locks, std::fs::Permissions::from_mode(0o700)).unwrap();
    let rc = tmp.join("mbsyncrc");
    std::fs::write(
        &rc,
        "IMAPAccount demo\nHost 127.0.0.1\nPort 1\nUser demo\nPass x\nSSLType None\n\n\
         IMAPStore demo-remote\nAccount demo\n\n\
         MaildirStore demo-local\nPath /nonexistent/\nInbox /nonexistent/INBOX\n\n\
         Channel demo\nFar :demo-remote:\nNear :demo-local:\nPatterns *\n",
    )
    .unwrap();
    (locks, rc)
}

/// [`serverless_account`] while another process syncs it (this test holds
/// its lock, until the guard is dropped).
fn account_synced_elsewhere(tmp: &Path) -> (PathBuf, PathBuf, LockGuard) {
    let (locks, rc) = serverless_account(tmp);
    let held = LockDir::open(locks.clone())
        .unwrap()
        .acquire("sync-demo", Duration::ZERO, "the test's sync", None)
        .unwrap();
    (locks, rc, held)
}

#[test]
fn a_sync_that_waits_for_another_process_says_who_holds_the_account() {
    let tmp = tempfile::tempdir().unwrap();
    // mbsync never runs: the lock is held for the whole wait.
    let (locks, rc, _held) = account_synced_elsewhere(tmp.path());

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

/// The entry is written in the background after the sync's end is
/// announced, and the tool exits when it hears of that end: it used to
/// exit first, and the entry was lost (always while another process held
/// the history file's lock, often without). It waits until the entry is
/// saved, not until it is merged, which another process's lock can hold up
/// for seconds: the next update of any process merges it.
#[test]
fn the_tool_exits_once_the_sync_is_saved_in_the_history() {
    let tmp = tempfile::tempdir().unwrap();
    let (locks, rc) = serverless_account(tmp.path());
    let state = tmp.path().join("state");
    let lock_dir = Arc::new(LockDir::open(locks.clone()).unwrap());
    let held = lock_dir
        .acquire("history", Duration::ZERO, "another process's entry", None)
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_himalaya-sync"))
        .args(["sync", "demo", "inbox", "-c"])
        .arg(&rc)
        .env("HIMALAYA_SYNC_LOCK_DIR", &locks)
        .env("HIMALAYA_SYNC_STATE_DIR", &state)
        .output()
        .expect("the tool runs");

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "stdout: {stdout}");
    // Not merged (the lock is held all along), but in the history as any
    // process reads it.
    assert!(!state.join("history.json").exists());
    let history = History::open(&state, lock_dir).unwrap();
    let demo = history.load().unwrap()["demo"].clone();
    assert_eq!(demo.syncs_today, 1, "{demo:?}");
    assert_eq!(
        demo.last_error.map(|e| e.kind),
        Some(ErrorKind::Config),
        "{stdout}"
    );

    drop(held);
    history
        .record(&Record {
            account: "demo".into(),
            kind: "full".into(),
            end: demo.last_sync.unwrap() + 1.0,
            duration: 1.0,
            error: None,
        })
        .unwrap();
    let merged = std::fs::read_to_string(state.join("history.json")).expect("history merged");
    let merged: serde_json::Value = serde_json::from_str(&merged).unwrap();
    assert_eq!(merged["demo"]["syncs_today"], 2, "history: {merged}");
    assert_eq!(
        merged["demo"]["last_error"]["kind"], "config",
        "history: {merged}"
    );
}

/// Ctrl-C (or TERM, HUP) cancels the sync like `:HimalayaSync cancel`: the
/// tool says so and exits 128 + the signal. It used to die at once, saying
/// nothing.
#[test]
fn a_signal_cancels_the_sync_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    // The sync waits for the lock, until the signal.
    let (locks, rc, _held) = account_synced_elsewhere(tmp.path());
    let mut tool = Command::new(env!("CARGO_BIN_EXE_himalaya-sync"))
        .args(["sync", "demo", "full", "-c"])
        .arg(&rc)
        .args(["-t", "30"])
        .env("HIMALAYA_SYNC_LOCK_DIR", &locks)
        .env("HIMALAYA_SYNC_STATE_DIR", tmp.path().join("state"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the tool runs");
    // It waits once it says so on stderr.
    let mut stderr = std::io::BufReader::new(tool.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    assert!(line.starts_with("waiting for another process"), "{line}");
    let started = Instant::now();
    // SAFETY: kill only sends a signal.
    assert_eq!(unsafe { libc::kill(tool.id() as i32, libc::SIGINT) }, 0);
    let out = tool.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(128 + libc::SIGINT));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("full sync of demo cancelled while waiting for lock"),
        "{stdout}"
    );
}
