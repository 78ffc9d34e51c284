//! Lossless repair of a mailbox whose server UIDVALIDITY genuinely changed.
//!
//! mbsync refuses to sync such a box, and the usual advice (delete the
//! sync state, or blank `.uidvalidity`) duplicates or loses mail. The
//! method here keeps everything:
//!
//! 1. move the local folder aside to a backup outside the MaildirStore
//!    (inside it, `Patterns *` would sync the backup as a new folder);
//! 2. sync the box fresh into an empty folder;
//! 3. copy back every backed-up message whose Message-ID the fresh copy
//!    lacks (into `cur/`, without mbsync's `,U=` so it counts as new);
//! 4. sync the box again, which uploads those messages (unless the channel
//!    does not upload, `Sync Pull`: then they stay in the local folder).
//!
//! The backup is kept and reported. This module holds the file work and the
//! plan; the manager runs mbsync between the steps under the channel lock.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::mbsync::config::MbsyncConfig;

/// The channel and box named by mbsync's UIDVALIDITY error line, e.g.
/// `Error: channel demo, far side box Work: UIDVALIDITY genuinely changed (at UID 1).`
/// (1.4), `Error: channel demo, far side box Work (at UID 1): UIDVALIDITY
/// genuinely changed.` (1.5) or `Error: channel demo, master Work: ...`
/// (1.3, which names the sides master and slave, without "box").
pub fn parse_error_line(line: &str) -> Option<(String, String)> {
    parse_sided(line).map(|(channel, _, name)| (channel, name))
}

/// [`parse_error_line`], and whether the line is about the far side.
fn parse_sided(line: &str) -> Option<(String, bool, String)> {
    let rest = &line[line.find("channel ")? + "channel ".len()..];
    let (channel, rest) = rest.split_once(", ")?;
    let (far, rest) = [
        ("far side box ", true),
        ("near side box ", false),
        ("master ", true),
        ("slave ", false),
    ]
    .iter()
    .find_map(|(side, far)| Some((*far, rest.strip_prefix(side)?)))?;
    // 1.5 ends the box with ` (at UID n)`, which a name with `: ` in it
    // (`Re: old`) cannot hide; else the box ends at the first `: `.
    let at_uid = rest.match_indices(" (at UID ").find(|(i, m)| {
        let tail = &rest[i + m.len()..];
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && tail[digits..].starts_with("): ")
    });
    let name = match at_uid {
        Some((i, _)) => &rest[..i],
        None => rest.split_once(": ")?.0,
    };
    (!channel.is_empty() && !name.is_empty()).then(|| (channel.to_string(), far, name.to_string()))
}

/// The channel and box of error `line` ([`parse_error_line`]), the box as
/// the channel names it: what `chan:BOX` and [`plan`] take. mbsync names
/// the box as the side the line is about does, under that side's prefix
/// (`far side box [Gmail]/Sent` for `Far :r:"[Gmail]/"`, `near side box
/// mine/Work` for `Near :l:mine/`), which would be doubled in `chan:BOX`
/// and in the local folder. A channel without Patterns has one box, the
/// one its far side names, whatever its near side calls it.
pub fn channel_box(cfg: Option<&MbsyncConfig>, line: &str) -> Option<(String, String)> {
    let (channel, far, name) = parse_sided(line)?;
    let Some(chan) = cfg.and_then(|c| c.channel(&channel)) else {
        return Some((channel, name));
    };
    let mailbox = if chan.patterns.is_empty() {
        match chan.far_mailbox() {
            "" => "INBOX".to_string(),
            b => b.to_string(),
        }
    } else {
        let spec = if far { &chan.far } else { &chan.near };
        let prefix = crate::mbsync::config::split_spec(spec).map_or("", |(_, p)| p);
        match name.strip_prefix(prefix) {
            Some(rest) if !rest.is_empty() => rest.to_string(),
            _ => name,
        }
    };
    Some((channel, mailbox))
}

/// What made the box named by error `line` need the repair, to begin a
/// message with: the server renumbered it, or a mail client moved files
/// into it that keep mbsync's `,U=` of another folder (see
/// [`crate::mbsync::errors::is_maildir_uid_error`]).
pub fn why(channel: &str, mailbox: &str, line: &str) -> String {
    if crate::mbsync::errors::is_maildir_uid_error(line) {
        format!(
            "local messages of {channel}:{mailbox} clash with mbsync's numbering (a mail client \
             moved them there and kept mbsync's ,U= in their file names)"
        )
    } else {
        format!("the server renumbered {channel}:{mailbox} (UIDVALIDITY changed)")
    }
}

/// The reason a [`Report`] gives, in a few words, for error `line`.
pub fn reason(line: &str) -> &'static str {
    if crate::mbsync::errors::is_maildir_uid_error(line) {
        "its local messages clashed with mbsync's numbering"
    } else {
        "its UIDVALIDITY changed"
    }
}

/// Where the repair works for one box.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub channel: String,
    /// The box as mbsync names it (`INBOX`, `Work/Projects`).
    pub mailbox: String,
    /// The local Maildir folder of the box.
    pub local: PathBuf,
    /// Where the local folder is moved to.
    pub backup: PathBuf,
}

/// What a repair did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub channel: String,
    pub mailbox: String,
    /// Why it needed the repair (see [`reason`]).
    pub reason: &'static str,
    pub backup: PathBuf,
    /// Messages the fresh sync fetched from the server into the new folder.
    pub fetched: u64,
    /// Messages of the backup that the server lacked, put back in the
    /// local folder.
    pub restored: usize,
    /// Messages the sync after that uploaded: `restored`, unless the
    /// channel does not upload (`Sync Pull`), when they stay only here.
    pub uploaded: u64,
    /// Messages in the backup.
    pub backed_up: usize,
}

/// What became of the restored messages of `r`, for its messages: `N of M
/// backed-up messages were only here and ...`.
pub fn restored_text(r: &Report) -> String {
    let (restored, uploaded) = (r.restored as u64, r.uploaded.min(r.restored as u64));
    let fate = if uploaded == restored {
        "went back to the server".to_string()
    } else if uploaded == 0 {
        format!(
            "stay only here (channel {} does not upload them, as with Sync Pull)",
            r.channel
        )
    } else {
        format!(
            "{uploaded} went back to the server, {} stay only here",
            restored - uploaded
        )
    };
    format!(
        "{} of {} backed-up messages were only here and {fate}",
        r.restored, r.backed_up
    )
}

/// Works out the local folder of `mailbox` and a backup path under
/// `backup_root`. Refuses layouts where moving the folder would not move
/// mbsync's state with it (the state would then mislead the fresh sync).
pub fn plan(
    cfg: &MbsyncConfig,
    channel: &str,
    mailbox: &str,
    backup_root: &Path,
    stamp: &str,
) -> Result<Plan> {
    let refuse = |why: String| {
        Error::new(
            ErrorKind::Config,
            format!("cannot repair {channel}:{mailbox}: {why}"),
        )
    };
    let chan = cfg
        .channel(channel)
        .ok_or_else(|| refuse(format!("no channel {channel:?} in {}", cfg.path.display())))?;
    let text = crate::files::read_regular_text(&cfg.path, crate::files::MAX_CONFIG_BYTES)
        .map_err(|e| Error::io(format!("cannot read {}", cfg.path.display()), e))?;
    let state: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let key = words.next()?;
            key.eq_ignore_ascii_case("SyncState")
                .then(|| words.collect::<Vec<_>>().join(" "))
        })
        .collect();
    if state.is_empty() || state.iter().any(|v| v.trim_matches('"') != "*") {
        return Err(refuse(
            "the repair needs `SyncState *` (state kept inside each folder) in the mbsyncrc".into(),
        ));
    }
    let (store, side_box) = cfg
        .maildir_side(chan)
        .ok_or_else(|| refuse("the channel has no Maildir side".into()))?;
    // A channel without Patterns syncs one box, named on each side by the
    // channel itself (none: INBOX): the local folder is the one named on
    // its Maildir side, whatever the server calls the box.
    let here = if chan.patterns.is_empty() {
        let far_box = match chan.far_mailbox() {
            "" => "INBOX",
            b => b,
        };
        if mailbox != far_box {
            return Err(refuse(format!(
                "channel {channel:?} syncs only its box {far_box}"
            )));
        }
        if side_box.is_empty() {
            "INBOX".to_string()
        } else {
            side_box.to_string()
        }
    } else {
        // A prefix on the Maildir side (`Near :local:gmail/`) goes before
        // every box, INBOX too: mbsync keeps them all under it.
        format!("{side_box}{mailbox}")
    };
    let here = here.as_str();
    let inbox = || {
        store
            .inbox
            .clone()
            .ok_or_else(|| refuse(format!("MaildirStore {} has no Inbox", store.name)))
    };
    let layout = store.subfolders.as_deref().unwrap_or("");
    let local = if here == "INBOX" {
        inbox()?
    } else if layout.eq_ignore_ascii_case("Maildir++") {
        // mbsync refuses `Path` with Maildir++: every other folder is a
        // dot directory in the Inbox, `/` written `.` (`INBOX/sub` is
        // `..sub`).
        let name = here
            .strip_prefix("INBOX")
            .filter(|rest| rest.starts_with('/'))
            .unwrap_or(here);
        let mut p = inbox()?.into_os_string();
        p.push(format!("/.{}", name.replace('/', ".")));
        PathBuf::from(p)
    } else if let Some(sub) = here
        .strip_prefix("INBOX/")
        .filter(|_| layout.eq_ignore_ascii_case("Verbatim"))
    {
        // mbsync keeps a box under INBOX in the Inbox, wherever that is:
        // `INBOX/sub` is Inbox/sub, which is Path/INBOX/sub only when the
        // Inbox is Path/INBOX.
        let mut p = inbox()?.into_os_string();
        p.push(format!("/{sub}"));
        PathBuf::from(p)
    } else {
        let path = store
            .path
            .as_ref()
            .ok_or_else(|| refuse(format!("MaildirStore {} has no Path", store.name)))?;
        if !layout.eq_ignore_ascii_case("Verbatim") && here.contains('/') {
            return Err(refuse(format!(
                "nested folders with SubFolders {layout:?} are not supported; use Verbatim or Maildir++"
            )));
        }
        let mut p = path.clone().into_os_string();
        p.push(here);
        PathBuf::from(p)
    };
    if [mailbox, here]
        .iter()
        .any(|b| b.split('/').any(|part| part == ".." || part == ".") || b.starts_with('/'))
    {
        return Err(refuse("the box name is not a plain folder name".into()));
    }
    // Only a folder synced before can have a UIDVALIDITY to repair. The
    // fresh sync of a name with no local folder would create it, on the
    // server too when the channel says `Create Both`.
    if !local.join("cur").is_dir() {
        return Err(refuse(format!(
            "there is no local folder {} to repair",
            local.display()
        )));
    }
    let backup = backup_root.join(backup_name(channel, mailbox, stamp));
    if let Some(root) = &store.path {
        if backup.starts_with(root) {
            return Err(refuse(format!(
                "the backup folder {} is inside the MaildirStore {}",
                backup.display(),
                root.display()
            )));
        }
    }
    Ok(Plan {
        channel: channel.to_string(),
        mailbox: mailbox.to_string(),
        local,
        backup,
    })
}

/// The backup folder's name, `CHANNEL-FOLDER-STAMP`: the folder with every
/// character but letters, digits and `_` written `%XX` (its UTF-8 bytes),
/// so that two folders never share a name (`Work/A` and `Work_A` did when
/// both became `Work_A`), nor do two channels (the folder has no `-`).
fn backup_name(channel: &str, mailbox: &str, stamp: &str) -> String {
    let mut safe = String::with_capacity(mailbox.len());
    for c in mailbox.chars() {
        if c.is_alphanumeric() || c == '_' {
            safe.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                safe.push_str(&format!("%{b:02X}"));
            }
        }
    }
    format!("{channel}-{safe}-{stamp}")
}

/// Step 1: moves the local folder to the backup and leaves an empty Maildir
/// in its place. Returns how many messages were backed up.
pub fn move_aside(plan: &Plan) -> Result<usize> {
    let ctx = |what: &str| {
        format!(
            "cannot {what} for the repair of {}:{}",
            plan.channel, plan.mailbox
        )
    };
    if let Some(parent) = plan.backup.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| Error::io(ctx("create the backup folder"), e))?;
    }
    if plan.backup.exists() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("backup folder {} already exists", plan.backup.display()),
        ));
    }
    let count = if plan.local.exists() {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&plan.backup)
            .map_err(|e| Error::io(ctx("create the backup folder"), e))?;
        move_box(&plan.local, &plan.backup, false)?;
        messages(&plan.backup).len()
    } else {
        0
    };
    for sub in ["cur", "new", "tmp"] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(plan.local.join(sub))
            .map_err(|e| Error::io(ctx("create the fresh folder"), e))?;
    }
    Ok(count)
}

/// Moves the box in `from` to `to`: its Maildir parts and mbsync's files
/// (state, .uidvalidity). Sub-folders (SubFolders Verbatim keeps
/// `Work/Projects` inside `Work`) are other boxes and stay, unless `all`
/// (`from` is a backup, which holds nothing else).
fn move_box(from: &Path, to: &Path, all: bool) -> Result<()> {
    let entries =
        fs::read_dir(from).map_err(|e| Error::io(format!("cannot read {}", from.display()), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !all && is_dir && !["cur", "new", "tmp"].iter().any(|m| name == *m) {
            continue;
        }
        fs::rename(entry.path(), to.join(&name)).map_err(|e| {
            Error::io(
                format!(
                    "cannot move {} to {} (they must be on one file system)",
                    entry.path().display(),
                    to.display()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// Undoes step 1 after the fresh sync failed or was cancelled: the box as
/// it was (old state, old messages) goes back in place, so that the next
/// sync finds the changed UIDVALIDITY again and the repair starts over,
/// instead of leaving the messages only in the backup. What the fresh sync
/// had written moves to the returned folder beside the backup (kept, never
/// deleted). The box must be locked, as for the repair.
pub fn put_back(plan: &Plan) -> Result<PathBuf> {
    let mut partial = plan.backup.clone().into_os_string();
    partial.push("-partial");
    let partial = PathBuf::from(partial);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&partial)
        .map_err(|e| Error::io(format!("cannot create {}", partial.display()), e))?;
    move_box(&plan.local, &partial, false)?;
    if plan.backup.exists() {
        move_box(&plan.backup, &plan.local, true)?;
        // Empty now; if not, it stays and says why.
        let _ = fs::remove_dir(&plan.backup);
    }
    Ok(partial)
}

/// Step 3: copies backed-up messages whose Message-ID the fresh folder lacks
/// into its `cur/`; returns how many. Messages without a Message-ID are
/// compared by content.
pub fn restore_missing(plan: &Plan) -> Result<usize> {
    let fresh = messages(&plan.local);
    let mut have: HashSet<String> = fresh.iter().filter_map(|p| identity(p)).collect();
    let mut restored = 0;
    for (i, path) in messages(&plan.backup).iter().enumerate() {
        // A message that cannot be told apart is restored: at worst the
        // server gets a second copy, never none.
        if identity(path).is_some_and(|id| !have.insert(id)) {
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("msg");
        let name = new_name(name, i);
        // Written in tmp/ and then moved to cur/, as Maildir wants: a mail
        // client reading the folder meanwhile never sees half a message.
        let (partial, target) = (
            plan.local.join("tmp").join(&name),
            plan.local.join("cur").join(&name),
        );
        let copied = fs::create_dir_all(plan.local.join("tmp"))
            .and_then(|()| fs::copy(path, &partial))
            .and_then(|_| fs::rename(&partial, &target));
        if let Err(e) = copied {
            let _ = fs::remove_file(&partial);
            return Err(Error::io(
                format!(
                    "cannot restore {} to {} (the backup is kept in {})",
                    path.display(),
                    target.display(),
                    plan.backup.display()
                ),
                e,
            ));
        }
        restored += 1;
    }
    Ok(restored)
}

/// Every message file of a Maildir folder (`cur/` and `new/`).
fn messages(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["cur", "new"] {
        if let Ok(entries) = fs::read_dir(dir.join(sub)) {
            out.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .map(|e| e.path()),
            );
        }
    }
    out.sort();
    out
}

/// The Message-ID (case-insensitive header, folded lines joined), or a
/// content hash for messages without one (or with an empty one). Headers
/// are read as bytes: old mail often has raw Latin-1 in `From:` or
/// `Subject:`, which must not hide the Message-ID after it. `None` only
/// when the file cannot be read.
fn identity(path: &Path) -> Option<String> {
    let file = fs::File::open(path).ok()?;
    let mut reader = BufReader::new(file);
    let mut raw = Vec::new();
    let mut current: Option<String> = None;
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw).ok()? == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&raw);
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if l.starts_with([' ', '\t']) {
            if let Some(c) = current.as_mut() {
                c.push_str(l.trim());
            }
            continue;
        }
        if let Some(id) = current.take().filter(|id| !id.is_empty()) {
            return Some(id);
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("message-id") {
                current = Some(v.trim().to_string());
            }
        }
    }
    if let Some(id) = current.filter(|id| !id.is_empty()) {
        return Some(id);
    }
    let bytes = fs::read(path).ok()?;
    // FNV-1a: a stable fingerprint for messages without an ID.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    });
    Some(format!("<content-{hash:016x}>"))
}

/// A fresh Maildir name for a restored message: unique, flags kept, and no
/// `,U=` (mbsync treats a file with its old UID as already paired).
fn new_name(old: &str, n: usize) -> String {
    let flags = old.split_once(":2,").map(|(_, f)| f).unwrap_or("");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{now}.R{n}P{}.himalaya-sync-repair:2,{flags}",
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_never_meet() {
        assert_eq!(backup_name("demo", "Work/A", "1"), "demo-Work%2FA-1");
        assert_eq!(backup_name("demo", "Work_A", "1"), "demo-Work_A-1");
        assert_eq!(backup_name("a-b", "c", "1"), "a-b-c-1");
        assert_eq!(backup_name("a", "b-c", "1"), "a-b%2Dc-1");
        assert_eq!(backup_name("d", "Café 100%", "1"), "d-Café%20100%25-1");
    }

    #[test]
    fn error_lines_name_channel_and_box() {
        for (line, named) in crate::mbsync::errors::UIDVALIDITY_LINES {
            let named = named.map(|(c, b)| (c.to_owned(), b.to_owned()));
            assert_eq!(parse_error_line(line), named, "{line}");
        }
        assert_eq!(parse_error_line("Error: something else"), None);
    }

    /// mbsync prints a box under the prefix of the side it speaks of.
    #[test]
    fn error_lines_name_the_box_as_the_channel_does() {
        let text = "IMAPStore remote\nHost localhost\nUser u\n\n\
                    MaildirStore local\nPath /m/\nInbox /m/INBOX\nSubFolders Verbatim\n\n\
                    Channel g\nFar :remote:\"[Gmail]/\"\nNear :local:mine/\nPatterns *\n\n\
                    Channel one\nFar :remote:Work\nNear :local:Mine\n";
        let cfg = MbsyncConfig::parse(text, Path::new("/rc")).unwrap();
        let named = |line: &str| channel_box(Some(&cfg), line).unwrap().1;
        for (line, mailbox) in [
            (
                "Error: channel g, far side box [Gmail]/Sent: UIDVALIDITY genuinely changed (at UID 1).",
                "Sent",
            ),
            (
                "Error: channel g, near side box mine/Work: Maildir error: duplicate UID 2.",
                "Work",
            ),
            (
                "Error: channel g, master [Gmail]/A/B: UIDVALIDITY genuinely changed (at UID 1).",
                "A/B",
            ),
            (
                "Error: channel g, far side box INBOX (at UID 1): UIDVALIDITY genuinely changed.",
                "INBOX",
            ),
            (
                "Error: channel one, near side box Mine: Maildir error: UID 9 is beyond highest \
                 assigned UID 2.",
                "Work",
            ),
        ] {
            assert_eq!(named(line), mailbox, "{line}");
        }
        let line =
            "Error: channel other, far side box X/Y: UIDVALIDITY genuinely changed (at UID 1).";
        assert_eq!(
            channel_box(Some(&cfg), line),
            Some(("other".into(), "X/Y".into()))
        );
    }

    #[test]
    fn restored_messages_are_said_to_reach_the_server_only_when_uploaded() {
        let report = |restored, uploaded| Report {
            channel: "demo".into(),
            mailbox: "Work".into(),
            reason: "its UIDVALIDITY changed",
            backup: PathBuf::from("/b"),
            fetched: 5,
            restored,
            uploaded,
            backed_up: 6,
        };
        assert_eq!(
            restored_text(&report(2, 2)),
            "2 of 6 backed-up messages were only here and went back to the server"
        );
        assert_eq!(
            restored_text(&report(2, 0)),
            "2 of 6 backed-up messages were only here and stay only here (channel demo does \
             not upload them, as with Sync Pull)"
        );
        assert_eq!(
            restored_text(&report(2, 1)),
            "2 of 6 backed-up messages were only here and 1 went back to the server, 1 stay \
             only here"
        );
    }

    fn write_msg(dir: &Path, sub: &str, name: &str, id: Option<&str>) {
        fs::create_dir_all(dir.join(sub)).unwrap();
        let head = id.map(|i| format!("Message-ID: {i}\n")).unwrap_or_default();
        fs::write(
            dir.join(sub).join(name),
            format!("{head}Subject: s {name}\n\nbody {name}\n"),
        )
        .unwrap();
    }

    /// The repair of `demo:Work` with its mail and state under `root`.
    fn work_plan(root: &Path) -> Plan {
        Plan {
            channel: "demo".into(),
            mailbox: "Work".into(),
            local: root.join("mail/Work"),
            backup: root.join("state/repair/demo-Work-1"),
        }
    }

    #[test]
    fn moves_aside_and_restores_only_what_is_missing() {
        let root = tempfile::tempdir().unwrap();
        let plan = work_plan(root.path());
        write_msg(&plan.local, "cur", "1.a,U=1:2,S", Some("<a@x>"));
        write_msg(&plan.local, "cur", "2.b,U=2:2,FS", Some("<b@x>"));
        write_msg(&plan.local, "new", "3.local", Some("<local-only@x>"));
        write_msg(&plan.local, "new", "4.noid", None);
        fs::write(plan.local.join(".mbsyncstate"), "state").unwrap();
        write_msg(
            &plan.local.join("Projects"),
            "cur",
            "5.p,U=1:2,",
            Some("<p@x>"),
        );
        assert_eq!(move_aside(&plan).unwrap(), 4);
        assert!(
            plan.local.join("Projects/cur/5.p,U=1:2,").exists(),
            "sub-folders stay"
        );
        assert!(
            plan.backup.join(".mbsyncstate").exists(),
            "state moved with the folder"
        );
        assert!(plan.local.join("cur").is_dir() && !plan.local.join(".mbsyncstate").exists());
        // The fresh sync brought a and b back (under new names).
        write_msg(&plan.local, "cur", "9.a,U=7:2,S", Some("<a@x>"));
        write_msg(&plan.local, "cur", "9.b,U=8:2,FS", Some("<b@x>"));
        assert_eq!(restore_missing(&plan).unwrap(), 2);
        let names: Vec<String> = messages(&plan.local)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4);
        assert!(names
            .iter()
            .filter(|n| n.contains("repair"))
            .all(|n| !n.contains(",U=")));
        // Running it again restores nothing more.
        assert_eq!(restore_missing(&plan).unwrap(), 0);
        assert!(plan.backup.exists(), "the backup is kept");
    }

    #[test]
    fn a_failed_fresh_sync_puts_the_folder_back_and_keeps_what_it_wrote() {
        let root = tempfile::tempdir().unwrap();
        let plan = work_plan(root.path());
        write_msg(&plan.local, "cur", "1.a,U=1:2,S", Some("<a@x>"));
        write_msg(&plan.local, "new", "3.local", Some("<local-only@x>"));
        fs::write(plan.local.join(".mbsyncstate"), "old state").unwrap();
        write_msg(
            &plan.local.join("Projects"),
            "cur",
            "5.p,U=1:2,",
            Some("<p@x>"),
        );
        move_aside(&plan).unwrap();
        // The fresh sync got one message and its own state, then failed.
        write_msg(&plan.local, "cur", "9.a,U=7:2,S", Some("<a@x>"));
        fs::write(plan.local.join(".mbsyncstate"), "fresh state").unwrap();

        let partial = put_back(&plan).unwrap();
        assert!(plan.local.join("cur/1.a,U=1:2,S").exists());
        assert!(
            plan.local.join("new/3.local").exists(),
            "local-only mail is back"
        );
        assert_eq!(
            fs::read_to_string(plan.local.join(".mbsyncstate")).unwrap(),
            "old state"
        );
        assert!(!plan.local.join("cur/9.a,U=7:2,S").exists());
        assert!(
            plan.local.join("Projects/cur/5.p,U=1:2,").exists(),
            "sub-folders stay"
        );
        assert!(
            partial.join("cur/9.a,U=7:2,S").exists(),
            "what the fresh sync wrote is kept"
        );
        assert!(!plan.backup.exists(), "nothing is left in the backup");
        // And the repair can start over.
        move_aside(&plan).unwrap();
        assert!(plan.backup.join("new/3.local").exists());
    }

    /// A Maildir folder (its `cur/`) at `dir`.
    fn folder(dir: &Path) -> PathBuf {
        fs::create_dir_all(dir.join("cur")).unwrap();
        dir.to_path_buf()
    }

    /// mbsync refuses `Path` with `SubFolders Maildir++`: every folder is a
    /// dot directory in the Inbox (`.Work`, `.Work.Projects`, `..sub` for
    /// `INBOX/sub`).
    #[test]
    fn maildir_plus_plus_folders_are_found_in_the_inbox() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().display();
        let rc = root.path().join("mbsyncrc");
        let text = format!(
            "SyncState *\n\nIMAPStore remote\nHost localhost\nUser u\n\n\
             MaildirStore local\nInbox {r}/mail\nSubFolders Maildir++\n\n\
             Channel demo\nFar :remote:\nNear :local:\nPatterns *\n"
        );
        fs::write(&rc, &text).unwrap();
        let cfg = MbsyncConfig::parse(&text, &rc).unwrap();
        let mail = root.path().join("mail");
        let state = root.path().join("state");
        for (mailbox, dir) in [
            ("INBOX", folder(&mail)),
            ("Work", folder(&mail.join(".Work"))),
            ("Work/Projects", folder(&mail.join(".Work.Projects"))),
            ("INBOX/sub", folder(&mail.join("..sub"))),
        ] {
            let plan = plan(&cfg, "demo", mailbox, &state, "1").unwrap();
            assert_eq!(plan.local, dir, "{mailbox}");
        }
    }

    /// With `SubFolders Verbatim` a box under INBOX is in the Inbox, also
    /// when that is not Path/INBOX.
    #[test]
    fn verbatim_folders_under_the_inbox_are_found_in_the_inbox() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().display();
        let rc = root.path().join("mbsyncrc");
        let text = format!(
            "SyncState *\n\nIMAPStore remote\nHost localhost\nUser u\n\n\
             MaildirStore local\nPath {r}/mail/\nInbox {r}/inbox\nSubFolders Verbatim\n\n\
             Channel demo\nFar :remote:\nNear :local:\nPatterns *\n"
        );
        fs::write(&rc, &text).unwrap();
        let cfg = MbsyncConfig::parse(&text, &rc).unwrap();
        let state = root.path().join("state");
        for (mailbox, dir) in [
            ("INBOX", folder(&root.path().join("inbox"))),
            ("INBOX/sub", folder(&root.path().join("inbox/sub"))),
            ("Work", folder(&root.path().join("mail/Work"))),
        ] {
            let plan = plan(&cfg, "demo", mailbox, &state, "1").unwrap();
            assert_eq!(plan.local, dir, "{mailbox}");
        }
    }

    #[test]
    fn folded_and_lowercase_message_ids_are_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m");
        fs::write(&p, "From: a\nmessage-id:\n  <folded@x>\nSubject: s\n\nb\n").unwrap();
        assert_eq!(identity(&p).as_deref(), Some("<folded@x>"));
    }

    #[test]
    fn raw_latin1_headers_and_empty_ids_do_not_hide_a_message() {
        let d = tempfile::tempdir().unwrap();
        let latin1 = d.path().join("latin1");
        fs::write(&latin1, b"From: Ren\xe9 <r@x>\nMessage-ID: <abc@x>\n\nb\n").unwrap();
        assert_eq!(identity(&latin1).as_deref(), Some("<abc@x>"));
        // An empty Message-ID is no identity: two such messages that differ
        // must not pass for one.
        let (e1, e2) = (d.path().join("e1"), d.path().join("e2"));
        fs::write(&e1, "Message-ID:\nSubject: one\n\nb\n").unwrap();
        fs::write(&e2, "Message-ID:\nSubject: two\n\nb\n").unwrap();
        let (i1, i2) = (identity(&e1).unwrap(), identity(&e2).unwrap());
        assert!(i1.starts_with("<content-") && i1 != i2, "{i1} {i2}");
    }

    #[test]
    fn every_missing_message_is_restored_through_tmp() {
        let root = tempfile::tempdir().unwrap();
        let plan = work_plan(root.path());
        let cur = plan.backup.join("cur");
        fs::create_dir_all(&cur).unwrap();
        fs::write(
            cur.join("1.a,U=1:2,S"),
            b"From: Ren\xe9\nMessage-ID: <a@x>\n\nb\n",
        )
        .unwrap();
        fs::write(cur.join("2.b,U=2:2,"), "Message-ID:\nSubject: two\n\nb\n").unwrap();
        fs::write(cur.join("3.c,U=3:2,"), "Message-ID:\nSubject: three\n\nb\n").unwrap();
        fs::create_dir_all(plan.local.join("cur")).unwrap();
        assert_eq!(restore_missing(&plan).unwrap(), 3);
        assert_eq!(messages(&plan.local).len(), 3);
        let tmp = fs::read_dir(plan.local.join("tmp")).unwrap().count();
        assert_eq!(tmp, 0, "nothing is left in tmp/");
    }
}
