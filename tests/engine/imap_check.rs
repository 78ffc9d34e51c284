//! The IMAP fast check and IDLE watcher against a real dovecot (started by
//! `tests/fixture/imap_fixture.py`) and real mbsync.
//!
//! Every fixture is stopped and its directory removed by a Drop guard, also
//! when a test fails (tests/common).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use himalaya_sync::error::ErrorKind;
use himalaya_sync::imap::check::{
    self as fast, check_channel, CheckFolder, FolderCheck, SyncState,
};
use himalaya_sync::imap::client::{Connection, Password, PasswordSource, Security};
use himalaya_sync::imap::idle::{IdleEvent, IdleOptions, IdleWatcher};
use himalaya_sync::manager::check::check_account;
use himalaya_sync::mbsync::config::MbsyncConfig;

use crate::common::{Fixture, Restarted};

impl Fixture {
    fn config(&self) -> MbsyncConfig {
        MbsyncConfig::load(Some(&self.mbsyncrc())).expect("parse mbsyncrc")
    }

    fn connection(&self) -> Connection {
        let config = self.config();
        let channel = config.channel("demo").expect("channel demo");
        let account = config.imap_account_for(channel).expect("account");
        Connection::from_account(account)
            .expect("connection")
            .with_timeout(Duration::from_secs(5))
    }
}

async fn check(fx: &Fixture) -> Vec<FolderCheck> {
    check_channel(
        &fx.connection(),
        &fx.config(),
        "demo",
        &SyncState::InMailbox,
        None,
        "mbsync",
    )
    .await
    .expect("check")
}

fn new_counts(checks: &[FolderCheck]) -> Vec<(String, u32)> {
    checks.iter().map(|c| (c.folder.clone(), c.new)).collect()
}

fn find<'a>(checks: &'a [FolderCheck], folder: &str) -> &'a FolderCheck {
    checks
        .iter()
        .find(|c| c.folder == folder)
        .unwrap_or_else(|| panic!("no {folder} in {checks:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_exact_new_counts() {
    let fx = Fixture::start(&["--messages", "60", "--nested-nonascii"]);
    fx.sync();

    let started = Instant::now();
    let checks = check(&fx).await;
    let elapsed = started.elapsed();
    println!(
        "check of {} folders after a sync: {:?}",
        checks.len(),
        elapsed
    );
    assert_eq!(checks.len(), 7, "{checks:?}");
    assert!(
        checks.iter().all(|c| c.new == 0 && !c.uidvalidity_changed),
        "{checks:?}"
    );

    // STATUS figures equal the server's own counts.
    let counts = fx.run(&["counts", "--account", "demo", "--side", "server"]);
    for c in &checks {
        let want = &counts[&c.folder];
        assert_eq!(
            u64::from(c.total),
            want["total"].as_u64().unwrap(),
            "{}",
            c.folder
        );
        assert_eq!(
            u64::from(c.unseen),
            want["unread"].as_u64().unwrap(),
            "{}",
            c.folder
        );
    }

    fx.deliver("Work/Projects", 3);
    fx.deliver("Work/Café", 2);
    let checks = check(&fx).await;
    for (folder, new) in new_counts(&checks) {
        let want = match folder.as_str() {
            "Work/Projects" => 3,
            "Work/Café" => 2,
            _ => 0,
        };
        assert_eq!(new, want, "{folder}: {checks:?}");
    }

    // A folder mbsync never synced: every message is new.
    fx.deliver("Fresh", 4);
    let started = Instant::now();
    let checks = check(&fx).await;
    println!(
        "check of {} folders with new mail: {:?}",
        checks.len(),
        started.elapsed()
    );
    assert_eq!(find(&checks, "Fresh").new, 4);
    assert_eq!(find(&checks, "Fresh").total, 4);

    fx.sync();
    let checks = check(&fx).await;
    assert!(checks.iter().all(|c| c.new == 0), "{checks:?}");

    // A message that arrived and was deleted again: UIDNEXT moved on, but
    // `UID SEARCH UID n:*` then returns an old message, which must not count.
    fx.deliver("Sent", 1);
    assert_eq!(find(&check(&fx).await, "Sent").new, 1);
    let sent_new = Path::new(
        fx.info["accounts"]["demo"]["server_maildir"]
            .as_str()
            .unwrap(),
    )
    .join(".Sent/new");
    for entry in std::fs::read_dir(&sent_new).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let checks = check(&fx).await;
    assert_eq!(find(&checks, "Sent").new, 0, "{checks:?}");

    // Only some folders.
    let only = ["INBOX".to_owned(), "Work/Café".to_owned()];
    let checks = check_channel(
        &fx.connection(),
        &fx.config(),
        "demo",
        &SyncState::InMailbox,
        Some(&only),
        "mbsync",
    )
    .await
    .unwrap();
    assert_eq!(checks.len(), 2);
    let err = check_channel(
        &fx.connection(),
        &fx.config(),
        "demo",
        &SyncState::InMailbox,
        Some(&["Nope".to_owned()]),
        "mbsync",
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.message.contains("Nope"), "{err:?}");

    // Wrong password: Auth, with the server's words and without the password.
    let mut conn = fx.connection();
    conn.password = PasswordSource::Literal(Password::new("wrong-secret"));
    let err = conn.connect().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "{err:?}");
    assert!(!err.message.contains("wrong-secret"));
    assert!(
        err.message.to_lowercase().contains("authentication failed"),
        "{err:?}"
    );

    // IMAP LOGIN instead of AUTHENTICATE PLAIN, and a PassCmd.
    let mut conn = fx.connection();
    conn.auth_mechs = vec!["LOGIN".to_owned()];
    conn.password = PasswordSource::Command("echo fixture-password".to_owned());
    let mut session = conn.connect().await.expect("LOGIN");
    let status = session.status("Work/Café").await.unwrap();
    let counts = fx.run(&[
        "counts",
        "--account",
        "demo",
        "--side",
        "server",
        "--folder",
        "Work/Café",
    ]);
    assert_eq!(
        u64::from(status.messages),
        counts["Work/Café"]["total"].as_u64().unwrap()
    );
    let err = session.status("Missing/Folder").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.message.contains("Missing/Folder"), "{err:?}");
    session.logout().await;
}

#[tokio::test]
async fn closed_port_is_a_network_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let conn = plain_connection(port, Duration::from_secs(2));
    let err = conn.connect().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Network, "{err:?}");
}

#[tokio::test]
async fn silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and hold connections, never saying a word.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let conn = plain_connection(port, Duration::from_millis(300));
    let started = Instant::now();
    let err = conn.connect().await.unwrap_err();
    let elapsed = started.elapsed();
    holder.abort();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err:?}");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}

fn plain_connection(port: u16, timeout: Duration) -> Connection {
    let config = MbsyncConfig::parse(
        &format!("IMAPAccount a\nHost 127.0.0.1\nPort {port}\nUser u\nPass p\nSSLType None\n"),
        Path::new("/test"),
    )
    .unwrap();
    Connection::from_account(&config.imap_accounts[0])
        .unwrap()
        .with_timeout(timeout)
}

fn count_new(events: &Events) -> usize {
    events
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, e)| matches!(e, IdleEvent::NewMail { .. }))
        .count()
}

type Events = Arc<Mutex<Vec<(Instant, IdleEvent)>>>;

fn recorder() -> (Events, impl Fn(IdleEvent) + Send + Sync + 'static) {
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (events, move |e| {
        sink.lock().unwrap().push((Instant::now(), e))
    })
}

/// No event so far reports a failed connection.
fn assert_no_errors(events: &Events) {
    let events = events.lock().unwrap();
    assert!(
        !events
            .iter()
            .any(|(_, e)| matches!(e, IdleEvent::Error { .. })),
        "{events:?}"
    );
}

/// Waits until the watcher has reached IDLE (a first time).
async fn wait_watching(events: &Events) {
    assert!(
        wait_event(events, Duration::from_secs(5), |e| matches!(
            e,
            IdleEvent::Watching { .. }
        ))
        .await
        .is_some(),
        "never reached IDLE: {:?}",
        events.lock().unwrap()
    );
}

/// Waits until the watcher has reached IDLE a second time (it reconnected).
async fn wait_reconnected(events: &Events, within: Duration) {
    let deadline = Instant::now() + within;
    let watching = |e: &IdleEvent| matches!(e, IdleEvent::Watching { .. });
    while events
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, e)| watching(e))
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "no reconnect: {:?}",
            events.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `pred` holds for some event, returning when it did.
async fn wait_event(
    events: &Events,
    within: Duration,
    pred: impl Fn(&IdleEvent) -> bool,
) -> Option<Instant> {
    let deadline = Instant::now() + within;
    loop {
        if let Some((at, _)) = events.lock().unwrap().iter().find(|(_, e)| pred(e)) {
            return Some(*at);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sees_delivery_and_stops_at_once() {
    let fx = Fixture::start(&["--messages", "10"]);
    let (events, sink) = recorder();
    // A short re-IDLE interval: DONE/IDLE cycles must not lose deliveries.
    let options = IdleOptions {
        reidle: Duration::from_millis(150),
        ..IdleOptions::default()
    };
    let watcher = IdleWatcher::spawn(fx.connection(), "INBOX".to_owned(), options, sink);
    wait_watching(&events).await;
    let before = Instant::now();
    fx.deliver("INBOX", 1);
    // The fixture's Python takes a while; count from when the file is there.
    let delivered = Instant::now();
    println!("fixture deliver took {:?}", delivered - before);
    let seen = wait_event(
        &events,
        Duration::from_secs(3),
        |e| matches!(e, IdleEvent::NewMail { folder } if folder == "INBOX"),
    )
    .await
    .unwrap_or_else(|| panic!("no NewMail: {:?}", events.lock().unwrap()));
    let latency = seen.duration_since(delivered);
    println!("IDLE saw the delivery after {latency:?}");
    assert!(latency < Duration::from_millis(1500), "{latency:?}");

    // Several re-IDLE cycles later: still watching, no errors, and a second
    // delivery is seen too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    fx.deliver("INBOX", 2);
    let deadline = Instant::now() + Duration::from_secs(3);
    while count_new(&events) < 2 {
        assert!(
            Instant::now() < deadline,
            "second delivery missed: {:?}",
            events.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_no_errors(&events);
    assert!(!watcher.is_finished());

    let started = Instant::now();
    watcher.join().await.expect("clean stop");
    let stop = started.elapsed();
    println!("IDLE watcher stopped in {stop:?}");
    assert!(stop < Duration::from_millis(200), "{stop:?}");
}

/// Restarts the fixture's dovecot on the same port; the watcher reports the
/// loss and comes back by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reconnects_after_server_restart() {
    let fx = Fixture::start(&["--messages", "10"]);
    let (events, sink) = recorder();
    let options = IdleOptions {
        reidle: Duration::from_secs(60),
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(400),
        ..IdleOptions::default()
    };
    let watcher = IdleWatcher::spawn(fx.connection(), "INBOX".to_owned(), options, sink);
    wait_watching(&events).await;

    fx.run(&["stop", "--keep"]);
    let lost = wait_event(
        &events,
        Duration::from_secs(5),
        |e| matches!(e, IdleEvent::Error { error, .. } if error.kind == ErrorKind::Network),
    )
    .await;
    assert!(
        lost.is_some(),
        "loss not reported: {:?}",
        events.lock().unwrap()
    );
    // Mail arrives while the watcher cannot reach the server; let a few
    // attempts fail on the closed port (backoff grows to the cap).
    fx.deliver("INBOX", 1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(count_new(&events), 0);

    let _dovecot = Restarted::start(&fx.dir.join("dovecot.conf"), fx.port());
    wait_reconnected(&events, Duration::from_secs(10)).await;
    let errors: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, e)| match e {
            IdleEvent::Error { retry_in, .. } => Some(*retry_in),
            _ => None,
        })
        .collect();
    println!("reconnect delays: {errors:?}");
    assert!(errors.len() >= 2, "{errors:?}");
    assert!(errors
        .windows(2)
        .all(|w| w[1] >= w[0] || w[1] == options.backoff_base));
    assert!(errors.iter().all(|d| *d <= options.backoff_cap));
    assert_eq!(
        count_new(&events),
        1,
        "the mail that came meanwhile: {:?}",
        events.lock().unwrap()
    );

    fx.deliver("INBOX", 1);
    let deadline = Instant::now() + Duration::from_secs(3);
    while count_new(&events) < 2 {
        assert!(
            Instant::now() < deadline,
            "no NewMail after reconnect: {:?}",
            events.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.join().await.expect("clean stop");
}

/// STARTTLS and IMAPS against dovecot restarted with TLS on: the fixture's
/// CA given as CertificateFile is trusted, an unknown CA is a Config error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_starttls_with_certificate_file() {
    let fx = Fixture::start(&["--messages", "10"]);
    let tls = fx.restart_with_tls();
    let imaps_port = tls.imaps_port;
    let ca = tls.ca.clone();
    for (security, port) in [(Security::StartTls, fx.port()), (Security::Tls, imaps_port)] {
        let mut conn = fx.connection();
        conn.host = "localhost".to_owned();
        conn.port = port;
        conn.security = security;
        conn.certificate_file = Some(ca.clone());
        let mut session = conn
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{security:?}: {e:?}"));
        assert!(session.status("INBOX").await.unwrap().messages > 0);
        session.logout().await;

        conn.certificate_file = None;
        let err = conn.connect().await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config, "{security:?}: {err:?}");
        assert!(err.message.contains("certificate"), "{err:?}");
    }
}

/// mbsync's default layout: state files under a global `SyncState`
/// directory, named after both stores and boxes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_global_sync_state() {
    let fx = Fixture::start(&["--messages", "20", "--nested-nonascii"]);
    let states = fx.dir.join("states/");
    let local = fx.dir.join("local2");
    std::fs::create_dir_all(local.join("demo")).unwrap();
    let text = std::fs::read_to_string(fx.mbsyncrc()).unwrap();
    let local_root = fx.dir.join("local");
    let text = text
        .replace("SyncState *\n", "")
        .replace(
            "FSync no\n",
            &format!("FSync no\nSyncState {}\n", states.display()),
        )
        .replace(&*local_root.to_string_lossy(), &local.to_string_lossy());
    let rc = fx.dir.join("mbsyncrc-global");
    std::fs::write(&rc, text).unwrap();
    let status = Command::new("mbsync")
        .arg("-c")
        .arg(&rc)
        .arg("-a")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    let config = MbsyncConfig::load(Some(&rc)).unwrap();
    let global = SyncState::Global(states);
    let checks = check_channel(&fx.connection(), &config, "demo", &global, None, "mbsync")
        .await
        .unwrap();
    assert_eq!(checks.len(), 7);
    assert!(checks.iter().all(|c| c.new == 0), "{checks:?}");

    fx.deliver("Work/Café", 2);
    let checks = check_channel(&fx.connection(), &config, "demo", &global, None, "mbsync")
        .await
        .unwrap();
    for c in &checks {
        assert_eq!(
            c.new,
            if c.folder == "Work/Café" { 2 } else { 0 },
            "{checks:?}"
        );
    }

    // Looking in the wrong place finds no state: everything counts as new.
    let checks = check_channel(
        &fx.connection(),
        &config,
        "demo",
        &SyncState::InMailbox,
        None,
        "mbsync",
    )
    .await
    .unwrap();
    assert!(checks.iter().all(|c| c.new == c.total), "{checks:?}");
}

/// What a fake server does with one command: writes `pieces`, each after
/// its pause, then goes on, or closes the connection when `hang_up`.
struct Reply {
    pieces: Vec<(Duration, String)>,
    hang_up: bool,
}

/// Writes `text` at once and goes on.
fn say(text: String) -> Reply {
    Reply {
        pieces: vec![(Duration::ZERO, text)],
        hang_up: false,
    }
}

/// How a fake server answers a command line, given its tag.
type Answer = Arc<dyn Fn(&str, &str) -> Reply + Send + Sync>;

/// A fake IMAP server on 127.0.0.1: greets with the capabilities
/// `greeting`, answers every command line through `answer`, and records
/// the lines it got. Every connection alike. Returns its port and the log.
async fn fake_imap(greeting: &'static str, answer: Answer) -> (u16, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (log, answer) = (log.clone(), answer.clone());
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = tokio::io::BufReader::new(read).lines();
                let _ = write
                    .write_all(format!("* OK [CAPABILITY {greeting}] fake\r\n").as_bytes())
                    .await;
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().unwrap().push(line.clone());
                    let tag = line.split(' ').next().unwrap_or("*").to_owned();
                    let reply = answer(&tag, &line);
                    for (pause, text) in reply.pieces {
                        tokio::time::sleep(pause).await;
                        let _ = write.write_all(text.as_bytes()).await;
                    }
                    if reply.hang_up {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// Greets with IDLE, answers LOGIN with `reply` and hangs up.
async fn refusing_server(reply: &'static str) -> u16 {
    fake_server("IMAP4rev1 IDLE", reply, true).await
}

/// Greets with `greeting`, answers LOGIN with `reply` (then hangs up when
/// `hang_up`), CAPABILITY with IDLE, and anything else with a bare OK.
async fn fake_server(greeting: &'static str, reply: &'static str, hang_up: bool) -> u16 {
    let answer: Answer = Arc::new(move |tag, line| {
        if line.contains(" LOGIN ") {
            Reply {
                hang_up,
                ..say(format!("{tag} {reply}\r\n"))
            }
        } else if line.contains("CAPABILITY") {
            say(format!("* CAPABILITY IMAP4rev1 IDLE\r\n{tag} OK done\r\n"))
        } else {
            say(format!("{tag} OK done\r\n"))
        }
    });
    fake_imap(greeting, answer).await.0
}

fn fake_connection(port: u16) -> Connection {
    Connection {
        host: "127.0.0.1".into(),
        port,
        user: "me".into(),
        password: PasswordSource::Literal(Password::new("pw")),
        security: Security::None,
        certificate_file: None,
        system_certificates: true,
        auth_mechs: Vec::new(),
        timeout: Duration::from_secs(2),
        token_source: None,
    }
}

/// A server that refuses the login for now (RFC 5530 `LIMIT`) is retried
/// with backoff; wrong credentials stop the watcher, and it says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_retries_a_busy_server_and_reports_why_it_stops() {
    let options = IdleOptions {
        reidle: Duration::from_secs(60),
        backoff_base: Duration::from_millis(50),
        backoff_cap: Duration::from_millis(100),
        ..IdleOptions::default()
    };
    let busy = refusing_server("NO [LIMIT] Too many simultaneous connections").await;
    let (events, sink) = recorder();
    let watcher = IdleWatcher::spawn(fake_connection(busy), "INBOX".into(), options, sink);
    let deadline = Instant::now() + Duration::from_secs(5);
    while events
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, e)| matches!(e, IdleEvent::Error { error, .. } if error.kind == ErrorKind::Network))
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "{:?}", events.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!watcher.is_finished(), "a busy server is tried again");
    watcher.stop();

    let refusing = refusing_server("NO [AUTHENTICATIONFAILED] Invalid credentials").await;
    let (events, sink) = recorder();
    let watcher = IdleWatcher::spawn(fake_connection(refusing), "INBOX".into(), options, sink);
    let stopped = wait_event(&events, Duration::from_secs(5), |e| {
        matches!(e, IdleEvent::Stopped { error, .. } if error.kind == ErrorKind::Auth
            && error.message.contains("Invalid credentials"))
    })
    .await;
    assert!(stopped.is_some(), "{:?}", events.lock().unwrap());
    let deadline = Instant::now() + Duration::from_secs(2);
    while !watcher.is_finished() {
        assert!(Instant::now() < deadline, "the watcher did not end");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Capabilities may change with the login (RFC 3501 6.2.3): a server that
/// lists IDLE only after it is not refused for lacking it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_after_login_counts() {
    let options = IdleOptions {
        reidle: Duration::from_secs(60),
        backoff_base: Duration::from_millis(50),
        backoff_cap: Duration::from_millis(100),
        ..IdleOptions::default()
    };
    let port = fake_server("IMAP4rev1 AUTH=LOGIN", "OK logged in", false).await;
    let (events, sink) = recorder();
    let watcher = IdleWatcher::spawn(fake_connection(port), "INBOX".into(), options, sink);
    // Past the capability check, the fake server's bare answers fail later
    // steps, which are retried: anything but a stop for lacking IDLE.
    let retried = wait_event(&events, Duration::from_secs(5), |e| {
        matches!(e, IdleEvent::Error { .. } | IdleEvent::Watching { .. })
    })
    .await;
    let seen = format!("{:?}", events.lock().unwrap());
    watcher.stop();
    assert!(retried.is_some(), "{seen}");
    assert!(!seen.contains("does not support IDLE"), "{seen}");
}

/// A fake server that ends each IDLE itself after 1.2 s (some servers end
/// it every few minutes); returns its port and every command line it got.
async fn idle_ending_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let answer: Answer = Arc::new(|tag, line| {
        if line.contains("CAPABILITY") {
            say(format!("* CAPABILITY IMAP4rev1 IDLE\r\n{tag} OK done\r\n"))
        } else if line.contains(" EXAMINE ") {
            say(format!(
                "* 3 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 4] ok\r\n{tag} OK [READ-ONLY] done\r\n"
            ))
        } else if line.ends_with(" IDLE") {
            Reply {
                pieces: vec![
                    (Duration::ZERO, "+ idling\r\n".to_owned()),
                    (
                        Duration::from_millis(1200),
                        format!("{tag} OK IDLE terminated\r\n"),
                    ),
                ],
                hang_up: false,
            }
        } else {
            say(format!("{tag} OK done\r\n"))
        }
    });
    fake_imap("IMAP4rev1 IDLE", answer).await
}

/// A server that ends IDLE itself: the watcher enters it again at once on
/// the same connection (not at its renewal, 60 s here), sending no DONE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_ended_by_the_server_is_entered_again_at_once() {
    let options = IdleOptions {
        reidle: Duration::from_secs(60),
        backoff_base: Duration::from_millis(50),
        backoff_cap: Duration::from_millis(100),
        ..IdleOptions::default()
    };
    let (port, seen) = idle_ending_server().await;
    let (events, sink) = recorder();
    let watcher = IdleWatcher::spawn(fake_connection(port), "INBOX".into(), options, sink);
    let deadline = Instant::now() + Duration::from_secs(5);
    let idles = || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|l| l.ends_with(" IDLE"))
            .count()
    };
    while idles() < 3 {
        assert!(
            Instant::now() < deadline,
            "{:?} {:?}",
            seen.lock().unwrap(),
            events.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = seen.lock().unwrap().clone();
    watcher.stop();
    assert_eq!(
        lines.iter().filter(|l| l.contains("LOGIN")).count(),
        1,
        "one connection: {lines:?}"
    );
    assert!(!lines.iter().any(|l| l == "DONE"), "{lines:?}");
    assert_no_errors(&events);
}

/// A fake server answering each STATUS after `delay`, or, with `bye`,
/// sending that BYE instead of any answer.
async fn slow_status_server(delay: Duration, bye: Option<&'static str>) -> u16 {
    let answer: Answer = Arc::new(move |tag, line| {
        let mut words = line.split(' ').skip(1);
        match (words.next(), bye) {
            (Some("STATUS"), Some(bye)) => say(format!("* BYE {bye}\r\n")),
            (Some("STATUS"), None) => {
                let name = words.next().unwrap_or("\"x\"");
                Reply {
                    pieces: vec![(
                        delay,
                        format!(
                            "* STATUS {name} (MESSAGES 1 UIDNEXT 2 UNSEEN 0 UIDVALIDITY 3)\r\n{tag} OK done\r\n"
                        ),
                    )],
                    hang_up: false,
                }
            }
            (Some("CAPABILITY"), _) => say(format!("* CAPABILITY IMAP4rev1\r\n{tag} OK done\r\n")),
            _ => say(format!("{tag} OK done\r\n")),
        }
    });
    fake_imap("IMAP4rev1", answer).await.0
}

/// The timeout bounds silence, not a batch: ten folders answered every
/// 150 ms pass a 1 s timeout. A BYE in the middle is reported with its
/// reason, not as a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_many_folders_times_out_on_silence_only() {
    let folders: Vec<String> = (0..10).map(|i| format!("F{i}")).collect();
    let names: Vec<&str> = folders.iter().map(String::as_str).collect();
    let port = slow_status_server(Duration::from_millis(150), None).await;
    let mut conn = fake_connection(port);
    conn.timeout = Duration::from_secs(1);
    let mut session = conn.connect().await.expect("connect");
    let started = Instant::now();
    let statuses = session
        .status_many(&names)
        .await
        .expect("steady answers are not a timeout");
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        statuses
            .iter()
            .all(|s| s.as_ref().is_ok_and(|s| s.messages == 1)),
        "{statuses:?}"
    );

    let port = slow_status_server(Duration::ZERO, Some("[ALERT] Bandwidth limit exceeded")).await;
    let mut session = fake_connection(port).connect().await.expect("connect");
    let e = session.status_many(&names).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Network, "{e}");
    assert!(e.message.contains("Bandwidth limit exceeded"), "{e}");
}

/// STARTTLS refused for now (UNAVAILABLE) is a network error, retried
/// like any other; refused outright it stays an error of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_refused_for_now_is_a_network_error() {
    for (reply, kind) in [
        (
            "NO [UNAVAILABLE] TLS is not ready, try later",
            ErrorKind::Network,
        ),
        ("BAD no", ErrorKind::Unknown),
    ] {
        let answer: Answer = Arc::new(move |tag, _| say(format!("{tag} {reply}\r\n")));
        let (port, _) = fake_imap("IMAP4rev1 STARTTLS", answer).await;
        let mut conn = fake_connection(port);
        conn.security = Security::StartTls;
        let e = conn.connect().await.unwrap_err();
        assert_eq!(e.kind, kind, "{reply}: {e}");
        assert!(e.message.contains("STARTTLS"), "{e}");
    }
}

/// A BYE instead of IDLE's continuation, on a connection the server keeps
/// open, is reported at once with the server's words, not as a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_at_idle_start_is_reported_at_once() {
    let answer: Answer = Arc::new(|tag, line| {
        if line.contains("CAPABILITY") {
            say(format!("* CAPABILITY IMAP4rev1 IDLE\r\n{tag} OK done\r\n"))
        } else if line.contains(" EXAMINE ") {
            say(format!(
                "* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n{tag} OK done\r\n"
            ))
        } else if line.ends_with(" IDLE") {
            say("* BYE [UNAVAILABLE] going down for maintenance\r\n".to_owned())
        } else {
            say(format!("{tag} OK done\r\n"))
        }
    });
    let (port, _) = fake_imap("IMAP4rev1 IDLE", answer).await;
    let options = IdleOptions {
        reidle: Duration::from_secs(60),
        backoff_base: Duration::from_secs(30),
        backoff_cap: Duration::from_secs(30),
        ..IdleOptions::default()
    };
    let (events, sink) = recorder();
    let started = Instant::now();
    let mut conn = fake_connection(port);
    conn.timeout = Duration::from_secs(5);
    let watcher = IdleWatcher::spawn(conn, "INBOX".into(), options, sink);
    let reported = wait_event(&events, Duration::from_secs(3), |e| {
        matches!(e, IdleEvent::Error { error, .. } if error.kind == ErrorKind::Network
            && error.message.contains("going down for maintenance"))
    })
    .await;
    watcher.stop();
    let at = reported.unwrap_or_else(|| panic!("{:?}", events.lock().unwrap()));
    assert!(at - started < Duration::from_secs(2), "{:?}", at - started);
}

/// A fake server for the check: logs anyone in, answers CAPABILITY, and
/// passes every other command to `answer` with its tag, verb and first
/// argument (unquoted); a command `answer` leaves (`None`) gets a bare OK.
/// Returns its port and the command lines it got.
async fn check_server(
    answer: impl Fn(&str, &str, &str) -> Option<Reply> + Send + Sync + 'static,
) -> (u16, Arc<Mutex<Vec<String>>>) {
    let answer: Answer = Arc::new(move |tag, line| {
        let mut words = line.split(' ').skip(1);
        let verb = words.next().unwrap_or("");
        let arg = words.next().unwrap_or("").trim_matches('"');
        if verb == "CAPABILITY" {
            return say(format!("* CAPABILITY IMAP4rev1\r\n{tag} OK done\r\n"));
        }
        answer(tag, verb, arg).unwrap_or_else(|| say(format!("{tag} OK done\r\n")))
    });
    fake_imap("IMAP4rev1", answer).await
}

/// Nothing written now (the answer comes with a later command's).
fn silence() -> Reply {
    Reply {
        pieces: Vec::new(),
        hang_up: false,
    }
}

/// The folders `names`, each with its state file named after it in
/// `state_dir` (none: never synced).
fn folders(names: &[&str], state_dir: Option<&Path>) -> Vec<CheckFolder> {
    names
        .iter()
        .map(|name| CheckFolder {
            folder: (*name).to_owned(),
            state_file: state_dir.map(|d| d.join(name)),
            near_dir: None,
        })
        .collect()
}

/// The (kind, message) of a refused folder, or a failure naming the check.
fn refusal<'a>(checks: &'a [FolderCheck], folder: &str) -> (ErrorKind, &'a str) {
    let c = find(checks, folder);
    let e = c
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("{folder} was not refused: {checks:?}"));
    assert_eq!((c.new, c.total, c.unseen), (0, 0, 0), "{c:?}");
    (e.kind, e.message.as_str())
}

/// One pipelined STATUS refused (a folder deleted on the server), another
/// refused for now: those two folders carry their errors, and the folders
/// before, between and after them get their own figures, although the
/// server answers all commands at once and last first (matched by tag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_status_is_an_error_of_that_folder_only() {
    const NAMES: [&str; 5] = ["A", "Gone", "C", "Busy", "E"];
    let pending = Mutex::new(Vec::new());
    let (port, seen) = check_server(move |tag, verb, folder| {
        if verb != "STATUS" {
            return None;
        }
        let reply = match folder {
            "Gone" => format!("{tag} NO [NONEXISTENT] Mailbox doesn't exist: Gone\r\n"),
            "Busy" => format!("{tag} NO [INUSE] Mailbox is locked by another session\r\n"),
            // A has 1 message, C 3, E 5.
            _ => {
                let n = u32::from(folder.as_bytes()[0] - b'A') + 1;
                format!(
                    "* STATUS {folder} (MESSAGES {n} UIDNEXT {} UNSEEN 1 UIDVALIDITY 9)\r\n{tag} OK done\r\n",
                    n + 1
                )
            }
        };
        let mut pending = pending.lock().unwrap();
        pending.push(reply);
        Some(if pending.len() == NAMES.len() {
            say(pending.drain(..).rev().collect())
        } else {
            silence()
        })
    })
    .await;
    let checks = fast::check(&fake_connection(port), &folders(&NAMES, None))
        .await
        .expect("a refused folder does not fail the check");
    let order: Vec<&str> = checks.iter().map(|c| c.folder.as_str()).collect();
    assert_eq!(order, NAMES);
    for (folder, n) in [("A", 1), ("C", 3), ("E", 5)] {
        let c = find(&checks, folder);
        assert_eq!((c.new, c.total, c.unseen), (n, n, 1), "{checks:?}");
        assert_eq!(c.error, None);
    }
    let (kind, message) = refusal(&checks, "Gone");
    assert_eq!(kind, ErrorKind::Config);
    assert!(
        message.contains("'Gone'") && message.contains("doesn't exist"),
        "{message}"
    );
    let (kind, message) = refusal(&checks, "Busy");
    assert_eq!(kind, ErrorKind::Network, "INUSE is for now: {message}");
    assert!(message.contains("locked"), "{message}");
    // What Lua gets: `error` only where there is one.
    let json = serde_json::to_value(&checks).unwrap();
    assert!(json[0].get("error").is_none(), "{json}");
    assert_eq!(json[1]["error"]["kind"], "config", "{json}");
    // The check ended normally, logging out.
    assert!(
        seen.lock().unwrap().iter().any(|l| l.ends_with(" LOGOUT")),
        "{:?}",
        seen.lock().unwrap()
    );
}

/// Folders with UIDs mbsync has not pulled are examined and searched; a NO
/// to EXAMINE or to UID SEARCH is that folder's error, and the folder after
/// them is still counted exactly on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_examine_or_search_is_an_error_of_that_folder_only() {
    let states = tempfile::tempdir().unwrap();
    for name in ["NoPerm", "NoSearch", "Fine"] {
        // mbsync pulled UIDs 1 to 3; the server has 5 messages.
        std::fs::write(
            states.path().join(name),
            "FarUidValidity 9\nMaxPulledUid 3\n\n1 1 \n2 2 \n3 3 \n",
        )
        .unwrap();
    }
    let selected = Mutex::new(String::new());
    let (port, seen) = check_server(move |tag, verb, folder| match verb {
        "STATUS" => Some(say(format!(
            "* STATUS {folder} (MESSAGES 5 UIDNEXT 6 UNSEEN 2 UIDVALIDITY 9)\r\n{tag} OK done\r\n"
        ))),
        "EXAMINE" if folder == "NoPerm" => {
            Some(say(format!("{tag} NO [NOPERM] Permission denied\r\n")))
        }
        "EXAMINE" => {
            *selected.lock().unwrap() = folder.to_owned();
            Some(say(format!(
                "* 5 EXISTS\r\n* OK [UIDVALIDITY 9] ok\r\n{tag} OK [READ-ONLY] done\r\n"
            )))
        }
        "UID" if *selected.lock().unwrap() == "NoSearch" => {
            Some(say(format!("{tag} NO Search backend failed\r\n")))
        }
        "UID" => Some(say(format!("* SEARCH 4 5\r\n{tag} OK done\r\n"))),
        _ => None,
    })
    .await;
    let names = ["NoPerm", "NoSearch", "Fine"];
    let checks = fast::check(
        &fake_connection(port),
        &folders(&names, Some(states.path())),
    )
    .await
    .expect("refused folders do not fail the check");
    let (kind, message) = refusal(&checks, "NoPerm");
    assert_eq!(kind, ErrorKind::Config);
    assert!(
        message.contains("'NoPerm'") && message.contains("Permission denied"),
        "{message}"
    );
    let (kind, message) = refusal(&checks, "NoSearch");
    assert_eq!(kind, ErrorKind::Unknown);
    assert!(
        message.contains("UID SEARCH") && message.contains("backend failed"),
        "{message}"
    );
    let fine = find(&checks, "Fine");
    assert_eq!(
        (fine.new, fine.total, fine.error.as_ref()),
        (2, 5, None),
        "{checks:?}"
    );
    let lines = seen.lock().unwrap().clone();
    assert_eq!(
        lines.iter().filter(|l| l.contains(" EXAMINE ")).count(),
        3,
        "{lines:?}"
    );
}

/// An mbsyncrc with one channel `c` (Patterns *) on the fake server at
/// `port`, syncing into `dir`.
fn fake_mbsyncrc(port: u16, dir: &Path) -> MbsyncConfig {
    let text = format!(
        "IMAPAccount a\nHost 127.0.0.1\nPort {port}\nUser me\nPass pw\nSSLType None\nTimeout 5\n\n\
         IMAPStore r\nAccount a\n\n\
         MaildirStore l\nPath {dir}/\nInbox {dir}/INBOX\n\n\
         Channel c\nFar :r:\nNear :l:\nPatterns *\nSyncState *\n",
        dir = dir.display()
    );
    MbsyncConfig::parse(&text, &dir.join("mbsyncrc")).unwrap()
}

/// The account's check succeeds while the server answers some folder it was
/// asked about, and fails (naming the folders) once it refused all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_fails_when_every_folder_is_refused() {
    let (port, _) = check_server(|tag, verb, folder| match verb {
        "LIST" => Some(say(format!(
            "* LIST () \"/\" INBOX\r\n* LIST () \"/\" A\r\n* LIST () \"/\" B\r\n{tag} OK done\r\n"
        ))),
        "STATUS" if folder == "INBOX" => Some(say(format!(
            "* STATUS INBOX (MESSAGES 2 UIDNEXT 3 UNSEEN 0 UIDVALIDITY 9)\r\n{tag} OK done\r\n"
        ))),
        "STATUS" => Some(say(format!(
            "{tag} NO [NONEXISTENT] Mailbox doesn't exist: {folder}\r\n"
        ))),
        _ => None,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = fake_mbsyncrc(port, dir.path());
    let account = |only: &[&str]| {
        let only: Vec<String> = only.iter().map(|f| (*f).to_owned()).collect();
        let cfg = cfg.clone();
        async move { check_account(&cfg, &HashMap::new(), "c", &only, None, "mbsync").await }
    };

    let checks = account(&[]).await.expect("INBOX was answered");
    assert_eq!(find(&checks, "INBOX").new, 2);
    assert_eq!(refusal(&checks, "A").0, ErrorKind::Config);
    assert_eq!(refusal(&checks, "B").0, ErrorKind::Config);

    let e = account(&["A", "B"]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(
        e.message
            .starts_with("no folder could be checked: A (IMAP folder 'A' on 127.0.0.1:"),
        "{e}"
    );
    assert!(e.message.contains(", B (IMAP folder 'B' on "), "{e}");
    // One folder: its own error, as before.
    let e = account(&["A"]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(
        e.message.starts_with("IMAP folder 'A' on 127.0.0.1:"),
        "{e}"
    );
    assert!(e.message.ends_with("Mailbox doesn't exist: A"), "{e}");
    assert_eq!(account(&["INBOX"]).await.unwrap().len(), 1);

    // The same folders over a bare session: per folder, never a failure.
    let checks = fast::check(&fake_connection(port), &folders(&["A", "B"], None))
        .await
        .unwrap();
    assert!(checks.iter().all(|c| c.error.is_some()), "{checks:?}");
}

/// Against dovecot: a folder deleted on the server after a sync, which a
/// channel of its own still names, is reported as that folder's error
/// while INBOX, checked in the same account, shows its new mail. The
/// channel's own check then fails: it has no folder left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_deleted_on_the_server_is_reported_per_folder() {
    let fx = Fixture::start(&["--folders", "INBOX=3,Archive=2,Sent=1"]);
    fx.sync();
    let rc = fx.dir.join("mbsyncrc-grouped");
    let text = std::fs::read_to_string(fx.mbsyncrc()).unwrap();
    std::fs::write(
        &rc,
        format!(
            "{text}\nChannel demo-archive\nFar :demo-remote:Archive\nNear :demo-local:Archive\nSyncState *\n\n\
             Group both\nChannel demo\nChannel demo-archive\n"
        ),
    )
    .unwrap();
    let cfg = MbsyncConfig::load(Some(&rc)).unwrap();
    let none = HashMap::new();
    let checks = check_account(&cfg, &none, "both", &[], None, "mbsync")
        .await
        .unwrap();
    assert!(
        checks.iter().all(|c| c.new == 0 && c.error.is_none()),
        "{checks:?}"
    );

    let server = Path::new(
        fx.info["accounts"]["demo"]["server_maildir"]
            .as_str()
            .unwrap(),
    );
    std::fs::remove_dir_all(server.join(".Archive")).unwrap();
    fx.deliver("INBOX", 2);
    let checks = check_account(&cfg, &none, "both", &[], None, "mbsync")
        .await
        .expect("one deleted folder does not fail the check");
    assert_eq!(find(&checks, "INBOX").new, 2, "{checks:?}");
    assert_eq!(find(&checks, "Sent").error, None, "{checks:?}");
    let (kind, message) = refusal(&checks, "Archive");
    assert_eq!(kind, ErrorKind::Config);
    assert!(
        message.contains("'Archive'") && message.contains("doesn't exist"),
        "{message}"
    );

    let e = check_account(&cfg, &none, "demo-archive", &[], None, "mbsync")
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("'Archive'"), "{e}");
}

static SLEPT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The boot clock plus whatever the test says the computer slept.
fn boot_clock_with_sleep() -> Duration {
    himalaya_sync::imap::idle::boot_time()
        + Duration::from_millis(SLEPT_MS.load(std::sync::atomic::Ordering::SeqCst))
}

/// After the computer slept (its boot clock ran ahead of the timers), the
/// watcher does not trust its connection: it reconnects at once (not after
/// the first backoff pause, here the default 2 s) and goes on seeing
/// deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reconnects_after_the_computer_slept() {
    let fx = Fixture::start(&["--messages", "3"]);
    let (events, sink) = recorder();
    let options = IdleOptions {
        sleep_check: Duration::from_millis(100),
        boot_clock: himalaya_sync::imap::idle::BootClock(boot_clock_with_sleep),
        ..IdleOptions::default()
    };
    let watcher = IdleWatcher::spawn(fx.connection(), "INBOX".to_owned(), options, sink);
    wait_watching(&events).await;
    // A few checks go by awake: nothing happens.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_no_errors(&events);
    SLEPT_MS.fetch_add(600_000, std::sync::atomic::Ordering::SeqCst);
    let woke = Instant::now();
    // Ten minutes, give or take the moment each clock was read.
    let slept = |e: &IdleEvent| {
        matches!(e, IdleEvent::Error { error, retry_in, .. } if *retry_in == Duration::ZERO
            && ["599", "600", "601"]
            .iter()
            .any(|n| error.message.contains(&format!("the computer slept for {n} s"))))
    };
    assert!(
        wait_event(&events, Duration::from_secs(2), slept)
            .await
            .is_some(),
        "the sleep went unnoticed: {:?}",
        events.lock().unwrap()
    );
    wait_reconnected(&events, Duration::from_secs(5)).await;
    println!("back in IDLE {:?} after waking", woke.elapsed());
    fx.deliver("INBOX", 1);
    let deadline = Instant::now() + Duration::from_secs(3);
    while count_new(&events) < 1 {
        assert!(
            Instant::now() < deadline,
            "delivery missed: {:?}",
            events.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!watcher.is_finished());
    watcher.join().await.expect("clean stop");
}

static SLEPT_BEHIND_GATE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// [`boot_clock_with_sleep`] for the test below (tests run at once: each
/// has its own sleep).
fn boot_clock_with_sleep_behind_gate() -> Duration {
    himalaya_sync::imap::idle::boot_time()
        + Duration::from_millis(SLEPT_BEHIND_GATE_MS.load(std::sync::atomic::Ordering::SeqCst))
}

/// A TCP relay to dovecot that can refuse new connections (closing them at
/// once) while the ones it relays stay up: a network that is not back yet.
struct Gate {
    port: u16,
    open: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    async fn start(target: u16) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let admits = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !admits.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Gate { port, open, task }
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// After a wake the watcher reconnects at once, and when that fails (the
/// network is not back yet) the usual backoff follows: pauses from
/// `backoff_base` up, not a loop of immediate retries. Once the network is
/// back it reaches IDLE again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reconnect_after_a_wake_backs_off() {
    let fx = Fixture::start(&["--messages", "3"]);
    let gate = Gate::start(fx.port()).await;
    let mut connection = fx.connection();
    connection.port = gate.port;
    let (events, sink) = recorder();
    let options = IdleOptions {
        sleep_check: Duration::from_millis(100),
        backoff_base: Duration::from_millis(200),
        backoff_cap: Duration::from_millis(800),
        boot_clock: himalaya_sync::imap::idle::BootClock(boot_clock_with_sleep_behind_gate),
        ..IdleOptions::default()
    };
    let watcher = IdleWatcher::spawn(connection, "INBOX".to_owned(), options, sink);
    wait_watching(&events).await;
    gate.set_open(false);
    SLEPT_BEHIND_GATE_MS.fetch_add(600_000, std::sync::atomic::Ordering::SeqCst);
    let pauses = || -> Vec<(Duration, ErrorKind)> {
        events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, e)| match e {
                IdleEvent::Error {
                    retry_in, error, ..
                } => Some((*retry_in, error.kind)),
                _ => None,
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while pauses().len() < 4 {
        assert!(
            Instant::now() < deadline,
            "too few attempts: {:?}",
            events.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gate.set_open(true);
    wait_reconnected(&events, Duration::from_secs(5)).await;
    let seen = pauses();
    println!("pauses after the wake: {seen:?}");
    let retry_in: Vec<Duration> = seen.iter().map(|(d, _)| *d).collect();
    let ms = Duration::from_millis;
    assert_eq!(
        retry_in[..4],
        [Duration::ZERO, ms(200), ms(400), ms(800)],
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|(_, kind)| *kind == ErrorKind::Network),
        "{seen:?}"
    );
    assert!(!watcher.is_finished());
    watcher.join().await.expect("clean stop");
}

/// A Far prefix beyond ASCII, written as the server spells it (what mbsync
/// 1.4 needs) or in Unicode (1.5): the check lists the folders below it,
/// names them in Unicode, and sees new mail there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_prefix_beyond_ascii_is_listed_in_either_spelling() {
    let fx = Fixture::start(&["--folders", "INBOX=2,Entwürfe/Alt=3,Entwürfe/Neu=2"]);
    let text = std::fs::read_to_string(fx.mbsyncrc()).unwrap();
    let none = HashMap::new();
    for (n, far) in ["Entw&APw-rfe/", "Entwürfe/"].into_iter().enumerate() {
        let rc = fx.dir.join(format!("mbsyncrc-prefix{n}"));
        let state = fx.dir.join(format!("state{n}"));
        std::fs::create_dir_all(&state).unwrap();
        let changed = text
            .lines()
            .map(|l| {
                if l.starts_with("Far :demo-remote:") {
                    format!("Far :demo-remote:\"{far}\"")
                } else if l.starts_with("SyncState ") {
                    format!("SyncState {}/", state.display())
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&rc, changed).unwrap();
        let cfg = MbsyncConfig::load(Some(&rc)).unwrap();
        let checks = check_account(&cfg, &none, "demo", &[], None, "mbsync")
            .await
            .unwrap();
        let mut folders: Vec<(&str, u32)> = checks
            .iter()
            .map(|c| (c.folder.as_str(), c.total))
            .collect();
        folders.sort();
        assert_eq!(folders, [("Entwürfe/Alt", 3), ("Entwürfe/Neu", 2)], "{far}");
    }
}
