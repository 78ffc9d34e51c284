//! himalaya-sync: the engine behind the `himalaya.sync.*` Neovim modules.
//!
//! The crate has two layers:
//!
//! * the **engine** (every module except [`lua`]) is plain Rust: processes,
//!   parsing, locks, state. It never sees a Lua value and is tested with
//!   `cargo test` alone;
//! * the **glue** ([`lua`]) turns engine calls into Lua functions. It is the
//!   only place that touches `mlua`, and it catches every panic so that none
//!   crosses into Neovim.
//!
//! Work runs on one tokio runtime ([`runtime`]); results travel back to the
//! editor as [`events`] through a wakeup pipe that Neovim's event loop watches.

pub mod command;
pub mod env;
pub mod error;
pub mod events;
pub mod files;
pub mod himalaya;
pub mod imap;
pub mod lock;
pub mod log;
pub mod lua;
pub mod maildir;
pub mod manager;
pub mod mbsync;
pub mod oauth;
pub mod process;
pub mod runtime;
pub mod sched;
pub mod stamp;

/// Crate version, compared by the Lua loader with the version it expects.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Identifies one build of the library (commit and build time).
pub const BUILD_ID: &str = env!("HIMALAYA_SYNC_BUILD_ID");
