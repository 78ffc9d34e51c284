//! Everything about running mbsync: its configuration file, its progress
//! output, its error messages and the process itself.

pub mod config;
pub mod errors;
pub mod names;
pub mod progress;
pub mod runner;
