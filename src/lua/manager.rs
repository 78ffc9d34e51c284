//! Glue for `himalaya.sync.manager` and the sync half of `himalaya.sync.mbsync`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, LuaSerdeExt, Table};
use once_cell::sync::OnceCell;
use serde::Deserialize;

use super::{func, to_lua};
use crate::error::{Error, Result};
use crate::lock::LockDir;
use crate::manager::{AccountOverrides, Manager, Settings, StartOptions, SyncType};
use crate::runtime;

static MANAGER: OnceCell<Arc<Manager>> = OnceCell::new();

fn manager() -> Result<Arc<Manager>> {
    MANAGER
        .get_or_try_init(|| {
            let dir = super::lock::table(None)?.dir().path().to_path_buf();
            Ok(Arc::new(Manager::new(
                Arc::new(LockDir::open(dir)?),
                Arc::new(runtime::emit),
                Box::new(runtime::next_id),
            )))
        })
        .cloned()
}

/// The `mbsync` part of the Lua configuration, already validated in Lua.
#[derive(Deserialize)]
struct LuaSettings {
    cmd: String,
    config: Option<String>,
    timeout: f64,
    #[serde(default)]
    extra_args: Vec<String>,
    #[serde(default)]
    accounts: HashMap<String, AccountOverrides>,
}

pub(super) fn register(lua: &Lua, m: &Table) -> mlua::Result<()> {
    m.set(
        "manager_configure",
        func(lua, |lua, v: mlua::Value| {
            let s: LuaSettings = lua
                .from_value(v)
                .map_err(|e| Error::invalid(format!("invalid manager settings: {e}")))?;
            if !s.timeout.is_finite() || s.timeout <= 0.0 {
                return Err(Error::invalid(format!(
                    "invalid mbsync.timeout {}",
                    s.timeout
                )));
            }
            manager()?.configure(Settings {
                mbsync_cmd: s.cmd.into(),
                mbsync_config: s.config.map(Into::into),
                idle_timeout: Duration::from_secs_f64(s.timeout),
                extra_args: s.extra_args,
                accounts: s.accounts,
            });
            Ok(true)
        })?,
    )?;
    m.set(
        "sync_start",
        func(
            lua,
            |_, (kind, account, folders, wait): (String, String, Option<Vec<String>>, Option<f64>)| {
                let wait = wait.unwrap_or(0.0);
                if !wait.is_finite() || wait < 0.0 {
                    return Err(Error::invalid(format!("invalid wait {wait}: expected seconds >= 0")));
                }
                let rt = runtime::handle()?;
                manager()?.start(
                    &rt,
                    StartOptions {
                        kind: SyncType::parse(&kind)?,
                        account,
                        folders: folders.unwrap_or_default(),
                        wait_lock: Duration::from_secs_f64(wait),
                    },
                )
            },
        )?,
    )?;
    m.set(
        "sync_cancel",
        func(lua, |_, id: Option<u64>| Ok(manager()?.cancel(id)))?,
    )?;
    m.set(
        "sync_snapshot",
        func(lua, |lua, ()| to_lua(lua, &manager()?.snapshot()))?,
    )?;
    m.set("sync_busy", func(lua, |_, ()| Ok(manager()?.busy()))?)?;
    m.set(
        "mbsync_targets",
        func(lua, |lua, ()| {
            to_lua(lua, &manager()?.mbsync_config()?.targets())
        })?,
    )?;
    Ok(())
}
