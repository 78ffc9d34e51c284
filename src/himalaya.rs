//! Account discovery from the himalaya CLI configuration.
//!
//! himalaya reads one TOML file, the first that exists of
//! `$XDG_CONFIG_HOME/himalaya/config.toml`, `~/.config/himalaya/config.toml`
//! and `~/.himalayarc`, unless `-c` or `$HIMALAYA_CONFIG` names others (v2
//! accepts several, `:`-separated: the first is the base and the rest are
//! merged over it).
//!
//! Its schema changed over the years; every spelling below has been used by
//! a released himalaya and is accepted:
//!
//! | version           | accounts            | Maildir root                                   |
//! |-------------------|---------------------|------------------------------------------------|
//! | v2                | `[accounts.NAME]`   | `maildir.root`                                 |
//! | v1.0 – v1.2       | `[accounts.NAME]`   | `backend.type = "maildir"`, `backend.root-dir` |
//! | v1.0 betas        | `[accounts.NAME]`   | `backend = "maildir"`, `maildir.root-dir`      |
//! | v0.7 – v0.9       | `[NAME]`            | `backend = "maildir"`, `maildir-root-dir`      |
//! | before v0.7       | `[NAME]`            | `maildir-dir`                                  |
//!
//! Paths get `~` and `$VAR`/`${VAR}` expanded, as himalaya does.
//!
//! [`match_channels`] then finds the mbsync channels that fill each
//! himalaya Maildir account, so the plugin can sync "the account the user
//! is reading" without being told which channel that is.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::mbsync::config::{Channel, MbsyncConfig};

/// One `[accounts.NAME]` of the himalaya configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HimalayaAccount {
    pub name: String,
    /// `default = true`: the account himalaya uses without `-a`.
    pub default: bool,
    pub email: Option<String>,
    /// `display-name` (or v2's `from-name`).
    pub display_name: Option<String>,
    /// The Maildir root, expanded; `None` for other backends.
    pub maildir: Option<PathBuf>,
    /// `maildir`, `imap`, `notmuch`, `jmap`... or `none` when the account
    /// names no backend.
    pub backend: String,
}

/// The mbsync side of one himalaya account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountMatch {
    /// The himalaya account name.
    pub himalaya: String,
    /// Channels whose Maildir is the account's root, in file order.
    pub channels: Vec<String>,
    /// A group made only of matched channels and holding all of them
    /// (syncing it syncs exactly the account), if there is one.
    pub group: Option<String>,
    /// Why no channel matched, for the user.
    pub mismatch: Option<String>,
}

/// The himalaya configuration files, base first: those in
/// `$HIMALAYA_CONFIG`, or else the first default location that exists.
/// Empty when there is none.
pub fn config_paths() -> Vec<PathBuf> {
    config_paths_with(&|name| crate::env::var_os(name).filter(|v| !v.is_empty()))
}

fn config_paths_with(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Vec<PathBuf> {
    if let Some(list) = env("HIMALAYA_CONFIG") {
        return std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    let home = env("HOME").map(PathBuf::from);
    let mut candidates = Vec::new();
    if let Some(xdg) = env("XDG_CONFIG_HOME") {
        candidates.push(PathBuf::from(xdg).join("himalaya/config.toml"));
    }
    if let Some(home) = &home {
        candidates.push(home.join(".config/himalaya/config.toml"));
        candidates.push(home.join(".himalayarc"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .into_iter()
        .collect()
}

/// Reads the himalaya configuration: `path` if given, else what
/// [`config_paths`] finds. Returns the (base) file and its accounts sorted
/// by name, or `None` when no configuration exists.
///
/// A file that was named explicitly (by `path` or `$HIMALAYA_CONFIG`) but
/// is missing, broken TOML and values of the wrong type are
/// [`ErrorKind::Config`] errors naming `file:line` and the key.
pub fn discover(path: Option<&Path>) -> Result<Option<(PathBuf, Vec<HimalayaAccount>)>> {
    let paths = match path {
        Some(path) => vec![path.to_path_buf()],
        None => config_paths(),
    };
    load(&paths, &|name| crate::env::var(name))
}

/// Reads and merges `paths` (base first) and returns their accounts.
fn load(
    paths: &[PathBuf],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(PathBuf, Vec<HimalayaAccount>)>> {
    let Some(base) = paths.first().cloned() else {
        return Ok(None);
    };
    let mut merged = Table::new();
    let mut sources = Vec::new();
    for path in paths {
        let text = crate::files::read_regular_text(path, crate::files::MAX_CONFIG_BYTES).map_err(
            |err| {
                crate::files::error(
                    &format!("Cannot read himalaya config {}", path.display()),
                    &err,
                )
            },
        )?;
        merge(&mut merged, parse_table(&text, path)?);
        sources.push(Source {
            path: path.clone(),
            text,
        });
    }
    let accounts = accounts(&merged, &sources, env)?;
    Ok(Some((base, accounts)))
}

/// Parses the text of one configuration file; `path` is used in messages.
/// `$VAR` in paths is looked up in the process environment.
pub fn parse(text: &str, path: &Path) -> Result<Vec<HimalayaAccount>> {
    parse_with_env(text, path, &|name| crate::env::var(name))
}

fn parse_with_env(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<HimalayaAccount>> {
    let table = parse_table(text, path)?;
    let sources = [Source {
        path: path.to_path_buf(),
        text: text.to_owned(),
    }];
    accounts(&table, &sources, env)
}

/// A file read, kept to point errors at the right line.
struct Source {
    path: PathBuf,
    text: String,
}

fn parse_table(text: &str, path: &Path) -> Result<Table> {
    text.parse::<Table>().map_err(|err| {
        let line = err.span().map_or(1, |span| line_number(text, span.start));
        // toml's messages can span lines; ours are one line.
        let message = err
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let key = text
            .lines()
            .nth(line - 1)
            .and_then(|l| l.split_once('='))
            .map(|(key, _)| key.trim())
            .filter(|key| !key.is_empty() && !key.starts_with('['));
        let at = key.map_or_else(String::new, |key| format!(" (at key '{key}')"));
        Error::new(
            ErrorKind::Config,
            format!("{}:{line}: {message}{at}", path.display()),
        )
    })
}

/// Deep-merges `other` into `base`, as himalaya v2 does with extra files.
fn merge(base: &mut Table, other: Table) {
    for (key, value) in other {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(into)), Value::Table(from)) => merge(into, from),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The accounts of a parsed file, sorted by name.
fn accounts(
    table: &Table,
    sources: &[Source],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<HimalayaAccount>> {
    let ctx = Ctx { sources, env };
    let mut out = Vec::new();
    match table.get("accounts") {
        Some(Value::Table(accounts)) => {
            for (name, value) in accounts {
                let keys = ["accounts", name.as_str()];
                let Value::Table(account) = value else {
                    return Err(ctx.error(&keys, "must be a table ([accounts.NAME])"));
                };
                out.push(ctx.account(name, account, &keys)?);
            }
        }
        Some(_) => return Err(ctx.error(&["accounts"], "must be a table")),
        // Before v1 every top-level table with an `email` was an account.
        None => {
            for (name, value) in table {
                if let Value::Table(account) = value {
                    if account.contains_key("email") {
                        out.push(ctx.account(name, account, &[name.as_str()])?);
                    }
                }
            }
        }
    }
    // Sorted explicitly: toml's table order depends on a crate feature.
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Backends himalaya v2 selects by the presence of their sub-table.
const BACKEND_TABLES: [&str; 8] = [
    "imap", "jmap", "gmail", "msgraph", "maildir", "m2dir", "pimdir", "notmuch",
];

struct Ctx<'a> {
    sources: &'a [Source],
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Ctx<'_> {
    /// A Config error about the value at `keys`, located in the last file
    /// that sets it (the one that won the merge).
    fn error(&self, keys: &[&str], problem: impl fmt::Display) -> Error {
        let dotted = keys.join(".");
        let place = self
            .sources
            .iter()
            .rev()
            .find_map(|s| line_of(&s.text, keys).map(|line| (s, line)));
        let message = match (place, self.sources.first()) {
            (Some((source, line)), _) => {
                format!("{}:{line}: '{dotted}' {problem}", source.path.display())
            }
            (None, Some(source)) => format!("{}: '{dotted}' {problem}", source.path.display()),
            (None, None) => format!("'{dotted}' {problem}"),
        };
        Error::new(ErrorKind::Config, message)
    }

    fn account(&self, name: &str, table: &Table, keys: &[&str]) -> Result<HimalayaAccount> {
        fn join<'a>(keys: &[&'a str], key: &[&'a str]) -> Vec<&'a str> {
            keys.iter().chain(key).copied().collect()
        }
        let at = |key: &[&'static str]| join(keys, key);
        let default = match lookup(table, &["default"]) {
            None => false,
            Some(Value::Boolean(b)) => *b,
            Some(_) => return Err(self.error(&at(&["default"]), "must be true or false")),
        };
        let string = |key: &[&'static str]| -> Result<Option<String>> {
            match lookup(table, key) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(self.error(&at(key), "must be a string")),
            }
        };
        let email = string(&["email"])?;
        let display_name = match string(&["display-name"])? {
            Some(name) => Some(name),
            None => string(&["from-name"])?,
        };
        let backend = match lookup(table, &["backend"]) {
            Some(Value::String(kind)) => kind.clone(),
            Some(Value::Table(backend)) => match backend.get("type") {
                Some(Value::String(kind)) => kind.clone(),
                _ => return Err(self.error(&at(&["backend", "type"]), "must be a string")),
            },
            Some(_) => return Err(self.error(&at(&["backend"]), "must be a string or a table")),
            None => BACKEND_TABLES
                .iter()
                .find(|b| matches!(table.get(**b), Some(Value::Table(_))))
                .map(|b| b.to_string())
                .or_else(|| {
                    // Before v0.7 the keys alone chose the backend.
                    if table.contains_key("maildir-dir") || table.contains_key("maildir-root-dir") {
                        Some("maildir".to_owned())
                    } else {
                        table.contains_key("imap-host").then(|| "imap".to_owned())
                    }
                })
                .unwrap_or_else(|| "none".to_owned()),
        };
        let root_keys: [&[&str]; 5] = [
            &["backend", "root-dir"],
            &["maildir", "root"],
            &["maildir", "root-dir"],
            &["maildir-root-dir"],
            &["maildir-dir"],
        ];
        let mut maildir = None;
        if backend == "maildir" {
            for key in root_keys {
                if let Some(raw) = string(key)? {
                    let path =
                        expand(&raw, self.env).map_err(|problem| self.error(&at(key), problem))?;
                    maildir = Some(path);
                    break;
                }
            }
        }
        Ok(HimalayaAccount {
            name: name.to_owned(),
            default,
            email,
            display_name,
            maildir,
            backend,
        })
    }
}

/// The value at a dotted key path inside `table`.
fn lookup<'t>(table: &'t Table, keys: &[&str]) -> Option<&'t Value> {
    let (last, parents) = keys.split_last()?;
    let mut table = table;
    for key in parents {
        table = table.get(*key)?.as_table()?;
    }
    table.get(*last)
}

/// Expands a leading `~` and `$VAR`/`${VAR}` anywhere, like the shell
/// expansion himalaya applies to paths. An unset variable is an error.
fn expand(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> std::result::Result<PathBuf, String> {
    let home = || env("HOME").ok_or_else(|| "uses ~ but $HOME is not set".to_owned());
    let mut out = String::new();
    let mut rest = raw;
    if rest == "~" || rest.starts_with("~/") {
        out.push_str(&home()?);
        rest = &rest[1..];
    }
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            match braced.split_once('}') {
                Some((name, tail)) => (name, tail),
                None => return Err(format!("has an unclosed '${{' in '{raw}'")),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            after.split_at(end)
        };
        if name.is_empty() {
            // A lone `$` is kept, as the shell does.
            out.push('$');
        } else {
            match env(name) {
                Some(value) => out.push_str(&value),
                None => return Err(format!("uses ${name}, which is not set")),
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(PathBuf::from(out))
}

/// The 1-based line of byte `offset` in `text`.
fn line_number(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line the value at `keys` is written on, found by deserializing the
/// document once more and keeping only that value's span.
fn line_of(text: &str, keys: &[&str]) -> Option<usize> {
    let span = FindSpan { keys }
        .deserialize(toml::Deserializer::parse(text).ok()?)
        .ok()??;
    Some(line_number(text, span.start))
}

struct FindSpan<'k> {
    keys: &'k [&'k str],
}

impl<'de> DeserializeSeed<'de> for FindSpan<'_> {
    type Value = Option<Range<usize>>;

    fn deserialize<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        if self.keys.is_empty() {
            let spanned = toml::Spanned::<IgnoredAny>::deserialize(deserializer)?;
            Ok(Some(spanned.span()))
        } else {
            deserializer.deserialize_map(self)
        }
    }
}

impl<'de> Visitor<'de> for FindSpan<'_> {
    type Value = Option<Range<usize>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if self.keys.first() == Some(&key.as_str()) {
                found = map.next_value_seed(FindSpan {
                    keys: &self.keys[1..],
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// For each account, the mbsync channels that sync into its Maildir root.
///
/// A channel belongs to an account when the root equals, after resolving
/// symlinks (for paths that exist) and trailing slashes, the channel's
/// Maildir ([`MbsyncConfig::near_maildir`]), or its MaildirStore's `Path`,
/// `Inbox` or the directory holding `Inbox`. When a group consists of
/// exactly the matched channels it is reported, so the caller can sync the
/// account in one run.
pub fn match_channels(accounts: &[HimalayaAccount], cfg: &MbsyncConfig) -> Vec<AccountMatch> {
    accounts
        .iter()
        .map(|account| {
            let mut result = AccountMatch {
                himalaya: account.name.clone(),
                channels: Vec::new(),
                group: None,
                mismatch: None,
            };
            let Some(root) = &account.maildir else {
                result.mismatch = Some(if account.backend == "maildir" {
                    format!("himalaya account '{}' has no Maildir root", account.name)
                } else {
                    format!(
                        "himalaya account '{}' uses the {} backend; only Maildir accounts map to \
                         mbsync channels",
                        account.name, account.backend
                    )
                });
                return result;
            };
            let root = normalize(root);
            result.channels = cfg
                .channels
                .iter()
                .filter(|channel| channel_dirs(cfg, channel).contains(&root))
                .map(|channel| channel.name.clone())
                .collect();
            if result.channels.is_empty() {
                result.mismatch = Some(format!(
                    "himalaya maildir {} is not the Path of any MaildirStore in {}",
                    root.display(),
                    cfg.path.display()
                ));
            } else {
                result.group = covering_group(cfg, &result.channels);
            }
            result
        })
        .collect()
}

/// The directories that identify where a channel keeps its mail.
fn channel_dirs(cfg: &MbsyncConfig, channel: &Channel) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    if let Some(dir) = cfg.near_maildir(channel) {
        dirs.insert(normalize(&dir));
    }
    let store = cfg.maildir_side(channel).map(|(store, _)| store);
    if let Some(store) = store {
        if let Some(path) = &store.path {
            dirs.insert(normalize(path));
        }
        if let Some(inbox) = &store.inbox {
            let inbox = normalize(inbox);
            if let Some(parent) = inbox.parent() {
                dirs.insert(parent.to_path_buf());
            }
            dirs.insert(inbox);
        }
    }
    dirs
}

/// The first group whose members are exactly `channels`.
fn covering_group(cfg: &MbsyncConfig, channels: &[String]) -> Option<String> {
    let wanted: BTreeSet<&str> = channels.iter().map(String::as_str).collect();
    cfg.groups
        .iter()
        .find(|group| {
            let members: BTreeSet<&str> = group
                .members
                .iter()
                .map(|m| m.split(':').next().unwrap_or(m))
                .collect();
            members == wanted
        })
        .map(|group| group.name.clone())
}

/// `path` with symlinks resolved when it exists, else just without
/// trailing slashes and `.` components.
fn normalize(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.components().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn parse_env(text: &str, vars: &[(&str, &str)]) -> Result<Vec<HimalayaAccount>> {
        parse_with_env(text, Path::new("/cfg/himalaya.toml"), &env_of(vars))
    }

    /// Two Maildir accounts, one per himalaya generation, an IMAP account
    /// and a Maildir account mbsync does not fill.
    #[test]
    fn two_maildir_accounts_map_to_their_channels_and_groups() {
        let tmp = tempfile::tempdir().unwrap();
        let mail = tmp.path().join("Mail");
        fs::create_dir_all(mail.join("gmail/Inbox")).unwrap();
        fs::create_dir_all(mail.join("work")).unwrap();
        let mail_s = mail.display().to_string();
        let mbsyncrc = format!(
            "IMAPAccount gmail\nHost imap.gmail.com\nUser me@gmail.com\n\n\
             IMAPStore gmail-remote\nAccount gmail\n\n\
             MaildirStore gmail-local\nPath {mail_s}/gmail/\nInbox {mail_s}/gmail/Inbox\n\
             SubFolders Verbatim\n\n\
             Channel gmail-inbox\nFar :gmail-remote:\nNear :gmail-local:\nPatterns INBOX\n\n\
             Channel gmail-all\nFar :gmail-remote:\"[Gmail]/\"\nNear :gmail-local:\n\
             Patterns * !Spam\n\n\
             Group gmail\nChannels gmail-inbox gmail-all\n\n\
             IMAPStore work-remote\nHost mail.example.org\nUser me\n\n\
             MaildirStore work-local\nPath {mail_s}/work/\nInbox {mail_s}/work/INBOX\n\n\
             Channel work\nFar :work-remote:\nNear :work-local:\nPatterns *\n\n\
             Group everything\nChannels gmail-inbox gmail-all work\n"
        );
        let cfg = MbsyncConfig::parse(&mbsyncrc, Path::new("/home/me/.mbsyncrc")).unwrap();
        let himalaya = r#"
display-name = "Me"

[accounts.gmail]
default = true
email = "me@gmail.com"
display-name = "Me at Gmail"
backend.type = "maildir"
backend.root-dir = "$MAIL/gmail/"

[accounts.work]
email = "me@example.org"
maildir.root = "${MAIL}/work"

[accounts.remote]
email = "me@remote.example"
backend.type = "imap"
backend.host = "imap.remote.example"

[accounts.old]
email = "old@example.org"
maildir.root = "~/Mail/old"
"#;
        let accounts = parse_env(himalaya, &[("MAIL", &mail_s), ("HOME", "/home/me")]).unwrap();
        let names: Vec<_> = accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["gmail", "old", "remote", "work"]);
        assert_eq!(
            accounts[0],
            HimalayaAccount {
                name: "gmail".into(),
                default: true,
                email: Some("me@gmail.com".into()),
                display_name: Some("Me at Gmail".into()),
                maildir: Some(PathBuf::from(format!("{mail_s}/gmail/"))),
                backend: "maildir".into(),
            }
        );
        assert!(!accounts[3].default);
        assert_eq!(accounts[3].backend, "maildir");
        assert_eq!(accounts[2].backend, "imap");
        assert_eq!(accounts[2].maildir, None);

        let matches = match_channels(&accounts, &cfg);
        assert_eq!(
            matches,
            [
                AccountMatch {
                    himalaya: "gmail".into(),
                    channels: vec!["gmail-inbox".into(), "gmail-all".into()],
                    group: Some("gmail".into()),
                    mismatch: None,
                },
                AccountMatch {
                    himalaya: "old".into(),
                    channels: vec![],
                    group: None,
                    mismatch: Some(
                        "himalaya maildir /home/me/Mail/old is not the Path of any \
                         MaildirStore in /home/me/.mbsyncrc"
                            .into()
                    ),
                },
                AccountMatch {
                    himalaya: "remote".into(),
                    channels: vec![],
                    group: None,
                    mismatch: Some(
                        "himalaya account 'remote' uses the imap backend; only Maildir \
                         accounts map to mbsync channels"
                            .into()
                    ),
                },
                AccountMatch {
                    himalaya: "work".into(),
                    channels: vec!["work".into()],
                    group: None,
                    mismatch: None,
                },
            ]
        );
    }

    #[test]
    fn symlinked_root_matches_and_missing_root_still_matches_by_text() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let gone = tmp.path().join("not-synced-yet");
        let mbsyncrc = format!(
            "IMAPStore r\nHost h\n\n\
             MaildirStore a\nPath {}/\n\nMaildirStore b\nInbox {}/INBOX\n\n\
             Channel a\nFar :r:\nNear :a:\nPatterns *\n\n\
             Channel b\nFar :r:\nNear :b:\n",
            real.display(),
            gone.display()
        );
        let cfg = MbsyncConfig::parse(&mbsyncrc, Path::new("mbsyncrc")).unwrap();
        let account = |name: &str, root: &Path| HimalayaAccount {
            name: name.into(),
            default: false,
            email: None,
            display_name: None,
            maildir: Some(root.to_path_buf()),
            backend: "maildir".into(),
        };
        let matches = match_channels(&[account("a", &link), account("b", &gone)], &cfg);
        assert_eq!(matches[0].channels, ["a"]);
        // b's root does not exist; it is the parent of the store's Inbox.
        assert_eq!(matches[1].channels, ["b"]);
        assert_eq!(matches[1].mismatch, None);
    }

    #[test]
    fn older_layouts_are_read() {
        // v0.7 - v0.9: accounts are top-level tables.
        let v0 = r#"
display-name = "Me"
downloads-dir = "~/dl"

[personal]
default = true
email = "me@example.org"
backend = "maildir"
maildir-root-dir = "~/Mail/personal"

[folder-aliases]
inbox = "INBOX"
"#;
        let accounts = parse_env(v0, &[("HOME", "/home/me")]).unwrap();
        assert_eq!(accounts.len(), 1);
        assert_eq!(accounts[0].name, "personal");
        assert!(accounts[0].default);
        assert_eq!(
            accounts[0].maildir.as_deref(),
            Some(Path::new("/home/me/Mail/personal"))
        );

        // v1 betas: backend kind as a string, settings in `maildir`.
        let beta = "[accounts.x]\nemail = \"x@y\"\nbackend = \"maildir\"\n\
                    maildir.root-dir = \"/m/x\"\n";
        let accounts = parse_env(beta, &[]).unwrap();
        assert_eq!(accounts[0].maildir.as_deref(), Some(Path::new("/m/x")));

        // Before v0.7: `maildir-dir` alone.
        let ancient = "[y]\nemail = \"y@z\"\nmaildir-dir = \"/m/y\"\n";
        let accounts = parse_env(ancient, &[]).unwrap();
        assert_eq!(accounts[0].backend, "maildir");
        assert_eq!(accounts[0].maildir.as_deref(), Some(Path::new("/m/y")));
    }

    #[test]
    fn environment_expansion() {
        let env = env_of(&[("HOME", "/home/me"), ("A", "/srv"), ("B_2", "mail")]);
        let e = |raw: &str| expand(raw, &env);
        assert_eq!(e("~").unwrap(), PathBuf::from("/home/me"));
        assert_eq!(e("~/Mail").unwrap(), PathBuf::from("/home/me/Mail"));
        assert_eq!(e("$A/$B_2/x").unwrap(), PathBuf::from("/srv/mail/x"));
        assert_eq!(e("${A}x/${B_2}").unwrap(), PathBuf::from("/srvx/mail"));
        assert_eq!(e("/a$/b").unwrap(), PathBuf::from("/a$/b"));
        assert_eq!(e("~user/x").unwrap(), PathBuf::from("~user/x"));
        assert_eq!(e("$NOPE/x").unwrap_err(), "uses $NOPE, which is not set");
        assert_eq!(e("${A").unwrap_err(), "has an unclosed '${' in '${A'");

        let text = "[accounts.a]\nemail = \"a@b\"\n\nmaildir.root = \"$MAILDIR/a\"\n";
        let err = parse_env(text, &[]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert_eq!(
            err.message,
            "/cfg/himalaya.toml:4: 'accounts.a.maildir.root' uses $MAILDIR, which is not set"
        );
    }

    #[test]
    fn broken_toml_names_file_line_and_key() {
        let text = "[accounts.a]\nemail = \"a@b\"\ndefault = yes\n";
        let err = parse_env(text, &[]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert_eq!(
            err.message,
            "/cfg/himalaya.toml:3: string values must be quoted, expected literal string (at key 'default')"
        );

        let text = "[accounts.a]\nemail = \"a@b\"\nemail = \"c@d\"\n";
        let err = parse_env(text, &[]).unwrap_err();
        assert_eq!(
            err.message,
            "/cfg/himalaya.toml:3: duplicate key (at key 'email')"
        );

        // Valid TOML, wrong types.
        let text = "[accounts.a]\nemail = \"a@b\"\n\n\ndefault = \"yes\"\n";
        let err = parse_env(text, &[]).unwrap_err();
        assert_eq!(
            err.message,
            "/cfg/himalaya.toml:5: 'accounts.a.default' must be true or false"
        );
        let text = "[accounts.b]\nbackend.type = \"maildir\"\nbackend.root-dir = 7\n";
        let err = parse_env(text, &[]).unwrap_err();
        assert_eq!(
            err.message,
            "/cfg/himalaya.toml:3: 'accounts.b.backend.root-dir' must be a string"
        );
        let err = parse_env("accounts = 3\n", &[]).unwrap_err();
        assert_eq!(
            err.message,
            "/cfg/himalaya.toml:1: 'accounts' must be a table"
        );
    }

    #[test]
    fn config_file_locations() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let xdg = tmp.path().join("xdg");
        fs::create_dir_all(home.join(".config/himalaya")).unwrap();
        fs::create_dir_all(xdg.join("himalaya")).unwrap();
        let os = |vars: Vec<(&'static str, PathBuf)>| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone().into_os_string())
            }
        };
        let with = |vars| config_paths_with(&os(vars));
        let env = || vec![("HOME", home.clone()), ("XDG_CONFIG_HOME", xdg.clone())];
        // Nothing there yet.
        assert_eq!(with(env()), Vec::<PathBuf>::new());
        fs::write(home.join(".himalayarc"), "").unwrap();
        assert_eq!(with(env()), [home.join(".himalayarc")]);
        fs::write(home.join(".config/himalaya/config.toml"), "").unwrap();
        assert_eq!(with(env()), [home.join(".config/himalaya/config.toml")]);
        fs::write(xdg.join("himalaya/config.toml"), "").unwrap();
        assert_eq!(with(env()), [xdg.join("himalaya/config.toml")]);
        // $HIMALAYA_CONFIG wins, and may list several files.
        let mut vars = env();
        vars.push(("HIMALAYA_CONFIG", PathBuf::from("/a.toml:/b.toml")));
        assert_eq!(
            with(vars),
            [PathBuf::from("/a.toml"), PathBuf::from("/b.toml")]
        );
    }

    #[test]
    fn discover_reads_and_merges_files() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("config.toml");
        let private = tmp.path().join("private.toml");
        fs::write(
            &base,
            "[accounts.a]\nemail = \"a@b\"\nmaildir.root = \"/m/a\"\n",
        )
        .unwrap();
        fs::write(&private, "[accounts.a]\ndefault = true\n").unwrap();
        let (path, accounts) = load(&[base.clone(), private.clone()], &|_| None)
            .unwrap()
            .unwrap();
        assert_eq!(path, base);
        assert!(accounts[0].default);
        assert_eq!(accounts[0].email.as_deref(), Some("a@b"));

        // Through the public entry point, with an explicit file.
        let (_, accounts) = discover(Some(&base)).unwrap().unwrap();
        assert_eq!(accounts[0].maildir.as_deref(), Some(Path::new("/m/a")));

        let missing = tmp.path().join("missing.toml");
        let err = discover(Some(&missing)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert_eq!(
            err.message,
            format!(
                "Cannot read himalaya config {}: No such file or directory",
                missing.display()
            )
        );
        assert_eq!(load(&[], &|_| None).unwrap(), None);
    }
}
