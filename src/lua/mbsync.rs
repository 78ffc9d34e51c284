//! Glue for `himalaya.sync.mbsync`.

use mlua::{Lua, Table};

use super::{func_pure, to_lua};
use crate::mbsync::progress::parse_progress_line;

pub(super) fn register(lua: &Lua, m: &Table) -> mlua::Result<()> {
    m.set(
        "parse_progress_line",
        func_pure(lua, |lua, line: mlua::LuaString| {
            Ok(match parse_progress_line(&line.as_bytes()) {
                Some(p) => {
                    let v = to_lua(lua, &p)?;
                    if let (mlua::Value::Table(t), Some(pct)) = (&v, p.percent()) {
                        t.set("percent", pct)
                            .map_err(|e| crate::error::Error::invalid(e.to_string()))?;
                    }
                    v
                }
                None => mlua::Value::Nil,
            })
        })?,
    )?;
    Ok(())
}
