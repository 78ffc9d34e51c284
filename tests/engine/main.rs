//! The engine's integration tests that can share a process, built as one
//! test binary: linking each file as a binary of its own took a minute of
//! `make test`, and cargo runs binaries one after another but a binary's
//! tests side by side.
//!
//! The files left directly in `tests/` need a process of their own: they
//! change the environment (`oauth_flow`, `oauth_store`, `oauth_keyring`),
//! load the system's certificates once per process (`imap_system_roots`)
//! or shut the process-wide runtime down (`runtime_shutdown`,
//! `shutdown_token_save`).

#[path = "../common/mod.rs"]
mod common;

mod cli_sync;
mod cli_usage;
mod cli_with_lock;
mod imap_check;
mod imaps_port;
mod lock_contention;
mod maildir_counts;
mod manager_check;
mod manager_events;
mod oauth_tokens;
mod parser_fuzz;
