//! Which mbsync targets a sync request means.
//!
//! An account is a `Channel` or `Group` of the user's mbsyncrc, optionally
//! refined by the plugin configuration (`accounts.NAME.full/inbox`).
//! Defaults: full = the channel or group named like the account; inbox =
//! channel `NAME-inbox` when it exists, else `<channel>:INBOX` (for a group:
//! every member channel's INBOX); folders = `<channel>:box,box`.

use std::collections::HashMap;

use serde::Deserialize;

use crate::error::{quoted, Error, ErrorKind, Result};
use crate::mbsync::config::{member_boxes, MbsyncConfig, Target};
use crate::mbsync::names;

/// What to sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncType {
    Full,
    Inbox,
    Folders,
    /// Lossless UIDVALIDITY repair of one folder (see [`super::repair`]).
    Repair,
}

impl SyncType {
    pub fn parse(s: &str) -> Result<SyncType> {
        match s {
            "full" => Ok(SyncType::Full),
            "inbox" => Ok(SyncType::Inbox),
            "folders" => Ok(SyncType::Folders),
            "repair" => Ok(SyncType::Repair),
            other => Err(Error::invalid(format!(
                "unknown sync type {other:?}: expected \"full\", \"inbox\", \"folders\" or \"repair\""
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SyncType::Full => "full",
            SyncType::Inbox => "inbox",
            SyncType::Folders => "folders",
            SyncType::Repair => "repair",
        }
    }
}

/// Per-account overrides from the plugin configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct AccountOverrides {
    pub full: Option<String>,
    pub inbox: Option<String>,
    pub throttle: Option<Throttle>,
}

/// Bandwidth limit of an account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct Throttle {
    /// Kilobytes per second, each direction.
    pub kbps: u32,
}

/// Longest folder name taken, in bytes: far beyond any server's (IMAP
/// servers allow a few hundred), short enough for every message that
/// quotes one.
const MAX_FOLDER_BYTES: usize = 1000;

/// Checks a folder name given for a selective sync.
pub fn validate_folder(name: &str) -> Result<()> {
    let bad = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_FOLDER_BYTES {
        Some("it is longer than 1000 bytes")
    } else if name.contains(',') {
        Some("',' separates folders in mbsync targets")
    } else if name.starts_with('-') {
        Some("it starts with '-'")
    } else if name.chars().any(|c| c.is_control()) {
        Some("it contains a control character")
    } else if name.split('/').any(|part| part == "..") {
        Some("'..' is not a folder")
    } else {
        None
    };
    match bad {
        Some(why) => Err(Error::invalid(format!(
            "invalid folder name {}: {why}",
            quoted(name, 100)
        ))),
        None => Ok(()),
    }
}

/// Checks an account name (it becomes a lock name and an mbsync argument).
pub fn validate_account(name: &str) -> Result<()> {
    // Each rule says what it is: a name made of allowed characters can still
    // break another one.
    let broken = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 100 {
        Some("it is longer than 100 bytes")
    } else if name.starts_with('-') {
        Some("it must not start with - (mbsync would read an option)")
    } else if name.contains("..") {
        Some("it must not contain ..")
    } else if !name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | '+'))
    {
        Some("use letters, digits and _ - . @ +")
    } else {
        None
    };
    match broken {
        None => Ok(()),
        Some(rule) => Err(Error::invalid(format!(
            "invalid account name {}: {rule}",
            quoted(name, 100)
        ))),
    }
}

/// Resolves a request to mbsync command-line targets.
pub fn resolve(
    cfg: &MbsyncConfig,
    overrides: &HashMap<String, AccountOverrides>,
    kind: SyncType,
    account: &str,
    folders: &[String],
) -> Result<Vec<String>> {
    resolve_for(cfg, overrides, kind, account, Some(folders))
}

/// [`resolve`]; without `folders`, a folders sync or a repair is judged by
/// its channel only (for [`offers`]) and resolves to that channel.
fn resolve_for(
    cfg: &MbsyncConfig,
    overrides: &HashMap<String, AccountOverrides>,
    kind: SyncType,
    account: &str,
    folders: Option<&[String]>,
) -> Result<Vec<String>> {
    validate_account(account)?;
    let ov = overrides.get(account).cloned().unwrap_or_default();
    let known = |name: &str| cfg.channel(name).is_some() || cfg.group(name).is_some();
    let full = ov.full.clone().unwrap_or_else(|| account.to_string());
    // The name that was looked up: the account's, or the `full` it set.
    let unknown = || {
        let names: Vec<String> = cfg.targets().into_iter().map(|t| t.name).collect();
        let what = match &ov.full {
            Some(full) => format!("accounts.{account}.full = {full:?}"),
            None => format!("unknown account {account:?}"),
        };
        Error::new(
            ErrorKind::Config,
            format!(
                "{what}: no channel or group of that name in {} (known: {})",
                cfg.path.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        )
    };
    match kind {
        SyncType::Full => {
            if !known(base(&full)) {
                return Err(unknown());
            }
            Ok(vec![full])
        }
        SyncType::Inbox => {
            if let Some(t) = ov.inbox {
                return Ok(vec![t]);
            }
            let dedicated = format!("{account}-inbox");
            if cfg.channel(&dedicated).is_some() {
                return Ok(vec![dedicated]);
            }
            let targets = inbox_targets(cfg, &full).ok_or_else(unknown)?;
            if targets.is_empty() {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "no channel of {full:?} syncs INBOX (their Patterns or mailboxes leave it \
                         out): set accounts.{account}.inbox to the channel or group that does"
                    ),
                ));
            }
            Ok(targets)
        }
        SyncType::Repair if folders.is_some_and(|f| f.len() != 1) => Err(Error::invalid(
            "a repair needs exactly one folder (the one whose UIDVALIDITY changed)",
        )),
        SyncType::Folders | SyncType::Repair => {
            if folders.is_some_and(<[String]>::is_empty) {
                return Err(Error::invalid("a folders sync needs at least one folder"));
            }
            for f in folders.unwrap_or_default() {
                validate_folder(f)?;
            }
            let chans = channels_of(cfg, &full).ok_or_else(unknown)?;
            let one_box = |c: &String| cfg.channel(c).is_some_and(|c| c.patterns.is_empty());
            match chans.as_slice() {
                // The repair takes the channel's one box (see `repair::plan`).
                [one] if kind == SyncType::Repair && one_box(one) => Ok(vec![one.clone()]),
                [one] if one_box(one) => {
                    Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "channel {one:?} syncs one mailbox (it has no Patterns): sync it whole, \
                             or name a channel with Patterns in accounts.{account}.full"
                        ),
                    ))
                }
                [one] => {
                    let Some(folders) = folders else {
                        return Ok(vec![one.clone()]);
                    };
                    Ok(vec![format!("{one}:{}", folders.join(","))])
                }
                many => Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "{account:?} is a group of several channels ({}): name the channel whose folders to sync",
                        many.join(", ")
                    ),
                )),
            }
        }
    }
}

/// Refuses a folders sync or a repair of a folder its channel's Patterns
/// leave out: mbsync takes a box it is given by name whatever the Patterns
/// say, so it would create that folder and download all of it (a Gmail
/// `[Gmail]/All Mail` left out to avoid a second copy of every message).
///
/// Patterns are matched as the installed mbsync matches them: against the
/// name as it spells it (`utf8`, see [`names`]). A name whose spelling
/// depends on the version passes while `utf8` is unknown; the sync judges
/// it again once it knows. A box that the account's full sync names itself
/// (see [`named_boxes`]) is synced whatever the Patterns say, so it passes.
pub fn check_patterns(
    cfg: &MbsyncConfig,
    overrides: &HashMap<String, AccountOverrides>,
    kind: SyncType,
    account: &str,
    targets: &[String],
    utf8: Option<bool>,
) -> Result<()> {
    if !matches!(kind, SyncType::Folders | SyncType::Repair) {
        return Ok(());
    }
    let full = overrides
        .get(account)
        .and_then(|o| o.full.clone())
        .unwrap_or_else(|| account.to_string());
    for target in targets {
        let Some((name, boxes)) = target.split_once(':') else {
            continue;
        };
        let Some(channel) = cfg.channel(name).filter(|c| !c.patterns.is_empty()) else {
            continue;
        };
        let named = named_boxes(cfg, &full, name);
        for folder in boxes.split(',') {
            // IMAP's INBOX is INBOX however it is written.
            let folder = if folder.eq_ignore_ascii_case("INBOX") {
                "INBOX"
            } else {
                folder
            };
            let spelled = match utf8 {
                Some(utf8) => names::spelled(folder, utf8),
                None if names::depends_on_version(folder) => continue,
                None => folder.to_owned(),
            };
            if !channel.takes(&spelled) && !named.contains(&spelled.as_str()) {
                let what = match kind {
                    SyncType::Repair => "a repair",
                    _ => "a folders sync",
                };
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "folder {} is left out by channel {name:?}'s `Patterns {}` in {}: \
                         {what} would download it all the same; add it to the Patterns to sync it",
                        quoted(folder, 100),
                        written(&channel.patterns),
                        cfg.path.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The boxes of `channel` that a full sync of `full` names on mbsync's
/// command line: a group member `chan:box,box`, or a full target written
/// so (`accounts.NAME.full = "chan:box"`).
fn named_boxes<'a>(cfg: &'a MbsyncConfig, full: &'a str, channel: &str) -> Vec<&'a str> {
    let members: Vec<(&str, Option<Vec<&str>>)> = match cfg.group(full) {
        Some(group) => group.selections().collect(),
        None => vec![member_boxes(full)],
    };
    members
        .into_iter()
        .filter(|(chan, _)| *chan == channel)
        .flat_map(|(_, boxes)| boxes.unwrap_or_default())
        .collect()
}

/// Patterns as an mbsyncrc writes them: a name with a space in quotes.
fn written(patterns: &[String]) -> String {
    let words: Vec<String> = patterns
        .iter()
        .map(|p| {
            let (not, name) = p.strip_prefix('!').map_or(("", p.as_str()), |n| ("!", n));
            if name.contains(char::is_whitespace) {
                format!("{not}{name:?}")
            } else {
                p.clone()
            }
        })
        .collect();
    words.join(" ")
}

/// A channel or group of the mbsyncrc with the sync types it can be asked
/// for, so that command-line completion offers only names a sync accepts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Offer {
    #[serde(flatten)]
    pub target: Target,
    /// Among full, inbox, folders and repair, in that order.
    pub syncs: Vec<SyncType>,
}

/// Every target of the mbsyncrc, in file order, with the syncs it takes.
/// A folders sync or a repair is judged by its channel only: the folder
/// names are the user's, checked when the sync is asked for.
pub fn offers(cfg: &MbsyncConfig, overrides: &HashMap<String, AccountOverrides>) -> Vec<Offer> {
    cfg.targets()
        .into_iter()
        .map(|target| {
            let syncs = [
                SyncType::Full,
                SyncType::Inbox,
                SyncType::Folders,
                SyncType::Repair,
            ]
            .into_iter()
            .filter(|&kind| resolve_for(cfg, overrides, kind, &target.name, None).is_ok())
            .collect();
            Offer { target, syncs }
        })
        .collect()
}

/// The targets that sync the server's INBOX of `name` (a channel or a
/// group) and no other mailbox, one per channel that syncs INBOX at all
/// (see [`crate::mbsync::config::Channel::inbox_target`]); a group member
/// that selects mailboxes counts only if it selects INBOX. None for an
/// unknown name.
fn inbox_targets(cfg: &MbsyncConfig, name: &str) -> Option<Vec<String>> {
    let name = base(name);
    if let Some(channel) = cfg.channel(name) {
        return Some(channel.inbox_target().into_iter().collect());
    }
    let group = cfg.group(name)?;
    let mut out: Vec<String> = Vec::new();
    for (chan, boxes) in group.selections() {
        let target = match boxes {
            Some(boxes) => boxes.contains(&"INBOX").then(|| format!("{chan}:INBOX")),
            None => cfg.channel(chan).and_then(|c| c.inbox_target()),
        };
        if let Some(t) = target.filter(|t| !out.contains(t)) {
            out.push(t);
        }
    }
    Some(out)
}

/// The channels a list of resolved targets touches, sorted and unique:
/// what must not be synced twice at once (locks are taken per channel, so
/// a group and one of its channels never run together).
pub fn channels_of_targets(cfg: &MbsyncConfig, targets: &[String]) -> Vec<String> {
    let mut out: Vec<String> = targets
        .iter()
        .flat_map(|t| channels_of(cfg, t).unwrap_or_else(|| vec![base(t).to_string()]))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The target without a `:box` selection.
fn base(target: &str) -> &str {
    target.split(':').next().unwrap_or(target)
}

/// The channels a channel or group name stands for.
fn channels_of(cfg: &MbsyncConfig, name: &str) -> Option<Vec<String>> {
    let name = base(name);
    if cfg.channel(name).is_some() {
        return Some(vec![name.to_string()]);
    }
    cfg.group(name).map(|g| {
        let mut out: Vec<String> = Vec::new();
        for m in &g.members {
            let c = base(m).to_string();
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The stores of the test mbsyncrc files.
    const STORES: &str = "\
IMAPStore r
Host example.org
User me

MaildirStore l
Path ~/Mail/
Inbox ~/Mail/INBOX
";

    /// A channel with Patterns and a dedicated inbox channel beside it.
    const GMAIL: &str = "
Channel gmail
Far :r:
Near :l:
Patterns *

Channel gmail-inbox
Far :r:INBOX
Near :l:INBOX
";

    fn cfg() -> MbsyncConfig {
        let text = format!(
            "{STORES}{GMAIL}
Channel work
Far :r:
Near :l:

Group both
Channel gmail
Channel work
"
        );
        MbsyncConfig::parse(&text, Path::new("/home/u/.mbsyncrc")).unwrap()
    }

    fn no() -> HashMap<String, AccountOverrides> {
        HashMap::new()
    }

    /// Completion offers a name only for the syncs that would take it.
    #[test]
    fn offers_name_the_syncs_each_target_takes() {
        let text = format!(
            "{STORES}{GMAIL}
Channel archive
Far :r:Archive
Near :l:Archive

Channel rest
Far :r:
Near :l:
Patterns * !INBOX

Group both
Channel gmail
Channel archive
"
        );
        let c = MbsyncConfig::parse(&text, Path::new("/home/u/.mbsyncrc")).unwrap();
        let syncs = |name: &str, ov: &HashMap<String, AccountOverrides>| {
            let offers = offers(&c, ov);
            let o = offers.iter().find(|o| o.target.name == name).unwrap();
            o.syncs.iter().map(|k| k.as_str()).collect::<Vec<_>>()
        };
        assert_eq!(
            syncs("gmail", &no()),
            ["full", "inbox", "folders", "repair"]
        );
        assert_eq!(syncs("gmail-inbox", &no()), ["full", "inbox", "repair"]);
        assert_eq!(syncs("both", &no()), ["full", "inbox"]);
        // One mailbox that is not INBOX: no inbox sync, unless configured.
        assert_eq!(syncs("archive", &no()), ["full", "repair"]);
        let ov = HashMap::from([(
            "archive".to_string(),
            AccountOverrides {
                inbox: Some("gmail-inbox".into()),
                ..Default::default()
            },
        )]);
        assert_eq!(syncs("archive", &ov), ["full", "inbox", "repair"]);
        assert_eq!(syncs("rest", &no()), ["full", "folders", "repair"]);
    }

    #[test]
    fn defaults() {
        let c = cfg();
        assert_eq!(
            resolve(&c, &no(), SyncType::Full, "gmail", &[]).unwrap(),
            ["gmail"]
        );
        assert_eq!(
            resolve(&c, &no(), SyncType::Inbox, "gmail", &[]).unwrap(),
            ["gmail-inbox"]
        );
        // `work` has no Patterns: it syncs INBOX alone, and mbsync refuses
        // a mailbox named on such a channel's command line.
        assert_eq!(
            resolve(&c, &no(), SyncType::Inbox, "work", &[]).unwrap(),
            ["work"]
        );
        assert_eq!(
            resolve(&c, &no(), SyncType::Inbox, "both", &[]).unwrap(),
            ["gmail:INBOX", "work"]
        );
        let f = vec!["INBOX".to_string(), "Work/Projects".to_string()];
        assert_eq!(
            resolve(&c, &no(), SyncType::Folders, "gmail", &f).unwrap(),
            ["gmail:INBOX,Work/Projects"]
        );
    }

    #[test]
    fn overrides_win() {
        let c = cfg();
        let mut ov = no();
        ov.insert(
            "mail".into(),
            AccountOverrides {
                full: Some("both".into()),
                inbox: Some("gmail-inbox".into()),
                throttle: None,
            },
        );
        assert_eq!(
            resolve(&c, &ov, SyncType::Full, "mail", &[]).unwrap(),
            ["both"]
        );
        assert_eq!(
            resolve(&c, &ov, SyncType::Inbox, "mail", &[]).unwrap(),
            ["gmail-inbox"]
        );
    }

    /// Only channels that sync INBOX take part in an inbox sync: one whose
    /// Patterns leave INBOX out would get an INBOX folder it never had.
    #[test]
    fn an_inbox_sync_only_touches_channels_that_sync_inbox() {
        let text = format!(
            "{STORES}
MaildirStore a
Path ~/Archive/

Channel main
Far :r:
Near :l:
Patterns INBOX Sent

Channel arch
Far :r:
Near :a:
Patterns Archive*

Channel in
Far :r:INBOX
Near :l:INBOX

Channel rest
Far :r:
Near :l:
Patterns * !INBOX

Group g
Channel main
Channel arch

Group x
Channel in
Channel rest

Group picked
Channels main:Sent arch:INBOX,Archive
"
        );
        let c = MbsyncConfig::parse(&text, Path::new("/home/u/.mbsyncrc")).unwrap();
        let inbox = |name| resolve(&c, &no(), SyncType::Inbox, name, &[]);
        assert_eq!(inbox("g").unwrap(), ["main:INBOX"]);
        assert_eq!(inbox("x").unwrap(), ["in"]);
        assert_eq!(inbox("picked").unwrap(), ["arch:INBOX"]);
        let e = inbox("arch").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(
            e.message.starts_with("no channel of \"arch\" syncs INBOX")
                && e.message.contains("accounts.arch.inbox"),
            "{e}"
        );
    }

    /// A folder the Patterns leave out is refused, matched in the spelling
    /// of the mbsync at hand (isync 1.4: the server's modified UTF-7).
    #[test]
    fn folders_the_patterns_leave_out_are_refused() {
        let text = format!(
            "{STORES}
Channel g
Far :r:
Near :l:
Patterns * !\"[Gmail]/All Mail\" !Entw&APw-rfe

Channel u
Far :r:
Near :l:
Patterns * !Entwürfe

Channel one
Far :r:Archive
Near :l:Archive

Group sent
Channel g:\"[Gmail]/All Mail\"
"
        );
        let c = MbsyncConfig::parse(&text, Path::new("/home/u/.mbsyncrc")).unwrap();
        let check = |kind, account, folder: &str, utf8| {
            let t = resolve(&c, &no(), kind, account, &[folder.to_owned()]).unwrap();
            check_patterns(&c, &no(), kind, account, &t, utf8)
        };
        let e = check(SyncType::Folders, "g", "[Gmail]/All Mail", None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert_eq!(
            e.message,
            "folder \"[Gmail]/All Mail\" is left out by channel \"g\"'s \
             `Patterns * !\"[Gmail]/All Mail\" !Entw&APw-rfe` in /home/u/.mbsyncrc: a folders sync \
             would download it all the same; add it to the Patterns to sync it"
        );
        let e = check(SyncType::Repair, "g", "[Gmail]/All Mail", Some(true)).unwrap_err();
        assert!(e.message.contains(": a repair would download it"), "{e}");
        assert!(check(SyncType::Folders, "g", "Work", None).is_ok());
        assert!(check(SyncType::Folders, "g", "INBOX", Some(false)).is_ok());
        // Beyond ASCII: judged once the version is known, in its spelling.
        assert!(check(SyncType::Folders, "g", "Entwürfe", None).is_ok());
        assert!(check(SyncType::Folders, "g", "Entwürfe", Some(false)).is_err());
        assert!(check(SyncType::Folders, "g", "Entw&APw-rfe", Some(false)).is_err());
        assert!(check(SyncType::Folders, "g", "Entwürfe", Some(true)).is_ok());
        assert!(check(SyncType::Folders, "u", "Entwürfe", Some(true)).is_err());
        assert!(check(SyncType::Folders, "u", "Entwürfe", Some(false)).is_ok());
        // A channel of one mailbox has no Patterns to leave one out; a full
        // sync names no folder.
        assert!(check(SyncType::Repair, "one", "Archive", Some(false)).is_ok());
        let full = resolve(&c, &no(), SyncType::Full, "g", &[]).unwrap();
        assert!(check_patterns(&c, &no(), SyncType::Full, "g", &full, Some(false)).is_ok());
        // INBOX in any case; a box the account's full sync names itself.
        assert!(check(SyncType::Folders, "g", "inbox", Some(false)).is_ok());
        assert!(check(SyncType::Folders, "sent", "[Gmail]/All Mail", Some(false)).is_ok());
        let ov = HashMap::from([(
            "u".to_owned(),
            AccountOverrides {
                full: Some("u:INBOX,Entwürfe".into()),
                ..AccountOverrides::default()
            },
        )]);
        let t = resolve(&c, &ov, SyncType::Folders, "u", &["Entwürfe".to_owned()]).unwrap();
        assert!(check_patterns(&c, &ov, SyncType::Folders, "u", &t, Some(true)).is_ok());
    }

    #[test]
    fn groups_expand_to_their_channels() {
        let c = cfg();
        let t = resolve(&c, &no(), SyncType::Full, "both", &[]).unwrap();
        assert_eq!(channels_of_targets(&c, &t), ["gmail", "work"]);
        let t = resolve(&c, &no(), SyncType::Inbox, "work", &[]).unwrap();
        assert_eq!(channels_of_targets(&c, &t), ["work"]);
    }

    #[test]
    fn clear_errors() {
        let c = cfg();
        let e = resolve(&c, &no(), SyncType::Full, "nope", &[]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(
            e.message.contains("\"nope\"") && e.message.contains("gmail"),
            "{e}"
        );
        // A long name is refused, and quoted only in part.
        let long = "x".repeat(200_000);
        let e = resolve(
            &c,
            &no(),
            SyncType::Folders,
            "gmail",
            std::slice::from_ref(&long),
        )
        .unwrap_err();
        assert!(
            e.message.ends_with("...: it is longer than 1000 bytes"),
            "{}",
            &e.message[..200]
        );
        assert!(e.message.len() < 200, "{} bytes", e.message.len());
        let e = resolve(&c, &no(), SyncType::Full, &long, &[]).unwrap_err();
        assert!(e.message.len() < 200, "{} bytes", e.message.len());
        // Each refusal names the rule that was broken.
        for (name, rule) in [
            ("../x", "must not contain .."),
            ("-x", "must not start with -"),
            ("a;rm -rf", "use letters, digits"),
            ("", "it is empty"),
        ] {
            let e = resolve(&c, &no(), SyncType::Full, name, &[]).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Invalid);
            assert!(e.message.contains(rule), "{name:?}: {e}");
        }
        let e = resolve(&c, &no(), SyncType::Folders, "gmail", &["a,b".into()]).unwrap_err();
        assert!(e.message.contains("\"a,b\""));
        let e = resolve(&c, &no(), SyncType::Folders, "both", &["INBOX".into()]).unwrap_err();
        assert!(
            e.message.ends_with("is a group of several channels (gmail, work): name the channel whose folders to sync"),
            "{e}"
        );
        let e = resolve(&c, &no(), SyncType::Folders, "work", &["INBOX".into()]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(e.message.contains("no Patterns"), "{e}");
        let mut ov = no();
        ov.insert(
            "demo".into(),
            AccountOverrides {
                full: Some("nope".into()),
                inbox: None,
                throttle: None,
            },
        );
        let e = resolve(&c, &ov, SyncType::Full, "demo", &[]).unwrap_err();
        assert!(
            e.message
                .starts_with("accounts.demo.full = \"nope\": no channel or group of that name"),
            "{e}"
        );
        assert!(SyncType::parse("weekly")
            .unwrap_err()
            .message
            .contains("weekly"));
    }
}
