//! A small IMAP client for the fast new-mail check and IDLE push.
//!
//! * [`client`]: connection settings from an mbsyncrc account
//!   ([`client::Connection`]), TLS/STARTTLS, LOGIN/AUTHENTICATE PLAIN/XOAUTH2,
//!   and the few commands used here, each bounded by a timeout;
//! * [`check`]: STATUS per far folder compared with the state mbsync keeps,
//!   giving exact counts of the messages the next sync would pull;
//! * [`idle`]: per-folder IDLE watchers with re-IDLE, reconnect backoff and
//!   prompt cancellation;
//! * [`mutf7`]: the modified UTF-7 of folder names beyond ASCII.

pub mod check;
pub mod client;
pub mod idle;
pub mod mutf7;
