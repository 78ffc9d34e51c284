//! Port 993 is IMAPS. Without `SSLType IMAPS`, mbsync talks plain IMAP
//! there: it waits for a greeting that a TLS server never sends, and ends
//! with `Socket error on HOST (ADDRESS:993): timeout.` after the account's
//! `Timeout`. The manager makes that timeout a `config` error that says
//! what to set (`mbsync::errors::without_tls`) instead of a server to retry.
//! Here against dovecot's real IMAPS listener on 127.0.0.1:993 and real
//! mbsync; the same account with `SSLType IMAPS` syncs.
//!
//! Port 993 needs root (or `CAP_NET_BIND_SERVICE`) and must be free: when
//! it is not, the test says so on stderr and checks nothing.
//!
//! The fixture is stopped and its directory removed by a Drop guard, also
//! when the test fails (tests/common).

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use himalaya_sync::manager::{Settings, SyncType};
use serde_json::Value;

use crate::common::{self, Fixture};

const IMAPS: u16 = 993;

/// The fixture's mbsyncrc for account `demo` on `localhost:993`, with
/// `security` in place of its `SSLType None` and a 2 s `Timeout`.
fn mbsyncrc_on_993(fx: &Fixture, name: &str, security: &[String]) -> std::path::PathBuf {
    let text = std::fs::read_to_string(fx.mbsyncrc()).expect("read mbsyncrc");
    let mut out = Vec::new();
    for line in text.lines() {
        let key = line.split_whitespace().next().unwrap_or_default();
        match key {
            "Host" => out.push("Host localhost".to_owned()),
            "Port" => out.push(format!("Port {IMAPS}")),
            "Timeout" => out.push("Timeout 2".to_owned()),
            "SSLType" => out.extend(security.iter().cloned()),
            _ => out.push(line.to_owned()),
        }
    }
    let rc = fx.tmp.path().join(name);
    std::fs::write(&rc, out.join("\n") + "\n").expect("write mbsyncrc");
    rc
}

/// Runs a full sync of `demo` with `rc` and returns its `sync_done` data.
fn sync(fx: &Fixture, rc: &Path) -> Value {
    let (tx, rx) = mpsc::channel::<(u64, String, Value)>();
    let tx = std::sync::Mutex::new(tx);
    let (manager, _rt) = common::manager(
        fx,
        Settings {
            mbsync_config: Some(rc.to_owned()),
            ..Settings::default()
        },
        move |id, name, data| {
            let _ = tx.lock().unwrap().send((id, name.to_string(), data));
        },
    );
    let id = common::start_demo(&manager, SyncType::Full);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (i, name, data) = rx.recv_timeout(left).expect("the sync to end");
        if i == id && name == "sync_done" {
            return data;
        }
    }
}

#[test]
fn an_account_on_port_993_without_imaps_is_told_to_set_it() {
    // Ours only for this check: dovecot binds the port after we let go.
    if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", IMAPS)) {
        eprintln!("imaps_port: not run: cannot listen on 127.0.0.1:{IMAPS} ({e})");
        return;
    }
    let fx = Fixture::start(&["--messages", "3"]);
    let tls = fx.restart_with_tls_on(IMAPS);

    // No SSLType: mbsync's default is STARTTLS, which starts in plain text.
    let plain = mbsyncrc_on_993(&fx, "mbsyncrc-no-ssltype", &[]);
    let started = Instant::now();
    let done = sync(&fx, &plain);
    assert_eq!(done["status"], "error", "{done}");
    assert_eq!(done["error"]["kind"], "config", "{done}");
    assert_eq!(done["result"]["attempts"], 1, "not retried: {done}");
    let message = done["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("localhost (127.0.0.1:993): timeout.")
            && message.contains("IMAPAccount demo has Port 993 but does not start TLS"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "ended by mbsync's own 2 s Timeout, not a watchdog: {:?}",
        started.elapsed()
    );

    // The same account with SSLType IMAPS: the listener is real IMAPS.
    let imaps = mbsyncrc_on_993(
        &fx,
        "mbsyncrc-imaps",
        &[
            "SSLType IMAPS".to_owned(),
            format!("CertificateFile {}", tls.ca.display()),
        ],
    );
    let done = sync(&fx, &imaps);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["pulled"], 3, "{done}");
}
