//! Everything about running mbsync: its configuration file, its progress
//! output, its error messages and the process itself.

pub mod config;
pub mod errors;
pub mod progress;
pub mod runner;
