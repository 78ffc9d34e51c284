//! Push: IMAP IDLE watchers that start a sync when new mail arrives.
//!
//! [`IdleSet`] keeps, per account, one [`IdleWatcher`] per watched folder
//! (one connection each, see [`crate::imap::idle`]: re-IDLE before the
//! server's timeout, reconnect with backoff). When a folder's message count
//! grows the watcher asks the manager for a sync of that folder (an inbox
//! sync for INBOX), which the queue coalesces with any sync already waiting
//! or running for the account, so a burst of deliveries costs one sync.
//!
//! Which process watches is the editor's business (a named lock elects one
//! Neovim, as for auto-sync); this module only runs the watchers it is
//! given and stops them on request or when dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;

use super::check::connection_for;
use super::targets::{self, SyncType};
use super::{Manager, StartOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::imap::idle::{IdleEvent, IdleOptions, IdleWatcher};
use crate::mbsync::config::Channel;
use crate::mbsync::names;

/// The serial number of the next watcher started in this process.
static NEXT_WATCHER: AtomicU64 = AtomicU64::new(1);

/// How long a push-started sync waits when another process syncs the
/// account: the mail arrived, so it should be fetched once that sync ends.
const PUSH_WAIT_LOCK: Duration = Duration::from_secs(120);

/// The watchers of this process.
#[derive(Default)]
pub struct IdleSet {
    watchers: Mutex<HashMap<String, Vec<Running>>>,
}

/// One watcher and whether its IDLE is active right now.
struct Running {
    /// Its serial number, unique in this process: the editor tells a
    /// report of this watcher from one of a watcher it replaced.
    serial: u64,
    folder: String,
    /// See [`Watched::imap_account`].
    imap_account: Option<String>,
    watcher: IdleWatcher,
    idle: Arc<AtomicBool>,
}

/// One watched folder, for status displays.
#[derive(Debug, Clone, Serialize)]
pub struct Watched {
    pub account: String,
    pub folder: String,
    /// The mbsyncrc's `IMAPAccount` it watches, when the account's channels
    /// log in to several (a `Group` of accounts: each has an `INBOX`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap_account: Option<String>,
    /// The watcher's serial number (its `idle_stopped` event names it).
    pub watcher: u64,
    /// False once the watcher ended on an error retrying cannot fix (see
    /// the log for which).
    pub running: bool,
    /// IDLE is active: new mail now is seen at once.
    pub idle: bool,
}

impl IdleSet {
    pub fn new() -> Self {
        IdleSet::default()
    }

    /// Watches `folders` (Unicode names on the server) of `account`,
    /// replacing any watchers it had: on every `IMAPAccount` its channels
    /// log in to (a `Group` of accounts has several), each folder with the
    /// connection of the first channel on it. Returns how many it watches,
    /// and why it watches none of the others (a folder the account leaves
    /// out).
    pub fn start(
        &self,
        manager: &Arc<Manager>,
        account: &str,
        folders: &[String],
        options: IdleOptions,
    ) -> Result<(usize, Vec<String>)> {
        targets::validate_account(account)?;
        if folders.is_empty() {
            return Err(Error::invalid("IDLE needs at least one folder to watch"));
        }
        let cfg = manager.mbsync_config()?;
        let accounts = manager.settings().accounts;
        let full = targets::resolve(&cfg, &accounts, SyncType::Full, account, &[])?;
        let channels = targets::channels_of_targets(&cfg, &full);
        // The first channel on each IMAPAccount, in the account's order. A
        // channel with no IMAP side (Maildir to Maildir, say a local backup
        // in a `Group`) has no server to watch; the others are watched.
        let mut servers: Vec<(&Channel, &str)> = Vec::new();
        for c in channels.iter().filter_map(|c| cfg.channel(c)) {
            let Some(server) = cfg.imap_account_for(c).map(|a| a.name.as_str()) else {
                continue;
            };
            if !servers.iter().any(|(_, s)| *s == server) {
                servers.push((c, server));
            }
        }
        let Some(&(channel, _)) = servers.first() else {
            return Err(Error::new(
                ErrorKind::Config,
                format!("account '{account}' has no channel with an IMAP side to watch"),
            ));
        };
        let tokens = manager.token_source(account);
        let mut connections = Vec::with_capacity(servers.len());
        for (c, server) in &servers {
            let name = (servers.len() > 1).then(|| server.to_string());
            connections.push((connection_for(&cfg, c, tokens.clone())?, name));
        }
        // The box a push syncs: a folder of the account's only channel, by
        // its name in that channel (without the Far prefix). An account of
        // several channels (a group) cannot sync one folder by name, and a
        // channel of one box has no box to name: those sync in full.
        let only = (channels.len() == 1).then_some(channel);
        // A push would be refused by a folders sync (see
        // `targets::check_patterns`): told now, not at the first new mail,
        // and the other folders watched (idle.folders is one list for every
        // account). A name beyond ASCII is judged once mbsync's version is
        // known; before that, by the sync its new mail asks for.
        let mut refused = Vec::new();
        let mut watched: Vec<&String> = folders.iter().collect();
        if let Some(c) = only {
            let utf8 = names::known_utf8(&manager.settings().mbsync_cmd.to_string_lossy());
            watched.retain(|folder| {
                let boxed = super::check::box_name(c, folder);
                if folder.eq_ignore_ascii_case("INBOX") || boxed.is_empty() {
                    return true;
                }
                let target = [format!("{}:{boxed}", c.name)];
                let kind = SyncType::Folders;
                match targets::check_patterns(&cfg, &accounts, kind, account, &target, utf8) {
                    Ok(()) => true,
                    Err(e) => {
                        refused.push(format!("not watching {folder:?}: {}", e.message));
                        false
                    }
                }
            });
        }
        if watched.is_empty() {
            return Err(Error::new(ErrorKind::Config, refused.join("; ")));
        }
        self.stop(Some(account));
        let _enter = manager.rt.enter();
        let mut started = Vec::new();
        for (connection, server) in &connections {
            for folder in watched.iter().copied() {
                let weak: Weak<Manager> = Arc::downgrade(manager);
                let acct = account.to_string();
                let name = match server {
                    Some(s) => format!("{s}: {folder}"),
                    None => folder.clone(),
                };
                let push = push_sync(
                    account,
                    folder,
                    only.map(|c| super::check::box_name(c, folder)),
                );
                let idle = Arc::new(AtomicBool::new(false));
                let flag = idle.clone();
                let serial = NEXT_WATCHER.fetch_add(1, Ordering::Relaxed);
                let watcher = IdleWatcher::spawn(connection.clone(), folder.clone(), options, {
                    move |event| {
                        flag.store(
                            matches!(
                                event,
                                IdleEvent::Watching { .. } | IdleEvent::NewMail { .. }
                            ),
                            Ordering::SeqCst,
                        );
                        on_event(&weak, serial, &acct, &name, &push, event)
                    }
                });
                started.push(Running {
                    serial,
                    folder: folder.clone(),
                    imap_account: server.clone(),
                    watcher,
                    idle,
                });
            }
        }
        let n = started.len();
        let watching: Vec<&str> = watched.iter().map(|f| f.as_str()).collect();
        let on: Vec<&str> = connections
            .iter()
            .filter_map(|(_, s)| s.as_deref())
            .collect();
        crate::log::write(
            "info",
            &format!(
                "IDLE: watching {} of {account}{}",
                watching.join(", "),
                if on.is_empty() {
                    String::new()
                } else {
                    format!(" on {}", on.join(", "))
                }
            ),
        );
        self.watchers.lock().insert(account.to_string(), started);
        Ok((n, refused))
    }

    /// Stops the watchers of one account, or all; returns how many stopped.
    pub fn stop(&self, account: Option<&str>) -> usize {
        let mut map = self.watchers.lock();
        let names: Vec<String> = match account {
            Some(a) => map.keys().filter(|k| *k == a).cloned().collect(),
            None => map.keys().cloned().collect(),
        };
        let mut n = 0;
        for name in names {
            for r in map.remove(&name).unwrap_or_default() {
                r.watcher.stop();
                n += 1;
            }
        }
        n
    }

    /// Every watched folder.
    pub fn list(&self) -> Vec<Watched> {
        let map = self.watchers.lock();
        let mut out: Vec<Watched> = map
            .iter()
            .flat_map(|(account, ws)| {
                ws.iter().map(move |r| Watched {
                    account: account.clone(),
                    folder: r.folder.clone(),
                    imap_account: r.imap_account.clone(),
                    watcher: r.serial,
                    running: !r.watcher.is_finished(),
                    idle: r.idle.load(Ordering::SeqCst) && !r.watcher.is_finished(),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.account, &a.folder, &a.imap_account).cmp(&(&b.account, &b.folder, &b.imap_account))
        });
        out
    }
}

impl Drop for IdleSet {
    fn drop(&mut self) {
        self.stop(None);
    }
}

/// A watcher's report: new mail starts a sync; the rest is logged.
fn on_event(
    manager: &Weak<Manager>,
    serial: u64,
    account: &str,
    folder: &str,
    push: &StartOptions,
    event: IdleEvent,
) {
    match event {
        IdleEvent::Watching { .. } => {
            crate::log::write("info", &format!("IDLE: {account} {folder} is idle"));
        }
        IdleEvent::Error {
            error, retry_in, ..
        } => crate::log::write(
            "warn",
            &format!(
                "IDLE: {account} {folder}: {} (reconnecting in {} s)",
                error.message,
                retry_in.as_secs()
            ),
        ),
        IdleEvent::Stopped { error, .. } => {
            crate::log::write(
                "error",
                &format!(
                    "IDLE: {account} {folder} stopped: {} (fix it, then :HimalayaSync idle on)",
                    error.message
                ),
            );
            // The editor decides what follows (tell the user; give the
            // watch up when no folder is left), so it must hear of it.
            if let Some(manager) = manager.upgrade() {
                (manager.emit)(
                    0,
                    "idle_stopped",
                    json!({
                        "watcher": serial,
                        "account": account,
                        "folder": folder,
                        "kind": error.kind,
                        "message": error.message,
                    }),
                );
            }
        }
        IdleEvent::NewMail { .. } => {
            let Some(manager) = manager.upgrade() else {
                return;
            };
            let opts = push.clone();
            crate::log::write(
                "info",
                &format!("IDLE: new mail in {account} {folder}; starting a sync"),
            );
            if let Err(e) = manager.start(opts) {
                crate::log::write(
                    "error",
                    &format!("IDLE: cannot start a sync of {account}: {}", e.message),
                );
            }
        }
    }
}

/// The sync new mail in `folder` calls for: the inbox sync for INBOX (which
/// any running full sync covers), else a sync of its box (`boxed`: its
/// name in the account's only channel), else a full sync.
fn push_sync(account: &str, folder: &str, boxed: Option<String>) -> StartOptions {
    let (kind, folders) = if folder.eq_ignore_ascii_case("INBOX") {
        (SyncType::Inbox, Vec::new())
    } else {
        match boxed.filter(|b| !b.is_empty()) {
            Some(b) => (SyncType::Folders, vec![b]),
            None => (SyncType::Full, Vec::new()),
        }
    };
    StartOptions {
        kind,
        account: account.to_string(),
        folders,
        wait_lock: PUSH_WAIT_LOCK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_mail_asks_for_an_inbox_sync() {
        let o = push_sync("demo", "INBOX", Some("INBOX".into()));
        assert_eq!((o.kind, o.folders.len()), (SyncType::Inbox, 0));
        let o = push_sync("demo", "Work/Projects", Some("Work/Projects".into()));
        assert_eq!(o.kind, SyncType::Folders);
        assert_eq!(o.folders, ["Work/Projects"]);
        assert_eq!(o.wait_lock, PUSH_WAIT_LOCK);
        // Far :r:"[Gmail]/": the box is named without the prefix.
        let o = push_sync("g", "[Gmail]/Sent Mail", Some("Sent Mail".into()));
        assert_eq!(o.folders, ["Sent Mail"]);
        // A group, or a channel of that one box: the account in full.
        for boxed in [None, Some(String::new())] {
            let o = push_sync("g", "[Gmail]/Sent Mail", boxed);
            assert_eq!((o.kind, o.folders.len()), (SyncType::Full, 0));
        }
    }
}
