//! The manager's fast check and folder counts against a real dovecot
//! (`tests/fixture/imap_fixture.py`) and real mbsync, with the state files
//! where a global `SyncState` puts them.
//!
//! The fixture is stopped and its directory removed by a Drop guard, also
//! when a test fails (tests/common).

use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use himalaya_sync::lock::LockDir;
use himalaya_sync::manager::{Manager, Settings};
use serde_json::Value;

mod common;

use common::{mbsync, Fixture};

impl Fixture {
    /// The fixture's mbsyncrc with the state files under a global
    /// `SyncState` prefix instead of inside each Maildir folder.
    fn global_state_rc(&self) -> PathBuf {
        let rc = self.mbsyncrc();
        let states = self.tmp.path().join("states");
        std::fs::create_dir_all(&states).expect("state dir");
        let text = std::fs::read_to_string(&rc)
            .expect("read mbsyncrc")
            .replace("SyncState *\n", "")
            .replacen(
                "FSync no\n",
                &format!("FSync no\nSyncState {}/\n", states.display()),
                1,
            );
        let out = self.tmp.path().join("mbsyncrc-global");
        std::fs::write(&out, text).expect("write mbsyncrc");
        out
    }
}

fn check(manager: &Arc<Manager>, done: &mpsc::Receiver<Value>) -> Value {
    let id = manager.check("demo".into(), Vec::new()).expect("check");
    let data = done
        .recv_timeout(Duration::from_secs(20))
        .expect("sync_done of the check");
    assert_eq!(data["id"], id);
    assert_eq!(data["type"], "check");
    data
}

#[test]
fn check_and_counts_follow_the_mbsyncrc() {
    let fx = Fixture::start(&["--folders", "INBOX=12,Archive=5,Work/Projects=3"]);
    let rc = fx.global_state_rc();
    mbsync(&rc);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let locks = Arc::new(LockDir::open(fx.tmp.path().join("locks")).expect("locks"));
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let next = std::sync::atomic::AtomicU64::new(1);
    let manager = Arc::new(Manager::new(
        locks,
        Arc::new(move |_, name: &str, data: Value| {
            if name == "sync_done" {
                let _ = tx.lock().unwrap().send(data);
            }
        }),
        Box::new(move || next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)),
        rt.handle().clone(),
    ));
    manager.configure(Settings {
        mbsync_config: Some(rc.clone()),
        ..Settings::default()
    });

    // Counts: exactly the server's figures.
    let server = fx.run(&["counts", "--account", "demo", "--side", "server"]);
    let counts = manager.folder_counts("demo").expect("counts");
    assert_eq!(counts.len(), 3);
    for c in &counts {
        let s = &server[&c.folder];
        assert_eq!(
            (c.total, c.unread, c.flagged),
            (
                s["total"].as_u64().unwrap(),
                s["unread"].as_u64().unwrap(),
                s["flagged"].as_u64().unwrap()
            ),
            "{}",
            c.folder
        );
    }

    // The check finds the global state files: nothing new after the sync.
    let data = check(&manager, &rx);
    assert_eq!(data["status"], "completed", "{data}");
    assert_eq!(data["result"]["new"], 0);
    assert_eq!(data["result"]["folders"].as_array().unwrap().len(), 3);

    fx.run(&[
        "deliver",
        "--account",
        "demo",
        "--folder",
        "Archive",
        "--count",
        "4",
    ]);
    let data = check(&manager, &rx);
    assert_eq!(data["result"]["new"], 4, "{data}");
    assert_eq!(data["result"]["changed"], serde_json::json!(["Archive"]));
    assert_eq!(
        data["result"]["changed_boxes"],
        serde_json::json!(["Archive"])
    );

    mbsync(&rc);
    assert_eq!(check(&manager, &rx)["result"]["new"], 0);
}
