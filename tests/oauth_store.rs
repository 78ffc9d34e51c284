//! Token stores against the real file system, real `sh` and real `gpg`.
//!
//! Every error message produced here is also checked for the test tokens:
//! none may ever show up in one.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use himalaya_sync::error::{Error, ErrorKind};
use himalaya_sync::oauth::store::{self, KeySource, StoreOptions, StoreSpec, TokenStore};
use himalaya_sync::oauth::token::Token;

const ACCESS: &str = "ya29.TEST-ACCESS-d41d8cd98f00b204";
const REFRESH: &str = "1//TEST-REFRESH-e9800998ecf8427e";
/// `head -c 32 /dev/zero | tr '\0' 'k' | base64`
const KEY_B64: &str = "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=";

fn token() -> Token {
    Token {
        access_token: ACCESS.into(),
        refresh_token: Some(REFRESH.into()),
        expires_at: Some(1_900_000_000),
        scope: Some("https://mail.google.com/".into()),
        token_type: Some("Bearer".into()),
        obtained_at: Some(1_899_996_400),
    }
}

/// Fails the test if an error message leaks a test token; returns the error.
fn clean(e: Error) -> Error {
    for secret in [ACCESS, REFRESH, KEY_B64, "TEST-ACCESS", "TEST-REFRESH"] {
        assert!(
            !e.message.contains(secret),
            "error message leaks a secret: {}",
            e.message
        );
    }
    e
}

fn err<T>(r: himalaya_sync::error::Result<T>) -> Error {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => clean(e),
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn round_trip(s: &dyn TokenStore) {
    assert_eq!(s.load("work").unwrap(), None);
    s.save("work", &token()).unwrap();
    assert_eq!(s.load("work").unwrap(), Some(token()));
    let mut rotated = token();
    rotated.access_token = "ya29.second".into();
    s.save("work", &rotated).unwrap();
    assert_eq!(s.load("work").unwrap(), Some(rotated));
    assert_eq!(s.load("other@example.com").unwrap(), None);
    s.clear("work").unwrap();
    assert_eq!(s.load("work").unwrap(), None);
    s.clear("work").unwrap();
    let e = err(s.load("../work"));
    assert_eq!(e.kind, ErrorKind::Invalid);
    let e = err(s.save("a;rm -rf x", &token()));
    assert_eq!(e.kind, ErrorKind::Invalid);
}

fn no_leftovers(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            !name.to_string_lossy().ends_with(".tmp"),
            "temporary file left: {name:?}"
        );
    }
}

#[test]
fn plain_files_round_trip_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("himalaya-sync").join("tokens");
    let s = store::open(&StoreSpec::Plain { dir: dir.clone() }).unwrap();
    assert_eq!(s.kind(), "plain");
    round_trip(&*s);
    s.save("work", &token()).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("work.json")), 0o600);
    no_leftovers(&dir);
}

#[test]
fn encrypted_files_round_trip_and_wrong_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tokens");
    let spec = |cmd: &str| StoreSpec::Encrypted {
        dir: dir.clone(),
        key: KeySource::Command(cmd.into()),
    };
    let s = store::open(&spec(&format!("printf '%s\\n' {KEY_B64}"))).unwrap();
    assert_eq!(s.kind(), "encrypted");
    round_trip(&*s);
    s.save("work", &token()).unwrap();
    let path = dir.join("work.enc");
    let sealed = fs::read(&path).unwrap();
    assert_eq!(&sealed[..8], b"HSYNCTOK");
    let text = String::from_utf8_lossy(&sealed);
    assert!(!text.contains("TEST-ACCESS") && !text.contains("Bearer"));
    assert_eq!(mode(&path), 0o600);
    no_leftovers(&dir);

    for other in ["printf 'a passphrase'", "printf '%s' kkkk"] {
        let wrong = store::open(&spec(other)).unwrap();
        let e = err(wrong.load("work"));
        assert_eq!(
            e.message,
            format!(
                "cannot decrypt {}: wrong key or tampered file",
                path.display()
            )
        );
        assert_eq!(fs::read(&path).unwrap(), sealed, "file must stay untouched");
    }

    // A passphrase works as well, and gives a different key than base64.
    let pass = store::open(&spec("printf 'correct horse battery staple'")).unwrap();
    pass.save("p", &token()).unwrap();
    assert_eq!(pass.load("p").unwrap(), Some(token()));
    assert!(s.load("p").is_err());

    // A file renamed to another account does not decrypt (account is AAD).
    fs::copy(&path, dir.join("stolen.enc")).unwrap();
    fs::set_permissions(dir.join("stolen.enc"), fs::Permissions::from_mode(0o600)).unwrap();
    let e = err(s.load("stolen"));
    assert!(
        e.message.contains("wrong key or tampered file"),
        "{}",
        e.message
    );

    let failing =
        store::open(&spec("echo \"no key $(printf %s kkkkkkkkkk)\" >&2; exit 4")).unwrap();
    let e = err(failing.load("work"));
    assert!(
        e.message
            .starts_with("key command failed (exit status 4): no key"),
        "{}",
        e.message
    );
    let empty = store::open(&spec("true")).unwrap();
    let e = err(empty.save("work", &token()));
    assert!(e.message.contains("printed nothing"), "{}", e.message);
    assert_eq!(fs::read(&path).unwrap(), sealed);
}

/// Plants `what` at the account's path and checks that load and save both
/// refuse it with `expect` in the message and leave it as it was.
fn refused(s: &dyn TokenStore, path: &Path, expect: &str) {
    let before = fs::symlink_metadata(path).unwrap();
    let content = fs::read(path).ok();
    for e in [err(s.load("work")), err(s.save("work", &token()))] {
        assert_eq!(e.kind, ErrorKind::Config, "{}", e.message);
        assert!(
            e.message.contains(&path.display().to_string()) && e.message.contains(expect),
            "{}",
            e.message
        );
    }
    let after = fs::symlink_metadata(path).unwrap();
    assert_eq!(before.ino(), after.ino(), "{} was replaced", path.display());
    assert_eq!(
        fs::read(path).ok(),
        content,
        "{} was changed",
        path.display()
    );
}

#[test]
fn unsafe_files_are_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tokens");
    for spec in [
        StoreSpec::Plain { dir: dir.clone() },
        StoreSpec::Encrypted {
            dir: dir.clone(),
            key: KeySource::Command(format!("printf %s {KEY_B64}")),
        },
    ] {
        let s = store::open(&spec).unwrap();
        let ext = if s.kind() == "plain" { "json" } else { "enc" };
        let path = dir.join(format!("work.{ext}"));
        s.save("work", &token()).unwrap();

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        refused(&*s, &path, "has mode 0644");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();

        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        refused(&*s, &path, "is owned by uid 65534");
        std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
        s.clear("work").unwrap();

        let victim = tmp.path().join(format!("victim-{ext}"));
        fs::write(&victim, "precious").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        symlink(&victim, &path).unwrap();
        refused(&*s, &path, "is a symlink");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        // Clearing removes the link, never what it points to.
        s.clear("work").unwrap();
        assert!(fs::symlink_metadata(&path).is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");

        fs::create_dir(&path).unwrap();
        let e = err(s.load("work"));
        assert!(e.message.contains("not a regular file") || e.kind == ErrorKind::Io);
        fs::remove_dir(&path).unwrap();

        fs::write(&path, "{\"access_token\": \"ya29.TEST-ACCESS-truncat").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let e = err(s.load("work"));
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(
            e.message.contains(&path.display().to_string())
                && (e.message.contains("corrupt") || e.message.contains("tampered")),
            "{}",
            e.message
        );
        s.clear("work").unwrap();
        no_leftovers(&dir);
    }

    // A stored file with a wrong field names the field, not the token.
    let s = store::open(&StoreSpec::Plain { dir: dir.clone() }).unwrap();
    let path = dir.join("bad.json");
    fs::write(
        &path,
        format!("{{\"access_token\": \"{ACCESS}\", \"expires_at\": \"{REFRESH}\"}}"),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let e = err(s.load("bad"));
    assert!(e.message.contains("token.expires_at"), "{}", e.message);

    // The directory itself is checked too.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let e = err(s.load("work"));
    assert!(e.message.contains("mode 0755"), "{}", e.message);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

#[test]
fn command_store_round_trip_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = sh_quote(tmp.path());
    let spec = StoreSpec::Command {
        // The account arrives in the environment; "$@" would show any
        // argument, and there must be none.
        save: format!("test $# -eq 0 && cat > {d}/\"$HIMALAYA_SYNC_ACCOUNT\".tok"),
        load: format!(
            "f={d}/\"$HIMALAYA_SYNC_ACCOUNT\".tok; if [ -e \"$f\" ]; then cat \"$f\"; fi"
        ),
        clear: Some(format!("rm -f {d}/\"$HIMALAYA_SYNC_ACCOUNT\".tok")),
    };
    let s = store::open(&spec).unwrap();
    assert_eq!(s.kind(), "command");
    round_trip(&*s);
    s.save("me@example.com", &token()).unwrap();
    let saved = fs::read_to_string(tmp.path().join("me@example.com.tok")).unwrap();
    assert!(saved.contains(ACCESS) && saved.ends_with('\n'));

    // A bare access token is accepted as well.
    fs::write(tmp.path().join("bare.tok"), "ya29.bare-token\n").unwrap();
    assert_eq!(
        s.load("bare").unwrap().unwrap().access_token,
        "ya29.bare-token"
    );

    // Failures quote the first stderr line, tokens removed.
    let s = store::open(&StoreSpec::Command {
        save: "echo \"cannot store $(cat)\" >&2; echo second line >&2; exit 3".into(),
        load: format!("echo {ACCESS}; echo \"lookup of {ACCESS} failed\" >&2; exit 1"),
        clear: None,
    })
    .unwrap();
    let e = err(s.save("work", &token()));
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(
        e.message
            .starts_with("token save command failed (exit status 3): cannot store {")
            && e.message.contains("[redacted]")
            && !e.message.contains("second line"),
        "{}",
        e.message
    );
    let e = err(s.load("work"));
    assert_eq!(e.kind, ErrorKind::Auth);
    assert_eq!(
        e.message,
        "token load command failed (exit status 1): lookup of [redacted] failed"
    );
    let e = err(s.clear("work"));
    assert_eq!(e.kind, ErrorKind::Config);

    // A secret the command was given, echoed on stderr, is not quoted:
    // the message reaches the history, the log and notifications.
    let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b";
    let s = store::open(&StoreSpec::Command {
        save: "cat >/dev/null".into(),
        load: format!("echo \"curl: (22) HTTP 401 with client_secret={hex}\" >&2; exit 1"),
        clear: None,
    })
    .unwrap();
    let e = err(s.load("work"));
    assert_eq!(
        e.message,
        "token load command failed (exit status 1): curl: (22) HTTP 401 with client_secret=[redacted]"
    );

    // Output that is not a token is refused without being echoed.
    let s = store::open(&StoreSpec::Command {
        save: "cat >/dev/null".into(),
        load: format!("echo 'Enter PIN:'; echo {ACCESS}"),
        clear: None,
    })
    .unwrap();
    let e = err(s.load("work"));
    assert!(e.message.contains("2 lines"), "{}", e.message);
}

/// True while a process whose command line contains `pattern` exists.
fn running(pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn commands_are_killed_after_the_timeout() {
    let options = StoreOptions {
        command_timeout: Duration::from_millis(800),
    };
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    for (load, marker) in [
        ("sleep 41.271; echo late".to_string(), "sleep 41.271"),
        // Exits at once, but a background child keeps stdout open. (It
        // ignores SIGHUP, which the others get when the shell exits: see
        // `background_children_end_with_the_command`; the shell exits only
        // once it does.)
        (
            format!(
                "(trap '' HUP; touch {r}; exec sleep 41.272) & \
                 while [ ! -e {r} ]; do sleep 0.01; done; echo ya29.token",
                r = ready.display()
            ),
            "sleep 41.272",
        ),
    ] {
        let s = store::open_with(
            &StoreSpec::Command {
                load,
                save: "cat".into(),
                clear: None,
            },
            options,
        )
        .unwrap();
        let started = Instant::now();
        let e = err(s.load("work"));
        assert_eq!(e.kind, ErrorKind::Timeout, "{}", e.message);
        assert!(
            e.message.contains("did not finish within 0.8 s"),
            "{}",
            e.message
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let gone = Instant::now() + Duration::from_secs(2);
        while running(marker) && Instant::now() < gone {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!running(marker), "{marker} survived the timeout");
    }
}

/// A throwaway GnuPG home; kills its agent when dropped.
struct GpgHome {
    dir: tempfile::TempDir,
}

impl GpgHome {
    fn home(&self) -> PathBuf {
        self.dir.path().join("gnupg")
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        for home in ["gnupg", "empty"] {
            let _ = Command::new("gpgconf")
                .args(["--kill", "all"])
                .env("GNUPGHOME", self.dir.path().join(home))
                .status();
        }
    }
}

#[test]
fn gpg_store_with_a_throwaway_key() {
    let g = GpgHome {
        dir: tempfile::tempdir().unwrap(),
    };
    let home = g.home();
    for h in [home.clone(), g.dir.path().join("empty")] {
        fs::create_dir(&h).unwrap();
        fs::set_permissions(&h, fs::Permissions::from_mode(0o700)).unwrap();
    }
    let generated = Command::new("gpg")
        .args([
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "Store Test <store-test@example.invalid>",
            "default",
            "default",
            "never",
        ])
        .env("GNUPGHOME", &home)
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "gpg key generation failed: {}",
        String::from_utf8_lossy(&generated.stderr)
    );
    // The only test here that touches the environment, and only a variable
    // no other test reads: the store must honour GNUPGHOME as users set it.
    std::env::set_var("GNUPGHOME", &home);

    let dir = g.dir.path().join("tokens");
    let spec = |recipient: &str, program: Option<String>| StoreSpec::Gpg {
        dir: dir.clone(),
        recipient: recipient.into(),
        program,
    };
    let s = store::open(&spec("store-test@example.invalid", None)).unwrap();
    assert_eq!(s.kind(), "gpg");
    round_trip(&*s);
    s.save("work", &token()).unwrap();
    let path = dir.join("work.gpg");
    assert_eq!(mode(&path), 0o600);
    let sealed = fs::read(&path).unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("TEST-ACCESS"));
    no_leftovers(&dir);

    // Unknown recipient: gpg's own reason, and the old file stays.
    let e = err(store::open(&spec("nobody@example.invalid", None))
        .unwrap()
        .save("work", &token()));
    assert!(
        e.message.contains("gpg failed (exit status 2): gpg:")
            && e.message.contains("nobody@example.invalid"),
        "{}",
        e.message
    );
    assert_eq!(fs::read(&path).unwrap(), sealed);

    // A home without the secret key: decryption fails with gpg's reason.
    let wrapper = g.dir.path().join("gpg-empty-home");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nGNUPGHOME={} exec gpg \"$@\"\n",
            sh_quote(&g.dir.path().join("empty"))
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o700)).unwrap();
    let program = wrapper.display().to_string();
    let other = store::open(&spec("store-test@example.invalid", Some(program.clone()))).unwrap();
    let e = err(other.load("work"));
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(
        e.message.starts_with(&format!(
            "cannot decrypt {}: {program} failed (exit status 2): gpg: decryption failed: No secret key",
            path.display()
        )),
        "{}",
        e.message
    );

    let missing = store::open(&spec("x@example.invalid", Some("/nonexistent/gpg".into()))).unwrap();
    let e = err(missing.load("work"));
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(
        e.message.contains("/nonexistent/gpg not found"),
        "{}",
        e.message
    );
}

#[test]
fn a_command_that_ignores_stdin_does_not_kill_us() {
    // Neovim may leave SIGPIPE at its default action (terminate); act like
    // it, so a write into a closed pipe would end this test process.
    // SAFETY: setting a signal disposition; no handler code runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let s = store::open(&StoreSpec::Command {
        load: "true".into(),
        save: "exec 0<&-; exit 0".into(),
        clear: None,
    })
    .unwrap();
    // Far more than a pipe buffer holds, so the writer hits the closed pipe.
    let mut big = token();
    big.access_token = "x".repeat(512 * 1024);
    for _ in 0..5 {
        s.save("work", &big).unwrap();
    }
}
