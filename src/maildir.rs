//! Exact folder counts read straight from a Maildir tree.
//!
//! A Maildir folder is a directory holding `cur/`, `new/` and `tmp/`; the
//! state of a message is in its file name, so counting needs nothing but
//! the names `readdir` returns: no file is opened and none is `stat`ed.
//! That keeps a 100,000-message folder well under 100 ms.
//!
//! How a message counts:
//!
//! * every file in `new/` is unread (the MUA has not seen it yet);
//! * in `cur/` a message is unread when the info part (`:2,FLAGS`, or
//!   `!2,FLAGS` on setups whose `InfoDelimiter` is `!`) has no `S`, or when
//!   there is no info part at all;
//! * flagged means an `F` in the info part;
//! * a message marked `T` (trashed: deleted in the MUA, not yet expunged)
//!   is left out of `total`, `unread` and `flagged` and counted in
//!   `trashed` instead. The user already deleted it and mbsync removes it on
//!   the next sync with `Expunge`, so counting it would make a status line
//!   disagree with what the mail client shows;
//! * names starting with a dot (`.uidvalidity`, `.mbsyncstate*`, editor or
//!   temp files) are not messages, and `tmp/` (deliveries in progress) is
//!   never read.
//!
//! Folder names are mbsync's canonical mailbox names, the ones `Patterns`
//! and the far side use: `INBOX`, `INBOX/sub`, `Archive/2024`. They are
//! derived from the on-disk layout of a `MaildirStore` (`Path`, `Inbox`,
//! `SubFolders`, `Flatten`) the way mbsync's Maildir driver lists a store.
//! The bytes on disk are kept as they are: mbsync 1.4 writes IMAP's
//! modified UTF-7 names (`Entw&APw-rfe`) unchanged into the local tree, and
//! decoding them here would give names that match neither the directory
//! nor the `Patterns` the user wrote. Bytes that are not UTF-8 are shown
//! with U+FFFD.
//!
//! Counts are a snapshot: while mbsync runs it renames files between
//! `new/` and `cur/`, so a count taken at that moment can be off by the
//! messages in flight; the next count is exact again.
//!
//! Every delivery, flag change or removal renames or unlinks a file in
//! `cur/` or `new/`, which changes that directory's modification time. So a
//! folder whose two directories still have the times they had at its last
//! count is not read again: its counts are remembered per directory (a
//! sync that changed nothing costs two `stat`s per folder instead of
//! reading thousands of names). The directories' [stamps](crate::stamp) are
//! taken before the read, and a count is remembered only once they have
//! settled, so a change in the same clock tick as the read is not missed.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

use parking_lot::Mutex;

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::mbsync::config::MaildirStore;
use crate::stamp::{Stamp, SETTLE};

/// The message counts of one Maildir folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FolderCounts {
    /// mbsync's canonical name: `INBOX`, `Archive/2024`...
    pub folder: String,
    /// Messages in `cur/` and `new/`, without trashed ones.
    pub total: u64,
    /// Messages in `new/`, plus those in `cur/` without the `S` flag.
    pub unread: u64,
    /// Messages with the `F` flag.
    pub flagged: u64,
    /// Messages with the `T` flag, which are in none of the counts above.
    pub trashed: u64,
    /// The `MaildirStore` the folder is in, when the account's channels
    /// sync into several (a `Group` of accounts: each has an `INBOX`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
}

/// mbsync's `SubFolders` option: how hierarchical names map to directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SubFolders {
    /// Not set. mbsync refuses nested folders then; counting walks the tree
    /// as `Verbatim` instead, so a count never fails over it.
    Unset,
    /// `Path/top/sub` and `Inbox/sub`.
    Verbatim,
    /// `Inbox/.top.sub` and `Inbox/..sub`; `Path` is not used.
    MaildirPlusPlus,
    /// `Path/top/.sub` and `Inbox/.sub` (mbsync's historical style).
    Legacy,
}

/// Where a `MaildirStore` keeps its folders on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The store's `Path`: the directory holding all folders but INBOX.
    pub path: Option<PathBuf>,
    /// The store's `Inbox` directory.
    pub inbox: PathBuf,
    pub subfolders: SubFolders,
    /// The `Flatten` delimiter: `Archive.2024` on disk is `Archive/2024`.
    pub flatten: Option<String>,
}

impl Layout {
    /// The layout of a parsed `MaildirStore`. `Inbox` defaults to
    /// `$HOME/Maildir`, as in mbsync.
    pub fn from_store(store: &MaildirStore) -> Result<Layout> {
        let subfolders = match store.subfolders.as_deref() {
            None => SubFolders::Unset,
            Some(v) if v.eq_ignore_ascii_case("Verbatim") => SubFolders::Verbatim,
            Some(v) if v.eq_ignore_ascii_case("Maildir++") => SubFolders::MaildirPlusPlus,
            Some(v) if v.eq_ignore_ascii_case("Legacy") => SubFolders::Legacy,
            Some(other) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "MaildirStore '{}': unknown SubFolders style '{other}' (expected \
                         Verbatim, Maildir++ or Legacy)",
                        store.name
                    ),
                ))
            }
        };
        let inbox = match &store.inbox {
            Some(inbox) => inbox.clone(),
            None => crate::env::var_os("HOME")
                .filter(|home| !home.is_empty())
                .map(|home| Path::new(&home).join("Maildir"))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Config,
                        format!(
                            "MaildirStore '{}' has no Inbox and $HOME is not set",
                            store.name
                        ),
                    )
                })?,
        };
        Ok(Layout {
            path: store.path.clone(),
            inbox,
            subfolders,
            flatten: store.flatten.clone().filter(|d| !d.is_empty()),
        })
    }
}

/// Counts every folder of a `MaildirStore`, INBOX first, then by name.
pub fn count_store(store: &MaildirStore) -> Result<Vec<FolderCounts>> {
    count_layout(&Layout::from_store(store)?)
}

/// Counts every folder of a layout, INBOX first, then by name.
///
/// This is also the entry point for benchmarks: it does exactly the work a
/// status refresh does (list the tree, read each `cur/` and `new/` once).
pub fn count_layout(layout: &Layout) -> Result<Vec<FolderCounts>> {
    list_folders(layout)?
        .into_iter()
        .map(|(name, dir)| count_folder(&name, &dir))
        .collect()
}

/// The folders of a layout as (canonical name, directory), INBOX first,
/// then by name. A folder is a directory with a `cur/` subdirectory; an
/// INBOX that was never synced is therefore absent.
///
/// A missing `Path` is an error (mbsync refuses to open such a store); a
/// missing `Inbox` is not, since mbsync creates it on the first sync.
pub fn list_folders(layout: &Layout) -> Result<Vec<(String, PathBuf)>> {
    let mut walk = Walk {
        layout,
        inbox: trim_slashes(&layout.inbox),
        path: layout.path.as_deref().map(trim_slashes),
        folders: Vec::new(),
        inbox_done: false,
    };
    if layout.subfolders == SubFolders::MaildirPlusPlus {
        walk.maildir_plus_plus()?;
    } else {
        if let Some(path) = walk.path.clone() {
            if !path.is_dir() {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("Maildir store directory {} does not exist", path.display()),
                ));
            }
            walk.recurse(&path, "", 0)?;
        }
        walk.inbox()?;
    }
    let mut folders = walk.folders;
    if let Some(delim) = &layout.flatten {
        for (name, _) in &mut folders {
            *name = name.replace(delim.as_str(), "/");
        }
    }
    folders.sort_by(|(a, _), (b, _)| (a != "INBOX", a).cmp(&(b != "INBOX", b)));
    Ok(folders)
}

/// Counts one Maildir folder: the directory holding `cur/`, `new/` and
/// `tmp/`. `name` is only copied into the result.
///
/// A missing `new/` counts as empty (mbsync recreates it), but a missing
/// folder or `cur/` is an error naming the directory.
///
/// Public for the command-line tool's benchmark: it reads the two
/// directories once each and never touches the files.
pub fn count_folder(name: &str, dir: &Path) -> Result<FolderCounts> {
    count_with(name, dir, SystemTime::now(), read_folder)
}

/// [`count_folder`] with the time and the reader given, so that tests can
/// see when a folder is read.
fn count_with(
    name: &str,
    dir: &Path,
    now: SystemTime,
    read: impl FnOnce(&str, &Path) -> Result<FolderCounts>,
) -> Result<FolderCounts> {
    let (cur, new) = (Stamp::of(&dir.join("cur")), Stamp::of(&dir.join("new")));
    if let Some(cur) = &cur {
        if let Some(hit) = cache()
            .lock()
            .get(dir)
            .filter(|c| c.cur == *cur && c.new == new)
        {
            return Ok(FolderCounts {
                folder: name.to_owned(),
                ..hit.counts.clone()
            });
        }
    }
    let counts = read(name, dir)?;
    if let Some(cur) = cur {
        let settled = |s: &Stamp| s.settled(now, SETTLE);
        if settled(&cur) && new.as_ref().is_none_or(settled) {
            cache().lock().insert(
                dir.to_path_buf(),
                Cached {
                    cur,
                    new,
                    counts: counts.clone(),
                },
            );
        }
    }
    Ok(counts)
}

struct Cached {
    cur: Stamp,
    new: Option<Stamp>,
    counts: FolderCounts,
}

fn cache() -> &'static Mutex<HashMap<PathBuf, Cached>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Cached>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Reads the names in `cur/` and `new/` of one folder and counts them.
fn read_folder(name: &str, dir: &Path) -> Result<FolderCounts> {
    let mut counts = FolderCounts {
        folder: name.to_owned(),
        total: 0,
        unread: 0,
        flagged: 0,
        trashed: 0,
        store: None,
    };
    let cur = dir.join("cur");
    let entries = std::fs::read_dir(&cur).map_err(|err| {
        if err.kind() == io::ErrorKind::NotFound && dir.is_dir() {
            Error::new(
                ErrorKind::Config,
                format!("{} is not a Maildir folder (it has no cur/)", dir.display()),
            )
        } else if err.kind() == io::ErrorKind::NotFound {
            Error::new(
                ErrorKind::Config,
                format!("Maildir folder {} does not exist", dir.display()),
            )
        } else {
            Error::io(format!("Cannot read {}", cur.display()), err)
        }
    })?;
    count_entries(entries, &cur, false, &mut counts)?;
    let new = dir.join("new");
    match std::fs::read_dir(&new) {
        Ok(entries) => count_entries(entries, &new, true, &mut counts)?,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(Error::io(format!("Cannot read {}", new.display()), err)),
    }
    Ok(counts)
}

/// Adds the messages of one `cur/` or `new/` directory to `counts`.
fn count_entries(
    entries: std::fs::ReadDir,
    dir: &Path,
    is_new: bool,
    counts: &mut FolderCounts,
) -> Result<()> {
    for entry in entries {
        let entry =
            entry.map_err(|err| Error::io(format!("Cannot read {}", dir.display()), err))?;
        let name = entry.file_name();
        let name = name.as_encoded_bytes();
        if name.first().is_none_or(|&b| b == b'.') {
            continue;
        }
        let flags = info_flags(name);
        if flags.contains(&b'T') {
            counts.trashed += 1;
            continue;
        }
        counts.total += 1;
        if is_new || !flags.contains(&b'S') {
            counts.unread += 1;
        }
        if flags.contains(&b'F') {
            counts.flagged += 1;
        }
    }
    Ok(())
}

/// The flags of a message file name: what follows `:2,` (or `!2,`), or
/// nothing when the name has no info part. Flags are letters, so the info
/// part starts at the last comma of the name if it has one at all.
fn info_flags(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b',') {
        Some(comma)
            if comma >= 2 && name[comma - 1] == b'2' && matches!(name[comma - 2], b':' | b'!') =>
        {
            &name[comma + 1..]
        }
        _ => &[],
    }
}

/// `path` without trailing slashes, so that `Path ~/Mail/` and a directory
/// found while walking compare equal.
fn trim_slashes(path: &Path) -> PathBuf {
    path.components().collect()
}

/// The state of one listing, following mbsync's `maildir_list_*`.
struct Walk<'a> {
    layout: &'a Layout,
    inbox: PathBuf,
    path: Option<PathBuf>,
    folders: Vec<(String, PathBuf)>,
    inbox_done: bool,
}

impl Walk<'_> {
    /// Adds `dir` as folder `name` if it holds a `cur/` directory.
    fn add_if_folder(&mut self, name: String, dir: &Path) {
        if dir.join("cur").is_dir() {
            self.folders.push((name, dir.to_path_buf()));
        }
    }

    /// INBOX and, except for Maildir++, the folders nested inside it.
    fn inbox(&mut self) -> Result<()> {
        if self.inbox_done {
            return Ok(());
        }
        self.inbox_done = true;
        let inbox = self.inbox.clone();
        self.add_if_folder("INBOX".to_owned(), &inbox);
        if inbox.is_dir() {
            self.recurse(&inbox, "INBOX/", 1)?;
        }
        Ok(())
    }

    /// Lists the subdirectories of `dir`, whose folders are named `prefix`
    /// followed by the entry name. `depth` 0 is the store's `Path` itself,
    /// which is not a folder; deeper levels are inside a (possible) folder.
    fn recurse(&mut self, dir: &Path, prefix: &str, depth: usize) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            // Gone between listing its parent and now: nothing to count.
            Err(err) if depth > 0 && err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(Error::io(format!("Cannot list {}", dir.display()), err)),
        };
        for entry in entries {
            let entry =
                entry.map_err(|err| Error::io(format!("Cannot list {}", dir.display()), err))?;
            let file_name = entry.file_name();
            if matches!(file_name.to_str(), Some("cur" | "new" | "tmp")) {
                continue;
            }
            let child = entry.path();
            if !is_dir(&entry) {
                continue;
            }
            if child == self.inbox {
                // Inbox nested into Path: listed under the name INBOX.
                self.inbox()?;
                continue;
            }
            if self.path.as_ref() == Some(&child) {
                // Path nested into Inbox: listed from Path with plain names.
                continue;
            }
            let bytes = file_name.as_encoded_bytes();
            let name = match self.layout.subfolders {
                SubFolders::Legacy => match bytes.strip_prefix(b".") {
                    // Legacy marks subfolders with a dot, top-level ones not.
                    Some(rest) if depth > 0 => rest,
                    None if depth == 0 => bytes,
                    _ => continue,
                },
                // Dot directories (.notmuch, .git) are not mailboxes.
                _ if bytes.starts_with(b".") => continue,
                _ => bytes,
            };
            if name.is_empty() {
                continue;
            }
            // mbsync ignores a folder called INBOX inside Path: the name
            // belongs to the Inbox directory.
            if depth == 0 && name == b"INBOX" {
                continue;
            }
            let name = format!("{prefix}{}", lossy(name));
            self.add_if_folder(name.clone(), &child);
            self.recurse(&child, &format!("{name}/"), depth + 1)?;
        }
        Ok(())
    }

    /// Maildir++: INBOX is the root, every other folder a dot directory in
    /// it (`.top.sub` is `top/sub`, `..sub` is `INBOX/sub`).
    fn maildir_plus_plus(&mut self) -> Result<()> {
        let root = self.inbox.clone();
        self.add_if_folder("INBOX".to_owned(), &root);
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(Error::io(format!("Cannot list {}", root.display()), err)),
        };
        for entry in entries {
            let entry =
                entry.map_err(|err| Error::io(format!("Cannot list {}", root.display()), err))?;
            let file_name = entry.file_name();
            let Some(rest) = file_name.as_encoded_bytes().strip_prefix(b".") else {
                continue;
            };
            let name = match rest.strip_prefix(b".") {
                Some(sub) if !sub.is_empty() => format!("INBOX/{}", lossy(sub).replace('.', "/")),
                Some(_) => continue,
                // mbsync ignores these: the name INBOX belongs to the root.
                None if rest.is_empty() || rest == b"INBOX" || rest.starts_with(b"INBOX.") => {
                    continue
                }
                None => lossy(rest).replace('.', "/"),
            };
            if !is_dir(&entry) {
                continue;
            }
            self.add_if_folder(name, &entry.path());
        }
        Ok(())
    }
}

/// Whether an entry is a directory, following symlinks as mbsync does. The
/// type comes from `readdir` itself on most file systems, so this only
/// costs a `stat` for symlinks.
fn is_dir(entry: &std::fs::DirEntry) -> bool {
    match entry.file_type() {
        Ok(kind) if kind.is_symlink() => entry.path().is_dir(),
        Ok(kind) => kind.is_dir(),
        Err(_) => false,
    }
}

/// A name from disk as text; bytes that are not UTF-8 become U+FFFD.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbsync::config::MbsyncConfig;
    use std::fs;

    /// Makes a Maildir folder (cur, new, tmp) at `dir`.
    fn folder(dir: &Path) {
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
    }

    /// Puts messages into `dir/sub`, one per name.
    fn messages(dir: &Path, sub: &str, names: &[&str]) {
        for name in names {
            fs::write(dir.join(sub).join(name), "Subject: x\n\nbody\n").unwrap();
        }
    }

    fn names(folders: &[(String, PathBuf)]) -> Vec<&str> {
        folders.iter().map(|(name, _)| name.as_str()).collect()
    }

    fn layout(path: Option<&Path>, inbox: &Path, subfolders: SubFolders) -> Layout {
        Layout {
            path: path.map(Path::to_path_buf),
            inbox: inbox.to_path_buf(),
            subfolders,
            flatten: None,
        }
    }

    #[test]
    fn info_part_is_found_after_either_delimiter() {
        assert_eq!(info_flags(b"1700000000.1_2.host,U=7:2,FS"), b"FS");
        assert_eq!(info_flags(b"1700000000.1_2.host,U=7!2,S"), b"S");
        assert_eq!(info_flags(b"1700000000.1_2.host,U=7:2,"), b"");
        assert_eq!(info_flags(b"1700000000.1_2.host,U=7"), b"");
        assert_eq!(info_flags(b"1700000000.host"), b"");
        assert_eq!(info_flags(b"1700000000.host:1,S"), b"");
        assert_eq!(info_flags(b",S"), b"");
    }

    #[test]
    fn flags_and_new_messages_are_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("box");
        folder(&dir);
        messages(
            &dir,
            "cur",
            &[
                "1.a,U=1:2,S",      // read
                "2.a,U=2:2,FS",     // read, flagged
                "3.a,U=3:2,",       // unread
                "4.a,U=4:2,F",      // unread, flagged
                "5.a,U=5!2,RS",     // read, `!` delimiter
                "6.a,U=6",          // no info: unread
                "7.a,U=7:2,ST",     // trashed
                "8.a,U=8:2,FT",     // trashed, flagged
                ".uidvalidity",     // not a message
                ".mbsyncstate.new", // not a message
            ],
        );
        messages(&dir, "new", &["9.a", "10.a,U=10:2,S", "11.a:2,F"]);
        messages(&dir, "tmp", &["12.a", "13.a"]);
        fs::write(dir.join(".mbsyncstate"), "").unwrap();
        let counts = count_folder("Box", &dir).unwrap();
        assert_eq!(
            counts,
            FolderCounts {
                folder: "Box".into(),
                total: 9,
                unread: 6,
                flagged: 3,
                trashed: 2,
                store: None,
            }
        );
    }

    #[test]
    fn missing_folder_is_an_error_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let err = count_folder("X", &missing).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert_eq!(
            err.message,
            format!("Maildir folder {} does not exist", missing.display())
        );

        let plain = tmp.path().join("plain");
        fs::create_dir(&plain).unwrap();
        let err = count_folder("X", &plain).unwrap_err();
        assert_eq!(
            err.message,
            format!(
                "{} is not a Maildir folder (it has no cur/)",
                plain.display()
            )
        );

        // new/ may be missing: mbsync recreates it.
        let no_new = tmp.path().join("no-new");
        fs::create_dir_all(no_new.join("cur")).unwrap();
        messages(&no_new, "cur", &["1.a:2,"]);
        assert_eq!(count_folder("X", &no_new).unwrap().unread, 1);
    }

    #[test]
    fn missing_store_path_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("Mail");
        let err = list_folders(&layout(
            Some(&path),
            &tmp.path().join("inbox"),
            SubFolders::Verbatim,
        ))
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains(&path.display().to_string()), "{err}");
        // A missing Inbox alone is fine: nothing synced yet.
        fs::create_dir(&path).unwrap();
        let empty = list_folders(&layout(
            Some(&path),
            &tmp.path().join("inbox"),
            SubFolders::Verbatim,
        ));
        assert_eq!(empty.unwrap(), vec![]);
    }

    #[test]
    fn verbatim_tree_with_nested_inbox() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("Mail");
        folder(&root.join("Inbox"));
        folder(&root.join("Inbox/Receipts"));
        folder(&root.join("Archive"));
        folder(&root.join("Archive/2024"));
        folder(&root.join("Archive/2024/Q1"));
        // A directory that is no folder still holds folders.
        folder(&root.join("Lists/rust"));
        folder(&root.join("Entw&APw-rfe"));
        // Ignored: INBOX in Path, dot directories, files.
        folder(&root.join("INBOX"));
        folder(&root.join(".notmuch/xapian"));
        fs::write(root.join(".mbsyncstate"), "").unwrap();
        messages(&root.join("Archive/2024"), "cur", &["1.a:2,S", "2.a:2,"]);
        messages(&root.join("Inbox"), "new", &["3.a"]);

        // Path written with a trailing slash, as mbsync wants it.
        let path = PathBuf::from(format!("{}/", root.display()));
        let l = layout(Some(&path), &root.join("Inbox"), SubFolders::Verbatim);
        let folders = list_folders(&l).unwrap();
        assert_eq!(
            names(&folders),
            [
                "INBOX",
                "Archive",
                "Archive/2024",
                "Archive/2024/Q1",
                "Entw&APw-rfe",
                "INBOX/Receipts",
                "Lists/rust",
            ]
        );
        assert_eq!(folders[2].1, root.join("Archive/2024"));
        let counts = count_layout(&l).unwrap();
        assert_eq!((counts[0].total, counts[0].unread), (1, 1));
        assert_eq!((counts[2].total, counts[2].unread), (2, 1));
    }

    #[test]
    fn verbatim_path_nested_in_inbox() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = tmp.path().join("Maildir");
        folder(&inbox);
        folder(&inbox.join("Sub"));
        folder(&inbox.join("folders/Sent"));
        let l = layout(Some(&inbox.join("folders")), &inbox, SubFolders::Verbatim);
        assert_eq!(
            names(&list_folders(&l).unwrap()),
            ["INBOX", "INBOX/Sub", "Sent"]
        );
    }

    #[test]
    fn legacy_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("Mail");
        folder(&root.join("INBOX"));
        folder(&root.join("INBOX/.Receipts"));
        folder(&root.join("top"));
        folder(&root.join("top/.sub"));
        folder(&root.join("top/.sub/.subsub"));
        // Not folders in Legacy: a plain subdirectory inside a folder and a
        // dot directory at the top.
        folder(&root.join("top/plain"));
        folder(&root.join(".hidden"));
        let l = layout(Some(&root), &root.join("INBOX"), SubFolders::Legacy);
        assert_eq!(
            names(&list_folders(&l).unwrap()),
            [
                "INBOX",
                "INBOX/Receipts",
                "top",
                "top/sub",
                "top/sub/subsub"
            ]
        );
    }

    #[test]
    fn maildir_plus_plus_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("Maildir");
        folder(&root);
        folder(&root.join(".top"));
        folder(&root.join(".top.sub"));
        folder(&root.join("..Receipts"));
        folder(&root.join("..Receipts.2024"));
        // Ignored: INBOX as a subfolder name, non-dot directories, files.
        folder(&root.join(".INBOX"));
        folder(&root.join("plain"));
        fs::write(root.join(".uidvalidity"), "1\n").unwrap();
        messages(&root.join(".top.sub"), "cur", &["1.a:2,F"]);
        let l = layout(None, &root, SubFolders::MaildirPlusPlus);
        let folders = list_folders(&l).unwrap();
        assert_eq!(
            names(&folders),
            [
                "INBOX",
                "INBOX/Receipts",
                "INBOX/Receipts/2024",
                "top",
                "top/sub"
            ]
        );
        let counts = count_layout(&l).unwrap();
        assert_eq!(counts[4].flagged, 1);
    }

    #[test]
    fn flatten_maps_the_delimiter_to_slashes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("Mail");
        folder(&root.join("inbox"));
        folder(&root.join("Archive.2024"));
        folder(&root.join("Archive"));
        let mut l = layout(Some(&root), &root.join("inbox"), SubFolders::Unset);
        l.flatten = Some(".".into());
        assert_eq!(
            names(&list_folders(&l).unwrap()),
            ["INBOX", "Archive", "Archive/2024"]
        );
    }

    #[test]
    fn layout_from_a_parsed_store() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("Mail");
        folder(&root.join("Inbox"));
        folder(&root.join("Work/Projects"));
        let text = format!(
            "MaildirStore local\nPath {}/\nInbox {}/Inbox\nSubFolders verbatim\n\n\
             MaildirStore odd\nPath {}/\nSubFolders Nested\n",
            root.display(),
            root.display(),
            root.display()
        );
        let cfg = MbsyncConfig::parse(&text, Path::new("mbsyncrc")).unwrap();
        let counts = count_store(&cfg.maildir_stores[0]).unwrap();
        let folders: Vec<_> = counts.iter().map(|c| c.folder.as_str()).collect();
        assert_eq!(folders, ["INBOX", "Work/Projects"]);
        let err = count_store(&cfg.maildir_stores[1]).unwrap_err();
        assert_eq!(
            err.message,
            "MaildirStore 'odd': unknown SubFolders style 'Nested' (expected Verbatim, \
             Maildir++ or Legacy)"
        );
    }

    #[test]
    fn unchanged_folders_are_not_read_again_and_recent_ones_always_are() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("box");
        folder(&dir);
        let add = |sub: &str, n: u32| {
            fs::File::create(dir.join(sub).join(format!("17.{n}_1.host,U={n}:2,S"))).unwrap();
        };
        let not_read = |_: &str, _: &Path| -> Result<FolderCounts> { panic!("read again") };
        add("cur", 1);
        add("cur", 2);
        // Taken after the changes: a stamp is never ahead of the clock, but
        // one taken before them would be behind a tick that came between.
        let later = SystemTime::now() + SETTLE;
        // Counted once the directories have settled: remembered, so the
        // next count does not read, and only takes the new name.
        assert_eq!(
            count_with("box", &dir, later, read_folder).unwrap().total,
            2
        );
        let again = count_with("renamed", &dir, later, not_read).unwrap();
        assert_eq!((again.folder.as_str(), again.total), ("renamed", 2));

        // A change gives the directory a new stamp: read again.
        add("new", 3);
        assert_eq!(
            count_with("box", &dir, later, read_folder).unwrap().total,
            3
        );

        // Counted while a change is recent: read, and not remembered, since a
        // second change within the same clock tick would not move the stamp.
        add("cur", 4);
        assert_eq!(count_folder("box", &dir).unwrap().total, 4);
        let mut reads = 0;
        count_with("box", &dir, SystemTime::now(), |name, dir| {
            reads += 1;
            read_folder(name, dir)
        })
        .unwrap();
        assert_eq!(reads, 1);
    }

    /// Builds a 100,000-message folder and prints how long a count takes.
    /// No timed assertion: the benchmark harness measures it.
    #[test]
    #[ignore = "spends 10-25 s creating files; `make bench` measures 100k counts instead"]
    fn count_100k_messages() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("big");
        folder(&dir);
        for i in 0..100_000u32 {
            let (sub, info) = match i % 10 {
                0 => ("new", ""),
                1 => ("cur", ":2,F"),
                2 => ("cur", ":2,"),
                _ => ("cur", ":2,S"),
            };
            let name = format!("1700000000.{i}_1.host,U={i}{info}");
            fs::File::create(dir.join(sub).join(name)).unwrap();
        }
        // The best of a few runs: the first warms the directory cache, as a
        // status refresh would find it, and the machine may be busy.
        let mut best = std::time::Duration::MAX;
        let mut counts = None;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            counts = Some(count_folder("big", &dir).unwrap());
            best = best.min(start.elapsed());
        }
        eprintln!("count_folder: 100000 messages in {best:?} (best of 5)");
        let counts = counts.unwrap();
        assert_eq!(counts.total, 100_000);
        assert_eq!(counts.unread, 30_000);
        assert_eq!(counts.flagged, 10_000);
    }
}
