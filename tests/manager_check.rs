//! The manager's fast check and folder counts against a real dovecot
//! (`tests/fixture/imap_fixture.py`) and real mbsync, with the state files
//! where a global `SyncState` puts them.
//!
//! The fixture is stopped and its directory removed by a Drop guard, also
//! when a test fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use himalaya_sync::lock::LockDir;
use himalaya_sync::manager::{Manager, Settings};
use serde_json::Value;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixture/imap_fixture.py");

/// A running fixture; stopped and removed on drop.
struct Fixture {
    dir: PathBuf,
    info: Value,
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn start(args: &[&str]) -> Fixture {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("imap");
        let out = Command::new("python3")
            .arg(FIXTURE)
            .args(["start", "--dir"])
            .arg(&dir)
            .args(args)
            .output()
            .expect("run fixture");
        let mut fixture = Fixture {
            dir,
            info: Value::Null,
            tmp,
        };
        assert!(
            out.status.success(),
            "fixture start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fixture.info = serde_json::from_slice(&out.stdout).expect("fixture JSON");
        fixture
    }

    fn run(&self, args: &[&str]) -> Value {
        let out = Command::new("python3")
            .arg(FIXTURE)
            .arg(args[0])
            .arg("--dir")
            .arg(&self.dir)
            .args(&args[1..])
            .output()
            .expect("run fixture");
        assert!(
            out.status.success(),
            "fixture {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("fixture JSON")
    }

    /// The fixture's mbsyncrc with the state files under a global
    /// `SyncState` prefix instead of inside each Maildir folder.
    fn global_state_rc(&self) -> PathBuf {
        let rc = PathBuf::from(self.info["mbsyncrc"].as_str().expect("mbsyncrc"));
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

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = Command::new("python3")
            .arg(FIXTURE)
            .args(["stop", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .status();
    }
}

fn mbsync(rc: &PathBuf) {
    let out = Command::new("mbsync")
        .arg("-c")
        .arg(rc)
        .arg("-a")
        .output()
        .expect("run mbsync");
    assert!(
        out.status.success(),
        "mbsync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `Manager::check` and returns the data of its `sync_done` event.
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
