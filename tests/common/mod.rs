//! Shared by the Rust integration tests that need a real dovecot: the
//! fixture (`tests/fixture/imap_fixture.py`) as a guard that stops the
//! server and removes its directory on drop, also when a test fails; real
//! mbsync runs against it; dovecot restarted by a test, also with TLS.
//!
//! Each test crate includes this as `mod common;` (tests/engine/main.rs
//! by its path) and uses part of it, so the parts one crate leaves unused
//! are not dead code.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use himalaya_sync::lock::LockDir;
use himalaya_sync::manager::{Manager, Settings, StartOptions, SyncType};
use serde_json::Value;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixture/imap_fixture.py");

/// The fixture run by the Python interpreter itself, not a version
/// manager's shim (pyenv's costs 0.15 s of CPU per start here), with -S,
/// as it needs the standard library only (site's .pth files cost 50 ms
/// more): a test runs it several times. Found once per test binary, unless
/// HIMALAYA_PYTHON names it.
fn fixture() -> Command {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let python = PYTHON.get_or_init(|| {
        std::env::var("HIMALAYA_PYTHON")
            .ok()
            .or_else(|| {
                let out = Command::new("python3")
                    .args(["-c", "import sys; print(sys.executable)"])
                    .output()
                    .ok()?;
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            })
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "python3".into())
    });
    let mut command = Command::new(python);
    command.arg("-S").arg(FIXTURE);
    command
}

/// A manager on its own runtime, with a lock folder in the fixture's temp
/// folder; `emit` gets every event. The runtime must outlive the manager's
/// syncs: keep it until the test ends.
pub fn manager(
    fx: &Fixture,
    settings: Settings,
    emit: impl Fn(u64, &str, Value) + Send + Sync + 'static,
) -> (Arc<Manager>, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let locks = Arc::new(LockDir::open(fx.tmp.path().join("locks")).expect("locks"));
    let next = std::sync::atomic::AtomicU64::new(1);
    let manager = Arc::new(Manager::new(
        locks,
        Arc::new(emit),
        Box::new(move || next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)),
        rt.handle().clone(),
    ));
    manager.configure(settings);
    (manager, rt)
}

/// Starts a sync of `kind` of account `demo` that does not wait for a busy
/// account; returns its id.
pub fn start_demo(manager: &Arc<Manager>, kind: SyncType) -> u64 {
    manager
        .start(StartOptions {
            kind,
            account: "demo".into(),
            folders: Vec::new(),
            wait_lock: Duration::ZERO,
        })
        .expect("start")
}

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
        let out = fixture()
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
        let out = fixture()
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
        let _ = fixture()
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

/// dovecot started again by the test with the fixture's configuration;
/// killed (whole process group) and reaped on drop.
pub struct Restarted(Child);

impl Restarted {
    /// Starts dovecot with `conf` and waits until `port` accepts.
    pub fn start(conf: &Path, port: u16) -> Restarted {
        use std::os::unix::process::CommandExt;
        let dir = conf.parent().expect("fixture dir");
        let _ = std::fs::remove_dir_all(dir.join("run"));
        let child = Command::new("dovecot")
            .arg("-c")
            .arg(conf)
            .arg("-F")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("restart dovecot");
        let restarted = Restarted(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "dovecot did not come back");
            std::thread::sleep(Duration::from_millis(20));
        }
        restarted
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let pgid = self.0.id() as i32;
        unsafe {
            libc::killpg(pgid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA and a server certificate for `localhost`/127.0.0.1 signed by it.
pub fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Fixture CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// dovecot restarted with TLS on (see [`Fixture::restart_with_tls`]).
pub struct Tls {
    /// Kept for its Drop: stops this dovecot.
    pub dovecot: Restarted,
    /// The IMAPS listener; the fixture's own port now offers STARTTLS.
    pub imaps_port: u16,
    /// The CA that signed the server certificate (for `localhost` and
    /// 127.0.0.1): what an mbsyncrc names as `CertificateFile`.
    pub ca: PathBuf,
}

impl Fixture {
    /// Stops the fixture's dovecot and starts it again with TLS: STARTTLS
    /// on the fixture's port, IMAPS on a new one, certificates signed by a
    /// throwaway CA. Stopped again when the returned value drops.
    pub fn restart_with_tls(&self) -> Tls {
        self.restart_with_tls_on(free_port())
    }

    /// [`Fixture::restart_with_tls`] with IMAPS on `imaps_port`.
    pub fn restart_with_tls_on(&self, imaps_port: u16) -> Tls {
        let certs = self.dir.join("certs");
        std::fs::create_dir_all(&certs).expect("certs dir");
        make_certificates(&certs);
        self.run(&["stop", "--keep"]);
        let conf = std::fs::read_to_string(self.dir.join("dovecot.conf")).expect("dovecot.conf");
        let tls_conf = conf
            .replace(
                "ssl = no",
                &format!(
                    "ssl = yes\nssl_cert = <{}\nssl_key = <{}",
                    certs.join("server.pem").display(),
                    certs.join("server.key").display()
                ),
            )
            .replace(
                "  inet_listener imaps {\n    port = 0",
                &format!(
                    "  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {imaps_port}"
                ),
            );
        assert_ne!(conf, tls_conf, "the fixture's dovecot.conf changed shape");
        let tls_conf_path = self.dir.join("dovecot-tls.conf");
        std::fs::write(&tls_conf_path, tls_conf).expect("write dovecot-tls.conf");
        let dovecot = Restarted::start(&tls_conf_path, self.port());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", imaps_port)).is_err() {
            assert!(Instant::now() < deadline, "no IMAPS listener");
            std::thread::sleep(Duration::from_millis(20));
        }
        Tls {
            dovecot,
            imaps_port,
            ca: certs.join("ca.pem"),
        }
    }
}
