//! A small IMAP client for the fast new-mail check and IDLE push.

pub mod check;
pub mod client;
pub mod idle;
