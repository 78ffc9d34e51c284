//! The fast check: STATUS per folder compared with what mbsync last pulled.
//!
//! mbsync keeps, per synced mailbox pair, a state file whose header records
//! the far side's UIDVALIDITY (`FarUidValidity`, `MasterUidValidity` before
//! 1.4) and the highest far UID it has pulled (`MaxPulledUid`); the records
//! below list the far UIDs it already knows. A far message is new when its
//! UID is above `MaxPulledUid` and no record has it (messages mbsync pushed
//! to the far side get records, not a higher `MaxPulledUid`).
//!
//! Per folder the check costs one pipelined `STATUS`; only when `UIDNEXT`
//! shows UIDs above `MaxPulledUid` does it `EXAMINE` the folder and run
//! `UID SEARCH UID n:*` to count them exactly (UIDNEXT alone over-counts
//! when new messages were deleted again). All folders share one connection.
//!
//! A folder the server refuses (a tagged NO or BAD to its STATUS, EXAMINE or
//! UID SEARCH: deleted on the server since the last sync, not selectable,
//! not allowed) is reported with that refusal as its `error`, and the other
//! folders are checked as usual; whether a check that could look into no
//! folder at all is a failure is for the caller to say. A failure of the
//! connection (connect, TLS, login, timeout, BYE, a malformed or oversized
//! answer) fails the whole check.
//!
//! Where the state file lives depends on mbsync's `SyncState` option, which
//! the caller passes as a [`SyncState`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::imap::client::{Connection, FolderStatus, Session};
use crate::imap::mutf7::{decode_mutf7, encode_mutf7};
use crate::mbsync::config::{Channel, MbsyncConfig};
use crate::mbsync::names;

/// What the check found in one far folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FolderCheck {
    /// Unicode folder name (modified UTF-7 decoded), e.g. `Work/Café`.
    pub folder: String,
    /// Messages the next sync would pull. For a folder never synced (or
    /// whose UIDVALIDITY changed) every message.
    pub new: u32,
    /// `MESSAGES` from STATUS.
    pub total: u32,
    /// `UNSEEN` from STATUS.
    pub unseen: u32,
    /// The server's UIDVALIDITY differs from the one mbsync recorded: the
    /// next sync will fail until the local copy is repaired.
    pub uidvalidity_changed: bool,
    /// The local copy changed since mbsync last synced the folder (its
    /// Maildir's `cur/` or `new/` is newer than mbsync's state file): a
    /// message read, flagged, deleted, moved or saved here waits for a
    /// sync to reach the server.
    pub local_changes: bool,
    /// Set when the server refused to let the check look into the folder;
    /// the counts are then 0, as nothing is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<FolderError>,
    /// The mbsyncrc's `IMAPAccount` the folder is on, when the checked
    /// account's channels log in to several (a `Group` of accounts: each
    /// has an `INBOX`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap_account: Option<String>,
}

impl FolderCheck {
    /// A folder the server refused, with its reason.
    fn refused(folder: &str, error: Error) -> FolderCheck {
        FolderCheck {
            folder: folder.to_owned(),
            new: 0,
            total: 0,
            unseen: 0,
            uidvalidity_changed: false,
            local_changes: false,
            imap_account: None,
            error: Some(FolderError {
                kind: error.kind,
                message: error.message,
            }),
        }
    }
}

/// Why the server refused one folder: the kind of the error (`config` for
/// a folder that is missing or not allowed, `network` when the server is
/// busy for now) and its one-line message, which names the folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FolderError {
    pub kind: ErrorKind,
    pub message: String,
}

/// Where mbsync keeps its state files (its `SyncState` option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    /// `SyncState *`: `.mbsyncstate` inside each near Maildir folder.
    InMailbox,
    /// The global `SyncState` prefix (default `~/.mbsync/`): files named
    /// `<prefix>:<far store>:<far box>_:<near store>:<near box>`.
    Global(PathBuf),
    /// A `SyncState` prefix given inside the channel: `<prefix><near box>`.
    Channel(PathBuf),
}

impl SyncState {
    /// mbsync's default: the global prefix `~/.mbsync/`.
    pub fn default_global() -> Option<SyncState> {
        let home = crate::env::var_os("HOME").filter(|h| !h.is_empty())?;
        Some(SyncState::Global(PathBuf::from(home).join(".mbsync/")))
    }
}

/// One far folder to check and the state file mbsync keeps for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFolder {
    /// The folder name on the server, Unicode.
    pub folder: String,
    /// `None` when the folder is not synced by any channel.
    pub state_file: Option<PathBuf>,
    /// Its local Maildir folder, when known: for `local_changes`.
    pub near_dir: Option<PathBuf>,
}

/// What a state file says about the far side.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PulledState {
    pub uidvalidity: u32,
    pub max_pulled: u32,
    /// Far UIDs with a record above `max_pulled` (pushed messages).
    pub known_above: HashSet<u32>,
    /// Far UIDs an interrupted sync registered but never copied here
    /// (`+ FAR 0` in its journal, with no `>` giving them a near UID):
    /// the next sync pulls them, so they are new, whatever `max_pulled`.
    pub pending: HashSet<u32>,
}

/// Checks the far folders of `channel` (all matching its Patterns, or only
/// `only` when given, by Unicode name) over one connection; a folder the
/// server refuses comes back with its `error`. `program`: the mbsync whose
/// spelling of names beyond ASCII its Patterns and state files use (UTF-8
/// from isync 1.5 on; see [`crate::mbsync::names`]), asked only when the
/// server lists such a name.
pub async fn check_channel(
    connection: &Connection,
    config: &MbsyncConfig,
    channel: &str,
    sync_state: &SyncState,
    only: Option<&[String]>,
    program: &str,
) -> Result<Vec<FolderCheck>> {
    let chan = config.channel(channel).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!("No channel '{channel}' in {}", config.path.display()),
        )
    })?;
    let mut layout = Layout::new(config, chan)?;
    let mut session = connection.connect().await?;
    let result = async {
        let boxes: Vec<String> = if chan.patterns.is_empty() {
            vec![layout.far_box.clone()]
        } else {
            // The Far prefix is written in Unicode (mbsync 1.5) or as the
            // server spells it (1.4): listed by its Unicode name, matched in
            // the server's spelling; the Patterns in mbsync's.
            let prefix = decode_mutf7(&layout.far_box);
            let wire_prefix = encode_mutf7(&prefix);
            let entries = session.list("", &format!("{prefix}*")).await?;
            let listed: Vec<String> = entries
                .into_iter()
                .filter(|e| e.selectable())
                .filter_map(|e| {
                    if e.name.eq_ignore_ascii_case("INBOX") {
                        Some("INBOX".to_owned())
                    } else {
                        e.name.strip_prefix(&wire_prefix).map(str::to_owned)
                    }
                })
                .collect();
            // A fake mbsync in a test, or a slow machine, must not hold up
            // a check of ASCII names, which every version spells alike.
            layout.utf8 = listed.iter().any(|n| names::depends_on_version(n))
                && names::takes_utf8(program).await;
            let mut taken: Vec<String> = listed
                .into_iter()
                .filter(|name| chan.takes(&layout.spelled(name)))
                .collect();
            taken.sort();
            taken.dedup();
            taken
        };
        let folders: Vec<CheckFolder> = boxes
            .iter()
            .filter(|wire| {
                only.is_none_or(|only| {
                    only.iter()
                        .any(|f| *f == decode_mutf7(&layout.far_name(wire)))
                })
            })
            .map(|wire| CheckFolder {
                folder: decode_mutf7(&layout.far_name(wire)),
                state_file: Some(layout.state_file(sync_state, wire)),
                near_dir: Some(layout.near_dir(&layout.near_name(&layout.spelled(wire)))),
            })
            .collect();
        if let Some(only) = only {
            if let Some(missing) = only
                .iter()
                .find(|f| !folders.iter().any(|c| &c.folder == *f))
            {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("Channel '{channel}' does not sync a folder '{missing}'"),
                ));
            }
        }
        check_on(&mut session, &folders).await
    }
    .await;
    finish(session, result).await
}

/// Logs out after success; after a failure the connection may be dead or
/// silent, so it is just dropped rather than waited on again.
async fn finish<T>(session: Session, result: Result<T>) -> Result<T> {
    if result.is_ok() {
        session.logout().await;
    }
    result
}

/// Checks the given folders over one connection; a folder the server
/// refuses comes back with its `error`.
pub async fn check(connection: &Connection, folders: &[CheckFolder]) -> Result<Vec<FolderCheck>> {
    let mut session = connection.connect().await?;
    let result = check_on(&mut session, folders).await;
    finish(session, result).await
}

/// The check on an open session: one result per folder, in the order
/// given, a refused folder with its `error` (see the module docs).
pub async fn check_on(session: &mut Session, folders: &[CheckFolder]) -> Result<Vec<FolderCheck>> {
    let names: Vec<&str> = folders.iter().map(|f| f.folder.as_str()).collect();
    let statuses = session.status_many(&names).await?;
    let mut out = Vec::with_capacity(folders.len());
    for (folder, status) in folders.iter().zip(statuses) {
        out.push(match status {
            Ok(status) => check_folder(session, folder, status).await?,
            Err(refused) => FolderCheck::refused(&folder.folder, refused),
        });
    }
    Ok(out)
}

/// One folder whose STATUS the server answered: compared with mbsync's
/// state, and searched when UIDNEXT shows UIDs mbsync has not pulled.
async fn check_folder(
    session: &mut Session,
    folder: &CheckFolder,
    status: FolderStatus,
) -> Result<FolderCheck> {
    let state = match &folder.state_file {
        Some(path) => read_state(path)?,
        None => None,
    };
    let mut check = FolderCheck {
        folder: folder.folder.clone(),
        new: status.messages,
        total: status.messages,
        unseen: status.unseen,
        uidvalidity_changed: false,
        local_changes: false,
        error: None,
        imap_account: None,
    };
    if let (Some(state_file), Some(near)) = (&folder.state_file, &folder.near_dir) {
        check.local_changes = changed_since_sync(state_file, near);
    }
    if let Some(state) = state {
        if state.uidvalidity != status.uidvalidity {
            check.uidvalidity_changed = true;
        } else if status.uidnext.saturating_sub(1) <= state.max_pulled && state.pending.is_empty() {
            check.new = 0;
        } else {
            let from = state.pending.iter().copied().min().unwrap_or(u32::MAX);
            let from = from.min(state.max_pulled.saturating_add(1));
            let uids = match uids_from(session, &folder.folder, from).await? {
                Ok(uids) => uids,
                Err(refused) => return Ok(FolderCheck::refused(&folder.folder, refused)),
            };
            check.new = uids
                .iter()
                .filter(|&&u| {
                    state.pending.contains(&u)
                        || (u > state.max_pulled && !state.known_above.contains(&u))
                })
                .count() as u32;
        }
    }
    Ok(check)
}

/// Whether the Maildir folder `near` changed after mbsync last wrote its
/// `state_file`: mbsync writes the state file of a box after the box's
/// last change to the Maildir, so anything newer in `cur/` or `new/` (a
/// message added, removed, or renamed to change its flags) is a change of
/// someone else's that the next sync takes to the server. Never synced
/// (no state file) or not there: false, the new messages say it already.
fn changed_since_sync(state_file: &Path, near: &Path) -> bool {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(synced) = mtime(state_file) else {
        return false;
    };
    ["cur", "new"]
        .iter()
        .filter_map(|sub| mtime(&near.join(sub)))
        .any(|changed| changed > synced)
}

/// The UIDs of `folder` from `uid` on (EXAMINE, then UID SEARCH). The inner
/// error is the server's refusal of either command; the session goes on
/// after it.
async fn uids_from(session: &mut Session, folder: &str, uid: u32) -> Result<Result<Vec<u32>>> {
    if let Err(refused) = session.try_examine(folder).await? {
        return Ok(Err(refused));
    }
    session.uid_search_from(uid).await
}

/// Reads mbsync's state file (and, like mbsync, an unfinished journal when
/// the `.new` file of an interrupted sync is there). `None` when the folder
/// was never synced.
pub fn read_state(path: &Path) -> Result<Option<PulledState>> {
    // One line per message: a folder of millions is tens of MiB.
    let text = match crate::files::read_regular(path, 1 << 30) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("Cannot read {}", path.display()), e)),
    };
    let bad = |line: usize| {
        Error::new(
            ErrorKind::Invalid,
            format!("{}:{line}: not an mbsync state file line", path.display()),
        )
    };
    let mut state = PulledState::default();
    let mut lines = text.lines().enumerate();
    for (i, line) in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        if i == 0 && line.starts_with(|c: char| c.is_ascii_digit()) {
            // Pre-1.1 header: "uidval:maxpulled uidval:maxexpired:maxpushed".
            let far = line.split(' ').next().ok_or_else(|| bad(1))?;
            let (v, m) = far.split_once(':').ok_or_else(|| bad(1))?;
            state.uidvalidity = v.parse().map_err(|_| bad(1))?;
            state.max_pulled = m.parse().map_err(|_| bad(1))?;
            break;
        }
        let (key, value) = line.split_once(' ').ok_or_else(|| bad(i + 1))?;
        let value: u32 = value.trim().parse().map_err(|_| bad(i + 1))?;
        match key {
            "FarUidValidity" | "MasterUidValidity" => state.uidvalidity = value,
            "MaxPulledUid" => state.max_pulled = value,
            _ => {}
        }
    }
    let mut far_uids: Vec<u32> = lines
        .filter_map(|(_, line)| line.split(' ').next()?.parse().ok())
        .collect();
    let mut journal = PathBuf::from(path);
    journal.as_mut_os_string().push(".journal");
    let mut new_file = PathBuf::from(path);
    new_file.as_mut_os_string().push(".new");
    if new_file.exists() {
        if let Ok(text) = crate::files::read_regular_text(&journal, 1 << 30) {
            for line in text.lines().skip(1) {
                let mut words = line.split(' ');
                let op = words.next();
                let nums: Vec<u32> = words.filter_map(|w| w.parse().ok()).collect();
                match (op, nums.as_slice()) {
                    (Some("N"), [0, uid]) => state.max_pulled = *uid,
                    (Some("|"), [far, _]) => state.uidvalidity = *far,
                    // A message found on the server, to be copied here...
                    (Some("+"), [far, 0]) => {
                        state.pending.insert(*far);
                    }
                    (Some("+"), [far, _]) => far_uids.push(*far),
                    // ...and copied: it has a near UID now.
                    (Some(">"), [far, 0, near]) if *near != 0 && state.pending.remove(far) => {
                        far_uids.push(*far)
                    }
                    (Some("-"), [far, _]) => {
                        state.pending.remove(far);
                    }
                    _ => {}
                }
            }
        }
    }
    state.known_above = far_uids
        .into_iter()
        .filter(|&u| u > state.max_pulled)
        .collect();
    Ok(Some(state))
}

/// How a channel's mailbox names map to far names and near paths.
struct Layout {
    far_store: String,
    /// The far mailbox or prefix from the channel (`[Gmail]/`).
    far_box: String,
    near_store: String,
    near_box: String,
    near_path: Option<PathBuf>,
    near_inbox: PathBuf,
    subfolders: Option<String>,
    flatten: Option<String>,
    patterns: bool,
    /// mbsync names its state files in UTF-8 (1.5), not as the server does.
    utf8: bool,
}

impl Layout {
    fn new(config: &MbsyncConfig, chan: &Channel) -> Result<Layout> {
        let split = |spec: &str| -> Option<(String, String)> {
            let (store, mailbox) = crate::mbsync::config::split_spec(spec)?;
            Some((store.to_owned(), mailbox.to_owned()))
        };
        let malformed = |spec: &str| {
            Error::new(
                ErrorKind::Config,
                format!("Channel '{}': malformed mailbox spec '{spec}'", chan.name),
            )
        };
        let (far_store, far_box) = split(&chan.far).ok_or_else(|| malformed(&chan.far))?;
        let (near_store, near_box) = split(&chan.near).ok_or_else(|| malformed(&chan.near))?;
        let store = config
            .maildir_stores
            .iter()
            .find(|s| s.name == near_store)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "Channel '{}': the new-mail check needs a MaildirStore on the near side",
                        chan.name
                    ),
                )
            })?;
        let home = crate::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        Ok(Layout {
            far_store,
            far_box,
            near_store,
            near_box,
            near_path: store.path.clone(),
            near_inbox: store.inbox.clone().unwrap_or_else(|| home.join("Maildir")),
            subfolders: store.subfolders.clone(),
            flatten: store.flatten.clone(),
            patterns: !chan.patterns.is_empty(),
            utf8: false,
        })
    }

    /// The full far name of a listed box (prefix + name, INBOX alone).
    fn far_name(&self, name: &str) -> String {
        if !self.patterns {
            return if name.is_empty() {
                "INBOX".to_owned()
            } else {
                name.to_owned()
            };
        }
        if name == "INBOX" {
            name.to_owned()
        } else {
            format!("{}{name}", self.far_box)
        }
    }

    /// The near mailbox name for a far box (without the far prefix), as
    /// given: mbsync 1.4 keeps modified UTF-7 names as they are.
    fn near_name(&self, name: &str) -> String {
        let name = if self.patterns {
            if name == "INBOX" {
                "INBOX".to_owned()
            } else {
                format!("{}{name}", self.near_box)
            }
        } else if self.near_box.is_empty() {
            "INBOX".to_owned()
        } else {
            self.near_box.clone()
        };
        match &self.flatten {
            Some(delim) if name != "INBOX" => name.replace('/', delim),
            _ => name,
        }
    }

    /// The near Maildir folder of a mailbox.
    fn near_dir(&self, near: &str) -> PathBuf {
        if near == "INBOX" {
            return self.near_inbox.clone();
        }
        let Some(root) = &self.near_path else {
            return self.near_inbox.join(near);
        };
        let mut path = root.clone().into_os_string();
        if self
            .subfolders
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("Maildir++"))
        {
            path.push(".");
            path.push(near.replace('/', "."));
        } else {
            path.push(near);
        }
        PathBuf::from(path)
    }

    /// A listed box (without the far prefix) as mbsync names it. (A prefix
    /// is written in the mbsyncrc as mbsync names it.)
    fn spelled(&self, wire: &str) -> String {
        names::spelled(wire, self.utf8)
    }

    fn state_file(&self, sync_state: &SyncState, wire: &str) -> PathBuf {
        let near = self.near_name(&self.spelled(wire));
        let clean = |s: &str| s.replace('/', "!");
        match sync_state {
            SyncState::InMailbox => self.near_dir(&near).join(".mbsyncstate"),
            SyncState::Channel(prefix) => {
                let mut p = prefix.clone().into_os_string();
                p.push(clean(&near));
                PathBuf::from(p)
            }
            SyncState::Global(prefix) => {
                let mut p = prefix.clone().into_os_string();
                p.push(format!(
                    ":{}:{}_:{}:{}",
                    self.far_store,
                    clean(&self.far_name(&self.spelled(wire))),
                    self.near_store,
                    clean(&near)
                ));
                PathBuf::from(p)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_state_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".mbsyncstate");
        std::fs::write(
            &path,
            "FarUidValidity 17\nNearUidValidity 3\nMaxPulledUid 11\nMaxPushedUid 4\n\n1 1 S\n11 2 \n14 5 F\n",
        )
        .unwrap();
        let state = read_state(&path).unwrap().unwrap();
        assert_eq!((state.uidvalidity, state.max_pulled), (17, 11));
        assert_eq!(state.known_above, HashSet::from([14]));

        std::fs::write(&path, "42:9 5:0:3\n1 1 S\n").unwrap();
        let state = read_state(&path).unwrap().unwrap();
        assert_eq!((state.uidvalidity, state.max_pulled), (42, 9));

        // An interrupted sync: the journal counts when the .new file exists.
        std::fs::write(&path, "FarUidValidity 17\nMaxPulledUid 11\n\n").unwrap();
        std::fs::write(
            dir.path().join(".mbsyncstate.journal"),
            "4\nN 0 13\n+ 15 0\n",
        )
        .unwrap();
        assert_eq!(read_state(&path).unwrap().unwrap().max_pulled, 11);
        std::fs::write(dir.path().join(".mbsyncstate.new"), "").unwrap();
        let state = read_state(&path).unwrap().unwrap();
        assert_eq!(state.max_pulled, 13);
        assert_eq!(
            state.pending,
            HashSet::from([15]),
            "registered, never copied"
        );
        // As mbsync 1.4 writes it when killed while it pulls new mail: 16
        // and 17 registered, 16 copied (it got near UID 30), 17 not yet.
        std::fs::write(
            dir.path().join(".mbsyncstate.journal"),
            "4\nF 1 11\n+ 16 0\n+ 17 0\n# 16 0 roryMX2qsT37\n# 17 0 6LUgnQ7q6QNZ\n> 16 0 30\n+ 18 31\n",
        )
        .unwrap();
        let state = read_state(&path).unwrap().unwrap();
        assert_eq!(state.pending, HashSet::from([17]));
        assert_eq!(state.known_above, HashSet::from([16, 18]));

        assert_eq!(read_state(&dir.path().join("none")).unwrap(), None);
        std::fs::write(&path, "garbage\n").unwrap();
        assert_eq!(read_state(&path).unwrap_err().kind, ErrorKind::Invalid);
    }

    #[test]
    fn state_file_locations() {
        let config = MbsyncConfig::parse(
            "IMAPStore r\nHost h\n\nMaildirStore l\nPath /m/\nInbox /m/INBOX\nSubFolders Verbatim\n\n\
             Channel c\nFar :r:\nNear :l:\nPatterns *\n",
            Path::new("/rc"),
        )
        .unwrap();
        let layout = Layout::new(&config, config.channel("c").unwrap()).unwrap();
        assert_eq!(
            layout.state_file(&SyncState::InMailbox, "Work/Caf&AOk-"),
            Path::new("/m/Work/Caf&AOk-/.mbsyncstate")
        );
        assert_eq!(
            layout.state_file(&SyncState::InMailbox, "INBOX"),
            Path::new("/m/INBOX/.mbsyncstate")
        );
        assert_eq!(
            layout.state_file(&SyncState::Global("/s/".into()), "Work/Projects"),
            Path::new("/s/:r:Work!Projects_:l:Work!Projects")
        );
        assert_eq!(
            layout.state_file(&SyncState::Channel("/s/c-".into()), "Sent"),
            Path::new("/s/c-Sent")
        );
    }
}
