//! The OAuth2 flows against a real authorization server on 127.0.0.1:
//! `tests/fixture/oauth_server.mjs` (npm `oauth2-mock-server`, made strict:
//! single-use PKCE-bound codes, rotating revocable refresh tokens, device
//! codes, introspection, a control API).
//!
//! Each test starts its own server (tests change its settings) and kills it
//! in a Drop guard; the server also exits when our end of its stdin closes.
//! The "browser" of the authorization code flow is a plain HTTP client that
//! GETs the authorization URL and follows the redirect to our listener.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use himalaya_sync::error::{Error, ErrorKind};
use himalaya_sync::oauth::flow::{
    authorize_code, authorize_device, refresh, CodeOptions, DeviceOptions, TokenResponse, Until,
};
use himalaya_sync::oauth::provider::{ClientSecret, Provider, ProviderKind, ProviderSpec};
use serde_json::{json, Value};

const CLIENT_ID: &str = "himalaya-test";
/// Startup takes ~2 s on a busy 2-core machine (module load, RSA key).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running test server; killed and reaped on drop.
struct Server {
    child: Child,
    info: Value,
}

impl Server {
    fn start(extra_args: &[&str]) -> Server {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let script = root.join("tests/fixture/oauth_server.mjs");
        let mut child = Command::new("node")
            .arg(&script)
            .args(extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node (is Node.js installed?)");
        let stdout = child.stdout.take().expect("server stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut server = Server {
            child,
            info: Value::Null,
        };
        let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        server.info = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "oauth_server.mjs did not start (missing .deps/oauth2-mock-server? \
                 run scripts/install-deps.sh); first line: {line:?}"
            )
        });
        server
    }

    fn url(&self, key: &str) -> String {
        self.info[key].as_str().expect(key).to_string()
    }

    /// A generic provider for this server, public client, scope "mail".
    fn spec(&self) -> ProviderSpec {
        ProviderSpec {
            kind: "generic".into(),
            client_id: Some(CLIENT_ID.into()),
            auth_url: Some(self.url("auth_url")),
            token_url: Some(self.url("token_url")),
            device_url: Some(self.url("device_url")),
            scopes: Some(vec!["mail".into()]),
            ..Default::default()
        }
    }

    fn provider(&self) -> Provider {
        Provider::resolve(&self.spec()).expect("resolve provider")
    }

    /// POSTs JSON to a control route and returns the JSON answer.
    async fn control(&self, route: &str, body: Value) -> Value {
        let resp = reqwest::Client::new()
            .post(format!("{}/{route}", self.url("control_url")))
            .json(&body)
            .send()
            .await
            .expect("control request");
        assert!(
            resp.status().is_success(),
            "control {route}: {}",
            resp.status()
        );
        resp.json().await.expect("control JSON")
    }

    async fn state(&self) -> Value {
        reqwest::get(format!("{}/state", self.url("control_url")))
            .await
            .expect("state request")
            .json()
            .await
            .expect("state JSON")
    }

    /// RFC 7662 introspection, the way dovecot asks (POST form `token=`).
    async fn introspect(&self, token: &str) -> Value {
        reqwest::Client::new()
            .post(self.url("introspect_url"))
            .form(&[("token", token)])
            .send()
            .await
            .expect("introspect request")
            .json()
            .await
            .expect("introspect JSON")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// What the "browser" saw: the authorization URL and the status codes of
/// the forged redirect (if any) and of the real one.
#[derive(Debug, Default)]
struct BrowserLog {
    auth_url: String,
    forged_status: Option<u16>,
    final_status: Option<u16>,
}

/// The browser's job: GET the authorization URL, follow its redirect to
/// the loopback listener. With `forge_first`, first send the listener a
/// redirect with a wrong state. Runs as a task so `on_url` returns at once.
fn browser(
    forge_first: bool,
    follow: bool,
) -> (CodeOptions, tokio::sync::oneshot::Receiver<BrowserLog>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let on_url = Box::new(move |url: String| {
        tokio::spawn(async move {
            let http = no_redirects();
            let mut log = BrowserLog {
                auth_url: url.clone(),
                ..Default::default()
            };
            let resp = http.get(&url).send().await.expect("GET authorization URL");
            assert_eq!(
                resp.status().as_u16(),
                302,
                "authorize answered {}",
                resp.status()
            );
            let location = resp.headers()["location"]
                .to_str()
                .expect("location")
                .to_string();
            // Like a browser's preconnect: a connection that never sends.
            let mut idle = None;
            if forge_first {
                let parsed = reqwest::Url::parse(&location).expect("redirect URL");
                let loopback = (
                    parsed.host_str().unwrap().to_string(),
                    parsed.port().unwrap(),
                );
                idle = tokio::net::TcpStream::connect(loopback).await.ok();
                let forged = format!(
                    "http://{}:{}/?code=forged&state=not-the-state",
                    parsed.host_str().unwrap(),
                    parsed.port().unwrap()
                );
                let r = http.get(forged).send().await.expect("GET forged redirect");
                log.forged_status = Some(r.status().as_u16());
            }
            if follow {
                let r = http.get(&location).send().await.expect("GET redirect");
                log.final_status = Some(r.status().as_u16());
            }
            let _ = tx.send(log);
            drop(idle);
        });
    });
    (
        CodeOptions {
            on_url,
            timeout: Duration::from_secs(20),
            until: None,
        },
        rx,
    )
}

/// Asserts that this process no longer listens on the loopback port of
/// the redirect URI in authorization URL `auth_url`. (Not by connecting:
/// once freed, the port may be taken by a listener of another test.)
fn assert_listener_closed(auth_url: &str) {
    let url = reqwest::Url::parse(auth_url).unwrap();
    let redirect = url
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .unwrap()
        .1
        .into_owned();
    let port = reqwest::Url::parse(&redirect).unwrap().port().unwrap();
    assert!(
        !own_listening_ports().contains(&port),
        "still listening on {port}"
    );
}

/// The TCP ports this process listens on: the listening sockets of
/// /proc/net/tcp whose inode is one of this process's descriptors.
fn own_listening_ports() -> Vec<u16> {
    let own: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local address, state (0A: LISTEN), inode
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            let port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (*state == "0A" && own.contains(*inode)).then_some(port)
        })
        .collect()
}

#[test]
fn own_listening_ports_sees_a_listener_until_it_closes() {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(own_listening_ports().contains(&port));
    drop(listener);
    assert!(!own_listening_ports().contains(&port));
}

/// Runs the code flow end to end and returns the tokens.
async fn sign_in(server: &Server) -> TokenResponse {
    let (opts, _log) = browser(false, true);
    authorize_code(&server.provider(), opts)
        .await
        .expect("authorization code flow")
}

#[tokio::test]
async fn code_flow_with_pkce_end_to_end() {
    let server = Server::start(&[]);
    let provider = server.provider();
    let (opts, log) = browser(false, true);
    let tokens = authorize_code(&provider, opts).await.expect("code flow");
    let log = log.await.expect("browser log");
    assert_eq!(log.final_status, Some(200));
    let url = reqwest::Url::parse(&log.auth_url).unwrap();
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["scope"], "mail");
    assert!(q["redirect_uri"].starts_with("http://127.0.0.1:") && q["redirect_uri"].ends_with('/'));
    assert!(q["state"].len() >= 16);

    assert!(tokens.refresh_token.is_some());
    assert_eq!(tokens.expires_in, Some(3600));
    assert_eq!(tokens.scope.as_deref(), Some("mail"));
    assert_eq!(tokens.token_type.as_deref(), Some("bearer"));
    let debug = format!("{tokens:?}");
    assert!(!debug.contains(&tokens.access_token));

    let intro = server.introspect(&tokens.access_token).await;
    assert_eq!(intro["active"], true, "{intro}");
    assert_eq!(intro["username"], "demo");
    assert_eq!(
        server.introspect("not-a-token").await,
        json!({"active": false})
    );

    // The listener is gone once the flow returned.
    let port: u16 = q["redirect_uri"]
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test]
async fn wrong_state_is_rejected_and_the_real_redirect_still_works() {
    let server = Server::start(&[]);
    let (opts, log) = browser(true, true);
    let start = Instant::now();
    let tokens = authorize_code(&server.provider(), opts)
        .await
        .expect("code flow");
    // The idle connection did not hold up the real redirect (5 s read limit).
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    let log = log.await.expect("browser log");
    assert_eq!(log.forged_status, Some(400));
    assert_eq!(log.final_status, Some(200));
    assert!(!tokens.access_token.is_empty());
}

#[tokio::test]
async fn only_a_wrong_state_times_out_and_closes_the_listener() {
    let server = Server::start(&[]);
    let (mut opts, log) = browser(true, false);
    opts.timeout = Duration::from_secs(2);
    let start = Instant::now();
    let err = authorize_code(&server.provider(), opts).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(err.message.contains("wrong state"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(6));
    let log = log.await.expect("browser log");
    assert_eq!(log.forged_status, Some(400));
    assert_listener_closed(&log.auth_url);
}

/// A relay on 127.0.0.1 to `target` that holds each connection `delay`
/// before passing it on: a slow token endpoint.
async fn slow_relay(target: u16, delay: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut outbound) =
                    tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    port
}

/// An `Until` that fires once the browser is done (or gone), and the
/// browser's log, passed on.
fn until_after(
    rx: tokio::sync::oneshot::Receiver<BrowserLog>,
) -> (Until, tokio::sync::oneshot::Receiver<BrowserLog>) {
    let (tx, log) = tokio::sync::oneshot::channel();
    let until: Until = Box::pin(async move {
        if let Ok(seen) = rx.await {
            let _ = tx.send(seen);
        }
        Error::new(ErrorKind::Cancelled, "ended by the test")
    });
    (until, log)
}

/// Ended while the browser has not come back, the flow returns the error
/// `until` gives and closes its listener at once.
#[tokio::test]
async fn until_ends_the_wait_for_the_browser() {
    let server = Server::start(&[]);
    let (mut opts, log) = browser(false, false);
    let (until, log) = until_after(log);
    opts.until = Some(until);
    let start = Instant::now();
    let err = authorize_code(&server.provider(), opts).await.unwrap_err();
    assert_eq!(
        (err.kind, err.message.as_str()),
        (ErrorKind::Cancelled, "ended by the test")
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_listener_closed(&log.await.expect("browser log").auth_url);
}

/// Once the browser has brought the code, ending the flow no longer stops
/// it: the single-use code is exchanged and the tokens come back, or the
/// user's approval would be lost (here the token endpoint is slow, and the
/// end comes while the exchange is under way).
#[tokio::test]
async fn an_answered_authorization_is_finished_whatever_until_says() {
    let server = Server::start(&[]);
    let token_url = reqwest::Url::parse(&server.url("token_url")).unwrap();
    let relay = slow_relay(token_url.port().unwrap(), Duration::from_millis(1500)).await;
    let mut spec = server.spec();
    spec.token_url = Some(format!("http://127.0.0.1:{relay}{}", token_url.path()));
    let provider = Provider::resolve(&spec).expect("resolve provider");
    let (mut opts, log) = browser(false, true);
    opts.until = Some(until_after(log).0);
    let tokens = authorize_code(&provider, opts)
        .await
        .expect("the answered authorization was ended");
    assert!(!tokens.access_token.is_empty());
    let intro = server.introspect(&tokens.access_token).await;
    assert_eq!(intro["active"], true, "{intro}");
}

#[tokio::test]
async fn denied_authorization_is_an_auth_error() {
    let server = Server::start(&[]);
    server.control("deny_next_authorization", json!({})).await;
    // A "google" provider pointed at the test server: Google's extra
    // parameters must be on the URL.
    let mut spec = server.spec();
    spec.kind = "google".into();
    spec.device_url = None;
    spec.client_secret = ClientSecret::Literal("unused".into());
    let provider = Provider::resolve(&spec).unwrap();
    assert_eq!(provider.kind(), ProviderKind::Google);
    let (opts, log) = browser(false, true);
    let err = authorize_code(&provider, opts).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    assert_eq!(
        err.message,
        "authorization denied: access_denied: The user denied access."
    );
    let log = log.await.expect("browser log");
    assert!(
        log.auth_url.contains("access_type=offline"),
        "{}",
        log.auth_url
    );
    assert!(log.auth_url.contains("prompt=consent"));
}

#[tokio::test]
async fn refresh_rotates_and_the_old_token_dies() {
    let server = Server::start(&[]);
    let provider = server.provider();
    let first = sign_in(&server).await;
    let rt1 = first.refresh_token.clone().unwrap();

    let second = refresh(&provider, &rt1).await.expect("refresh");
    let rt2 = second.refresh_token.clone().expect("rotated refresh token");
    assert_ne!(rt1, rt2);
    assert_ne!(first.access_token, second.access_token);
    assert_eq!(second.scope.as_deref(), Some("mail"));
    assert_eq!(
        server.introspect(&second.access_token).await["active"],
        true
    );

    let err = refresh(&provider, &rt1).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert_eq!(
        err.message,
        "re-authorization needed: invalid_grant: Token has been expired or revoked."
    );
    assert!(!err.message.contains(&rt1));

    // Short-lived tokens, as the integrator's expiry tests need them.
    server.control("config", json!({"expires_in": 2})).await;
    let third = refresh(&provider, &rt2)
        .await
        .expect("refresh with rotated token");
    assert_eq!(third.expires_in, Some(2));
    assert_eq!(server.state().await["counters"]["refreshes"], 2);

    // Without rotation no new refresh token comes back and the old one lives.
    server
        .control("config", json!({"rotate_refresh_tokens": false}))
        .await;
    let rt3 = third.refresh_token.unwrap();
    for _ in 0..2 {
        let r = refresh(&provider, &rt3)
            .await
            .expect("refresh without rotation");
        assert!(r.refresh_token.is_none());
    }
}

#[tokio::test]
async fn revoked_refresh_token_needs_reauthorization() {
    let server = Server::start(&[]);
    let tokens = sign_in(&server).await;
    let revoked = server.control("revoke_refresh_tokens", json!({})).await;
    assert_eq!(revoked["revoked"], 1);
    let err = refresh(&server.provider(), tokens.refresh_token.as_deref().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert!(err
        .message
        .starts_with("re-authorization needed: invalid_grant: Token has been expired or revoked"));
}

#[tokio::test]
async fn client_secret_from_a_command_is_checked() {
    let server = Server::start(&["--client-secret", "s3cr3t"]);
    let mut spec = server.spec();
    spec.client_secret = ClientSecret::Command("echo s3cr3t".into());
    let provider = Provider::resolve(&spec).unwrap();
    let (opts, _log) = browser(false, true);
    let tokens = authorize_code(&provider, opts)
        .await
        .expect("code flow with secret");
    let rt = tokens.refresh_token.unwrap();

    spec.client_secret = ClientSecret::Literal("wrong".into());
    let err = refresh(&Provider::resolve(&spec).unwrap(), &rt)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert!(err.message.contains("invalid_client"), "{err}");
    assert!(!err.message.contains("wrong") && !err.message.contains("s3cr3t"));
    refresh(&provider, &rt)
        .await
        .expect("refresh with the right secret");
}

#[tokio::test]
async fn device_flow_honours_slow_down_then_approval() {
    let server = Server::start(&[]);
    server.control("slow_down", json!({"count": 1})).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let opts = DeviceOptions {
        on_code: Box::new(move |code, uri, expires| {
            let _ = tx.send((code, uri, expires));
        }),
        timeout: Duration::from_secs(30),
        until: None,
    };
    let control = server.url("control_url");
    let approver = tokio::spawn(async move {
        let (code, uri, expires) = rx.await.expect("user code");
        assert!(uri.ends_with("/device"), "{uri}");
        assert_eq!(expires, 600);
        let resp = reqwest::Client::new()
            .post(format!("{control}/device"))
            .json(&json!({"action": "approve", "user_code": code}))
            .send()
            .await
            .expect("approve");
        assert!(resp.status().is_success());
    });
    let start = Instant::now();
    let tokens = authorize_device(&server.provider(), opts)
        .await
        .expect("device flow");
    let elapsed = start.elapsed();
    approver.await.expect("approver");
    // slow_down added 5 s to the 1 s interval before the next poll.
    assert!(elapsed >= Duration::from_secs(5), "{elapsed:?}");
    assert!(tokens.refresh_token.is_some());
    assert_eq!(tokens.scope.as_deref(), Some("mail"));
    assert_eq!(
        server.introspect(&tokens.access_token).await["active"],
        true
    );
    assert_eq!(server.state().await["counters"]["device_polls"], 2);
}

#[tokio::test]
async fn denied_device_code_is_a_clear_error() {
    let server = Server::start(&[]);
    let control = server.url("control_url");
    let opts = DeviceOptions {
        on_code: Box::new(move |code, _, _| {
            tokio::spawn(async move {
                let _ = reqwest::Client::new()
                    .post(format!("{control}/device"))
                    .json(&json!({"action": "deny", "user_code": code}))
                    .send()
                    .await;
            });
        }),
        timeout: Duration::from_secs(30),
        until: None,
    };
    let err = authorize_device(&server.provider(), opts)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth);
    assert_eq!(
        err.message,
        "authorization denied: access_denied: The user denied the request."
    );
}

#[tokio::test]
async fn device_flow_times_out_without_approval() {
    let server = Server::start(&[]);
    let opts = DeviceOptions {
        on_code: Box::new(|_, _, _| {}),
        timeout: Duration::from_secs(2),
        until: None,
    };
    let err = authorize_device(&server.provider(), opts)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
}

/// Ended while the user has not approved the device code, the flow stops
/// polling and returns the error `until` gives, long before its timeout.
#[tokio::test]
async fn until_ends_the_wait_for_a_device_approval() {
    let server = Server::start(&[]);
    let (shown, seen) = tokio::sync::oneshot::channel::<()>();
    let opts = DeviceOptions {
        on_code: Box::new(move |_, _, _| {
            let _ = shown.send(());
        }),
        timeout: Duration::from_secs(30),
        until: Some(Box::pin(async move {
            let _ = seen.await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            Error::new(ErrorKind::Cancelled, "ended by the test")
        })),
    };
    let start = Instant::now();
    let err = authorize_device(&server.provider(), opts)
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind, err.message.as_str()),
        (ErrorKind::Cancelled, "ended by the test")
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    // It stopped polling: the server hears no more from it.
    let polls = server.state().await["counters"]["device_polls"].clone();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(server.state().await["counters"]["device_polls"], polls);
}

/// A generic provider whose token endpoint is on `port` of 127.0.0.1.
fn local_provider(port: u16) -> Provider {
    let spec = ProviderSpec {
        kind: "generic".into(),
        client_id: Some(CLIENT_ID.into()),
        token_url: Some(format!("http://127.0.0.1:{port}/token")),
        ..Default::default()
    };
    Provider::resolve(&spec).unwrap()
}

#[tokio::test]
async fn server_down_is_a_network_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = refresh(&local_provider(port), "rt").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Network, "{err}");
    assert!(err.message.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[tokio::test]
async fn silent_server_is_a_timeout_in_the_configured_time() {
    // The kernel completes the handshake into the backlog; nobody ever
    // reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let provider =
        local_provider(port).with_timeouts(Duration::from_secs(1), Duration::from_millis(1500));
    let start = Instant::now();
    let err = refresh(&provider, "rt").await.unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(
        elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    drop(silent);
}

/// Answers each of `answers` to one connection, in order, then stops.
fn canned_server(answers: Vec<&'static str>) -> (u16, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        for answer in answers {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (port, handle)
}

#[tokio::test]
async fn unavailable_or_redirecting_endpoints_are_classified() {
    let (port, server) = canned_server(vec![
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\nContent-Length: 13\r\nConnection: close\r\n\r\n<html></html>",
        "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ]);
    let provider = local_provider(port);
    let err = refresh(&provider, "rt").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Network, "{err}");
    assert!(err.message.contains("HTTP 503"), "{err}");
    let err = refresh(&provider, "rt").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains("redirect"), "{err}");
    server.join().unwrap();
}

/// Client errors whose body is no OAuth2 error (a wrong URL's HTML page, a
/// proxy's refusal) name the status and the setting to check, by kind; a
/// success that is not OAuth2 says so without a field path of `.`.
#[tokio::test]
async fn client_errors_without_an_oauth2_body_are_classified_by_status() {
    let html = |status: &'static str| -> &'static str {
        Box::leak(
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: 22\r\nConnection: close\r\n\r\n<html>not here</html>\n"
            )
            .into_boxed_str(),
        )
    };
    let (port, server) = canned_server(vec![
        html("404 Not Found"),
        html("405 Method Not Allowed"),
        html("403 Forbidden"),
        html("400 Bad Request"),
        html("429 Too Many Requests"),
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]",
    ]);
    let provider = local_provider(port);
    for (kind, text) in [
        (
            ErrorKind::Config,
            "answered HTTP 404 Not Found: check token_url",
        ),
        (
            ErrorKind::Config,
            "answered HTTP 405 Method Not Allowed: check token_url",
        ),
        (
            ErrorKind::Auth,
            "answered HTTP 403 Forbidden without an OAuth2 error: check token_url, client_id",
        ),
        (
            ErrorKind::Config,
            "answered HTTP 400 Bad Request without an OAuth2 error: check token_url",
        ),
        (ErrorKind::Network, "answered HTTP 429 Too Many Requests"),
        (
            ErrorKind::Unknown,
            "the token endpoint sent a response that is not valid OAuth2",
        ),
    ] {
        let err = refresh(&provider, "rt").await.unwrap_err();
        assert_eq!(err.kind, kind, "{err}");
        assert!(err.message.contains(text), "{err}");
        assert!(!err.message.contains("(at `.`)"), "{err}");
    }
    server.join().unwrap();
}

#[test]
fn provider_resolution() {
    // Microsoft: default tenant, named tenants, bad tenant.
    let ms = |tenant: Option<&str>| {
        Provider::resolve(&ProviderSpec {
            kind: "microsoft".into(),
            tenant: tenant.map(String::from),
            client_id: Some("id".into()),
            ..Default::default()
        })
    };
    let p = ms(None).unwrap();
    assert_eq!(
        p.auth_url().unwrap().as_str(),
        "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"
    );
    assert_eq!(
        p.scopes(),
        [
            "https://outlook.office.com/IMAP.AccessAsUser.All".to_string(),
            "offline_access".to_string()
        ]
    );
    assert!(ms(Some("consumers"))
        .unwrap()
        .token_url()
        .as_str()
        .contains("/consumers/"));
    let err = ms(Some("evil/../x")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.message.starts_with("tenant:"), "{err}");

    // Generic: URLs checked, the field named.
    let err = Provider::resolve(&ProviderSpec {
        kind: "generic".into(),
        client_id: Some("id".into()),
        token_url: Some("file:///etc/passwd".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.message.starts_with("token_url:"), "{err}");

    // Google: the original plugin's GMAIL_* variables fill the gaps. This
    // is the only test that touches them.
    std::env::set_var("GMAIL_CLIENT_ID", "env-client-id");
    std::env::set_var("GMAIL_CLIENT_SECRET", "env-client-secret");
    let google = ProviderSpec {
        kind: "google".into(),
        ..Default::default()
    };
    let p = Provider::resolve(&google).unwrap();
    assert_eq!(p.client_id(), "env-client-id");
    assert_eq!(
        p.client_secret().resolve(None).unwrap().as_deref(),
        Some("env-client-secret")
    );
    assert_eq!(
        p.token_url().as_str(),
        "https://oauth2.googleapis.com/token"
    );
    assert_eq!(p.scopes(), ["https://mail.google.com/".to_string()]);
    assert!(!format!("{p:?}").contains("env-client-secret"));
    std::env::remove_var("GMAIL_CLIENT_ID");
    std::env::remove_var("GMAIL_CLIENT_SECRET");
    let err = Provider::resolve(&google).unwrap_err();
    assert!(
        err.message.starts_with("client_secret:") || err.message.starts_with("client_id:"),
        "{err}"
    );
}
