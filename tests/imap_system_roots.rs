//! IMAP over TLS without a `CertificateFile` trusts the system roots, which
//! `SSL_CERT_FILE` replaces as it does for OpenSSL. The variable is read
//! from the engine's copy of the environment (`himalaya_sync::env`), taken
//! on the thread that owns it, never from the live one on an engine thread.
//!
//! A file of its own: the roots are loaded once per process, so no other
//! test may load them first. The fixture is stopped and its directory
//! removed by a Drop guard, also when the test fails (tests/common).

use std::time::Duration;

use himalaya_sync::error::ErrorKind;
use himalaya_sync::imap::client::{Connection, Security};
use himalaya_sync::mbsync::config::MbsyncConfig;

mod common;

use common::Fixture;

#[test]
fn ssl_cert_file_comes_from_the_environment_copy() {
    let fx = Fixture::start(&["--messages", "3"]);
    let tls = fx.restart_with_tls();
    let config = MbsyncConfig::load(Some(&fx.mbsyncrc())).expect("parse mbsyncrc");
    let account = config
        .imap_account_for(config.channel("demo").expect("channel demo"))
        .expect("account");
    let mut conn = Connection::from_account(account)
        .expect("connection")
        .with_timeout(Duration::from_secs(5));
    conn.host = "localhost".to_owned();
    conn.port = tls.imaps_port;
    conn.security = Security::Tls;
    conn.certificate_file = None;

    // The copy has the CA; the live environment no longer does when the
    // engine thread connects.
    std::env::set_var("SSL_CERT_FILE", &tls.ca);
    himalaya_sync::env::snapshot();
    std::env::remove_var("SSL_CERT_FILE");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let ca = tls.ca.clone();
    // A CA of its own, which signed nothing the server shows.
    let other = fx.tmp.path().join("other-ca");
    std::fs::create_dir_all(&other).expect("other-ca dir");
    common::make_certificates(&other);
    let other_ca = other.join("ca.pem");
    let messages = rt.block_on(async move {
        // Spawned: block_on itself runs on this (the copy's owner) thread.
        tokio::spawn(async move {
            let mut session = conn.connect().await.expect("trusted through SSL_CERT_FILE");
            let messages = session.status("INBOX").await.expect("status").messages;
            session.logout().await;

            // `SystemCertificates no`: a root the system trusts is not
            // enough; only the CertificateFile counts.
            conn.system_certificates = false;
            let e = conn
                .connect()
                .await
                .expect_err("no CertificateFile: nothing trusted");
            assert_eq!(e.kind, ErrorKind::Config, "{e}");
            assert!(e.message.contains("needs a CertificateFile"), "{e}");
            conn.certificate_file = Some(other_ca);
            let e = conn
                .connect()
                .await
                .expect_err("the system's CA does not count");
            assert_eq!(e.kind, ErrorKind::Config, "{e}");
            conn.certificate_file = Some(ca);
            let session = conn
                .connect()
                .await
                .expect("trusted through CertificateFile");
            session.logout().await;
            messages
        })
        .await
        .expect("join")
    });
    assert!(messages > 0);
}
