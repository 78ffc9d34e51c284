//! `oauth::Tokens`, the refresh logic every caller shares: refresh scripts
//! (the original plugin's way), a network failure that keeps a token still
//! good to use, and an account with nothing to refresh with. The protocol
//! side, against a real OAuth2 server, is in `oauth_flow.rs` and the
//! Lua specs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use himalaya_sync::error::ErrorKind;
use himalaya_sync::lock::LockDir;
use himalaya_sync::oauth::account::AccountSettings;
use himalaya_sync::oauth::token::Token;
use himalaya_sync::oauth::{now, Tokens};
use serde_json::json;

fn setup(tmp: &Path) -> Tokens {
    let locks = tmp.join("locks");
    std::fs::create_dir(&locks).unwrap();
    std::fs::set_permissions(&locks, std::fs::Permissions::from_mode(0o700)).unwrap();
    Tokens::new(Arc::new(LockDir::open(locks).unwrap()), tmp.join("state"))
}

fn account(tmp: &Path, extra: serde_json::Value) -> AccountSettings {
    let mut v = json!({
        "name": "demo",
        "store": { "backend": "plain", "dir": tmp.join("tokens") },
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_refresh_script_printing_json_gives_and_stores_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = setup(tmp.path());
    let acct = account(
        tmp.path(),
        json!({ "refresh_cmd": "printf '{\"access_token\":\"fresh-%s\",\"expires_in\":3600}' \"$HIMALAYA_SYNC_ACCOUNT\"" }),
    );
    let rt = rt();
    assert_eq!(
        rt.block_on(tokens.valid_token(&acct)).unwrap(),
        "fresh-demo"
    );
    // Stored: the next call does not run the script (which now fails).
    let acct2 = account(tmp.path(), json!({ "refresh_cmd": "exit 1" }));
    assert_eq!(
        rt.block_on(tokens.valid_token(&acct2)).unwrap(),
        "fresh-demo"
    );
    let status = rt.block_on(tokens.status(&acct));
    assert!(status.has_token && status.last_error.is_none());
}

#[test]
fn a_refresh_script_that_stores_the_token_itself_and_prints_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = setup(tmp.path());
    let dir = tmp.path().join("tokens");
    let script = format!(
        "umask 077; printf '{{\"access_token\":\"by-script\",\"expires_in\":3600}}' > {0}/demo.json.new && mv {0}/demo.json.new {0}/demo.json",
        dir.display()
    );
    let acct = account(tmp.path(), json!({ "refresh_cmd": script }));
    // The store makes its private folder on first use.
    let rt = rt();
    rt.block_on(tokens.store_token(&acct, Token::new("stale", now() - 10_000)))
        .unwrap();
    rt.block_on(tokens.clear(&acct)).unwrap();
    assert_eq!(rt.block_on(tokens.valid_token(&acct)).unwrap(), "by-script");
}

#[test]
fn a_failing_refresh_script_is_an_auth_error_that_quotes_no_token() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = setup(tmp.path());
    let acct = account(
        tmp.path(),
        json!({ "refresh_cmd": "echo tok-0123456789abcdef; echo 'cannot reach tok-0123456789abcdef' >&2; exit 4" }),
    );
    let rt = rt();
    let e = rt.block_on(tokens.valid_token(&acct)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.message.contains("refresh_cmd"), "{e}");
    assert!(!e.message.contains("tok-0123456789abcdef"), "{e}");
    let status = rt.block_on(tokens.status(&acct));
    assert_eq!(status.last_error.unwrap().kind, ErrorKind::Auth);
}

#[test]
fn a_refresh_script_printing_null_is_an_auth_error_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = setup(tmp.path());
    // `curl ... | jq -r .access_token` on an error reply.
    let acct = account(tmp.path(), json!({ "refresh_cmd": "echo null" }));
    let rt = rt();
    let e = rt.block_on(tokens.valid_token(&acct)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert_eq!(
        e.message,
        "refresh_cmd of demo: the token output holds no token, only `null`"
    );
    assert!(!rt.block_on(tokens.status(&acct)).has_token);
}

#[test]
fn a_network_failure_keeps_a_token_that_has_not_expired_unless_refresh_was_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = setup(tmp.path());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let acct = account(
        tmp.path(),
        json!({
            "provider": "generic",
            "client_id": "himalaya-test",
            "token_url": format!("http://127.0.0.1:{port}/token"),
        }),
    );
    let rt = rt();
    // Inside the refresh margin, but still valid for 100 s.
    let mut old = Token::new("old-but-valid", now());
    old.expires_at = Some(now() + 100);
    old.refresh_token = Some("refresh-1".into());
    rt.block_on(tokens.store_token(&acct, old.clone())).unwrap();
    // A forced refresh asked for a new token: that it got none is its
    // answer, and no refresh is recorded as done.
    let e = rt.block_on(tokens.refresh(&acct)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Network, "{e}");
    let status = rt.block_on(tokens.status(&acct));
    assert_eq!(status.last_refresh, None);
    assert_eq!(status.last_error.map(|l| l.kind), Some(ErrorKind::Network));
    assert_eq!(
        rt.block_on(tokens.valid_token(&acct)).unwrap(),
        "old-but-valid"
    );
    // Expired: nothing to fall back on, the network error is reported.
    old.expires_at = Some(now() - 1);
    rt.block_on(tokens.store_token(&acct, old)).unwrap();
    let e = rt.block_on(tokens.valid_token(&acct)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Network, "{e}");
    assert!(!e.message.contains("refresh-1") && !e.message.contains("old-but-valid"));
    // The refresh token is still stored for when the network is back.
    let status = rt.block_on(tokens.status(&acct));
    assert!(status.has_refresh_token);
}

#[test]
fn no_refresh_token_asks_for_re_authorization() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = setup(tmp.path());
    let acct = account(
        tmp.path(),
        json!({ "provider": "generic", "client_id": "x", "token_url": "http://127.0.0.1:9/token" }),
    );
    let e = rt().block_on(tokens.valid_token(&acct)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.message.starts_with("re-authorization needed"), "{e}");
    assert!(
        e.message.contains(":HimalayaSync oauth authorize demo"),
        "{e}"
    );
}

/// An account of a generic provider whose token endpoint is `token_url`,
/// with an expired access token and `refresh` stored; and a runtime.
fn expired_at_provider(
    tmp: &Path,
    tokens: &Tokens,
    token_url: &str,
    refresh: &str,
) -> (AccountSettings, tokio::runtime::Runtime) {
    let acct = account(
        tmp,
        json!({ "provider": "generic", "client_id": "himalaya-test", "token_url": token_url }),
    );
    let rt = rt();
    let mut old = Token::new("expired-access", now());
    old.expires_at = Some(now() - 1);
    old.refresh_token = Some(refresh.into());
    rt.block_on(tokens.store_token(&acct, old)).unwrap();
    (acct, rt)
}

/// A token endpoint that answers its one request after `delay` with
/// `status` and the JSON `body`. Returns its URL and a thread that ends
/// with the request it got.
fn one_answer_server(
    delay: std::time::Duration,
    status: &'static str,
    body: &'static str,
) -> (String, std::thread::JoinHandle<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "the client closed before its request was complete");
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
            let Some(end) = text.find("\r\n\r\n") else {
                continue;
            };
            let length = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if request.len() >= end + 4 + length {
                break;
            }
        }
        std::thread::sleep(delay);
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        String::from_utf8_lossy(&request).into_owned()
    });
    (url, server)
}

#[test]
fn a_rotated_refresh_token_is_saved_even_when_the_waiter_gives_up() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = setup(tmp.path());
    // The waiter is gone by the time this answers, but the refresh is not.
    let (url, server) = one_answer_server(
        std::time::Duration::from_millis(600),
        "200 OK",
        r#"{"access_token":"rotated-access","token_type":"Bearer","expires_in":3600,"refresh_token":"rotated-refresh-2"}"#,
    );
    let (acct, rt) = expired_at_provider(tmp.path(), &tokens, &url, "refresh-1");
    // The caller stops waiting long before the provider answers, as a
    // cancelled sync does.
    rt.block_on(async {
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            tokens.valid_token(&acct),
        )
        .await;
        assert!(gave_up.is_err(), "answered before the provider did");
        // The refresh goes on by itself meanwhile.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    });
    let request = server.join().unwrap();
    assert!(request.contains("refresh_token=refresh-1"), "{request}");
    // Saved: the new access token is served without another request (the
    // server is gone), and the store holds the rotated refresh token.
    assert_eq!(
        rt.block_on(tokens.valid_token(&acct)).unwrap(),
        "rotated-access"
    );
    let saved = std::fs::read_to_string(tmp.path().join("tokens/demo.json")).unwrap();
    assert!(
        saved.contains("rotated-refresh-2"),
        "the rotated refresh token was lost"
    );
}

#[test]
fn a_refresh_script_that_prints_the_stored_tokens_on_failure_quotes_neither() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = setup(tmp.path());
    let acct = account(
        tmp.path(),
        json!({ "refresh_cmd": "echo 'curl -d refresh_token=1//0gOLDrefreshTOKEN42 failed' >&2; echo 'or 1%2F%2F0gOLDrefreshTOKEN42 for expired-access-9' >&2; exit 1" }),
    );
    let rt = rt();
    let mut old = Token::new("expired-access-9", now());
    old.expires_at = Some(now() - 1);
    old.refresh_token = Some("1//0gOLDrefreshTOKEN42".into());
    rt.block_on(tokens.store_token(&acct, old)).unwrap();
    let e = rt.block_on(tokens.valid_token(&acct)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.message.contains("refresh_cmd failed"), "{e}");
    assert!(!e.message.contains("0gOLD"), "{e}");
    let status = rt.block_on(tokens.status(&acct));
    assert!(!status.last_error.unwrap().message.contains("0gOLD"));
}

#[test]
fn a_provider_that_echoes_the_refresh_token_encoded_is_not_quoted() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = setup(tmp.path());
    let (url, server) = one_answer_server(
        std::time::Duration::ZERO,
        "400 Bad Request",
        r#"{"error":"invalid_grant","error_description":"bad grant 1%2F%2F0gOLDrefreshTOKEN42 or 1\/\/0gOLDrefreshTOKEN42"}"#,
    );
    let (acct, rt) = expired_at_provider(tmp.path(), &tokens, &url, "1//0gOLDrefreshTOKEN42");
    let e = rt.block_on(tokens.valid_token(&acct)).unwrap_err();
    server.join().unwrap();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.message.contains("re-authorization needed"), "{e}");
    assert!(!e.message.contains("0gOLD"), "{e}");
}

#[test]
fn a_store_command_is_stopped_when_nobody_waits_for_the_token_any_more() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = setup(tmp.path());
    let pid_file = tmp.path().join("load.pid");
    let acct = account(
        tmp.path(),
        json!({
            "refresh_cmd": "exit 1",
            "store": {
                "backend": "command",
                "load_cmd": format!("echo $$ > {}; exec sleep 20", pid_file.display()),
                "save_cmd": "cat > /dev/null",
                "clear_cmd": "true",
            },
        }),
    );
    let rt = rt();
    rt.block_on(async {
        // A cancelled sync: the wait for the token is dropped while the
        // store's load command runs (once it has said its pid).
        let load_runs = async {
            while std::fs::read_to_string(&pid_file).map_or(true, |p| p.trim().is_empty()) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        tokio::select! {
            _ = tokens.valid_token(&acct) => panic!("answered while the load command runs"),
            started = tokio::time::timeout(std::time::Duration::from_secs(10), load_runs) => {
                started.expect("the load command to start");
            }
        }
    });
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    // SAFETY: signal 0 only asks whether the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the load command still runs"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_refresh_scripts_token_is_saved_under_the_lock_even_when_the_waiter_gives_up() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = setup(tmp.path());
    let (saved, started) = (tmp.path().join("saved.json"), tmp.path().join("saving"));
    // The store's save takes a while: the waiter gives up in the middle.
    let acct = account(
        tmp.path(),
        json!({
            "refresh_cmd": "printf '{\"access_token\":\"from-script\",\"expires_in\":3600}'",
            "store": {
                "backend": "command",
                "load_cmd": format!("cat {} 2>/dev/null || true", saved.display()),
                "save_cmd": format!(
                    "touch {1}; sleep 0.8; cat > {0}.new && mv {0}.new {0}",
                    saved.display(),
                    started.display()
                ),
                "clear_cmd": "true",
            },
        }),
    );
    let locks = LockDir::open(tmp.path().join("locks")).unwrap();
    let held = || {
        locks
            .acquire("oauth-demo", std::time::Duration::ZERO, "test", None)
            .map(drop)
            .is_err()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The waiter gives up once the save has begun.
        let saving = async {
            while !started.exists() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        tokio::select! {
            _ = tokens.valid_token(&acct) => panic!("answered before the save ended"),
            begun = tokio::time::timeout(std::time::Duration::from_secs(10), saving) => {
                begun.expect("the save to begin");
            }
        }
    });
    // Nobody waits, but the save goes on, and the lock stays taken until
    // it ends: another refresh would start from the token not yet saved.
    assert!(
        held(),
        "the oauth lock was released while the token was saved"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !saved.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the token was never saved"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while held() {
        assert!(
            std::time::Instant::now() < deadline,
            "the oauth lock is still taken after the save"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(std::fs::read_to_string(&saved)
        .unwrap()
        .contains("from-script"));
}

#[test]
fn a_rotated_refresh_token_that_cannot_be_saved_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = setup(tmp.path());
    let rt = rt();
    // A store that reads but cannot write (a full disk, a locked keyring).
    let file = tmp.path().join("token.json");
    let mut old = Token::new("expired-access", now());
    old.expires_at = Some(now() - 1);
    old.refresh_token = Some("refresh-1".into());
    std::fs::write(&file, serde_json::to_string(&old).unwrap()).unwrap();
    let acct = |url: &str| {
        account(
            tmp.path(),
            json!({
                "provider": "generic", "client_id": "himalaya-test", "token_url": url,
                "store": {
                    "backend": "command",
                    "load_cmd": format!("cat {}", file.display()),
                    "save_cmd": "echo 'keyring is locked' >&2; exit 1",
                },
            }),
        )
    };
    let refresh = |body: &'static str| {
        let (url, server) = one_answer_server(std::time::Duration::ZERO, "200 OK", body);
        let e = rt.block_on(tokens.valid_token(&acct(&url))).unwrap_err();
        server.join().unwrap();
        e.message
    };
    let rotated = refresh(
        r#"{"access_token":"rotated-access","token_type":"Bearer","expires_in":3600,"refresh_token":"rotated-refresh-2"}"#,
    );
    assert!(
        rotated.contains("keyring is locked")
            && rotated.contains("new refresh token, which is lost")
            && rotated.contains(":HimalayaSync oauth authorize demo"),
        "{rotated}"
    );
    assert!(!rotated.contains("rotated-"), "{rotated}");
    // The provider kept the refresh token (or sent none): nothing is lost.
    for body in [
        r#"{"access_token":"new-access","token_type":"Bearer","expires_in":3600,"refresh_token":"refresh-1"}"#,
        r#"{"access_token":"new-access","token_type":"Bearer","expires_in":3600}"#,
    ] {
        let kept = refresh(body);
        assert!(
            kept.contains("keyring is locked") && !kept.contains("lost"),
            "{kept}"
        );
    }
}
