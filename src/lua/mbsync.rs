//! Glue for `himalaya.sync.mbsync`.

use mlua::{ffi, Lua, Table};

use super::func_pure;
use crate::mbsync::progress::{parse_progress_line, Counter, Progress, Side};

pub(super) fn register(lua: &Lua, m: &Table) -> mlua::Result<()> {
    m.set(
        "parse_progress_line",
        func_pure(lua, |lua, line: mlua::LuaString| {
            Ok(match parse_progress_line(&line.as_bytes()) {
                Some(p) => mlua::Value::Table(
                    progress_table(lua, &p)
                        .map_err(|e| crate::error::Error::invalid(e.to_string()))?,
                ),
                None => mlua::Value::Nil,
            })
        })?,
    )?;
    Ok(())
}

/// The frame as the Lua API documents it (`himalaya.sync.Progress`): the
/// fields the events carry, plus `percent` when it is known.
///
/// Built with the raw Lua API inside one protected call. mlua's safe table
/// calls each run in a protected call of their own, which allocates a
/// closure: the 13 tables of a frame took about 50 µs that way, ten times
/// what matching the frame with a Lua pattern costs.
fn progress_table(lua: &Lua, p: &Progress) -> mlua::Result<Table> {
    // SAFETY: the closure only pushes values and sets fields of the tables
    // it created, at most four stack slots deep (a C function is given
    // LUA_MINSTACK = 20), and leaves exactly the new table on the stack. It
    // owns nothing that a Lua error (out of memory) would leak.
    unsafe {
        lua.exec_raw((), |state| {
            ffi::lua_createtable(state, 0, 6);
            push_counter(state, p.channels);
            ffi::lua_setfield(state, -2, c"channels".as_ptr());
            push_counter(state, p.boxes);
            ffi::lua_setfield(state, -2, c"boxes".as_ptr());
            push_side(state, &p.far);
            ffi::lua_setfield(state, -2, c"far".as_ptr());
            push_side(state, &p.near);
            ffi::lua_setfield(state, -2, c"near".as_ptr());
            ffi::lua_pushboolean(state, p.truncated.into());
            ffi::lua_setfield(state, -2, c"truncated".as_ptr());
            if let Some(pct) = p.percent() {
                ffi::lua_pushnumber(state, pct);
                ffi::lua_setfield(state, -2, c"percent".as_ptr());
            }
        })
    }
}

/// Pushes `{new = ..., flags = ..., trash = ..., expunge = ...}`.
unsafe fn push_side(state: *mut ffi::lua_State, s: &Side) {
    ffi::lua_createtable(state, 0, 4);
    for (name, c) in [
        (c"new", s.new),
        (c"flags", s.flags),
        (c"trash", s.trash),
        (c"expunge", s.expunge),
    ] {
        push_counter(state, c);
        ffi::lua_setfield(state, -2, name.as_ptr());
    }
}

/// Pushes `{done = ..., total = ...}`, as numbers (LuaJIT and Lua 5.1
/// have no integers; counts beyond 2^53 round, as with any conversion).
unsafe fn push_counter(state: *mut ffi::lua_State, c: Counter) {
    ffi::lua_createtable(state, 0, 2);
    for (name, v) in [(c"done", c.done), (c"total", c.total)] {
        ffi::lua_pushnumber(state, v as ffi::lua_Number);
        ffi::lua_setfield(state, -2, name.as_ptr());
    }
}
