//! The manager's read-only side: exact folder counts and the fast check.
//!
//! * [`folder_counts`]: every local folder of an account, counted straight
//!   from its Maildir stores ([`crate::maildir`]); cheap enough to run on
//!   every request, so nothing is cached and nothing goes stale.
//! * [`Manager::check`]: the `check` sync type. It asks the server with
//!   STATUS ([`crate::imap::check`]) how many messages the next sync would
//!   pull, per folder, and reports through the same `sync_started` and
//!   `sync_done` events as a sync (type `check`). A check takes no lock and
//!   never touches local mail, so it does not queue behind syncs.
//!
//! A folder the server refuses (deleted there since the last sync, not
//! selectable, not allowed) does not fail the check: it comes with its
//! `error`, the message of the completed check names it, and the others are
//! answered as usual. Only when the server refused every folder asked about
//! does the check fail, so that a wrong configuration is not taken for
//! "0 new".
//!
//! Connection details come from the account's `IMAPAccount` in the
//! mbsyncrc, its `Timeout` bounding every step, and the state files from
//! the channel's or the global `SyncState`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use super::targets::{self, AccountOverrides, SyncType};
use super::{now, AbortOnDrop, ErrorInfo, Manager, Status};
use crate::error::{prefix_within, Error, ErrorKind, Result};
use crate::imap::check::{check_channel, FolderCheck, SyncState};
use crate::imap::client::{Connection, TokenFuture, TokenSource, DEFAULT_TIMEOUT};
use crate::imap::mutf7::decode_mutf7;
use crate::maildir::{count_store, FolderCounts};
use crate::mbsync::config::{Channel, ImapAccount, MbsyncConfig};

/// What a check found, handed to completion callbacks like a sync result.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub success: bool,
    pub error: Option<String>,
    pub kind: Option<ErrorKind>,
    /// Seconds from the request to the end.
    pub duration: f64,
    /// Always 1: a check is not retried (the next one is cheap).
    pub attempts: u32,
    /// New messages over all folders.
    pub new: u64,
    /// Per folder: INBOX first, then in the order the server listed them.
    pub folders: Vec<FolderCheck>,
    /// Folders with new messages, local changes or a changed UIDVALIDITY:
    /// what a sync would have work to do in. Folders the server refused are here too:
    /// the check could not tell, and the sync finds out (as it did when a
    /// refusal failed the whole check and the full sync followed). Each
    /// name once, also when several accounts of a group have it.
    pub changed: Vec<String>,
    /// The same folders as mbsync names them in a `channel:box` selection
    /// (without the channel's far prefix); empty when the account has
    /// several channels, since one folders sync cannot name them.
    pub changed_boxes: Vec<String>,
}

/// The name mbsync gives Unicode `folder` inside `channel`: the far name
/// without the channel's far mailbox prefix (INBOX stays INBOX), in
/// Unicode too (a prefix may be written as the server spells it, as
/// mbsync 1.4 needs; see [`crate::mbsync::names`]).
pub fn box_name(channel: &Channel, folder: &str) -> String {
    let prefix = decode_mutf7(channel.far_mailbox());
    if folder == "INBOX" || prefix.is_empty() {
        return folder.to_string();
    }
    folder.strip_prefix(&prefix).unwrap_or(folder).to_string()
}

/// Everything known about one check; shaped like a sync's info (type
/// `check`) so the editor can treat both alike.
#[derive(Debug, Clone, Serialize)]
pub struct CheckInfo {
    pub id: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub account: String,
    /// The channels checked, space separated.
    pub channel: String,
    pub folders: Vec<String>,
    pub status: Status,
    pub start_time: f64,
    pub end_time: Option<f64>,
    pub message: String,
    pub error: Option<ErrorInfo>,
    pub result: Option<CheckResult>,
    pub attempt: u32,
    pub requests: u32,
}

/// The channels an account stands for (its full sync's channels).
fn account_channels(
    cfg: &MbsyncConfig,
    overrides: &HashMap<String, AccountOverrides>,
    account: &str,
) -> Result<Vec<String>> {
    let full = targets::resolve(cfg, overrides, SyncType::Full, account, &[])?;
    Ok(targets::channels_of_targets(cfg, &full))
}

/// Exact counts of every local folder of `account`: each Maildir store its
/// channels sync into, INBOX first; a folder two channels share is counted
/// once. The folders of different stores (a `Group` of accounts) are all
/// there, each with its store named.
pub fn folder_counts(
    cfg: &MbsyncConfig,
    overrides: &HashMap<String, AccountOverrides>,
    account: &str,
) -> Result<Vec<FolderCounts>> {
    let mut stores = Vec::new();
    for name in account_channels(cfg, overrides, account)? {
        let Some(channel) = cfg.channel(&name) else {
            continue;
        };
        let store = cfg.maildir_side(channel).map(|(store, _)| store);
        if let Some(store) = store {
            if !stores.iter().any(|s: &&_| std::ptr::eq(*s, store)) {
                stores.push(store);
            }
        }
    }
    if stores.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            format!("account '{account}' syncs into no MaildirStore"),
        ));
    }
    let several = stores.len() > 1;
    let mut out: Vec<FolderCounts> = Vec::new();
    for store in stores {
        out.extend(count_store(store)?.into_iter().map(|c| FolderCounts {
            store: several.then(|| store.name.clone()),
            ..c
        }));
    }
    // INBOX first, as for one store (whose own list starts with it).
    out.sort_by_key(|c| !c.folder.eq_ignore_ascii_case("INBOX"));
    Ok(out)
}

/// Where mbsync keeps the state files of `channel`: its own `SyncState`,
/// else the global one, else mbsync's default `~/.mbsync/`.
pub fn sync_state_of(cfg: &MbsyncConfig, channel: &Channel) -> Option<SyncState> {
    match (&channel.sync_state, &cfg.sync_state) {
        (Some(s), _) if s == "*" => Some(SyncState::InMailbox),
        (Some(prefix), _) => Some(SyncState::Channel(PathBuf::from(prefix))),
        (None, Some(s)) if s == "*" => Some(SyncState::InMailbox),
        (None, Some(prefix)) => Some(SyncState::Global(PathBuf::from(prefix))),
        (None, None) => SyncState::default_global(),
    }
}

/// The step timeout of an account: its `Timeout`, or mbsync's default
/// (20 s) when unset or 0 (mbsync's "never", which a check should not do).
pub fn timeout_of(account: &ImapAccount) -> Duration {
    match account.timeout {
        Some(s) if s > 0 => Duration::from_secs(u64::from(s)),
        _ => DEFAULT_TIMEOUT,
    }
}

/// The connection of one channel, with the account's timeout and, for
/// XOAUTH2, the token source.
pub fn connection_for(
    cfg: &MbsyncConfig,
    channel: &Channel,
    tokens: Option<Arc<dyn TokenSource>>,
) -> Result<Connection> {
    let account = cfg.imap_account_for(channel).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!("channel '{}' has no IMAPStore side", channel.name),
        )
    })?;
    let mut connection = Connection::from_account(account)?.with_timeout(timeout_of(account));
    if let Some(tokens) = tokens {
        connection = connection.with_token_source(tokens);
    }
    Ok(connection)
}

/// Checks every channel of `account`; `folders` (Unicode far names) limits
/// the answer to those, each of which must exist in some channel. INBOX
/// comes first, then the folders as the server lists them, channel by
/// channel. A folder two channels of one `IMAPAccount` share is answered
/// once; channels of different ones (a `Group` of accounts) each have
/// their own folders, named with their `imap_account`. `program`: as for
/// [`check_channel`].
pub async fn check_account(
    cfg: &MbsyncConfig,
    overrides: &HashMap<String, AccountOverrides>,
    account: &str,
    folders: &[String],
    tokens: Option<Arc<dyn TokenSource>>,
    program: &str,
) -> Result<Vec<FolderCheck>> {
    let channels = account_channels(cfg, overrides, account)?;
    let server = |name: &String| {
        cfg.channel(name)
            .and_then(|c| cfg.imap_account_for(c))
            .map(|a| a.name.clone())
    };
    let mut servers: Vec<String> = channels.iter().filter_map(server).collect();
    servers.sort();
    servers.dedup();
    let several = servers.len() > 1;
    let mut out: Vec<FolderCheck> = Vec::new();
    for name in &channels {
        let channel = cfg.channel(name).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("No channel '{name}' in {}", cfg.path.display()),
            )
        })?;
        // A channel with no server (Maildir to Maildir, say a local backup
        // in a `Group`) has nothing to check; the account's others are
        // checked. `connection_for` says why when none has one.
        if !servers.is_empty() && server(name).is_none() {
            continue;
        }
        let state = sync_state_of(cfg, channel).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "cannot find mbsync's state files: no SyncState and $HOME is not set",
            )
        })?;
        let connection = connection_for(cfg, channel, tokens.clone())?;
        // One channel can be asked for exactly the folders (the check
        // then reports a missing one); several are filtered afterwards.
        let only = (channels.len() == 1 && !folders.is_empty()).then_some(folders);
        let imap_account = several.then(|| server(name)).flatten();
        for mut c in check_channel(&connection, cfg, name, &state, only, program).await? {
            c.imap_account = imap_account.clone();
            match out
                .iter_mut()
                .find(|o| o.folder == c.folder && o.imap_account == c.imap_account)
            {
                None => out.push(c),
                // Two channels with one folder: an answer beats a refusal.
                Some(o) if o.error.is_some() && c.error.is_none() => *o = c,
                Some(_) => {}
            }
        }
    }
    if !folders.is_empty() {
        if let Some(missing) = folders
            .iter()
            .find(|f| !out.iter().any(|c| &c.folder == *f))
        {
            return Err(Error::new(
                ErrorKind::Config,
                format!("account '{account}' does not sync a folder '{missing}'"),
            ));
        }
        out.retain(|c| folders.contains(&c.folder));
    }
    // INBOX first, as the folder counts and every mail client list it, also
    // when a channel that sorts before its own syncs other folders.
    out.sort_by_key(|c| !c.folder.eq_ignore_ascii_case("INBOX"));
    match all_refused(&out) {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Folders named in a message before the rest are only counted.
const NAMED: usize = 3;

/// Longest folder name a message quotes, in bytes.
const QUOTED_NAME: usize = 80;

/// Longest reason (the folder's error message) a message quotes, in bytes:
/// room for the usual "IMAP folder 'X' on host:993: Mailbox doesn't exist".
const QUOTED_REASON: usize = 120;

/// `text`, or its start within `max` bytes marked as cut.
fn quoted(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match prefix_within(text, max) {
        kept if kept.len() == text.len() => text.into(),
        kept => format!("{kept}...").into(),
    }
}

/// How a message names a folder: `INBOX`, or `work: INBOX` when the
/// account checks the folders of several `IMAPAccount`s.
fn shown(check: &FolderCheck) -> std::borrow::Cow<'_, str> {
    match &check.imap_account {
        Some(account) => format!("{account}: {}", check.folder).into(),
        None => check.folder.as_str().into(),
    }
}

/// The folders the server refused, each with its reason, for a message:
/// `Foo (IMAP folder 'Foo' on host:143: ...), Bar (...), and 2 more`.
/// `None` when it refused none.
fn not_checked(checks: &[FolderCheck]) -> Option<String> {
    let refused: Vec<(std::borrow::Cow<'_, str>, &str)> = checks
        .iter()
        .filter_map(|c| Some((shown(c), c.error.as_ref()?.message.as_str())))
        .collect();
    if refused.is_empty() {
        return None;
    }
    let mut parts: Vec<String> = refused
        .iter()
        .take(NAMED)
        .map(|(folder, why)| {
            format!(
                "{} ({})",
                quoted(folder.as_ref(), QUOTED_NAME),
                quoted(why, QUOTED_REASON)
            )
        })
        .collect();
    if refused.len() > NAMED {
        parts.push(format!("and {} more", refused.len() - NAMED));
    }
    Some(parts.join(", "))
}

/// The failure of a check in which the server refused every folder: with
/// one folder its own error, with several the first one's kind and the
/// folders named. `None` when some folder was answered (or none asked).
fn all_refused(checks: &[FolderCheck]) -> Option<Error> {
    let first = checks.first()?.error.as_ref()?;
    if checks.iter().any(|c| c.error.is_none()) {
        return None;
    }
    if checks.len() == 1 {
        return Some(Error::new(first.kind, first.message.clone()));
    }
    Some(Error::new(
        first.kind,
        format!("no folder could be checked: {}", not_checked(checks)?),
    ))
}

impl Manager {
    /// Exact counts of every local folder of `account` (see
    /// [`folder_counts`]), read now.
    pub fn folder_counts(&self, account: &str) -> Result<Vec<FolderCounts>> {
        let accounts = self.settings.lock().accounts.clone();
        folder_counts(&self.mbsync_config()?, &accounts, account)
    }

    /// Counts for a sync's completion event; a failure is logged, not fatal
    /// (the sync itself is what the event reports).
    pub(super) fn counts_after_sync(&self, account: &str) -> Option<Vec<FolderCounts>> {
        match self.folder_counts(account) {
            Ok(c) => Some(c),
            Err(e) => {
                crate::log::write(
                    "warn",
                    &format!("folder counts of {account}: {}", e.message),
                );
                None
            }
        }
    }

    /// Starts counting `account`'s folders for sync `id` on a blocking
    /// thread as soon as its mbsync has exited: the run's last output is
    /// read, its group killed and its lock released meanwhile, so the end
    /// of the sync (see `finish`) finds the count done. mbsync touches no
    /// folder after its exit, so this count is the one `finish` would read.
    pub(super) fn count_early(self: &Arc<Self>, id: u64, account: &str) {
        let (tx, rx) = std::sync::mpsc::channel();
        let (me, account) = (self.clone(), account.to_owned());
        self.rt.spawn_blocking(move || {
            let _ = tx.send(me.counts_after_sync(&account));
        });
        if let Some(e) = self.entries.lock().iter_mut().find(|e| e.info.id == id) {
            e.early_counts = Some(rx);
        }
    }

    /// The count [`Manager::count_early`] started for sync `id`'s current
    /// attempt, waiting for it to finish (as long as reading it here would
    /// take); `None` when none was started.
    pub(super) fn early_counts(&self, id: u64) -> Option<Option<Vec<FolderCounts>>> {
        let rx = self
            .entries
            .lock()
            .iter_mut()
            .find(|e| e.info.id == id)?
            .early_counts
            .take()?;
        rx.recv().ok()
    }

    /// The token source for XOAUTH2 accounts: the account's OAuth
    /// configuration (`Settings.oauth`), a valid token from
    /// [`Manager::tokens`] (refreshed first when it is about to expire).
    /// Every check and IDLE connection gets its source from this one place;
    /// `None` for accounts without OAuth (they log in with their password).
    pub fn token_source(&self, account: &str) -> Option<Arc<dyn TokenSource>> {
        let settings = self.settings.lock().oauth.get(account).cloned()?;
        let tokens = match self.tokens() {
            Ok(t) => t,
            Err(e) => {
                crate::log::write(
                    "error",
                    &format!("OAuth tokens of {account}: {}", e.message),
                );
                return None;
            }
        };
        let source = move |_user: &str| -> TokenFuture {
            let (tokens, settings) = (tokens.clone(), settings.clone());
            Box::pin(async move { tokens.valid_token(&settings).await })
        };
        Some(Arc::new(source))
    }

    /// Starts the fast check of `account` (optionally only `folders`) and
    /// returns its id; the answer comes as `sync_started` then `sync_done`
    /// events whose result is a [`CheckResult`].
    pub fn check(self: &Arc<Self>, account: String, folders: Vec<String>) -> Result<u64> {
        targets::validate_account(&account)?;
        for f in &folders {
            targets::validate_folder(f)?;
        }
        let cfg = self.mbsync_config()?;
        let (accounts, program) = {
            let settings = self.settings.lock();
            let program = settings.mbsync_cmd.to_string_lossy().into_owned();
            (settings.accounts.clone(), program)
        };
        let channels = account_channels(&cfg, &accounts, &account)?;
        let id = (self.next_id)();
        let mut info = CheckInfo {
            id,
            kind: "check",
            account: account.clone(),
            channel: channels.join(" "),
            folders: folders.clone(),
            status: Status::Running,
            start_time: now(),
            end_time: None,
            message: format!("checking {account} for new mail"),
            error: None,
            result: None,
            attempt: 1,
            requests: 1,
        };
        (self.emit)(id, "sync_started", json!(info));
        let me = self.clone();
        let tokens = self.token_source(&account);
        // The one channel of a single-channel account, for box names.
        let cfg_channel = match channels.as_slice() {
            [one] => cfg.channel(one).cloned(),
            _ => None,
        };
        let (stop, mut stopped) = watch::channel(false);
        self.checks.lock().insert(id, stop);
        self.rt.spawn(async move {
            let busy = crate::sched::busy();
            // Its own task, so that a panic in it is an error of this check
            // (not a check that never ends); aborted when cancelled.
            let mut task = AbortOnDrop(tokio::spawn(async move {
                check_account(&cfg, &accounts, &account, &folders, tokens, &program).await
            }));
            let checked = tokio::select! {
                joined = &mut task.0 => joined.unwrap_or_else(|e| {
                    Err(Error::new(
                        ErrorKind::Unknown,
                        format!("internal error in the check task: {e}"),
                    ))
                }),
                _ = stopped.wait_for(|stop| *stop) => {
                    Err(Error::new(ErrorKind::Cancelled, "cancelled"))
                }
            };
            drop(task);
            me.checks.lock().remove(&id);
            drop(busy);
            let end = now();
            info.end_time = Some(end);
            let duration = end - info.start_time;
            let result = match checked {
                Ok(folders) => {
                    let new: u64 = folders.iter().map(|f| u64::from(f.new)).sum();
                    let mut changed: Vec<String> = Vec::new();
                    for f in &folders {
                        let busy = f.new > 0
                            || f.uidvalidity_changed
                            || f.local_changes
                            || f.error.is_some();
                        // Each name once: the INBOX of several accounts of
                        // a group is one INBOX to an inbox sync of it.
                        if busy && !changed.contains(&f.folder) {
                            changed.push(f.folder.clone());
                        }
                    }
                    let changed_boxes = match cfg_channel.as_ref() {
                        Some(channel) => changed.iter().map(|f| box_name(channel, f)).collect(),
                        None => Vec::new(),
                    };
                    info.status = Status::Completed;
                    info.message = format!(
                        "check of {} done in {}: {new} new",
                        info.account,
                        super::took(duration)
                    );
                    if let Some(refused) = not_checked(&folders) {
                        info.message.push_str(&format!("; not checked: {refused}"));
                    }
                    CheckResult {
                        success: true,
                        error: None,
                        kind: None,
                        duration,
                        attempts: 1,
                        new,
                        folders,
                        changed,
                        changed_boxes,
                    }
                }
                Err(e) => {
                    if e.kind == ErrorKind::Cancelled {
                        info.status = Status::Cancelled;
                        info.message = format!("check of {} cancelled", info.account);
                    } else {
                        info.status = Status::Error;
                        info.message = format!("check of {} failed: {}", info.account, e.message);
                    }
                    info.error = Some(ErrorInfo {
                        kind: e.kind,
                        message: e.message.clone(),
                        line: String::new(),
                    });
                    CheckResult {
                        success: false,
                        error: Some(e.message),
                        kind: Some(e.kind),
                        duration,
                        attempts: 1,
                        new: 0,
                        folders: Vec::new(),
                        changed: Vec::new(),
                        changed_boxes: Vec::new(),
                    }
                }
            };
            let level = match &result {
                r if !r.success => "error",
                r if r.folders.iter().any(|f| f.error.is_some()) => "warn",
                _ => "info",
            };
            crate::log::write(level, &format!("check #{id} {}", info.message));
            info.result = Some(result);
            (me.emit)(id, "sync_done", json!(info));
        });
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(global: &str, channel: &str) -> MbsyncConfig {
        let text = format!(
            "{global}\nIMAPAccount a\nHost h\nUser u\nTimeout 3\n\nIMAPStore r\nAccount a\n\n\
             MaildirStore l\nPath /m/\nInbox /m/INBOX\n\n\
             Channel c\nFar :r:\nNear :l:\nPatterns *\n{channel}\n"
        );
        MbsyncConfig::parse(&text, Path::new("/rc")).unwrap()
    }

    #[test]
    fn state_location_follows_channel_then_global() {
        let c = cfg("SyncState *\n", "");
        assert_eq!(
            sync_state_of(&c, &c.channels[0]),
            Some(SyncState::InMailbox)
        );
        let c = cfg("SyncState /s/\n", "");
        assert_eq!(
            sync_state_of(&c, &c.channels[0]),
            Some(SyncState::Global("/s/".into()))
        );
        let c = cfg("SyncState /s/\n", "SyncState /c/x-");
        assert_eq!(
            sync_state_of(&c, &c.channels[0]),
            Some(SyncState::Channel("/c/x-".into()))
        );
        let c = cfg("SyncState /s/\n", "SyncState *");
        assert_eq!(
            sync_state_of(&c, &c.channels[0]),
            Some(SyncState::InMailbox)
        );
    }

    #[test]
    fn connection_honours_the_account_timeout() {
        let c = cfg("", "");
        let conn = connection_for(&c, &c.channels[0], None).unwrap();
        assert_eq!(conn.timeout, Duration::from_secs(3));
        let mut account = c.imap_accounts[0].clone();
        account.timeout = Some(0);
        assert_eq!(timeout_of(&account), DEFAULT_TIMEOUT);
    }

    #[test]
    fn box_names_drop_the_far_prefix() {
        let text = "IMAPStore r\nHost h\nUser u\n\nMaildirStore l\nPath /m/\n\n\
                    Channel g\nFar :r:\"[Gmail]/\"\nNear :l:\nPatterns *\n\n\
                    Channel p\nFar :r:\nNear :l:\nPatterns *\n";
        let c = MbsyncConfig::parse(text, Path::new("/rc")).unwrap();
        assert_eq!(box_name(&c.channels[0], "[Gmail]/Sent Mail"), "Sent Mail");
        assert_eq!(box_name(&c.channels[0], "INBOX"), "INBOX");
        assert_eq!(box_name(&c.channels[1], "Work/Projects"), "Work/Projects");
        // A prefix beyond ASCII, written as the server spells it (mbsync
        // 1.4) or in Unicode (1.5).
        for far in ["Entw&APw-rfe/", "Entwürfe/"] {
            let text = format!(
                "IMAPStore r\nHost h\nUser u\n\nMaildirStore l\nPath /m/\n\n\
                 Channel e\nFar :r:\"{far}\"\nNear :l:\nPatterns *\n"
            );
            let c = MbsyncConfig::parse(&text, Path::new("/rc")).unwrap();
            assert_eq!(box_name(&c.channels[0], "Entwürfe/Alt"), "Alt", "{far}");
        }
    }

    fn answered(folder: &str, new: u32) -> FolderCheck {
        FolderCheck {
            folder: folder.to_owned(),
            new,
            total: new,
            unseen: 0,
            uidvalidity_changed: false,
            local_changes: false,
            error: None,
            imap_account: None,
        }
    }

    fn refused(folder: &str, kind: ErrorKind, why: &str) -> FolderCheck {
        FolderCheck {
            error: Some(crate::imap::check::FolderError {
                kind,
                message: format!("IMAP folder '{folder}' on h:143: {why}"),
            }),
            ..answered(folder, 0)
        }
    }

    #[test]
    fn refused_folders_are_named_briefly() {
        assert_eq!(not_checked(&[answered("INBOX", 2)]), None);
        let checks = [
            answered("INBOX", 2),
            refused("Old", ErrorKind::Config, "Mailbox doesn't exist: Old"),
        ];
        assert_eq!(
            not_checked(&checks).unwrap(),
            "Old (IMAP folder 'Old' on h:143: Mailbox doesn't exist: Old)"
        );
        // Long reasons and names are cut (on a character), many folders
        // counted rather than listed.
        let long = format!("{}é", "x".repeat(QUOTED_NAME - 1));
        let checks: Vec<FolderCheck> = (0..5)
            .map(|i| refused(&format!("{long}{i}"), ErrorKind::Config, &"y".repeat(500)))
            .collect();
        let text = not_checked(&checks).unwrap();
        assert!(text.ends_with(", and 2 more"), "{text}");
        assert_eq!(text.matches("...").count(), 6, "{text}");
        assert!(
            text.len() < 3 * (QUOTED_NAME + QUOTED_REASON + 12) + 20,
            "{text}"
        );
    }

    #[test]
    fn a_check_fails_only_when_every_folder_was_refused() {
        assert_eq!(all_refused(&[]), None);
        let some = [refused("A", ErrorKind::Config, "no"), answered("INBOX", 0)];
        assert_eq!(all_refused(&some), None);
        // One folder: its own error, unchanged.
        let one = [refused("A", ErrorKind::Network, "[INUSE] busy")];
        assert_eq!(
            all_refused(&one),
            Some(Error::new(
                ErrorKind::Network,
                "IMAP folder 'A' on h:143: [INUSE] busy"
            ))
        );
        // Several: the first one's kind, every folder named.
        let all = [
            refused("A", ErrorKind::Config, "gone"),
            refused("B", ErrorKind::Network, "busy"),
        ];
        let e = all_refused(&all).unwrap();
        assert_eq!(e.kind, ErrorKind::Config);
        assert_eq!(
            e.message,
            "no folder could be checked: A (IMAP folder 'A' on h:143: gone), \
             B (IMAP folder 'B' on h:143: busy)"
        );
    }

    #[test]
    fn counts_need_a_maildir_store() {
        let text = "IMAPStore r\nHost h\nUser u\n\nIMAPStore s\nHost h\nUser u\n\n\
                    Channel c\nFar :r:\nNear :s:\n";
        let c = MbsyncConfig::parse(text, Path::new("/rc")).unwrap();
        let err = folder_counts(&c, &HashMap::new(), "c").unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("no MaildirStore"), "{}", err.message);
    }
}
