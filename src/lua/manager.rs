//! Glue for `himalaya.sync.manager` and the sync half of `himalaya.sync.mbsync`.

use std::collections::HashMap;
use std::sync::Arc;

use mlua::{Lua, LuaSerdeExt, Table};
use once_cell::sync::OnceCell;
use serde::Deserialize;

use super::{func, to_lua};
use crate::error::{Error, ErrorKind, Result};
use crate::imap::idle::IdleOptions;
use crate::lock::LockDir;
use crate::manager::elsewhere;
use crate::manager::idle::IdleSet;
use crate::manager::{
    targets, AccountOverrides, Manager, RetryPolicy, Settings, StartOptions, SyncType,
    UidvalidityPolicy,
};
use crate::oauth::account::AccountSettings;
use crate::runtime;

static MANAGER: OnceCell<Arc<Manager>> = OnceCell::new();
/// The IDLE watchers of this Neovim (push; see `himalaya.sync.idle`).
static IDLE: once_cell::sync::Lazy<IdleSet> = once_cell::sync::Lazy::new(IdleSet::new);

pub(super) fn manager() -> Result<Arc<Manager>> {
    MANAGER
        .get_or_try_init(|| {
            let dir = super::lock::table(None)?.dir().path().to_path_buf();
            let locks = Arc::new(LockDir::open(dir)?);
            let rt = runtime::handle()?;
            // Without it only the status line misses other processes' syncs.
            if let Err(e) = elsewhere::watch(locks.clone(), std::process::id(), &rt, |syncs| {
                runtime::emit(0, "sync_elsewhere", serde_json::json!({ "syncs": syncs }));
            }) {
                crate::log::write("warn", &e.message);
            }
            Ok(Arc::new(Manager::new(
                locks,
                Arc::new(runtime::emit),
                Box::new(runtime::next_id),
                rt,
            )))
        })
        .cloned()
}

/// Retry settings as the Lua configuration spells them (seconds).
#[derive(Deserialize)]
struct LuaRetry {
    base: f64,
    factor: f64,
    cap: f64,
    max_attempts: u32,
    jitter: f64,
}

/// The engine part of the Lua configuration, already validated in Lua.
#[derive(Deserialize)]
struct LuaSettings {
    cmd: String,
    config: Option<String>,
    timeout: f64,
    #[serde(default)]
    extra_args: Vec<String>,
    #[serde(default)]
    accounts: HashMap<String, AccountOverrides>,
    max_parallel: usize,
    retry: LuaRetry,
    state_dir: Option<String>,
    uidvalidity: UidvalidityPolicy,
    max_connections: usize,
    relay_cmd: Option<String>,
    #[serde(default)]
    auth_refresh: Vec<String>,
    /// OAuth accounts (validated again here: unknown fields are errors).
    #[serde(default)]
    oauth: Vec<AccountSettings>,
    /// Shorten the editor thread's time slice while syncs run.
    #[serde(default = "yes")]
    responsive: bool,
}

fn yes() -> bool {
    true
}

pub(super) fn register(lua: &Lua, m: &Table) -> mlua::Result<()> {
    m.set(
        "manager_configure",
        func(lua, |lua, v: mlua::Value| {
            let s: LuaSettings = lua
                .from_value(v)
                .map_err(|e| Error::invalid(format!("invalid manager settings: {e}")))?;
            let mut oauth = HashMap::new();
            for a in s.oauth {
                a.provider_spec()?;
                if let Some(dir) = &s.state_dir {
                    a.store_spec(std::path::Path::new(dir))?;
                }
                oauth.insert(a.name.clone(), a);
            }
            // The token command (mbsync's PassCmd) reads them from here.
            if let Some(dir) = &s.state_dir {
                let list: Vec<_> = oauth.values().cloned().collect();
                if !list.is_empty() {
                    crate::oauth::account::save_all(std::path::Path::new(dir), &list)?;
                }
            }
            crate::sched::set_enabled(s.responsive);
            manager()?.configure(Settings {
                mbsync_cmd: s.cmd.into(),
                mbsync_config: s.config.map(Into::into),
                idle_timeout: super::lock::limit_seconds("mbsync.timeout", s.timeout)?,
                extra_args: s.extra_args,
                accounts: s.accounts,
                max_parallel: s.max_parallel.max(1),
                retry: RetryPolicy {
                    base: super::lock::seconds("retry.base", s.retry.base)?,
                    factor: s.retry.factor,
                    cap: super::lock::seconds("retry.cap", s.retry.cap)?,
                    max_attempts: s.retry.max_attempts,
                    jitter: s.retry.jitter,
                },
                state_dir: s.state_dir.map(Into::into),
                uidvalidity: s.uidvalidity,
                max_connections: s.max_connections.max(1),
                relay_cmd: s.relay_cmd.map(Into::into),
                auth_refresh: s.auth_refresh.into_iter().collect(),
                oauth,
                ..Settings::default()
            });
            Ok(true)
        })?,
    )?;
    m.set(
        "sync_start",
        func(
            lua,
            |_, (kind, account, folders, wait): (String, String, Option<Vec<String>>, Option<f64>)| {
                manager()?.start(StartOptions {
                    kind: SyncType::parse(&kind)?,
                    account,
                    folders: folders.unwrap_or_default(),
                    wait_lock: super::lock::seconds("wait", wait.unwrap_or(0.0))?,
                })
            },
        )?,
    )?;
    // The editor's answer to a `sync_auth` event: `ok`, or the reason the
    // credentials could not be refreshed and, optionally, the kind of that
    // failure (a `network` or `timeout` one is retried as such; any other,
    // or none, ends the sync as an auth failure).
    m.set(
        "sync_auth_refreshed",
        func(
            lua,
            |_, (id, ok, why, kind): (u64, bool, Option<String>, Option<String>)| {
                let outcome = if ok {
                    Ok(())
                } else {
                    let kind = match kind {
                        Some(k) => serde_json::from_value(serde_json::Value::String(k.clone()))
                            .map_err(|_| {
                                Error::invalid(format!(
                                    "invalid kind {k:?}: expected an error kind such as auth, network or timeout"
                                ))
                            })?,
                        None => ErrorKind::Auth,
                    };
                    Err(Error::new(
                        kind,
                        why.unwrap_or_else(|| "the refresh failed".into()),
                    ))
                };
                manager()?.auth_refreshed(id, outcome);
                Ok(true)
            },
        )?,
    )?;
    m.set(
        "sync_cancel",
        // Nothing to cancel before the first sync; and creating the manager
        // here would fix the lock folder before the configuration is read.
        func(lua, |_, id: Option<u64>| {
            Ok(MANAGER.get().map_or(0, |m| m.cancel(id)))
        })?,
    )?;
    m.set(
        "sync_history",
        func(lua, |lua, ()| match manager()?.history()? {
            Some(h) => to_lua(lua, &h.load_as_of(crate::manager::now())?),
            None => Ok(mlua::Value::Nil),
        })?,
    )?;
    m.set(
        "log_open",
        func(lua, |_, path: Option<String>| {
            crate::log::open(path.as_deref().map(std::path::Path::new))?;
            Ok(true)
        })?,
    )?;
    m.set(
        "log_write",
        func(lua, |_, (level, message): (String, String)| {
            crate::log::write(&level, &message);
            Ok(true)
        })?,
    )?;
    // Fast check and folder counts (`check` sync type, get_folder_counts).
    m.set(
        "sync_check",
        func(
            lua,
            |_, (account, folders): (String, Option<Vec<String>>)| {
                manager()?.check(account, folders.unwrap_or_default())
            },
        )?,
    )?;
    m.set(
        "folder_counts",
        func(lua, |lua, account: String| {
            to_lua(lua, &manager()?.folder_counts(&account)?)
        })?,
    )?;
    // IDLE push watchers (`himalaya.sync.idle` elects the one Neovim).
    m.set(
        "idle_start",
        func(
            lua,
            |_, (account, folders, reidle): (String, Vec<String>, Option<f64>)| {
                let mut options = IdleOptions::default();
                if let Some(secs) = reidle {
                    options.reidle = super::lock::seconds("idle.reidle", secs)?;
                }
                IDLE.start(&manager()?, &account, &folders, options)
            },
        )?,
    )?;
    m.set(
        "idle_stop",
        func(lua, |_, account: Option<String>| {
            Ok(IDLE.stop(account.as_deref()))
        })?,
    )?;
    m.set("idle_list", func(lua, |lua, ()| to_lua(lua, &IDLE.list()))?)?;
    // himalaya's accounts and the mbsync channels behind each.
    m.set(
        "himalaya_accounts",
        func(lua, |lua, path: Option<String>| {
            match manager()?.himalaya_accounts(path.as_deref().map(std::path::Path::new))? {
                Some(h) => to_lua(lua, &h),
                None => Ok(mlua::Value::Nil),
            }
        })?,
    )?;
    m.set(
        "mbsync_targets",
        func(lua, |lua, ()| {
            let m = manager()?;
            let offers = targets::offers(&m.mbsync_config()?, &m.settings().accounts);
            to_lua(lua, &offers)
        })?,
    )?;
    // The mbsyncrc the engine reads (the configured one, else mbsync's
    // default), for :checkhealth.
    m.set(
        "mbsync_path",
        func(lua, |_, ()| {
            Ok(manager()?.mbsync_config()?.path.display().to_string())
        })?,
    )?;
    m.set(
        "mbsync_passwordless",
        func(lua, |lua, ()| {
            to_lua(lua, &manager()?.mbsync_config()?.passwordless_accounts())
        })?,
    )?;
    // Whether an account name is a channel or group: what every sync start
    // asks, without building the whole list as Lua tables.
    m.set(
        "mbsync_has_target",
        func(lua, |_, name: String| {
            let cfg = manager()?.mbsync_config()?;
            Ok(cfg.channel(&name).is_some() || cfg.group(&name).is_some())
        })?,
    )?;
    Ok(())
}
