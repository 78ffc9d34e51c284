//! The error type shared by the whole engine.
//!
//! Every failure carries a [`ErrorKind`] so that callers (the sync manager,
//! the Lua side) can decide what to do without parsing text: refresh and
//! retry (`Auth`), back off and retry (`Network`, `Timeout`, `Locked`),
//! repair (`Uidvalidity`) or tell the user (`Config`, `Invalid`).

use std::fmt;

/// What kind of failure happened; decides how the manager reacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// Credentials were rejected or could not be obtained.
    Auth,
    /// The server could not be reached or the connection broke.
    Network,
    /// Nothing happened for longer than allowed.
    Timeout,
    /// Another holder has the lock.
    Locked,
    /// The server's UIDVALIDITY changed; the local copy needs repair.
    Uidvalidity,
    /// The configuration (ours or mbsync's) is wrong.
    Config,
    /// The user or the shutdown cancelled the work.
    Cancelled,
    /// An argument from the caller is invalid (bad name, wrong type).
    Invalid,
    /// A local system call failed (permissions, disk).
    Io,
    /// Anything not recognised.
    Unknown,
}

impl ErrorKind {
    /// The lowercase name used in Lua tables and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Auth => "auth",
            ErrorKind::Network => "network",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Locked => "locked",
            ErrorKind::Uidvalidity => "uidvalidity",
            ErrorKind::Config => "config",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Io => "io",
            ErrorKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An engine error: a kind and a one-line message meant for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Invalid, message)
    }

    pub fn io(context: impl fmt::Display, err: impl fmt::Display) -> Self {
        Error::new(ErrorKind::Io, format!("{context}: {err}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Result alias used across the engine.
pub type Result<T> = std::result::Result<T, Error>;

/// The longest start of `text` that is at most `max` bytes and ends on a
/// character boundary: for quoting a value of any length in a message.
pub fn prefix_within(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A value a caller passed, for a message: quoted and escaped by `{:?}`
/// so the message stays one readable line whatever it holds, and cut to
/// its first `max` bytes (marked `...`) so one absurd argument cannot flood
/// every notification and log line.
pub fn quoted(value: &str, max: usize) -> String {
    let kept = prefix_within(value, max);
    if kept.len() == value.len() {
        format!("{value:?}")
    } else {
        format!("{kept:?}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_escapes_and_cuts() {
        assert_eq!(quoted("a\nb", 10), "\"a\\nb\"");
        assert_eq!(quoted("abcdef", 3), "\"abc\"...");
    }

    #[test]
    fn prefix_within_cuts_on_a_character() {
        assert_eq!(prefix_within("abc", 5), "abc");
        assert_eq!(prefix_within("abcdef", 3), "abc");
        assert_eq!(prefix_within("aé", 2), "a", "é is two bytes");
    }
}
