//! Glue for `himalaya.sync.lock`: one [`LockTable`] per process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, Table};
use once_cell::sync::OnceCell;
use serde_json::json;

use super::{func, to_lua};
use crate::error::{Error, ErrorKind, Result};
use crate::lock::{default_dir, LockDir, LockTable, MAX_WAIT};
use crate::runtime;

static TABLE: OnceCell<Arc<LockTable>> = OnceCell::new();

/// The process's lock table, opening the lock directory on first use.
/// The Lua side opens it with the configured folder before any other use;
/// asking for another folder later is an error, because two Neovims must
/// agree on one folder for their locks to exclude each other.
pub(crate) fn table(dir: Option<PathBuf>) -> Result<Arc<LockTable>> {
    let t = TABLE
        .get_or_try_init(|| {
            let path = match &dir {
                Some(d) => d.clone(),
                None => default_dir()?,
            };
            Ok::<_, Error>(Arc::new(LockTable::new(LockDir::open(path)?)))
        })?
        .clone();
    if let Some(wanted) = dir {
        if wanted != t.dir().path() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the lock folder is already {}; restart Neovim to use {}",
                    t.dir().path().display(),
                    wanted.display()
                ),
            ));
        }
    }
    Ok(t)
}

/// Seconds from Lua as a Duration, with an error naming the bad value.
pub(crate) fn seconds(name: &str, value: f64) -> Result<Duration> {
    if !(0.0..=MAX_WAIT).contains(&value) {
        return Err(Error::invalid(format!(
            "invalid {name} {value}: expected seconds from 0 to {MAX_WAIT}"
        )));
    }
    Duration::try_from_secs_f64(value)
        .map_err(|_| Error::invalid(format!("invalid {name} {value}")))
}

/// [`seconds`] for a time limit that must leave room for the work it
/// bounds (the Lua side checks the same; this holds for other callers).
pub(crate) fn limit_seconds(name: &str, value: f64) -> Result<Duration> {
    if !(1.0..=MAX_WAIT).contains(&value) {
        return Err(Error::invalid(format!(
            "invalid {name} {value}: expected seconds from 1 to {MAX_WAIT}"
        )));
    }
    seconds(name, value)
}

pub(super) fn register(lua: &Lua, m: &Table) -> mlua::Result<()> {
    m.set(
        "lock_open",
        func(lua, |_, dir: Option<String>| {
            let t = table(dir.map(PathBuf::from))?;
            Ok(t.dir().path().display().to_string())
        })?,
    )?;
    // Blocking form: waits up to `timeout` seconds on the calling thread.
    m.set(
        "lock_acquire",
        func(
            lua,
            |_, (name, timeout, purpose): (String, Option<f64>, Option<String>)| {
                let timeout = seconds("lock timeout", timeout.unwrap_or(0.0))?;
                let table = table(None)?;
                // Only this thread, Neovim's, could release it: waiting would
                // freeze the editor for the whole timeout, then fail anyway.
                if table.holds(&name) {
                    return Err(Error::new(
                        ErrorKind::Locked,
                        format!("lock {name:?} is already held by this Neovim; release it first"),
                    ));
                }
                table.acquire(
                    &name,
                    timeout,
                    purpose.as_deref().unwrap_or(""),
                    Some(runtime::stop_flag()),
                )?;
                Ok(true)
            },
        )?,
    )?;
    // Callback form: returns a request id at once; the answer arrives as a
    // `lock` event `{ ok = bool, error = { kind, message }? }` with that id.
    m.set(
        "lock_acquire_async",
        func(
            lua,
            |_, (name, timeout, purpose): (String, Option<f64>, Option<String>)| {
                let timeout = seconds("lock timeout", timeout.unwrap_or(0.0))?;
                crate::lock::validate_name(&name)?;
                let table = table(None)?;
                let id = runtime::next_id();
                runtime::handle()?.spawn(async move {
                    let purpose = purpose.unwrap_or_default();
                    let got = table
                        .acquire_async(&name, timeout, &purpose, Some(runtime::stop_flag()))
                        .await;
                    // Shut down while waiting: nobody will ever release it.
                    // (Only if this request got it: a failed one must not
                    // free the same name another request of this Neovim holds.)
                    if got.is_ok() && runtime::is_stopped() {
                        let _ = table.release(&name);
                    }
                    let data = match got {
                        Ok(()) => json!({ "ok": true }),
                        Err(e) => json!({ "ok": false, "error": { "kind": e.kind, "message": e.message } }),
                    };
                    runtime::emit(id, "lock", data);
                });
                Ok(id)
            },
        )?,
    )?;
    m.set(
        "lock_release",
        func(lua, |_, name: String| table(None)?.release(&name))?,
    )?;
    m.set(
        "lock_list",
        func(lua, |lua, ()| {
            let t = table(None)?;
            let mut list = t.dir().list()?;
            let pid = std::process::id();
            // Mark the locks this Neovim holds, which the UI shows apart:
            // taken through this table or by the engine (a sync's account
            // lock, the auto-sync or IDLE leadership).
            let list: Vec<_> = list
                .drain(..)
                .map(|info| {
                    let ours = info.held && info.pid == Some(pid);
                    (info, ours)
                })
                .collect();
            let out = lua.create_table().map_err(lua_err)?;
            for (i, (info, ours)) in list.iter().enumerate() {
                let v = to_lua(lua, info)?;
                if let mlua::Value::Table(row) = &v {
                    row.set("mine", *ours).map_err(lua_err)?;
                }
                out.raw_set(i + 1, v).map_err(lua_err)?;
            }
            Ok(out)
        })?,
    )?;
    m.set(
        "lock_cleanup",
        func(lua, |_, ()| table(None)?.dir().cleanup_stale())?,
    )?;
    m.set(
        "lock_held",
        func(lua, |_, ()| Ok(table(None)?.held_names()))?,
    )?;
    Ok(())
}

fn lua_err(e: mlua::Error) -> Error {
    Error::new(ErrorKind::Unknown, e.to_string())
}
