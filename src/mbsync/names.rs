//! How mbsync wants folder names on its command line.
//!
//! isync 1.4 takes a box by the name the server lists, which for a name
//! beyond ASCII is IMAP's modified UTF-7 (`Entw&APw-rfe`), and keeps that
//! name for the Maildir folder too; isync 1.5 converts by itself and takes
//! UTF-8 (`Entwürfe`). The plugin speaks Unicode everywhere (the fast
//! check, IDLE, what a user types), so a folders sync or a repair of
//! `Entwürfe/Alt` is spelled here for the mbsync at hand: given to 1.4 as
//! it is, it names no box ("cannot be opened").

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

use crate::command::{self, Run};
use crate::imap::mutf7::{decode_mutf7, encode_mutf7};

/// Per mbsync program: its version, (major, minor).
static VERSIONS: Mutex<Option<HashMap<String, Version>>> = Mutex::new(None);

/// An mbsync version, (major, minor): `isync 1.5.1` is (1, 5).
pub type Version = (u32, u32);

/// The first version that takes UTF-8 box names.
const UTF8_FROM: Version = (1, 5);

/// `program`'s version (an mbsync), asked once per program
/// (`--version`). None when it cannot say; asked again next time then (it
/// may have failed only for want of time).
pub async fn version(program: &str) -> Option<Version> {
    if let Some(known) = known_version(program) {
        return Some(known);
    }
    let name = program.to_owned();
    let out = command::off_thread(move |stop| {
        command::run(&Run {
            what: "mbsync --version",
            program: &name,
            args: &["--version"],
            env: &[],
            stdin: None,
            timeout: Duration::from_secs(5),
            stop: Some(stop),
        })
    })
    .await
    .ok()?;
    let version = parse_version(&String::from_utf8_lossy(&out.stdout))?;
    VERSIONS
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(program.to_owned(), version);
    Some(version)
}

/// `program`'s version, if it was asked before (see [`version`]); never
/// waits.
fn known_version(program: &str) -> Option<Version> {
    VERSIONS
        .lock()
        .as_ref()
        .and_then(|m| m.get(program).copied())
}

/// Whether `program` (an mbsync) takes UTF-8 box names: isync 1.5 and
/// later. An mbsync that cannot say is taken for 1.4, whose spelling is
/// also what a server lists.
pub async fn takes_utf8(program: &str) -> bool {
    version(program).await.is_some_and(|v| v >= UTF8_FROM)
}

/// Whether `program` takes UTF-8 box names, if its version was asked
/// before (see [`version`]); never waits.
pub fn known_utf8(program: &str) -> Option<bool> {
    known_version(program).map(|v| v >= UTF8_FROM)
}

/// The version in `mbsync --version` output (`isync 1.5.1`).
fn parse_version(text: &str) -> Option<Version> {
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    });
    Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
}

/// Folder `name`, in Unicode or already as the server spells it, as this
/// mbsync takes it.
pub fn spelled(name: &str, utf8: bool) -> String {
    let unicode = decode_mutf7(name);
    if utf8 {
        unicode
    } else {
        encode_mutf7(&unicode)
    }
}

/// Whether folder `name` is spelled differently by mbsync 1.4 and 1.5
/// (beyond ASCII, or with an `&`): only then is the version asked.
pub fn depends_on_version(name: &str) -> bool {
    name.contains('&') || !name.is_ascii()
}

/// A command-line target with its boxes spelled for this mbsync: a
/// channel or group stays as it is, `channel:box,box` gets each box
/// spelled.
pub fn target(target: &str, utf8: bool) -> String {
    match target.split_once(':') {
        Some((channel, boxes)) => {
            let boxes: Vec<String> = boxes.split(',').map(|b| spelled(b, utf8)).collect();
            format!("{channel}:{}", boxes.join(","))
        }
        None => target.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_version_line() {
        assert_eq!(parse_version("isync 1.4.4\n"), Some((1, 4)));
        assert_eq!(parse_version("isync 1.3.0"), Some((1, 3)));
        assert_eq!(parse_version("isync 1.5.1\n"), Some((1, 5)));
        assert_eq!(parse_version("isync 2.0"), Some((2, 0)));
        assert_eq!(parse_version("isync 1.6.0-rc1"), Some((1, 6)));
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("mbsync: unknown option"), None);
    }

    #[test]
    fn boxes_are_spelled_for_the_version() {
        // 1.4: as the server lists them; a name given that way stays.
        assert_eq!(
            target("demo:Work/Café,INBOX", false),
            "demo:Work/Caf&AOk-,INBOX"
        );
        assert_eq!(
            target("demo:Entw&APw-rfe/Alt", false),
            "demo:Entw&APw-rfe/Alt"
        );
        assert_eq!(target("demo:R&D", false), "demo:R&-D");
        // 1.5: UTF-8, also from a name given as the server spells it.
        assert_eq!(target("demo:Work/Café", true), "demo:Work/Café");
        assert_eq!(target("demo:Entw&APw-rfe/Alt", true), "demo:Entwürfe/Alt");
        // Channels and groups stay as they are.
        assert_eq!(target("demo", false), "demo");
        assert_eq!(target("demo:INBOX", false), "demo:INBOX");
        assert_eq!(spelled("Entwürfe", false), "Entw&APw-rfe");
        assert!(depends_on_version("demo:Work/Café"));
        assert!(depends_on_version("demo:R&D"));
        assert!(!depends_on_version("demo:Work/Projects,INBOX"));
    }
}
