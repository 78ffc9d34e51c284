//! Shared by the Rust integration tests that need a real dovecot: the
//! fixture (`tests/fixture/imap_fixture.py`) as a guard that stops the
//! server and removes its directory on drop, also when a test fails, and
//! real mbsync runs against it.
//!
//! Each test crate includes this with `mod common;` and uses part of it,
//! so the parts one crate leaves unused are not dead code.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixture/imap_fixture.py");

/// A running fixture; stopped and removed on drop.
pub struct Fixture {
    /// The fixture's directory (dovecot.conf, local Maildirs, mbsyncrc).
    pub dir: PathBuf,
    /// What `imap_fixture.py start` printed (port, mbsyncrc, accounts...).
    pub info: Value,
    /// Holds `dir`; scratch files of a test may go here too.
    pub tmp: tempfile::TempDir,
}

impl Fixture {
    /// Starts a fixture; `args` go to `imap_fixture.py start`.
    pub fn start(args: &[&str]) -> Fixture {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("imap");
        let out = Command::new("python3")
            .arg(FIXTURE)
            .args(["start", "--dir"])
            .arg(&dir)
            .args(args)
            .output()
            .expect("run fixture");
        // From here on the guard cleans up, whatever happens.
        let mut fixture = Fixture {
            dir,
            info: Value::Null,
            tmp,
        };
        succeeded(&out, "fixture start");
        fixture.info = serde_json::from_slice(&out.stdout).expect("fixture JSON");
        fixture
    }

    /// Runs `imap_fixture.py COMMAND --dir DIR ARGS...` and returns its JSON.
    pub fn run(&self, args: &[&str]) -> Value {
        let out = Command::new("python3")
            .arg(FIXTURE)
            .arg(args[0])
            .arg("--dir")
            .arg(&self.dir)
            .args(&args[1..])
            .output()
            .expect("run fixture");
        succeeded(&out, &format!("fixture {args:?}"));
        serde_json::from_slice(&out.stdout).expect("fixture JSON")
    }

    /// Writes `count` new messages into `folder` of account `demo` on the server.
    pub fn deliver(&self, folder: &str, count: u32) {
        self.run(&[
            "deliver",
            "--account",
            "demo",
            "--folder",
            folder,
            "--count",
            &count.to_string(),
        ]);
    }

    pub fn mbsyncrc(&self) -> PathBuf {
        PathBuf::from(self.info["mbsyncrc"].as_str().expect("mbsyncrc"))
    }

    pub fn port(&self) -> u16 {
        self.info["port"].as_u64().expect("port") as u16
    }

    /// `mbsync -a` with the fixture's own mbsyncrc.
    pub fn sync(&self) {
        mbsync(&self.mbsyncrc());
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

/// `mbsync -c RC -a`, which must succeed.
pub fn mbsync(rc: &Path) {
    let out = Command::new("mbsync")
        .arg("-c")
        .arg(rc)
        .arg("-a")
        .output()
        .expect("run mbsync");
    succeeded(&out, "mbsync");
}

/// Fails the test with the command's error output unless it exited 0.
fn succeeded(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
