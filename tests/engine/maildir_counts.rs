//! Folder counts on trees laid out by the real mbsync.
//!
//! A Verbatim Maildir store plays the far side and mbsync 1.4 copies it
//! into near stores with each `SubFolders` style and with `Flatten`. The
//! counts of every near store must then name the same folders as the far
//! one and find the same numbers, which checks both the layout rules and
//! that mbsync's own files (`.uidvalidity`, `.mbsyncstate`) are skipped.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use himalaya_sync::maildir::{count_store, FolderCounts};
use himalaya_sync::mbsync::config::MbsyncConfig;

/// Far more than the fraction of a second mbsync needs here.
const DEADLINE: Duration = Duration::from_secs(60);

/// Kills and reaps mbsync if the test fails while it runs.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Writes a message into `folder/sub` with the given file name.
fn message(folder: &Path, sub: &str, name: &str) {
    for dir in ["cur", "new", "tmp"] {
        fs::create_dir_all(folder.join(dir)).unwrap();
    }
    let body =
        format!("From: a@example.org\nSubject: {name}\nMessage-ID: <{name}@example.org>\n\nbody\n");
    fs::write(folder.join(sub).join(name), body).unwrap();
}

fn summary(counts: &[FolderCounts]) -> Vec<(String, u64, u64, u64, u64)> {
    counts
        .iter()
        .map(|c| (c.folder.clone(), c.total, c.unread, c.flagged, c.trashed))
        .collect()
}

#[test]
fn counts_match_across_mbsync_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let far = root.join("far");
    message(&far.join("INBOX"), "cur", "1700000001.1_1.host:2,S");
    message(&far.join("INBOX"), "cur", "1700000002.1_1.host:2,F");
    message(&far.join("INBOX"), "new", "1700000003.1_1.host");
    message(
        &far.join("INBOX/Receipts"),
        "cur",
        "1700000004.1_1.host:2,S",
    );
    message(&far.join("Archive"), "cur", "1700000005.1_1.host:2,ST");
    message(&far.join("Archive"), "cur", "1700000006.1_1.host:2,");
    message(&far.join("Archive/2024"), "cur", "1700000007.1_1.host:2,FS");
    message(&far.join("Archive/2024"), "cur", "1700000008.1_1.host:2,S");
    message(&far.join("Lists/rust"), "new", "1700000009.1_1.host");

    let r = root.display();
    let config = format!(
        "Create Near\nSyncState *\n\n\
         MaildirStore far\nPath {r}/far/\nInbox {r}/far/INBOX\nSubFolders Verbatim\n\n\
         MaildirStore legacy\nPath {r}/legacy/\nInbox {r}/legacy/INBOX\nSubFolders Legacy\n\n\
         MaildirStore mpp\nInbox {r}/mpp\nSubFolders Maildir++\n\n\
         MaildirStore flat\nPath {r}/flat/\nInbox {r}/flat/INBOX\nFlatten .\n\n\
         Channel legacy\nFar :far:\nNear :legacy:\nPatterns *\n\n\
         Channel mpp\nFar :far:\nNear :mpp:\nPatterns *\n\n\
         Channel flat\nFar :far:\nNear :flat:\nPatterns *\n"
    );
    let config_path = root.join("mbsyncrc");
    fs::write(&config_path, &config).unwrap();
    for dir in ["legacy", "flat"] {
        fs::create_dir(root.join(dir)).unwrap();
    }

    let child = Command::new("mbsync")
        .arg("-c")
        .arg(&config_path)
        .arg("-a")
        .env("HOME", root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mbsync is installed");
    let mut child = Reaped(child);
    let start = Instant::now();
    while child.0.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < DEADLINE, "mbsync did not finish");
        thread::sleep(Duration::from_millis(20));
    }
    let Reaped(inner) = &mut child;
    let status = inner.wait().unwrap();
    let mut stderr = String::new();
    if let Some(mut pipe) = inner.stderr.take() {
        use std::io::Read;
        pipe.read_to_string(&mut stderr).unwrap();
    }
    assert!(status.success(), "mbsync failed: {stderr}");

    let cfg = MbsyncConfig::parse(&config, &config_path).unwrap();
    let store = |name: &str| {
        let store = cfg.maildir_stores.iter().find(|s| s.name == name).unwrap();
        summary(&count_store(store).unwrap())
    };
    let expected: Vec<(String, u64, u64, u64, u64)> = [
        ("INBOX", 3, 2, 1, 0),
        ("Archive", 1, 1, 0, 1),
        ("Archive/2024", 2, 0, 1, 0),
        ("INBOX/Receipts", 1, 0, 0, 0),
        ("Lists/rust", 1, 1, 0, 0),
    ]
    .into_iter()
    .map(|(f, t, u, fl, tr)| (f.to_owned(), t, u, fl, tr))
    .collect();
    assert_eq!(store("far"), expected);
    // mbsync really used each layout.
    assert!(root.join("legacy/Archive/.2024/cur").is_dir());
    assert!(root.join("mpp/.Archive.2024/cur").is_dir());
    assert!(root.join("mpp/..Receipts/cur").is_dir());
    assert!(root.join("flat/Archive.2024/cur").is_dir());
    for near in ["legacy", "mpp", "flat"] {
        assert_eq!(store(near), expected, "near store {near}");
    }
}
