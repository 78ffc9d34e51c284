//! The events of a sync as the editor receives them, against a real dovecot
//! (`tests/fixture/imap_fixture.py`) and real mbsync: which events a sync
//! sends, and in which order.
//!
//! The fixture is stopped and its directory removed by a Drop guard, also
//! when a test fails (tests/common).

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use himalaya_sync::manager::{Manager, Settings, SyncType};

use crate::common::{self, Fixture};

/// One event: sync id, event name, the sync's status in it.
type Seen = (u64, String, String);

/// A manager whose every event is sent to the returned receiver.
fn manager(
    fx: &Fixture,
    settings: Settings,
) -> (Arc<Manager>, mpsc::Receiver<Seen>, tokio::runtime::Runtime) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let (manager, rt) = common::manager(fx, settings, move |id, name, data| {
        let status = data["status"].as_str().unwrap_or_default().to_string();
        let _ = tx.lock().unwrap().send((id, name.to_string(), status));
    });
    (manager, rx, rt)
}

/// Every event until each of `ids` has sent `sync_done`.
fn until_done(rx: &mpsc::Receiver<Seen>, ids: &[u64]) -> Vec<Seen> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen: Vec<Seen> = Vec::new();
    while !ids
        .iter()
        .all(|id| seen.iter().any(|(i, n, _)| i == id && n == "sync_done"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        seen.push(
            rx.recv_timeout(left)
                .expect("events until every sync is done"),
        );
    }
    seen
}

fn names_of(seen: &[Seen], id: u64) -> Vec<&str> {
    seen.iter()
        .filter(|(i, _, _)| *i == id)
        .map(|(_, n, _)| n.as_str())
        .collect()
}

fn position(seen: &[Seen], id: u64, name: &str) -> usize {
    seen.iter()
        .position(|(i, n, _)| *i == id && n == name)
        .unwrap_or_else(|| panic!("sync {id} sent no {name}: {seen:?}"))
}

/// A request that starts at once is not announced as queued: its first
/// event is `sync_started`, sent once mbsync runs. A request that has to
/// wait (its account is busy) is announced as queued at once and started
/// after the first one ended.
#[test]
fn a_sync_is_announced_as_queued_only_when_it_waits() {
    let fx = Fixture::start(&["--folders", "INBOX=20,Work=20"]);
    let (manager, rx, _rt) = manager(
        &fx,
        Settings {
            mbsync_config: Some(fx.mbsyncrc()),
            ..Settings::default()
        },
    );
    let first = common::start_demo(&manager, SyncType::Inbox);
    // A full sync is not covered by the inbox sync, and needs its channel.
    let second = common::start_demo(&manager, SyncType::Full);
    assert_ne!(first, second);
    let seen = until_done(&rx, &[first, second]);

    let ones = names_of(&seen, first);
    assert_eq!(ones.first(), Some(&"sync_started"), "{seen:?}");
    assert_eq!(ones.last(), Some(&"sync_done"), "{seen:?}");
    assert!(!ones.contains(&"sync_queued"), "{seen:?}");

    let twos = names_of(&seen, second);
    assert_eq!(twos.first(), Some(&"sync_queued"), "{seen:?}");
    assert_eq!(twos.last(), Some(&"sync_done"), "{seen:?}");
    assert_eq!(twos.iter().filter(|n| **n == "sync_started").count(), 1);
    assert!(position(&seen, second, "sync_queued") < position(&seen, first, "sync_done"));
    assert!(position(&seen, first, "sync_done") < position(&seen, second, "sync_started"));
    for id in [first, second] {
        let (_, _, status) = &seen[position(&seen, id, "sync_done")];
        assert_eq!(status, "completed", "{seen:?}");
    }
}

/// `sync_started` means mbsync started: a sync whose mbsync cannot be
/// started ends without it.
#[test]
fn a_sync_whose_mbsync_never_ran_sends_no_started() {
    let fx = Fixture::start(&["--messages", "5"]);
    let missing = fx.tmp.path().join("no-such-mbsync");
    let (manager, rx, _rt) = manager(
        &fx,
        Settings {
            mbsync_cmd: missing,
            mbsync_config: Some(fx.mbsyncrc()),
            ..Settings::default()
        },
    );
    let id = common::start_demo(&manager, SyncType::Full);
    let seen = until_done(&rx, &[id]);
    assert_eq!(names_of(&seen, id), ["sync_done"], "{seen:?}");
    assert_eq!(seen.last().map(|s| s.2.as_str()), Some("error"));
}

/// A panic while a sync ends (here: the event sink, on the last progress
/// event, which only the end of a successful sync sends: it has an
/// `end_time`) still ends it, as an internal error, and the queue goes on:
/// the callbacks of every request run.
#[test]
fn a_panic_while_a_sync_ends_still_ends_it() {
    let fx = Fixture::start(&["--folders", "INBOX=20,Work=20"]);
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let panicked = std::sync::atomic::AtomicBool::new(false);
    let settings = Settings {
        mbsync_config: Some(fx.mbsyncrc()),
        ..Settings::default()
    };
    let (manager, _rt) = common::manager(&fx, settings, move |id, name, data| {
        if name == "sync_progress"
            && !data["end_time"].is_null()
            && !panicked.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("the event sink failed");
        }
        let status = data["status"].as_str().unwrap_or_default().to_string();
        let _ = tx.lock().unwrap().send((id, name.to_string(), status));
    });
    // The second one waits in the queue for the first.
    let first = common::start_demo(&manager, SyncType::Inbox);
    let second = common::start_demo(&manager, SyncType::Full);
    let seen = until_done(&rx, &[first, second]);
    let done = |id| {
        seen.iter()
            .find(|(i, n, _)| *i == id && n == "sync_done")
            .map(|(_, _, status)| status.as_str())
    };
    assert_eq!(done(first), Some("error"), "{seen:?}");
    assert_eq!(done(second), Some("completed"), "{seen:?}");
}

/// A copy of the fixture's mbsyncrc whose password the server refuses.
fn wrong_password_rc(fx: &Fixture) -> std::path::PathBuf {
    let rc = fx.tmp.path().join("mbsyncrc-wrong-password");
    let text = std::fs::read_to_string(fx.mbsyncrc()).unwrap();
    let wrong: Vec<String> = text
        .lines()
        .map(|l| match l.trim_start().starts_with("Pass ") {
            true => "Pass \"wrong-password\"".to_string(),
            false => l.to_string(),
        })
        .collect();
    std::fs::write(&rc, wrong.join("\n") + "\n").unwrap();
    rc
}

/// A manager that sends every event with its data to the returned
/// receiver.
fn manager_with_data(
    fx: &Fixture,
    settings: Settings,
) -> (
    Arc<Manager>,
    mpsc::Receiver<(u64, String, serde_json::Value)>,
    tokio::runtime::Runtime,
) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let (manager, rt) = common::manager(fx, settings, move |id, name, data| {
        let _ = tx.lock().unwrap().send((id, name.to_string(), data));
    });
    (manager, rx, rt)
}

/// The names of sync `id`'s events until its `sync_done`, each passed to
/// `on` as it comes (to answer it, as the editor would), and that last
/// event's data.
fn events_until_done(
    rx: &mpsc::Receiver<(u64, String, serde_json::Value)>,
    id: u64,
    mut on: impl FnMut(&str),
) -> (Vec<String>, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut names = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (i, name, data) = rx.recv_timeout(left).expect("the sync to end");
        if i != id {
            continue;
        }
        on(&name);
        names.push(name);
        if names.last().is_some_and(|n| n == "sync_done") {
            return (names, data);
        }
    }
}

/// A `sync_auth` that nobody answers (an account `refresh` function that
/// never calls `done`) ends the sync as an auth failure once
/// `auth_refresh_limit` has passed, instead of holding it, and every
/// request joined to it, for good.
#[test]
fn an_unanswered_refresh_ends_the_sync_as_an_auth_failure() {
    let fx = Fixture::start(&["--messages", "5"]);
    let (manager, rx, _rt) = manager_with_data(
        &fx,
        Settings {
            mbsync_config: Some(wrong_password_rc(&fx)),
            auth_refresh: ["demo".to_string()].into(),
            auth_refresh_limit: Duration::from_millis(500),
            ..Settings::default()
        },
    );
    let id = common::start_demo(&manager, SyncType::Full);
    let (names, done) = events_until_done(&rx, id, |_| {});
    assert!(names.iter().any(|n| n == "sync_auth"), "{names:?}");
    assert_eq!(done["status"], "error", "{done}");
    assert_eq!(done["error"]["kind"], "auth", "{done}");
    let message = done["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the refresh did not answer within 0.5 s"),
        "{message}"
    );
}

/// A refresh that could not reach the provider says nothing about the
/// credentials: the sync is retried with backoff, its next failed login
/// asks for a refresh again, and once out of attempts it ends as a network
/// failure, not as one that needs re-authorization.
#[test]
fn a_refresh_that_cannot_reach_the_provider_is_retried_as_a_network_failure() {
    use himalaya_sync::error::{Error, ErrorKind};
    use himalaya_sync::manager::RetryPolicy;
    let fx = Fixture::start(&["--messages", "5"]);
    let (manager, rx, _rt) = manager_with_data(
        &fx,
        Settings {
            mbsync_config: Some(wrong_password_rc(&fx)),
            auth_refresh: ["demo".to_string()].into(),
            retry: RetryPolicy {
                base: Duration::from_millis(100),
                cap: Duration::from_millis(100),
                max_attempts: 2,
                jitter: 0.0,
                ..RetryPolicy::default()
            },
            ..Settings::default()
        },
    );
    let id = common::start_demo(&manager, SyncType::Full);
    let (names, done) = events_until_done(&rx, id, |name| {
        // The editor's refresh: the token endpoint cannot be reached.
        if name == "sync_auth" {
            manager.auth_refreshed(
                id,
                Err(Error::new(
                    ErrorKind::Network,
                    "demo: cannot reach the token endpoint",
                )),
            );
        }
    });
    let count = |n: &str| names.iter().filter(|x| *x == n).count();
    // Attempt 1 fails its login, its refresh fails (attempt 2), retried:
    // attempt 3 fails its login, its refresh fails too: out of attempts.
    assert_eq!(
        (count("sync_auth"), count("sync_retry")),
        (2, 1),
        "{names:?}"
    );
    assert_eq!(done["status"], "error", "{done}");
    assert_eq!(done["error"]["kind"], "network", "{done}");
    let message = done["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("the credentials of demo could not be refreshed: demo: cannot reach"),
        "{message}"
    );
    assert!(!message.contains("re-authorization"), "{message}");
}

/// A state folder the history may not be written to (here: open to every
/// user) is told once, as a `warning`, not at every sync and not never;
/// once the folder is fixed, the history is saved again.
#[test]
fn a_history_that_cannot_be_saved_is_told_once() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::start(&["--messages", "1"]);
    let state = fx.tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let settings = Settings {
        mbsync_config: Some(fx.mbsyncrc()),
        state_dir: Some(state.clone()),
        ..Settings::default()
    };
    let (manager, _rt) = common::manager(&fx, settings, move |id, name, data| {
        let text = match name {
            "warning" => data["message"].as_str().unwrap_or_default().to_string(),
            _ => data["status"].as_str().unwrap_or_default().to_string(),
        };
        let _ = tx.lock().unwrap().send((id, name.to_string(), text));
    });
    let mut seen = Vec::new();
    for _ in 0..2 {
        let id = common::start_demo(&manager, SyncType::Inbox);
        seen.extend(until_done(&rx, &[id]));
    }
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let id = common::start_demo(&manager, SyncType::Inbox);
    seen.extend(until_done(&rx, &[id]));
    // The last entry is written after `sync_done`: wait for the file.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !state.join("history.json").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    seen.extend(rx.try_iter());

    let warnings: Vec<&str> = seen
        .iter()
        .filter(|(_, n, _)| n == "warning")
        .map(|(_, _, text)| text.as_str())
        .collect();
    assert_eq!(warnings.len(), 1, "{seen:?}");
    assert!(
        warnings[0].starts_with("sync history not saved: ") && warnings[0].contains("0777"),
        "{warnings:?}"
    );
    assert!(state.join("history.json").exists(), "{seen:?}");
}

/// A sync cancelled as soon as it is started ends as the plain "sync
/// cancelled", whichever step the cancel meets: it used to say that a wait
/// for its lock was cancelled, though nobody held the lock.
#[test]
fn a_sync_cancelled_at_once_says_so_plainly() {
    let fx = Fixture::start(&["--messages", "1"]);
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let settings = Settings {
        mbsync_config: Some(fx.mbsyncrc()),
        ..Settings::default()
    };
    let (manager, _rt) = common::manager(&fx, settings, move |id, name, data| {
        let message = data["message"].as_str().unwrap_or_default().to_string();
        let _ = tx.lock().unwrap().send((id, name.to_string(), message));
    });
    for _ in 0..5 {
        let id = common::start_demo(&manager, SyncType::Full);
        assert_eq!(manager.cancel(Some(id)), 1);
        let seen = until_done(&rx, &[id]);
        let done = seen
            .iter()
            .find(|(i, n, _)| *i == id && n == "sync_done")
            .map(|(_, _, message)| message.as_str());
        assert_eq!(
            done,
            Some("full sync of demo cancelled (start it again when needed)"),
            "{seen:?}"
        );
    }
}

/// Renumbers the server folder in `dir` (`.Work`) as a server that made it
/// anew would: a new UIDVALIDITY, the UIDs in another order (dovecot reads
/// its uidlist again once its index is gone).
fn renumber(fx: &Fixture, dir: &str) {
    let server = fx.info["accounts"]["demo"]["server_maildir"]
        .as_str()
        .expect("server_maildir");
    let folder = std::path::Path::new(server).join(dir);
    let list = folder.join("dovecot-uidlist");
    let text = std::fs::read_to_string(&list).expect("dovecot-uidlist");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("its header").split(' ').collect();
    let names: Vec<&str> = lines
        .filter_map(|l| l.split_once(' ').map(|(_, name)| name))
        .collect();
    let validity: u64 = header[1][1..].parse().expect("V<uidvalidity>");
    let mut out = format!(
        "3 V{} N{} {}\n",
        validity + 1000,
        names.len() + 1,
        header[3]
    );
    for (i, name) in names.iter().rev().enumerate() {
        out.push_str(&format!("{} {name}\n", i + 1));
    }
    std::fs::write(&list, out).expect("write dovecot-uidlist");
    for entry in std::fs::read_dir(&folder).expect("the folder") {
        let path = entry.expect("an entry").path();
        let index = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("dovecot.index"));
        if index {
            std::fs::remove_file(&path).expect("remove the index");
        }
    }
}

/// A panic while an automatic repair ends (here: the event sink, on the
/// `sync_queued` that sends the repaired sync to run again) must not leave
/// the sync waiting for good: it runs again and completes, the repair
/// reported.
#[test]
fn a_panic_while_an_automatic_repair_ends_still_lets_the_sync_run() {
    let fx = Fixture::start(&["--folders", "INBOX=3,Work=5"]);
    fx.sync();
    renumber(&fx, ".Work");
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let panicked = std::sync::atomic::AtomicBool::new(false);
    let settings = Settings {
        mbsync_config: Some(fx.mbsyncrc()),
        // The repair's backup goes there.
        state_dir: Some(fx.tmp.path().join("state")),
        ..Settings::default()
    };
    let (manager, _rt) = common::manager(&fx, settings, move |id, name, data| {
        if name == "sync_queued"
            && !data["repair"].is_null()
            && !panicked.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("the event sink failed");
        }
        let _ = tx.lock().unwrap().send((id, name.to_string(), data));
    });
    let id = common::start_demo(&manager, SyncType::Full);
    let (names, done) = events_until_done(&rx, id, |_| {});
    assert!(names.iter().any(|n| n == "sync_repair"), "{names:?}");
    assert_eq!(done["status"], "completed", "{names:?} {done}");
    assert_eq!(done["repair"]["mailbox"], "Work", "{done}");
}
