//! Quitting while a refreshed token is being saved through a program (a
//! command store, gpg, secret-tool) lets the save finish: the provider may
//! have rotated the refresh token, which is lost unless saved. A file of
//! its own: it shuts the process-wide runtime down.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use himalaya_sync::lock::LockDir;
use himalaya_sync::oauth::account::AccountSettings;
use himalaya_sync::oauth::Tokens;
use himalaya_sync::runtime;
use serde_json::json;

#[test]
fn a_token_save_under_way_outlives_the_start_of_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let locks = tmp.path().join("locks");
    std::fs::create_dir(&locks).unwrap();
    std::fs::set_permissions(&locks, std::fs::Permissions::from_mode(0o700)).unwrap();
    let tokens = Tokens::new(
        Arc::new(LockDir::open(locks).unwrap()),
        tmp.path().join("state"),
    );
    let (saved, saving) = (tmp.path().join("saved.json"), tmp.path().join("saving"));
    let acct: AccountSettings = serde_json::from_value(json!({
        "name": "demo",
        "refresh_cmd": "printf '{\"access_token\":\"rotated\",\"expires_in\":3600}'",
        "store": {
            "backend": "command",
            "load_cmd": format!("cat {} 2>/dev/null || true", saved.display()),
            "save_cmd": format!(
                "touch {1}; sleep 0.5; cat > {0}.new && mv {0}.new {0}",
                saved.display(),
                saving.display()
            ),
            "clear_cmd": "true",
        },
    }))
    .unwrap();
    let handle = runtime::handle().expect("runtime");
    handle.spawn(async move {
        let _ = tokens.valid_token(&acct).await;
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !saving.exists() {
        assert!(Instant::now() < deadline, "the save never began");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Neovim quits now, in the middle of the save.
    runtime::shutdown(Duration::from_millis(50));
    assert!(
        std::fs::read_to_string(&saved)
            .unwrap_or_default()
            .contains("rotated"),
        "the refreshed token was not saved"
    );
}
