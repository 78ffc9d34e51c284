//! The mlua glue: the only code that sees Lua values.
//!
//! Every function here is a thin adapter over an engine call. Conventions,
//! relied on by `lua/himalaya/sync/native.lua`:
//!
//! * success returns the value(s); failure returns `nil, {kind=, message=}`
//!   instead of raising, so the Lua side decides how to report it;
//! * a Rust panic is caught here and turned into the same failure shape
//!   (kind `internal`), so it never unwinds into Neovim;
//! * nothing blocks unless its name says so: waiting work runs on the
//!   runtime and answers through the event bus.

mod events;
mod lock;
mod manager;
mod mbsync;
mod oauth;

use std::panic::{catch_unwind, AssertUnwindSafe};

use mlua::{FromLuaMulti, IntoLuaMulti, Lua, LuaSerdeExt, MultiValue, Table, Value};

use crate::error::{Error, ErrorKind};

/// Builds a Lua function from an engine-style closure, with the error and
/// panic conventions described in the module docs. It first copies the
/// environment for engine threads (see [`crate::env`]): the call may hand
/// them work, and Neovim's thread, this one, is where the environment
/// changes.
pub(crate) fn func<A, R, F>(lua: &Lua, f: F) -> mlua::Result<mlua::Function>
where
    A: FromLuaMulti,
    R: IntoLuaMulti,
    F: Fn(&Lua, A) -> crate::error::Result<R> + Send + 'static,
{
    wrap(lua, move |lua, args| {
        crate::env::snapshot();
        f(lua, args)
    })
}

/// [`func`] without the environment snapshot, for calls whose engine work
/// reads no environment: event delivery (several calls a second while syncs
/// run), parsing and test hooks.
pub(crate) fn func_pure<A, R, F>(lua: &Lua, f: F) -> mlua::Result<mlua::Function>
where
    A: FromLuaMulti,
    R: IntoLuaMulti,
    F: Fn(&Lua, A) -> crate::error::Result<R> + Send + 'static,
{
    wrap(lua, f)
}

fn wrap<A, R, F>(lua: &Lua, f: F) -> mlua::Result<mlua::Function>
where
    A: FromLuaMulti,
    R: IntoLuaMulti,
    F: Fn(&Lua, A) -> crate::error::Result<R> + Send + 'static,
{
    lua.create_function(move |lua, args: MultiValue| {
        // Arguments are converted here rather than by mlua, which would
        // raise (with a traceback) on a string that is not UTF-8 or a
        // number out of range: those are bad input like any other.
        let args = match A::from_lua_args(args, 1, None, lua) {
            Ok(a) => a,
            Err(e) => return failure(lua, &Error::new(ErrorKind::Invalid, bad_argument(&e))),
        };
        match catch_unwind(AssertUnwindSafe(|| f(lua, args))) {
            Ok(Ok(v)) => v.into_lua_multi(lua),
            Ok(Err(e)) => failure(lua, &e),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                let t = lua.create_table()?;
                t.set("kind", "internal")?;
                t.set(
                    "message",
                    format!("himalaya-sync internal error (please report it): {what}"),
                )?;
                (Value::Nil, t).into_lua_multi(lua)
            }
        }
    })
}

/// One line for an argument mlua could not convert, e.g. `argument #1 is
/// not UTF-8 text`.
fn bad_argument(e: &mlua::Error) -> String {
    let mlua::Error::BadArgument { pos, cause, .. } = e else {
        return format!("bad argument: {e}");
    };
    match cause.as_ref() {
        mlua::Error::FromLuaConversionError {
            from: "string",
            message: Some(m),
            ..
        } if m.contains("utf-8") => format!("argument #{pos} is not UTF-8 text"),
        cause => format!("argument #{pos}: {cause}"),
    }
}

fn failure(lua: &Lua, e: &Error) -> mlua::Result<MultiValue> {
    let t = lua.create_table()?;
    t.set("kind", e.kind.as_str())?;
    t.set("message", shortened(&e.message).as_ref())?;
    (Value::Nil, t).into_lua_multi(lua)
}

/// Longest message handed to Lua, in bytes: far above any message the
/// engine writes itself, well below one that quotes a megabyte of bad input.
const MAX_MESSAGE: usize = 1024;

/// `message` cut to [`MAX_MESSAGE`] bytes, saying how much was left out.
///
/// Messages that quote a bad argument quote it whole, and a caller can pass
/// anything: a megabyte-long account name would otherwise be repeated into
/// every notification and log line that shows the error. The cut happens
/// here, after secrets were redacted: cutting earlier could leave part of
/// a secret that redaction no longer recognises.
fn shortened(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_MESSAGE {
        return message.into();
    }
    let kept = crate::error::prefix_within(message, MAX_MESSAGE);
    format!("{kept}... ({} more bytes)", message.len() - kept.len()).into()
}

/// Converts engine data to a Lua value (tables for structs and maps).
///
/// `None` becomes `nil` (not mlua's `null` sentinel, which `vim.deepcopy`
/// and most Lua code cannot handle) and arrays are plain tables.
pub(crate) fn to_lua<T: serde::Serialize>(lua: &Lua, v: &T) -> crate::error::Result<Value> {
    let options = mlua::serde::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
        .set_array_metatable(false);
    lua.to_value_with(v, options)
        .map_err(|e| Error::new(crate::error::ErrorKind::Unknown, e.to_string()))
}

/// The module table returned by `require('himalaya_sync')`.
#[mlua::lua_module]
fn himalaya_sync(lua: &Lua) -> mlua::Result<Table> {
    // Panics are caught at every entry point; the default hook would still
    // print a backtrace over Neovim's screen, so panics go to the log.
    std::panic::set_hook(Box::new(|info| {
        crate::log::write("error", &format!("internal error: {info}"));
    }));
    // `require` runs on Neovim's main thread: the one that must stay
    // responsive while syncs run (see crate::sched).
    crate::sched::set_editor_thread();
    // Before any engine thread exists: the environment copy (see
    // crate::env), and the time zone, which glibc would read from TZ on the
    // first local-time conversion, wherever that happens.
    crate::env::snapshot();
    crate::log::load_time_zone();
    let m = lua.create_table()?;
    m.set("version", crate::VERSION)?;
    m.set("build_id", crate::BUILD_ID)?;
    events::register(lua, &m)?;
    lock::register(lua, &m)?;
    mbsync::register(lua, &m)?;
    manager::register(lua, &m)?;
    oauth::register(lua, &m)?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_messages_pass_whole() {
        let m = "unknown account \"demo\"";
        assert_eq!(shortened(m), m);
        let m = "x".repeat(MAX_MESSAGE);
        assert_eq!(shortened(&m), m.as_str());
    }

    #[test]
    fn long_messages_are_cut_on_a_character_and_say_how_much() {
        let m = format!("unknown account \"{}\"", "é".repeat(1_000_000));
        let s = shortened(&m);
        assert!(s.len() < MAX_MESSAGE + 40, "{}", s.len());
        assert!(s.starts_with("unknown account \"éé"));
        let cut = m.len() - s.find("...").unwrap();
        assert!(s.ends_with(&format!("... ({cut} more bytes)")));
    }

    #[test]
    fn time_limits_take_one_second_at_least() {
        for bad in [0.0, 1e-300, 0.5, -1.0, f64::NAN, 1e9] {
            let e = lock::limit_seconds("mbsync.timeout", bad).unwrap_err();
            assert!(
                e.message.contains("expected seconds from 1 to 86400"),
                "{}",
                e.message
            );
        }
        assert_eq!(
            lock::limit_seconds("mbsync.timeout", 1.5).unwrap(),
            std::time::Duration::from_millis(1500)
        );
    }
}
