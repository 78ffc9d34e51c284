//! Event delivery and lifecycle: the wakeup fd, capped drains, shutdown.

use std::time::Duration;

use mlua::{Lua, Table};

use super::func_pure;
use crate::runtime;

pub(super) fn register(lua: &Lua, m: &Table) -> mlua::Result<()> {
    m.set(
        "events_fd",
        func_pure(lua, |_, ()| Ok(runtime::bus()?.fd()))?,
    )?;
    // Returns (events, more): at most `max` events as a JSON array, and
    // whether more wait. JSON text, decoded by Neovim's own C decoder, costs
    // the editor's thread about a tenth of building the same tables through
    // mlua's serde (measured on a no-op sync's six events: 0.1-0.5 ms against
    // 0.7-3.3 ms), and this runs several times a second while syncs run. The
    // engine threads encoded each event already (see crate::events).
    m.set(
        "drain_events",
        func_pure(lua, |_, max: usize| {
            let drained = runtime::bus()?.drain(max);
            Ok((drained.json, drained.more))
        })?,
    )?;
    m.set(
        "shutdown",
        func_pure(lua, |_, timeout_ms: Option<u64>| {
            runtime::shutdown(Duration::from_millis(timeout_ms.unwrap_or(200)));
            Ok(true)
        })?,
    )?;
    m.set(
        "is_stopped",
        func_pure(lua, |_, ()| Ok(runtime::is_stopped()))?,
    )?;
    // Test hook: floods the bus from a worker thread to prove drains are
    // capped and ordered (used by the Lua specs and `make bench`).
    m.set(
        "emit_test_events",
        func_pure(lua, |_, (count, name): (u64, String)| {
            let handle = runtime::handle()?;
            let id = runtime::next_id();
            handle.spawn_blocking(move || {
                for i in 0..count {
                    runtime::emit(id, &name, serde_json::json!({ "seq": i, "t": now_us() }));
                }
            });
            Ok(id)
        })?,
    )?;
    m.set("now_us", func_pure(lua, |_, ()| Ok(now_us()))?)?;
    m.set(
        "ids_after",
        func_pure(lua, |_, n: u64| {
            runtime::ids_after(n);
            Ok(())
        })?,
    )?;
    Ok(())
}

/// Monotonic-enough wall clock in microseconds, shared by Rust and Lua so
/// event latency can be measured across the boundary.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
