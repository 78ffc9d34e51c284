//! The manager's fast check and folder counts against a real dovecot
//! (`tests/fixture/imap_fixture.py`) and real mbsync, with the state files
//! where a global `SyncState` puts them.
//!
//! The fixture is stopped and its directory removed by a Drop guard, also
//! when a test fails (tests/common).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use himalaya_sync::manager::targets::Throttle;
use himalaya_sync::manager::{AccountOverrides, Manager, Settings, SyncType};
use serde_json::Value;

use crate::common::{self, mbsync, Fixture};

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

/// A manager on its own runtime and lock folder, its `sync_done` events
/// sent to `done`.
struct Harness {
    manager: Arc<Manager>,
    done: mpsc::Receiver<Value>,
    /// Kept alive for the manager's tasks.
    _rt: tokio::runtime::Runtime,
}

impl Harness {
    fn new(fx: &Fixture, settings: Settings) -> Harness {
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let (manager, rt) = common::manager(fx, settings, move |_, name, data| {
            if name == "sync_done" {
                let _ = tx.lock().unwrap().send(data);
            }
        });
        Harness {
            manager,
            done: rx,
            _rt: rt,
        }
    }

    /// A full sync of `demo`, to its end.
    fn full_sync(&self) -> Value {
        let id = common::start_demo(&self.manager, SyncType::Full);
        let data = self
            .done
            .recv_timeout(Duration::from_secs(60))
            .expect("sync_done of the sync");
        assert_eq!(data["id"], id);
        data
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

    let h = Harness::new(
        &fx,
        Settings {
            mbsync_config: Some(rc.clone()),
            ..Settings::default()
        },
    );
    let (manager, rx) = (&h.manager, &h.done);

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
    let data = check(manager, rx);
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
    let data = check(manager, rx);
    assert_eq!(data["result"]["new"], 4, "{data}");
    assert_eq!(data["result"]["changed"], serde_json::json!(["Archive"]));
    assert_eq!(
        data["result"]["changed_boxes"],
        serde_json::json!(["Archive"])
    );

    mbsync(&rc);
    assert_eq!(check(manager, rx)["result"]["new"], 0);

    // A server that accepts and then says nothing: the check waits for its
    // greeting (up to the account's Timeout) until it is cancelled.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let text = std::fs::read_to_string(&rc)
        .expect("read mbsyncrc")
        .replace(
            &format!("Port {}\n", fx.port()),
            &format!("Port {}\n", silent.local_addr().expect("addr").port()),
        );
    std::fs::write(&rc, text).expect("write mbsyncrc");
    let id = manager.check("demo".into(), Vec::new()).expect("check");
    let (_held, _) = silent.accept().expect("the check connects");
    assert_eq!(manager.cancel(Some(id + 1)), 0, "another id");
    assert_eq!(manager.cancel(Some(id)), 1);
    assert_eq!(manager.cancel(Some(id)), 0, "asked to stop already");
    let data = rx
        .recv_timeout(Duration::from_secs(2))
        .expect("the cancelled check ends at once");
    assert_eq!(data["id"], id);
    assert_eq!(data["status"], "cancelled", "{data}");
    assert_eq!(data["result"]["kind"], "cancelled");
    assert_eq!(data["message"], "check of demo cancelled");
    assert_eq!(manager.cancel(None), 0, "nothing left to cancel");
}

/// A throttled account over IMAPS: mbsync talks TLS through the relay (its
/// `Tunnel`) and checks the server certificate against `Host`. Every
/// message arrives and dovecot logged the login as TLS; with a CA mbsync
/// does not know, the sync fails on the certificate instead of going on in
/// plain text.
#[test]
fn a_throttled_sync_keeps_tls_end_to_end() {
    let fx = Fixture::start(&["--messages", "60"]);
    let tls = fx.restart_with_tls();
    let imaps_rc = |ca: &Path, name: &str| -> PathBuf {
        let text = std::fs::read_to_string(fx.mbsyncrc()).expect("read mbsyncrc");
        let text = text
            .replacen("Host 127.0.0.1\n", "Host localhost\n", 1)
            .replacen(
                &format!("Port {}\n", fx.port()),
                &format!("Port {}\n", tls.imaps_port),
                1,
            )
            .replacen(
                "SSLType None\n",
                &format!("SSLType IMAPS\nCertificateFile {}\n", ca.display()),
                1,
            );
        assert!(text.contains("SSLType IMAPS"), "{text}");
        let rc = fx.tmp.path().join(name);
        std::fs::write(&rc, text).expect("write mbsyncrc");
        rc
    };
    let settings = |rc: PathBuf| Settings {
        mbsync_config: Some(rc),
        state_dir: Some(fx.tmp.path().join("state")),
        relay_cmd: Some(env!("CARGO_BIN_EXE_himalaya-sync").into()),
        accounts: HashMap::from([(
            "demo".to_string(),
            AccountOverrides {
                throttle: Some(Throttle { kbps: 4000 }),
                ..AccountOverrides::default()
            },
        )]),
        ..Settings::default()
    };

    let h = Harness::new(&fx, settings(imaps_rc(&tls.ca, "mbsyncrc-imaps")));
    let data = h.full_sync();
    assert_eq!(data["status"], "completed", "{data}");
    assert_eq!(data["result"]["pulled"], 60, "{data}");
    let ids = |side: &str| fx.run(&["message-ids", "--account", "demo", "--side", side]);
    assert_eq!(ids("server"), ids("local"));
    let log = std::fs::read_to_string(fx.dir.join("logs/dovecot.log")).expect("dovecot log");
    let logins: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Login: user=<demo>"))
        .collect();
    assert!(!logins.is_empty(), "no login in the dovecot log:\n{log}");
    assert!(logins.iter().all(|l| l.contains("TLS")), "{logins:?}");

    // A CA of its own that signed nothing here: mbsync must refuse.
    let other = fx.tmp.path().join("other-ca");
    std::fs::create_dir_all(&other).expect("dir");
    common::make_certificates(&other);
    fx.deliver("INBOX", 2);
    let h = Harness::new(
        &fx,
        settings(imaps_rc(&other.join("ca.pem"), "mbsyncrc-other-ca")),
    );
    let data = h.full_sync();
    assert_eq!(data["status"], "error", "{data}");
    let line = data["error"]["line"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(line.contains("certificate"), "{data}");
    assert_ne!(
        ids("server"),
        ids("local"),
        "nothing was synced without TLS"
    );
}
