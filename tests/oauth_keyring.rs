//! The Secret Service backends against a real GNOME Keyring.
//!
//! The test starts a private D-Bus session bus and `gnome-keyring-daemon`
//! in a temporary HOME, points `DBUS_SESSION_BUS_ADDRESS` at it (the only
//! test in this file, so changing the environment is safe), and kills every
//! process it started when done, even on failure.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use himalaya_sync::error::ErrorKind;
use himalaya_sync::oauth::store::{
    self, read_himalaya_keyring, HimalayaKeyringEntries, KeySource, StoreSpec,
};
use himalaya_sync::oauth::token::Token;

const ACCESS: &str = "ya29.KEYRING-ACCESS-9b2f";
const REFRESH: &str = "1//KEYRING-REFRESH-77aa";

/// A private session bus with a keyring; everything it started dies on drop.
struct Keyring {
    dir: tempfile::TempDir,
    env: Vec<(String, PathBuf)>,
}

impl Keyring {
    fn start() -> Result<Keyring, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let root = dir.path().to_owned();
        let env: Vec<(String, PathBuf)> = [
            ("HOME", "home"),
            ("XDG_RUNTIME_DIR", "run"),
            ("XDG_DATA_HOME", "home/.local/share"),
            ("XDG_CONFIG_HOME", "home/.config"),
            ("XDG_CACHE_HOME", "home/.cache"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), root.join(v)))
        .collect();
        for (_, path) in &env {
            fs::create_dir_all(path).map_err(|e| e.to_string())?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                .map_err(|e| e.to_string())?;
        }
        // The guard exists before anything is started, so a failure below
        // still cleans up.
        let k = Keyring { dir, env };
        let bus = k.dir.path().join("run").join("bus");
        let out = k
            .command("dbus-daemon")
            .args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
            .arg(format!("--address=unix:path={}", bus.display()))
            .output()
            .map_err(|e| format!("cannot run dbus-daemon: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let address = stdout.lines().next().unwrap_or_default().to_owned();
        if !out.status.success() || !address.starts_with("unix:") {
            return Err(format!(
                "dbus-daemon failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::env::set_var("DBUS_SESSION_BUS_ADDRESS", &address);
        let mut unlock = k
            .command("gnome-keyring-daemon")
            .args(["--unlock", "--components=secrets"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run gnome-keyring-daemon: {e}"))?;
        if let Some(mut stdin) = unlock.stdin.take() {
            stdin
                .write_all(b"test-keyring-password")
                .map_err(|e| e.to_string())?;
        }
        let out = unlock.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "gnome-keyring-daemon --unlock failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(k)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Pids of processes started with our temporary HOME in their
    /// environment: the bus, the keyring and anything they activated.
    fn ours(&self) -> Vec<i32> {
        pids_with_env(&format!("HOME={}", self.dir.path().join("home").display()))
    }

    fn secret_tool(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        let mut child = self
            .command("secret-tool")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(data.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let pids = self.ours();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                // SAFETY: kill(2) with a pid we found running our HOME.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Pids whose environment holds `entry` (exactly, as `KEY=value`).
fn pids_with_env(entry: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return pids;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(environ) = fs::read(Path::new("/proc").join(pid.to_string()).join("environ")) {
            if environ.split(|&b| b == 0).any(|v| v == entry.as_bytes()) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// True while `pid` runs (a zombie waiting to be reaped does not count).
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            // The state follows the parenthesised command name.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

fn token() -> Token {
    Token {
        access_token: ACCESS.into(),
        refresh_token: Some(REFRESH.into()),
        expires_at: Some(1_900_000_000),
        scope: None,
        token_type: Some("Bearer".into()),
        obtained_at: Some(1_899_996_400),
    }
}

#[test]
fn secret_service_for_real() {
    let keyring = match Keyring::start() {
        Ok(k) => k,
        Err(why) => panic!(
            "\n\n*** THE SECRET SERVICE KEYRING CANNOT RUN HERE; the keyring backend is \
             UNTESTED: {why} ***\n\n"
        ),
    };
    let home = keyring.dir.path().join("home");
    let pattern = keyring.dir.path().display().to_string();

    // Our own backend: save, load, overwrite, clear.
    let s = store::open(&StoreSpec::SecretService {
        service: "himalaya-sync-test".into(),
    })
    .unwrap();
    assert_eq!(s.kind(), "secret-service");
    assert_eq!(s.load("work").unwrap(), None);
    s.save("work", &token()).unwrap();
    assert_eq!(s.load("work").unwrap(), Some(token()));
    let mut second = token();
    second.access_token = "ya29.second".into();
    second.refresh_token = None;
    s.save("work", &second).unwrap();
    assert_eq!(s.load("work").unwrap(), Some(second));
    assert_eq!(s.load("home").unwrap(), None);
    // The item carries the documented attributes.
    let (found, secret) = keyring.secret_tool(
        &["lookup", "service", "himalaya-sync-test", "account", "work"],
        None,
    );
    assert!(found && secret.contains("ya29.second"));
    s.clear("work").unwrap();
    assert_eq!(s.load("work").unwrap(), None);
    s.clear("work").unwrap();
    assert_eq!(
        s.load("a/b").err().map(|e| e.kind),
        Some(ErrorKind::Invalid)
    );

    // A bare token stored by hand (or by an older tool) is read too.
    let (ok, _) = keyring.secret_tool(
        &[
            "store",
            "--label=hand",
            "service",
            "himalaya-sync-test",
            "account",
            "bare",
        ],
        Some("ya29.bare"),
    );
    assert!(ok);
    assert_eq!(s.load("bare").unwrap().unwrap().access_token, "ya29.bare");

    // Encrypted files with the key kept in the Secret Service: made on
    // first use, then found again by a second store.
    let dir = home.join("tokens");
    let spec = StoreSpec::Encrypted {
        dir: dir.clone(),
        key: KeySource::SecretService,
    };
    let e1 = store::open(&spec).unwrap();
    e1.save("work", &token()).unwrap();
    let e2 = store::open(&spec).unwrap();
    assert_eq!(e2.load("work").unwrap(), Some(token()));
    let (found, key) = keyring.secret_tool(
        &[
            "lookup",
            "service",
            "himalaya-sync",
            "kind",
            "token-encryption-key",
        ],
        None,
    );
    assert!(found && key.trim().len() == 44, "key not stored as base64");

    // What the himalaya CLI v1 stores (keyring-rs 3 attribute layout).
    let entries = HimalayaKeyringEntries::imap_defaults("gmail");
    assert_eq!(entries.access, "gmail-imap-oauth2-access-token");
    assert_eq!(read_himalaya_keyring(&entries, 100).unwrap(), None);
    for (entry, secret) in [
        ("gmail-imap-oauth2-access-token", ACCESS),
        ("gmail-imap-oauth2-refresh-token", REFRESH),
    ] {
        let label = format!("--label={entry}@himalaya-cli:default (keyring v3.6.3)");
        let (ok, _) = keyring.secret_tool(
            &[
                "store",
                &label,
                "service",
                "himalaya-cli",
                "username",
                entry,
                "target",
                "default",
                "application",
                "rust-keyring",
            ],
            Some(secret),
        );
        assert!(ok);
    }
    let shared = read_himalaya_keyring(&entries, 100).unwrap().unwrap();
    assert_eq!(shared.access_token, ACCESS);
    assert_eq!(shared.refresh_token.as_deref(), Some(REFRESH));
    assert_eq!((shared.expires_at, shared.obtained_at), (None, Some(100)));
    // An account set to share himalaya's login uses those tokens while our
    // own store is empty.
    {
        use himalaya_sync::lock::LockDir;
        use himalaya_sync::oauth::{account::AccountSettings, Tokens};
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let locks = base.path().join("locks");
        std::fs::create_dir(&locks).unwrap();
        std::fs::set_permissions(&locks, std::fs::Permissions::from_mode(0o700)).unwrap();
        let tokens = Tokens::new(
            std::sync::Arc::new(LockDir::open(locks).unwrap()),
            base.path().join("state"),
        );
        let acct: AccountSettings = serde_json::from_value(serde_json::json!({
            "name": "mail",
            "himalaya_keyring": "gmail",
            "store": { "backend": "plain", "dir": base.path().join("tokens") },
        }))
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(tokens.valid_token(&acct)).unwrap(), ACCESS);
        assert!(rt.block_on(tokens.status(&acct)).has_refresh_token);
    }
    let no_refresh = HimalayaKeyringEntries {
        access: "gmail-imap-oauth2-access-token".into(),
        refresh: None,
    };
    assert_eq!(
        read_himalaya_keyring(&no_refresh, 100)
            .unwrap()
            .unwrap()
            .refresh_token,
        None
    );

    // With the bus gone, errors say so and leak nothing.
    let started = keyring.ours();
    assert!(!started.is_empty(), "no keyring process found to clean up");
    drop(keyring);
    let e = s.load("work").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(
        e.message.starts_with("secret-tool lookup failed"),
        "{}",
        e.message
    );
    let e = s.save("work", &token()).unwrap_err();
    assert!(!e.message.contains(ACCESS) && !e.message.contains(REFRESH));

    let left: Vec<i32> = started.into_iter().filter(|&pid| alive(pid)).collect();
    assert!(left.is_empty(), "keyring processes left running: {left:?}");
    let pgrep = Command::new("pgrep")
        .args(["-f", &pattern])
        .output()
        .unwrap();
    assert!(
        !pgrep.status.success(),
        "processes still mention {pattern}: {}",
        String::from_utf8_lossy(&pgrep.stdout)
    );
}
