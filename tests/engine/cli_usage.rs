//! `himalaya-sync` asked for help, or given a command it does not know.

use std::process::Command;

fn tool(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_himalaya-sync"))
        .args(args)
        .output()
        .expect("the tool runs")
}

#[test]
fn help_lists_every_command_on_stdout() {
    for flag in ["help", "--help", "-h"] {
        let out = tool(&[flag]);
        assert!(out.status.success(), "{flag}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        for command in [
            "version",
            "locks",
            "cleanup-locks",
            "with-lock NAME",
            "sync ACCOUNT",
            "relay --kbps",
            "token ACCOUNT",
        ] {
            assert!(text.contains(command), "{flag}: no {command:?} in {text}");
        }
        assert!(out.stderr.is_empty(), "{flag}: {:?}", out.stderr);
    }
}

#[test]
fn version_prints_one_line_on_stdout() {
    for flag in ["version", "--version"] {
        let out = tool(&[flag]);
        assert!(out.status.success(), "{flag}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("himalaya-sync ") && text.lines().count() == 1,
            "{flag}: {text}"
        );
        assert!(out.stderr.is_empty(), "{flag}: {:?}", out.stderr);
    }
}

#[test]
fn an_unknown_command_is_a_usage_error_that_mentions_help() {
    let out = tool(&["--hlep"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.starts_with("himalaya-sync: unknown command \"--hlep\""),
        "{text}"
    );
    assert!(
        text.contains("usage: himalaya-sync {help | version"),
        "{text}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}

/// `-h` or `--help` after a command is help, not an account or a host; a
/// `--help` meant for with-lock's command (after `--`) is left to it.
#[test]
fn help_after_a_command_is_help() {
    for args in [
        &["token", "--help"][..],
        &["token", "-h"],
        &["sync", "--help"],
        &["sync", "demo", "-h"],
        &["relay", "--help"],
        &["with-lock", "x", "--help"],
    ] {
        let out = tool(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("token ACCOUNT"),
            "{args:?}: {out:?}"
        );
    }
    let locks = tempfile::tempdir().expect("a lock folder");
    let out = Command::new(env!("CARGO_BIN_EXE_himalaya-sync"))
        .args(["with-lock", "x", "--", "printf", "%s\\n", "--help"])
        .env("HIMALAYA_SYNC_LOCK_DIR", locks.path().join("locks"))
        .output()
        .expect("the tool runs");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "--help\n");
}

/// An account name the tool could never have settings for is a usage
/// error, not advice to configure `accounts.a b.oauth`.
#[test]
fn token_refuses_an_invalid_account_name() {
    let out = tool(&["token", "a b"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.starts_with("himalaya-sync: invalid account \"a b\": "),
        "{text}"
    );
}

#[test]
fn a_command_without_arguments_refuses_one() {
    for command in [
        "help",
        "-h",
        "version",
        "--version",
        "locks",
        "cleanup-locks",
    ] {
        let out = tool(&[command, "extra"]);
        assert_eq!(out.status.code(), Some(2), "{command}: {out:?}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            text.starts_with("himalaya-sync: unexpected argument \"extra\""),
            "{command}: {text}"
        );
        assert!(out.stdout.is_empty(), "{command}: {out:?}");
    }
}

/// A wait too long for any clock (1e99 s) is a usage error like a negative
/// one, not a panic (exit status 101).
#[test]
fn a_wait_out_of_range_is_a_usage_error() {
    for t in ["1e99", "1e30", "86401", "-1", "nan", "inf"] {
        let out = tool(&["with-lock", "x", "-t", t, "--", "true"]);
        assert_eq!(out.status.code(), Some(2), "-t {t}: {out:?}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            text.starts_with(&format!(
                "himalaya-sync: invalid timeout \"{t}\": expected seconds from 0 to 86400"
            )),
            "-t {t}: {text}"
        );
    }
}
