//! mbsync's configuration file (`~/.mbsyncrc` or `$XDG_CONFIG_HOME/isyncrc`).
//!
//! The syntax follows isync's `config.c`:
//!
//! * a line is a keyword and its values, separated by blanks; keywords are
//!   case-insensitive;
//! * a value can be double-quoted (to hold blanks) and a backslash makes the
//!   next character literal, inside quotes or out;
//! * `#` where a word would start begins a comment (`a#b` is one value);
//! * `IMAPAccount`, `IMAPStore`, `MaildirStore`, `Channel` and `Group` open a
//!   section, which runs up to the next blank line (comment lines do not end
//!   it). Options before the first section are global.
//!
//! This parser keeps what the engine needs (names, hosts, credentials
//! sources, mail directories, channel and group structure) and skips every
//! other option, so a newer mbsync with more options does not break it.
//! Structural mistakes that make mbsync refuse the file are reported, each
//! as one line `<path>:<line>: <problem>` of kind [`ErrorKind::Config`].
//!
//! As in mbsync, a store must be defined before a channel uses it and an
//! account before a store names it; group members are checked once the whole
//! file is read, since mbsync resolves them only when it runs.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::{Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};
use crate::stamp::{Stamp, SETTLE};

/// A parsed mbsync configuration file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MbsyncConfig {
    /// The file the configuration came from, used in messages.
    pub path: PathBuf,
    /// `IMAPAccount` sections. Accounts written inline in an `IMAPStore` are
    /// in [`ImapStore::inline_account`] instead.
    pub imap_accounts: Vec<ImapAccount>,
    pub imap_stores: Vec<ImapStore>,
    pub maildir_stores: Vec<MaildirStore>,
    pub channels: Vec<Channel>,
    pub groups: Vec<Group>,
    /// The global `SyncState` option: `*` or a path prefix (`~` expanded).
    pub sync_state: Option<String>,
}

/// A password from the configuration. It never appears in `Debug` output or
/// serialized data; [`Secret::expose`] is the only way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The password itself, for handing to the process that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

/// How to reach and log in to an IMAP server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImapAccount {
    pub name: String,
    /// Without the deprecated `imaps:`/`imap:`/`//` prefixes.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub pass: Option<Secret>,
    /// The command as written, including a leading `+` (which tells mbsync
    /// the command is interactive).
    pub pass_cmd: Option<String>,
    /// `SSLType` (or 1.5's `TLSType`) as written: `None`, `STARTTLS` or
    /// `IMAPS`; `IMAPS` when the host was given as `imaps:host`.
    pub ssl_type: Option<String>,
    pub certificate_file: Option<PathBuf>,
    /// `SystemCertificates` (default yes): whether the system's trusted
    /// roots count, or only `CertificateFile`.
    pub system_certificates: bool,
    /// `AuthMechs` values in order; empty means mbsync's default, any.
    pub auth_mechs: Vec<String>,
    pub tunnel: Option<String>,
    /// `Timeout` in seconds; 0 means no timeout (mbsync's default is 20).
    pub timeout: Option<u32>,
    /// Line of the section header (of the `IMAPStore` for an inline account).
    pub line: usize,
}

impl ImapAccount {
    pub(crate) fn new(name: &str, line: usize) -> Self {
        ImapAccount {
            name: name.to_owned(),
            host: None,
            port: None,
            user: None,
            pass: None,
            pass_cmd: None,
            ssl_type: None,
            certificate_file: None,
            system_certificates: true,
            auth_mechs: Vec::new(),
            tunnel: None,
            timeout: None,
            line,
        }
    }
}

/// An `IMAPStore` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImapStore {
    pub name: String,
    /// The `IMAPAccount` named by `Account`.
    pub account: Option<String>,
    /// The account given by `Host`, `User`, `Pass`... inside the store
    /// itself; mbsync names it after the store. Exactly one of `account` and
    /// `inline_account` is set.
    pub inline_account: Option<ImapAccount>,
    pub line: usize,
}

/// A `MaildirStore` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MaildirStore {
    pub name: String,
    /// With a leading `~` or `~/` replaced by the home directory. mbsync
    /// appends mailbox names to it as text, so it normally ends in `/`.
    pub path: Option<PathBuf>,
    /// `~` expanded like `path`; when unset mbsync uses `~/Maildir`.
    pub inbox: Option<PathBuf>,
    /// `Verbatim`, `Maildir++` or `Legacy`, as written.
    pub subfolders: Option<String>,
    pub flatten: Option<String>,
    pub line: usize,
}

/// A `Channel` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Channel {
    pub name: String,
    /// `:store:` or `:store:mailbox`, as written (`Master` in old files).
    pub far: String,
    /// Likewise for the near side (`Slave` in old files).
    pub near: String,
    /// All `Pattern`/`Patterns` values in order, e.g. `*`, `!Trash`.
    pub patterns: Vec<String>,
    /// The channel's own `SyncState`: `*` or a path prefix (`~` expanded).
    pub sync_state: Option<String>,
    pub line: usize,
}

impl Channel {
    /// Whether the channel's Patterns take the mailbox `name` (named as
    /// under the channel's mailbox prefix), as mbsync decides it: the last
    /// pattern that matches decides; `!` negates; `*` matches anything, `%`
    /// anything but `/`.
    pub fn takes(&self, name: &str) -> bool {
        let mut taken = false;
        for pattern in &self.patterns {
            let (negated, pattern) = match pattern.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, pattern.as_str()),
            };
            if glob(pattern.as_bytes(), name.as_bytes()) {
                taken = !negated;
            }
        }
        taken
    }

    /// The mailbox (without Patterns) or prefix (with them) the channel
    /// names on its far side; empty when it names none.
    pub fn far_mailbox(&self) -> &str {
        split_spec(&self.far).map_or("", |(_, mailbox)| mailbox)
    }

    /// The mbsync target that syncs the server's INBOX through this channel
    /// and nothing else: `chan:INBOX` when its Patterns take INBOX, the
    /// channel itself when INBOX is the one mailbox it syncs (no Patterns,
    /// and its far side names INBOX or no mailbox, which mbsync reads as
    /// INBOX; mbsync refuses a `:INBOX` on such a channel), None when the
    /// channel never syncs INBOX.
    pub fn inbox_target(&self) -> Option<String> {
        let (_, mailbox) = split_spec(&self.far)?;
        if !self.patterns.is_empty() {
            // Under a prefix (`Far :r:Archive/`) the channel's boxes are
            // Archive/…: `chan:INBOX` would name Archive/INBOX.
            return (mailbox.is_empty() && self.takes("INBOX"))
                .then(|| format!("{}:INBOX", self.name));
        }
        matches!(mailbox, "" | "INBOX").then(|| self.name.clone())
    }
}

fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob(rest, &name[i..])),
        // As mbsync's: it gives up at a `/` before it tries the rest there,
        // so `%/x` never matches.
        Some((b'%', rest)) => (0..=name.len())
            .take_while(|&i| name.get(i) != Some(&b'/'))
            .any(|i| glob(rest, &name[i..])),
        Some((&c, rest)) => name.first() == Some(&c) && glob(rest, &name[1..]),
    }
}

/// A `Group` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub name: String,
    /// As written: `chan` or `chan:INBOX,Work` (a mailbox selection that
    /// replaces the channel's Patterns).
    pub members: Vec<String>,
    pub line: usize,
}

impl Group {
    /// Whether this group syncs every mailbox `other` syncs: each member of
    /// `other` is a channel this group syncs whole, or a selection of boxes
    /// this group selects too.
    fn syncs_all_of(&self, other: &Group) -> bool {
        other.members.iter().all(|m| {
            let (chan, wanted) = member_boxes(m);
            self.members
                .iter()
                .any(|mine| match (member_boxes(mine), &wanted) {
                    ((c, _), _) if c != chan => false,
                    ((_, None), _) => true,
                    ((_, Some(have)), Some(wanted)) => wanted.iter().all(|b| have.contains(b)),
                    ((_, Some(_)), None) => false,
                })
        })
    }

    /// Each member as its channel and, when it selects some, its boxes.
    pub fn selections(&self) -> impl Iterator<Item = (&str, Option<Vec<&str>>)> {
        self.members.iter().map(|m| member_boxes(m))
    }
}

/// A group member, `chan` or `chan:INBOX,Work` (the syntax of any mbsync
/// target): the channel, and the boxes it selects (None: the channel's own
/// Patterns).
pub fn member_boxes(member: &str) -> (&str, Option<Vec<&str>>) {
    match member.split_once(':') {
        Some((chan, list)) => (chan, Some(list.split(',').collect())),
        None => (member, None),
    }
}

/// Something that can be named on mbsync's command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
    /// A channel that some group syncs, or a group whose mailboxes another
    /// group syncs all of (of two groups that sync the same, the later
    /// one): auto-sync and IDLE then leave it to that group.
    pub grouped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Channel,
    Group,
}

/// Keywords whose values may hold a secret: a password, or a command that
/// may carry one inline (`PassCmd "echo hunter2"`, a `Tunnel` or `UserCmd`
/// with credentials). Messages never quote their values.
const SECRET_KEYWORDS: [&str; 4] = ["Pass", "PassCmd", "UserCmd", "Tunnel"];

fn is_secret_keyword(keyword: &str) -> bool {
    SECRET_KEYWORDS
        .iter()
        .any(|k| k.eq_ignore_ascii_case(keyword))
}

/// Removes every value of a [`SECRET_KEYWORDS`] line of the file from an
/// error message: a message quotes what it found on a bad line, and a
/// password must not be shown even when the line around it is broken. Lines
/// are read loosely (quotes and backslashes dropped), so that more is
/// hidden rather than less.
fn hide_passwords(mut e: Error, text: &str) -> Error {
    for line in text.lines() {
        let loose = line.replace(['"', '\\'], "");
        let mut words = loose.split_whitespace();
        if !words.next().is_some_and(is_secret_keyword) {
            continue;
        }
        let words: Vec<&str> = words.collect();
        let value = words.join(" ");
        for secret in std::iter::once(value.as_str()).chain(words.iter().copied()) {
            if secret.len() >= 4 {
                e.message = e.message.replace(secret, "[redacted]");
            }
        }
    }
    e
}

impl MbsyncConfig {
    /// Parses the text of a configuration file; `path` is only used in
    /// messages and kept in the result. `~` in paths is expanded with
    /// `$HOME`.
    pub fn parse(text: &str, path: &Path) -> Result<MbsyncConfig> {
        let home = home_dir();
        parse_with_home(text, path, home.as_deref()).map_err(|e| hide_passwords(e, text))
    }

    /// Reads and parses `path`, or without one the file mbsync itself would
    /// read (see [`MbsyncConfig::default_path`]).
    pub fn load(path: Option<&Path>) -> Result<MbsyncConfig> {
        let given = path.is_some();
        let (path, also_tried) = resolve(path)?;
        Self::read(&path, also_tried, given)
    }

    /// Reads and parses `path`; `also_tried` is the other default file,
    /// named when neither exists; `given`: the user named `path` (a missing
    /// one then says where it was named).
    fn read(path: &Path, also_tried: Option<PathBuf>, given: bool) -> Result<MbsyncConfig> {
        let bytes =
            crate::files::read_regular(path, crate::files::MAX_CONFIG_BYTES).map_err(|err| {
                let mut e = crate::files::error(
                    &format!("Cannot open config file '{}'", path.display()),
                    &err,
                );
                match also_tried {
                    Some(legacy) if err.kind() == std::io::ErrorKind::NotFound => {
                        e.message.push_str(&format!(
                            " (nor is there {}): name your mbsyncrc with mbsync.config in \
                             Neovim, -c on the command line",
                            legacy.display()
                        ));
                    }
                    None if given && err.kind() == std::io::ErrorKind::NotFound => {
                        e.message.push_str(
                            " (named by mbsync.config in Neovim, -c on the command line)",
                        );
                    }
                    _ => {}
                }
                e
            })?;
        let text = String::from_utf8(bytes).map_err(|err| {
            let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            Error::new(
                ErrorKind::Config,
                format!("{}:{line}: not valid UTF-8", path.display()),
            )
        })?;
        Self::parse(&text, path)
    }

    /// The configuration file mbsync reads when not given `-c`.
    ///
    /// mbsync 1.5 prefers `$XDG_CONFIG_HOME/isyncrc` (`~/.config/isyncrc`)
    /// and falls back to `~/.mbsyncrc` when only that exists; mbsync 1.4
    /// reads `~/.mbsyncrc` only. This follows 1.5, which finds the file in
    /// both layouts, so the runner should pass the path to mbsync with `-c`
    /// to make an older mbsync read the same file. `None` without `$HOME`.
    pub fn default_path() -> Option<PathBuf> {
        let home = home_dir()?;
        let [xdg, legacy] = default_candidates(&home, xdg_config_home().as_deref());
        Some(if exists(&legacy) && !exists(&xdg) {
            legacy
        } else {
            xdg
        })
    }

    /// Every channel and group, in the order they appear in the file.
    pub fn targets(&self) -> Vec<Target> {
        let channels = self
            .channels
            .iter()
            .map(|c| (c.line, &c.name, TargetKind::Channel));
        let groups = self
            .groups
            .iter()
            .map(|g| (g.line, &g.name, TargetKind::Group));
        let mut targets: Vec<_> = channels.chain(groups).collect();
        targets.sort_by_key(|&(line, _, _)| line);
        targets
            .into_iter()
            .map(|(_, name, kind)| Target {
                name: name.clone(),
                kind,
                grouped: match kind {
                    TargetKind::Channel => self.groups.iter().any(|g| {
                        g.members
                            .iter()
                            .any(|m| m.split(':').next() == Some(name.as_str()))
                    }),
                    TargetKind::Group => self.group(name).is_some_and(|g| {
                        self.groups.iter().any(|other| {
                            other.name != g.name
                                && other.syncs_all_of(g)
                                && (other.line < g.line || !g.syncs_all_of(other))
                        })
                    }),
                },
            })
            .collect()
    }

    pub fn channel(&self, name: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.name == name)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// A channel's Maildir side (the near side, or the far side if only that
    /// one is a `MaildirStore`): its store, and the mailbox or prefix the
    /// channel names there (empty when none).
    pub fn maildir_side<'a>(&'a self, channel: &'a Channel) -> Option<(&'a MaildirStore, &'a str)> {
        [&channel.near, &channel.far].into_iter().find_map(|spec| {
            let (store, mailbox) = split_spec(spec)?;
            let store = self.maildir_stores.iter().find(|s| s.name == store)?;
            Some((store, mailbox))
        })
    }

    /// The local directory a channel syncs into: the mail directory of its
    /// Maildir side (the near side, or the far side if only that one is a
    /// `MaildirStore`).
    ///
    /// With Patterns this is the store's `Path` followed by the mailbox
    /// prefix from the channel (the directory holding all synced folders),
    /// or `Inbox` for a store without `Path`. Without Patterns it is the one
    /// mailbox synced: `Inbox` for `INBOX` (mbsync's default mailbox),
    /// otherwise `Path` followed by the mailbox name. `None` when the channel
    /// has no Maildir side or the needed `Path` is not set.
    pub fn near_maildir(&self, channel: &Channel) -> Option<PathBuf> {
        let (store, mailbox) = self.maildir_side(channel)?;
        let inbox = || {
            store
                .inbox
                .clone()
                .or_else(|| home_dir().map(|home| home.join("Maildir")))
        };
        if !channel.patterns.is_empty() {
            match &store.path {
                Some(path) => Some(append(path, mailbox)),
                None => inbox(),
            }
        } else if mailbox.is_empty() || mailbox == "INBOX" {
            inbox()
        } else {
            store.path.as_ref().map(|path| append(path, mailbox))
        }
    }

    /// Where channels' IMAP accounts that give mbsync no password are
    /// written: `IMAPAccount NAME`, or `IMAPStore NAME` for an account
    /// written inside its store. Such an account has neither `Pass` nor
    /// `PassCmd`, and logs in with a password (no `Tunnel` to a logged-in
    /// server, not `AuthMechs EXTERNAL` alone): mbsync would ask for it on
    /// its terminal, where nobody can answer (see `runner::read_terminal`).
    pub fn passwordless_accounts(&self) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        for channel in &self.channels {
            for spec in [&channel.far, &channel.near] {
                let Some((store, account)) = self.imap_side(spec) else {
                    continue;
                };
                let external = matches!(account.auth_mechs.as_slice(),
                    [only] if only.eq_ignore_ascii_case("EXTERNAL"));
                let asks = account.pass.is_none()
                    && account.pass_cmd.is_none()
                    && account.tunnel.is_none()
                    && !external;
                let section = match store.account {
                    Some(_) => format!("IMAPAccount {}", account.name),
                    None => format!("IMAPStore {}", store.name),
                };
                if asks && !found.contains(&section) {
                    found.push(section);
                }
            }
        }
        found
    }

    /// The IMAP account a channel logs in with: that of its far side's
    /// `IMAPStore`, or of its near side if only that one is IMAP.
    pub fn imap_account_for(&self, channel: &Channel) -> Option<&ImapAccount> {
        [&channel.far, &channel.near]
            .into_iter()
            .find_map(|spec| self.imap_side(spec).map(|(_, account)| account))
    }

    /// The `IMAPStore` a channel side (`:store:box`) names and the account
    /// it logs in with (its `Account`, or the one written inside it); None
    /// for a Maildir side or an unknown name.
    fn imap_side(&self, spec: &str) -> Option<(&ImapStore, &ImapAccount)> {
        let (store, _) = split_spec(spec)?;
        let store = self.imap_stores.iter().find(|s| s.name == store)?;
        let account = match &store.account {
            Some(account) => self.imap_accounts.iter().find(|a| &a.name == account),
            None => store.inline_account.as_ref(),
        }?;
        Some((store, account))
    }
}

/// `$HOME`, if set and not empty.
/// The file `load(path)` reads, and the other default file when `path` is
/// not given.
fn resolve(path: Option<&Path>) -> Result<(PathBuf, Option<PathBuf>)> {
    if let Some(path) = path {
        return Ok((path.to_path_buf(), None));
    }
    let home = home_dir().ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            "Cannot find the mbsync config file: $HOME is not set",
        )
    })?;
    let [xdg, legacy] = default_candidates(&home, xdg_config_home().as_deref());
    Ok(if exists(&legacy) && !exists(&xdg) {
        (legacy, None)
    } else {
        (xdg, Some(legacy))
    })
}

/// What a parse depends on: which file, its stamp, and the `$HOME` that
/// `~` expands to.
#[derive(Debug, Clone, PartialEq)]
struct Key {
    path: PathBuf,
    home: Option<OsString>,
    file: Stamp,
}

impl Key {
    fn of(path: &Path) -> Option<Key> {
        Some(Key {
            path: path.to_path_buf(),
            home: crate::env::var_os("HOME"),
            file: Stamp::of(path)?,
        })
    }
}

/// Parsed configurations, read again only when the file changed.
///
/// The manager needs the parsed file at every sync start and for every
/// account lookup, on the editor's thread; reading and parsing each time
/// cost about 0.05 ms there, a `stat` costs a tenth of that.
#[derive(Debug)]
pub struct ConfigCache {
    last: Mutex<Option<(Key, MbsyncConfig)>>,
    settle: Duration,
}

impl Default for ConfigCache {
    fn default() -> Self {
        ConfigCache::with_settle(SETTLE)
    }
}

impl ConfigCache {
    /// A cache that keeps only files unchanged for at least `settle`.
    pub fn with_settle(settle: Duration) -> ConfigCache {
        ConfigCache {
            last: Mutex::new(None),
            settle,
        }
    }

    /// The same as [`MbsyncConfig::load`], from the cache while the file
    /// and `$HOME` are unchanged.
    pub fn load(&self, path: Option<&Path>) -> Result<MbsyncConfig> {
        let given = path.is_some();
        let (file, also_tried) = resolve(path)?;
        // Taken before the read (see `crate::stamp`).
        let key = Key::of(&file);
        if let (Some(key), Some((known, cfg))) = (&key, &*self.last.lock()) {
            if key == known {
                return Ok(cfg.clone());
            }
        }
        let cfg = MbsyncConfig::read(&file, also_tried, given)?;
        if let Some(key) = key.filter(|k| k.file.settled(SystemTime::now(), self.settle)) {
            *self.last.lock() = Some((key, cfg.clone()));
        }
        Ok(cfg)
    }
}

fn home_dir() -> Option<PathBuf> {
    crate::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn xdg_config_home() -> Option<PathBuf> {
    crate::env::var_os("XDG_CONFIG_HOME")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
}

/// The two files mbsync 1.5 considers, preferred one first.
fn default_candidates(home: &Path, xdg_config_home: Option<&Path>) -> [PathBuf; 2] {
    let config_dir = xdg_config_home.map_or_else(|| home.join(".config"), Path::to_path_buf);
    [config_dir.join("isyncrc"), home.join(".mbsyncrc")]
}

/// Whether anything is at `path`, counting dangling symlinks as mbsync does
/// (it uses `lstat`).
fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// `:store:mailbox` split into store and mailbox.
pub(crate) fn split_spec(spec: &str) -> Option<(&str, &str)> {
    spec.strip_prefix(':')?.split_once(':')
}

/// `path` with `suffix` appended as text, the way mbsync builds mailbox
/// paths from a store's `Path`.
fn append(path: &Path, suffix: &str) -> PathBuf {
    let mut joined = OsString::from(path);
    joined.push(suffix);
    PathBuf::from(joined)
}

/// Expands a leading `~` or `~/`. `~user` is left as written: looking up
/// other users' homes is not worth a dependency for a setup nobody uses.
fn expand_tilde(value: &str, home: Option<&Path>) -> PathBuf {
    match (value, home) {
        ("~", Some(home)) => home.to_path_buf(),
        (_, Some(home)) if value.starts_with("~/") => home.join(&value[2..]),
        _ => PathBuf::from(value),
    }
}

/// A `SyncState` value: `*` stays as is, a path prefix gets `~` expanded
/// (as text, so a trailing `/` or file-name prefix survives).
fn sync_state_value(value: &str, home: Option<&Path>) -> String {
    if value == "*" {
        return value.to_owned();
    }
    match (value.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            format!("{}{rest}", home.display())
        }
        _ => value.to_owned(),
    }
}

/// What one line of the file holds.
enum LineKind {
    Blank,
    Comment,
    Words(Vec<String>),
}

/// Splits a line into words the way mbsync's `get_arg` does.
fn split_words(line: &str) -> std::result::Result<LineKind, &'static str> {
    // C's isspace(), which unlike char::is_ascii_whitespace includes \v.
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r');
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|&c| is_space(c)).is_some() {}
        match chars.peek() {
            None => break,
            Some('#') if words.is_empty() => return Ok(LineKind::Comment),
            Some('#') => break,
            Some(_) => {}
        }
        let mut word = String::new();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(next) if !next.is_control() => word.push(next),
                    _ => return Err("unterminated escape sequence"),
                },
                '"' => quoted = !quoted,
                c if !quoted && is_space(c) => break,
                c => word.push(c),
            }
        }
        if quoted {
            return Err("missing closing quote");
        }
        words.push(word);
    }
    Ok(if words.is_empty() {
        LineKind::Blank
    } else {
        LineKind::Words(words)
    })
}

const SECTION_KEYWORDS: &[&str] = &[
    "IMAPAccount",
    "IMAPStore",
    "MaildirStore",
    "Channel",
    "Group",
];

/// Options allowed before the first section (`config.c` and its
/// `getopt_helper`; `ExpireSide` and `ExpungeSolo` are from mbsync 1.5).
const GLOBAL_KEYWORDS: &[&str] = &[
    "FSync",
    "FieldDelimiter",
    "BufferLimit",
    "Sync",
    "SyncState",
    "CopyArrivalDate",
    "MaxMessages",
    "ExpireUnread",
    "ExpireSide",
    "ExpungeSolo",
    "Expunge",
    "Create",
    "Remove",
];

/// Options that describe the server connection (`drv_imap.c`). In an
/// `IMAPStore` any of them makes an inline account, which must not be
/// combined with `Account`.
const ACCOUNT_KEYWORDS: &[&str] = &[
    "Host",
    "Port",
    "User",
    "UserCmd",
    "Pass",
    "PassCmd",
    "UseKeychain",
    "Timeout",
    "PipelineDepth",
    "DisableExtension",
    "DisableExtensions",
    "CertificateFile",
    "SystemCertificates",
    "ClientCertificate",
    "ClientKey",
    "CipherString",
    "SSLType",
    "SSLVersion",
    "SSLVersions",
    "TLSType",
    "TLSVersion",
    "TLSVersions",
    "RequireSSL",
    "UseIMAPS",
    "UseSSLv2",
    "UseSSLv3",
    "UseTLSv1",
    "UseTLSv1.1",
    "UseTLSv1.2",
    "UseTLSv1.3",
    "AuthMech",
    "AuthMechs",
    "RequireCRAM",
    "Tunnel",
];

fn is_one_of(keyword: &str, list: &[&str]) -> bool {
    list.iter().any(|k| k.eq_ignore_ascii_case(keyword))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SectionKind {
    Account,
    ImapStore,
    Maildir,
    Channel,
    Group,
}

impl SectionKind {
    fn from_keyword(keyword: &str) -> Option<Self> {
        const KINDS: [(&str, SectionKind); 5] = [
            ("IMAPAccount", SectionKind::Account),
            ("IMAPStore", SectionKind::ImapStore),
            ("MaildirStore", SectionKind::Maildir),
            ("Channel", SectionKind::Channel),
            ("Group", SectionKind::Group),
        ];
        KINDS
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(keyword))
            .map(|&(_, kind)| kind)
    }

    fn keyword(self) -> &'static str {
        match self {
            SectionKind::Account => "IMAPAccount",
            SectionKind::ImapStore => "IMAPStore",
            SectionKind::Maildir => "MaildirStore",
            SectionKind::Channel => "Channel",
            SectionKind::Group => "Group",
        }
    }
}

/// The section being read: its kind and its index in the matching list.
struct Open {
    kind: SectionKind,
    index: usize,
}

struct Parser<'a> {
    path: &'a Path,
    home: Option<&'a Path>,
    config: MbsyncConfig,
    open: Option<Open>,
    /// Global options are only allowed before this becomes true.
    seen_section: bool,
    /// For each group, the line each member was listed on.
    member_lines: Vec<Vec<usize>>,
}

fn parse_with_home(text: &str, path: &Path, home: Option<&Path>) -> Result<MbsyncConfig> {
    let mut parser = Parser {
        path,
        home,
        config: MbsyncConfig {
            path: path.to_path_buf(),
            imap_accounts: Vec::new(),
            imap_stores: Vec::new(),
            maildir_stores: Vec::new(),
            channels: Vec::new(),
            groups: Vec::new(),
            sync_state: None,
        },
        open: None,
        seen_section: false,
        member_lines: Vec::new(),
    };
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        match split_words(line).map_err(|problem| parser.error(number, problem))? {
            LineKind::Comment => {}
            LineKind::Blank => parser.close_section()?,
            LineKind::Words(words) => parser.line(number, &words)?,
        }
    }
    parser.close_section()?;
    parser.check_groups()?;
    Ok(parser.config)
}

impl Parser<'_> {
    fn error(&self, line: usize, problem: impl fmt::Display) -> Error {
        Error::new(
            ErrorKind::Config,
            format!("{}:{line}: {problem}", self.path.display()),
        )
    }

    /// Handles one line of words (at least the keyword).
    fn line(&mut self, number: usize, words: &[String]) -> Result<()> {
        let keyword = words[0].as_str();
        let values = &words[1..];
        if values.is_empty() {
            return Err(self.error(number, format_args!("'{keyword}' needs a value")));
        }
        let Some(open) = &self.open else {
            return self.top_level(number, keyword, values);
        };
        let (kind, index) = (open.kind, open.index);
        let member_list = kind == SectionKind::Group
            && (keyword.eq_ignore_ascii_case("Channel")
                || keyword.eq_ignore_ascii_case("Channels"));
        if is_one_of(keyword, SECTION_KEYWORDS) && !member_list {
            let (name, line) = self.section_name_and_line(kind, index);
            return Err(self.error(
                number,
                format_args!(
                    "'{keyword}' cannot start a section here: the {} section '{name}' from line \
                     {line} is still open (end it with a blank line)",
                    kind.keyword()
                ),
            ));
        }
        match kind {
            SectionKind::Account => {
                let home = self.home;
                let account = &mut self.config.imap_accounts[index];
                account_option(account, keyword, values, home)
                    .map_err(|problem| self.error(number, problem))
            }
            SectionKind::ImapStore => self.imap_store_option(number, index, keyword, values),
            SectionKind::Maildir => self.maildir_option(number, index, keyword, values),
            SectionKind::Channel => self.channel_option(number, index, keyword, values),
            SectionKind::Group => {
                if member_list {
                    self.config.groups[index].members.extend_from_slice(values);
                    self.member_lines[index].extend(values.iter().map(|_| number));
                }
                Ok(())
            }
        }
    }

    /// A line outside any section: a section header or a global option.
    fn top_level(&mut self, number: usize, keyword: &str, values: &[String]) -> Result<()> {
        let Some(kind) = SectionKind::from_keyword(keyword) else {
            if !is_one_of(keyword, GLOBAL_KEYWORDS) {
                return Err(self.error(
                    number,
                    format_args!(
                        "'{keyword}' is not a recognized section-starting or global keyword"
                    ),
                ));
            }
            if self.seen_section {
                return Err(self.error(
                    number,
                    format_args!("global option '{keyword}' must come before the first section"),
                ));
            }
            if keyword.eq_ignore_ascii_case("SyncState") {
                self.single_value(number, keyword, values)?;
                self.config.sync_state = Some(sync_state_value(&values[0], self.home));
            }
            return Ok(());
        };
        let name = values[0].as_str();
        if kind != SectionKind::Group {
            self.single_value(number, keyword, values)?;
        }
        if let Some(first) = self.defined_line(kind, name) {
            return Err(self.error(
                number,
                format_args!(
                    "duplicate {} name '{name}' (first defined on line {first})",
                    noun(kind)
                ),
            ));
        }
        let index = match kind {
            SectionKind::Account => {
                self.config
                    .imap_accounts
                    .push(ImapAccount::new(name, number));
                self.config.imap_accounts.len() - 1
            }
            SectionKind::ImapStore => {
                self.config.imap_stores.push(ImapStore {
                    name: name.to_owned(),
                    account: None,
                    inline_account: None,
                    line: number,
                });
                self.config.imap_stores.len() - 1
            }
            SectionKind::Maildir => {
                self.config.maildir_stores.push(MaildirStore {
                    name: name.to_owned(),
                    path: None,
                    inbox: None,
                    subfolders: None,
                    flatten: None,
                    line: number,
                });
                self.config.maildir_stores.len() - 1
            }
            SectionKind::Channel => {
                self.config.channels.push(Channel {
                    name: name.to_owned(),
                    far: String::new(),
                    near: String::new(),
                    patterns: Vec::new(),
                    sync_state: None,
                    line: number,
                });
                self.config.channels.len() - 1
            }
            SectionKind::Group => {
                // `Group name chan1 chan2` lists members on the header too.
                self.config.groups.push(Group {
                    name: name.to_owned(),
                    members: values[1..].to_vec(),
                    line: number,
                });
                self.member_lines.push(vec![number; values.len() - 1]);
                self.config.groups.len() - 1
            }
        };
        self.open = Some(Open { kind, index });
        self.seen_section = true;
        Ok(())
    }

    /// The line a section of this kind and name was defined on, if any.
    /// IMAP and Maildir stores share one namespace, as in mbsync.
    fn defined_line(&self, kind: SectionKind, name: &str) -> Option<usize> {
        let c = &self.config;
        match kind {
            SectionKind::Account => c
                .imap_accounts
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.line),
            SectionKind::ImapStore | SectionKind::Maildir => c
                .imap_stores
                .iter()
                .map(|s| (&s.name, s.line))
                .chain(c.maildir_stores.iter().map(|s| (&s.name, s.line)))
                .find(|(n, _)| *n == name)
                .map(|(_, line)| line),
            SectionKind::Channel => c
                .channels
                .iter()
                .find(|ch| ch.name == name)
                .map(|ch| ch.line),
            SectionKind::Group => c.groups.iter().find(|g| g.name == name).map(|g| g.line),
        }
    }

    fn section_name_and_line(&self, kind: SectionKind, index: usize) -> (&str, usize) {
        let c = &self.config;
        match kind {
            SectionKind::Account => (&c.imap_accounts[index].name, c.imap_accounts[index].line),
            SectionKind::ImapStore => (&c.imap_stores[index].name, c.imap_stores[index].line),
            SectionKind::Maildir => (&c.maildir_stores[index].name, c.maildir_stores[index].line),
            SectionKind::Channel => (&c.channels[index].name, c.channels[index].line),
            SectionKind::Group => (&c.groups[index].name, c.groups[index].line),
        }
    }

    /// Rejects values after the first for options that take one, as mbsync
    /// does ("excess token"); usually a value with blanks that lacks quotes.
    fn single_value(&self, number: usize, keyword: &str, values: &[String]) -> Result<()> {
        single_value(keyword, values).map_err(|problem| self.error(number, problem))
    }

    fn imap_store_option(
        &mut self,
        number: usize,
        index: usize,
        keyword: &str,
        values: &[String],
    ) -> Result<()> {
        if keyword.eq_ignore_ascii_case("Account") {
            self.single_value(number, keyword, values)?;
            let name = &values[0];
            if !self.config.imap_accounts.iter().any(|a| &a.name == name) {
                return Err(self.error(
                    number,
                    format_args!(
                        "unknown IMAP account '{name}' (accounts must be defined before the \
                         stores that use them)"
                    ),
                ));
            }
            self.config.imap_stores[index].account = Some(name.clone());
        } else if is_one_of(keyword, ACCOUNT_KEYWORDS) {
            let home = self.home;
            let store = &mut self.config.imap_stores[index];
            let account = store
                .inline_account
                .get_or_insert_with(|| ImapAccount::new(&store.name, store.line));
            account_option(account, keyword, values, home)
                .map_err(|problem| self.error(number, problem))?;
        }
        Ok(())
    }

    fn maildir_option(
        &mut self,
        number: usize,
        index: usize,
        keyword: &str,
        values: &[String],
    ) -> Result<()> {
        const KEYS: [&str; 4] = ["Path", "Inbox", "SubFolders", "Flatten"];
        let Some(key) = KEYS.iter().find(|k| k.eq_ignore_ascii_case(keyword)) else {
            return Ok(());
        };
        self.single_value(number, keyword, values)?;
        let value = &values[0];
        let home = self.home;
        let store = &mut self.config.maildir_stores[index];
        match *key {
            "Path" => store.path = Some(expand_tilde(value, home)),
            "Inbox" => store.inbox = Some(expand_tilde(value, home)),
            "SubFolders" => store.subfolders = Some(value.clone()),
            _ => store.flatten = Some(value.clone()),
        }
        Ok(())
    }

    fn channel_option(
        &mut self,
        number: usize,
        index: usize,
        keyword: &str,
        values: &[String],
    ) -> Result<()> {
        let is = |k: &str| keyword.eq_ignore_ascii_case(k);
        if is("Pattern") || is("Patterns") {
            self.config.channels[index]
                .patterns
                .extend_from_slice(values);
            return Ok(());
        }
        if is("SyncState") {
            self.single_value(number, keyword, values)?;
            self.config.channels[index].sync_state = Some(sync_state_value(&values[0], self.home));
            return Ok(());
        }
        // Master and Slave are the names mbsync used before 1.4.
        let far = is("Far") || is("Master");
        if !far && !is("Near") && !is("Slave") {
            return Ok(());
        }
        self.single_value(number, keyword, values)?;
        let spec = &values[0];
        let Some((store, _)) = split_spec(spec) else {
            return Err(self.error(
                number,
                format_args!(
                    "malformed mailbox spec '{spec}' (expected :store: or :store:mailbox)"
                ),
            ));
        };
        let c = &self.config;
        let known = c.imap_stores.iter().any(|s| s.name == store)
            || c.maildir_stores.iter().any(|s| s.name == store);
        if !known {
            return Err(self.error(
                number,
                format_args!(
                    "'{keyword}' refers to undefined store '{store}' (stores must be defined \
                     before the channels that use them)"
                ),
            ));
        }
        let channel = &mut self.config.channels[index];
        if far {
            channel.far = spec.clone();
        } else {
            channel.near = spec.clone();
        }
        Ok(())
    }

    /// Ends the open section, if any, and checks it is complete.
    fn close_section(&mut self) -> Result<()> {
        let Some(Open { kind, index }) = self.open.take() else {
            return Ok(());
        };
        let c = &self.config;
        let problem = match kind {
            SectionKind::Account => {
                let a = &c.imap_accounts[index];
                (a.host.is_none() && a.tunnel.is_none()).then(|| {
                    (
                        a.line,
                        format!("IMAP account '{}' has neither Host nor Tunnel", a.name),
                    )
                })
            }
            SectionKind::ImapStore => {
                let s = &c.imap_stores[index];
                match (&s.account, &s.inline_account) {
                    (Some(_), Some(_)) => Some(format!(
                        "IMAP store '{}' has both Account and account options (Host, User, ...)",
                        s.name
                    )),
                    (None, None) => Some(format!(
                        "IMAP store '{}' has neither Account nor Host/Tunnel",
                        s.name
                    )),
                    (None, Some(a)) if a.host.is_none() && a.tunnel.is_none() => Some(format!(
                        "IMAP store '{}' has neither Host nor Tunnel",
                        s.name
                    )),
                    _ => None,
                }
                .map(|problem| (s.line, problem))
            }
            SectionKind::Channel => {
                let ch = &c.channels[index];
                let missing = if ch.far.is_empty() {
                    Some("Far")
                } else if ch.near.is_empty() {
                    Some("Near")
                } else {
                    None
                };
                missing.map(|side| {
                    (
                        ch.line,
                        format!("channel '{}' has no {side} store", ch.name),
                    )
                })
            }
            SectionKind::Maildir | SectionKind::Group => None,
        };
        match problem {
            Some((line, problem)) => Err(self.error(line, problem)),
            None => Ok(()),
        }
    }

    /// Checks that every group member names a channel, and that mailbox
    /// selections are only used on channels with Patterns (which mbsync
    /// requires: the selection replaces them).
    fn check_groups(&self) -> Result<()> {
        for (group, lines) in self.config.groups.iter().zip(&self.member_lines) {
            for (member, &line) in group.members.iter().zip(lines) {
                let (name, boxes) = match member.split_once(':') {
                    Some((name, boxes)) => (name, Some(boxes)),
                    None => (member.as_str(), None),
                };
                let Some(channel) = self.config.channel(name) else {
                    return Err(self.error(
                        line,
                        format_args!(
                            "group '{}' refers to undefined channel '{name}'",
                            group.name
                        ),
                    ));
                };
                if boxes.is_some() && channel.patterns.is_empty() {
                    return Err(self.error(
                        line,
                        format_args!(
                            "group '{}' selects mailboxes of channel '{name}', which has no Patterns",
                            group.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// How a kind of section is called in messages.
fn noun(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Account => "IMAP account",
        SectionKind::ImapStore | SectionKind::Maildir => "store",
        SectionKind::Channel => "channel",
        SectionKind::Group => "group",
    }
}

fn single_value(keyword: &str, values: &[String]) -> std::result::Result<(), String> {
    match values.get(1) {
        None => Ok(()),
        // The value of a secret is never echoed, not even a part of it.
        Some(_) if is_secret_keyword(keyword) => Err(format!(
            "'{keyword}' takes one value (quote a value that contains blanks)"
        )),
        Some(extra) => Err(format!(
            "'{keyword}' takes one value, but '{extra}' follows (quote values that contain blanks)"
        )),
    }
}

/// Applies one line of an account (an `IMAPAccount` section, or the inline
/// account of an `IMAPStore`). Options the engine does not use are skipped.
fn account_option(
    account: &mut ImapAccount,
    keyword: &str,
    values: &[String],
    home: Option<&Path>,
) -> std::result::Result<(), String> {
    let is = |k: &str| keyword.eq_ignore_ascii_case(k);
    if is("AuthMech") || is("AuthMechs") {
        account.auth_mechs.extend_from_slice(values);
        return Ok(());
    }
    const SINGLE: [&str; 12] = [
        "UseIMAPS",
        "Timeout",
        "Host",
        "Port",
        "User",
        "Pass",
        "PassCmd",
        "SSLType",
        "TLSType",
        "CertificateFile",
        "SystemCertificates",
        "Tunnel",
    ];
    if !SINGLE.iter().any(|k| is(k)) {
        return Ok(());
    }
    single_value(keyword, values)?;
    let value = values[0].clone();
    if is("Host") {
        // mbsync still accepts the old URL notation and strips it.
        let mut host = value.as_str();
        if let Some(rest) = host.strip_prefix("imaps:") {
            host = rest;
            account.ssl_type.get_or_insert_with(|| "IMAPS".to_owned());
        } else if let Some(rest) = host.strip_prefix("imap:") {
            host = rest;
        }
        account.host = Some(host.strip_prefix("//").unwrap_or(host).to_owned());
    } else if is("Timeout") {
        account.timeout = Some(
            value
                .parse::<u32>()
                .map_err(|_| format!("invalid Timeout '{value}' (expected seconds)"))?,
        );
    } else if is("Port") {
        let port = value
            .parse::<u16>()
            .map_err(|_| format!("invalid port number '{value}'"))?;
        // mbsync reads 0 as "the default for the SSL type".
        account.port = (port != 0).then_some(port);
    } else if is("User") {
        account.user = Some(value);
    } else if is("Pass") {
        account.pass = Some(Secret(value));
    } else if is("PassCmd") {
        account.pass_cmd = Some(value);
    } else if is("SSLType") || is("TLSType") {
        account.ssl_type = Some(value);
    } else if is("CertificateFile") {
        account.certificate_file = Some(expand_tilde(&value, home));
    } else if is("SystemCertificates") {
        account.system_certificates = boolean("SystemCertificates", &value)?;
    } else if is("UseIMAPS") {
        // Deprecated, and still honoured by mbsync 1.4: TLS from the start
        // unless an SSLType says otherwise.
        if boolean("UseIMAPS", &value)? {
            account.ssl_type.get_or_insert_with(|| "IMAPS".to_owned());
        }
    } else {
        account.tunnel = Some(value);
    }
    Ok(())
}

/// mbsync's booleans: yes/no, true/false, on/off, or a number.
fn boolean(keyword: &str, value: &str) -> std::result::Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" => Ok(true),
        "no" | "false" | "off" => Ok(false),
        n => n
            .parse::<i64>()
            .map(|n| n != 0)
            .map_err(|_| format!("invalid {keyword} '{value}' (expected yes or no)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOME: &str = "/home/me";

    fn parse(text: &str) -> Result<MbsyncConfig> {
        parse_with_home(text, Path::new("/home/me/.mbsyncrc"), Some(Path::new(HOME)))
    }

    /// A channel with these Patterns (none: the far and near sides as
    /// given) named `c`.
    fn channel(far: &str, patterns: &[&str]) -> Channel {
        Channel {
            name: "c".into(),
            far: far.into(),
            near: ":local:".into(),
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
            sync_state: None,
            line: 1,
        }
    }

    #[test]
    fn patterns_like_mbsync() {
        let takes = |patterns: &[&str], name| channel(":remote:", patterns).takes(name);
        assert!(takes(&["*"], "Work/Projects"));
        assert!(!takes(&["%"], "Work/Projects"));
        assert!(takes(&["%"], "Work"));
        assert!(!takes(&["*", "!Trash"], "Trash"));
        assert!(takes(&["*", "!Work*", "Work/Projects"], "Work/Projects"));
        assert!(!takes(&["*", "!Work*"], "Work"));
        assert!(!takes(&["INBOX"], "Sent"));
        assert!(!takes(&["%/x"], "a/x"), "mbsync's % stops at the /");
        assert!(takes(&["a/%"], "a/x"));
        assert!(takes(&["%"], ""));
    }

    #[test]
    fn the_inbox_of_a_channel() {
        let inbox = |far, patterns: &[&str]| channel(far, patterns).inbox_target();
        assert_eq!(inbox(":remote:", &["*"]).as_deref(), Some("c:INBOX"));
        assert_eq!(
            inbox(":remote:", &["INBOX", "Sent"]).as_deref(),
            Some("c:INBOX")
        );
        assert_eq!(
            inbox(":remote:", &["*", "![Gmail]*"]).as_deref(),
            Some("c:INBOX")
        );
        // Patterns that leave INBOX out: it is none of this channel's.
        assert_eq!(inbox(":remote:", &["Archive"]), None);
        assert_eq!(inbox(":remote:", &["*", "!INBOX"]), None);
        // No Patterns: the one mailbox of the far side, INBOX when unnamed.
        assert_eq!(inbox(":remote:INBOX", &[]).as_deref(), Some("c"));
        assert_eq!(inbox(":remote:", &[]).as_deref(), Some("c"));
        assert_eq!(inbox(":remote:Archive", &[]), None);
        // Under a prefix, INBOX is none of the channel's boxes.
        assert_eq!(inbox(":remote:Archive/", &["*"]), None);
    }

    #[test]
    fn keeps_sync_state_and_timeout() {
        let c = parse(GMAIL).unwrap();
        assert_eq!(c.sync_state.as_deref(), Some("*"));
        assert_eq!(c.imap_accounts[0].timeout, None);
        let c = parse(
            "SyncState ~/.mbsync/\n\nIMAPAccount a\nHost h\nTimeout 7\n\n\
             IMAPStore r\nAccount a\n\nMaildirStore l\nPath ~/M/\n\n\
             Channel c\nFar :r:\nNear :l:\nSyncState ~/state/c-\n\n\
             Channel d\nFar :r:\nNear :l:\nSyncState *\n",
        )
        .unwrap();
        assert_eq!(c.sync_state.as_deref(), Some("/home/me/.mbsync/"));
        assert_eq!(c.imap_accounts[0].timeout, Some(7));
        assert_eq!(
            c.channels[0].sync_state.as_deref(),
            Some("/home/me/state/c-")
        );
        assert_eq!(c.channels[1].sync_state.as_deref(), Some("*"));
        let err = parse_err("IMAPAccount a\nHost h\nTimeout soon\n");
        assert!(err.contains("invalid Timeout 'soon'"), "{err}");
    }

    fn parse_err(text: &str) -> String {
        let err = parse(text).expect_err("the config should be rejected");
        assert_eq!(err.kind, ErrorKind::Config);
        err.message
    }

    const GMAIL: &str = r#"
# Global defaults
Create Near
SyncState *

IMAPAccount gmail
Host imap.gmail.com
Port 993
User me@gmail.com
PassCmd "oama access me@gmail.com"
AuthMechs XOAUTH2
SSLType IMAPS
CertificateFile ~/.certs/ca.pem

IMAPStore gmail-remote
Account gmail

MaildirStore gmail-local
Path ~/Mail/gmail/
Inbox ~/Mail/gmail/Inbox
SubFolders Verbatim
# Comments inside a section do not end it.
Flatten .

Channel gmail-inbox
Far :gmail-remote:
Near :gmail-local:
Patterns INBOX

Channel gmail-all
Far :gmail-remote:"[Gmail]/"
Near :gmail-local:
Patterns * !"All Mail" !Spam !"Trash"
Sync Pull
Expunge Both

IMAPStore work-remote
Host mail.example.org
User "John Doe"
Pass "p@ss \"word\" \\ end"
Tunnel "ssh -q mail imapd"

MaildirStore work-local
Path ~/Mail/work/

Channel work
Master :work-remote:
Slave :work-local:INBOX

Group everything gmail-inbox
Channels gmail-all
Channel work

Group selected
Channel gmail-all:INBOX,Work
"#;

    #[test]
    fn parses_a_realistic_file() {
        let config = parse(GMAIL).unwrap();
        assert_eq!(config.path, Path::new("/home/me/.mbsyncrc"));

        let gmail = &config.imap_accounts[0];
        assert_eq!(gmail.name, "gmail");
        assert_eq!(gmail.host.as_deref(), Some("imap.gmail.com"));
        assert_eq!(gmail.port, Some(993));
        assert_eq!(gmail.user.as_deref(), Some("me@gmail.com"));
        assert_eq!(gmail.pass_cmd.as_deref(), Some("oama access me@gmail.com"));
        assert_eq!(gmail.pass, None);
        assert_eq!(gmail.auth_mechs, ["XOAUTH2"]);
        assert_eq!(gmail.ssl_type.as_deref(), Some("IMAPS"));
        assert_eq!(
            gmail.certificate_file.as_deref(),
            Some(Path::new("/home/me/.certs/ca.pem"))
        );
        assert_eq!(gmail.line, 6);

        assert_eq!(config.imap_stores[0].account.as_deref(), Some("gmail"));
        assert_eq!(config.imap_stores[0].inline_account, None);

        let local = &config.maildir_stores[0];
        assert_eq!(
            local.path.as_deref(),
            Some(Path::new("/home/me/Mail/gmail/"))
        );
        assert_eq!(
            local.inbox.as_deref(),
            Some(Path::new("/home/me/Mail/gmail/Inbox"))
        );
        assert_eq!(local.subfolders.as_deref(), Some("Verbatim"));
        assert_eq!(local.flatten.as_deref(), Some("."));

        let all = config.channel("gmail-all").unwrap();
        assert_eq!(all.far, ":gmail-remote:[Gmail]/");
        assert_eq!(all.near, ":gmail-local:");
        assert_eq!(all.patterns, ["*", "!All Mail", "!Spam", "!Trash"]);

        let work = config.channel("work").unwrap();
        assert_eq!(work.far, ":work-remote:");
        assert_eq!(work.near, ":work-local:INBOX");

        assert_eq!(
            config.group("everything").unwrap().members,
            ["gmail-inbox", "gmail-all", "work"]
        );
        assert_eq!(
            config.group("selected").unwrap().members,
            ["gmail-all:INBOX,Work"]
        );
        assert!(config.group("work").is_none());
    }

    #[test]
    fn inline_account_in_imap_store() {
        let config = parse(GMAIL).unwrap();
        let store = &config.imap_stores[1];
        assert_eq!(store.account, None);
        let inline = store.inline_account.as_ref().unwrap();
        assert_eq!(inline.name, "work-remote");
        assert_eq!(inline.host.as_deref(), Some("mail.example.org"));
        assert_eq!(inline.user.as_deref(), Some("John Doe"));
        assert_eq!(
            inline.pass.as_ref().unwrap().expose(),
            r#"p@ss "word" \ end"#
        );
        assert_eq!(inline.tunnel.as_deref(), Some("ssh -q mail imapd"));
        assert_eq!(inline.line, store.line);

        let work = config.channel("work").unwrap();
        assert_eq!(config.imap_account_for(work), Some(inline));
        let gmail = config.channel("gmail-all").unwrap();
        assert_eq!(
            config.imap_account_for(gmail),
            Some(&config.imap_accounts[0])
        );
    }

    #[test]
    fn accounts_without_a_password() {
        assert_eq!(
            parse(GMAIL).unwrap().passwordless_accounts(),
            Vec::<String>::new()
        );
        let config = parse(
            "IMAPAccount asks\nHost a\nUser u\n\nIMAPAccount keyring\nHost k\nUser u\n\
             PassCmd \"secret-tool lookup mail k\"\n\n\
             IMAPStore a-remote\nAccount asks\n\nIMAPStore k-remote\nAccount keyring\n\n\
             MaildirStore local\nPath ~/Mail/\n\n\
             Channel a-inbox\nFar :a-remote:INBOX\nNear :local:a\n\n\
             Channel a-all\nFar :a-remote:\nNear :local:a/\nPatterns *\n\n\
             Channel k\nFar :k-remote:\nNear :local:k/\nPatterns *\n",
        )
        .unwrap();
        assert_eq!(config.passwordless_accounts(), ["IMAPAccount asks"]);
        // Written inside its store; a tunnel to a logged-in server, or
        // EXTERNAL alone, needs no password.
        let config = parse(
            "IMAPStore inline\nHost h\nUser u\n\n\
             IMAPStore tunnel\nTunnel \"ssh -q h imapd\"\n\n\
             IMAPStore cert\nHost c\nUser u\nAuthMechs external\n\n\
             MaildirStore local\nPath ~/Mail/\n\n\
             Channel i\nFar :inline:\nNear :local:i/\nPatterns *\n\n\
             Channel t\nFar :tunnel:\nNear :local:t/\nPatterns *\n\n\
             Channel c\nFar :local:c/\nNear :cert:\nPatterns *\n",
        )
        .unwrap();
        assert_eq!(config.passwordless_accounts(), ["IMAPStore inline"]);
    }

    #[test]
    fn targets_in_file_order() {
        let config = parse(GMAIL).unwrap();
        let targets = config.targets();
        let names: Vec<(&str, TargetKind)> =
            targets.iter().map(|t| (t.name.as_str(), t.kind)).collect();
        assert_eq!(
            names,
            [
                ("gmail-inbox", TargetKind::Channel),
                ("gmail-all", TargetKind::Channel),
                ("work", TargetKind::Channel),
                ("everything", TargetKind::Group),
                ("selected", TargetKind::Group),
            ]
        );
        let json = serde_json::to_string(&targets[3]).unwrap();
        assert_eq!(
            json,
            r#"{"name":"everything","kind":"group","grouped":false}"#
        );
        assert!(targets[2].grouped, "work is in a group");
        assert!(
            targets[4].grouped,
            "everything syncs all that selected syncs"
        );
    }

    /// Auto-sync takes every group no other group covers: two groups that
    /// overlap are not both synced at every tick.
    #[test]
    fn a_group_another_group_covers_is_grouped() {
        let config = parse(
            "IMAPStore r\nHost h\nUser u\n\nMaildirStore l\nPath /m/\n\n\
             Channel a\nFar :r:\nNear :l:\nPatterns *\n\n\
             Channel b\nFar :r:\nNear :l:\nPatterns *\n\n\
             Group part\nChannels a b:INBOX,Sent\n\n\
             Group whole\nChannels a b\n\n\
             Group same\nChannels b a\n\n\
             Group other\nChannels a:Work\n\n\
             Group few\nChannels b:Sent\n",
        )
        .unwrap();
        let grouped: Vec<(String, bool)> = config
            .targets()
            .into_iter()
            .filter(|t| t.kind == TargetKind::Group)
            .map(|t| (t.name, t.grouped))
            .collect();
        let expect = [
            ("part", true),
            ("whole", false),
            ("same", true),
            ("other", true),
            ("few", true),
        ];
        assert_eq!(
            grouped,
            expect.map(|(n, g)| (n.to_string(), g)),
            "of groups that sync the same, the first one stays"
        );
    }

    #[test]
    fn near_maildir_resolution() {
        let config = parse(GMAIL).unwrap();
        let dir = |name: &str| config.near_maildir(config.channel(name).unwrap());
        // Patterns: the store's Path (plus the channel's prefix).
        assert_eq!(
            dir("gmail-all"),
            Some(PathBuf::from("/home/me/Mail/gmail/"))
        );
        assert_eq!(
            dir("gmail-inbox"),
            Some(PathBuf::from("/home/me/Mail/gmail/"))
        );
        // No Patterns and INBOX: the Inbox directory; the store has none, so
        // mbsync's default ~/Maildir applies.
        let default_inbox = home_dir().map(|h| h.join("Maildir"));
        assert_eq!(dir("work"), default_inbox);

        let config = parse(
            "MaildirStore local\nPath ~/Mail/\n\nMaildirStore other\nPath /srv/mail/\n\n\
             Channel archive\nFar :other:Archive\nNear :local:Lists/rust\n\n\
             Channel pushed\nFar :local:Outbox\nNear :other:\nPatterns *\n",
        )
        .unwrap();
        let archive = config.channel("archive").unwrap();
        assert_eq!(
            config.near_maildir(archive),
            Some(PathBuf::from("/home/me/Mail/Lists/rust"))
        );
        assert_eq!(config.imap_account_for(archive), None);
        let pushed = config.channel("pushed").unwrap();
        assert_eq!(
            config.near_maildir(pushed),
            Some(PathBuf::from("/srv/mail/"))
        );
    }

    #[test]
    fn quoting_escapes_and_comments() {
        let words = |line: &str| match split_words(line).unwrap() {
            LineKind::Words(w) => w,
            LineKind::Blank => vec!["<blank>".to_owned()],
            LineKind::Comment => vec!["<comment>".to_owned()],
        };
        assert_eq!(words(r#"Pass "a b""#), ["Pass", "a b"]);
        assert_eq!(words(r#"Pass a\ b"#), ["Pass", "a b"]);
        assert_eq!(words(r#"Pass "a\"b""#), ["Pass", "a\"b"]);
        assert_eq!(words(r#"Pass x"y z"w"#), ["Pass", "xy zw"]);
        assert_eq!(words(r#"Pass \#notcomment"#), ["Pass", "#notcomment"]);
        assert_eq!(words("Pass a#b # trailing comment"), ["Pass", "a#b"]);
        assert_eq!(words(r#"Pass """#), ["Pass", ""]);
        assert_eq!(words("  # comment"), ["<comment>"]);
        assert_eq!(words(" \t\r"), ["<blank>"]);
        assert!(split_words(r#"Pass "open"#).is_err());
        assert!(split_words("Pass trailing\\").is_err());
    }

    #[test]
    fn keywords_are_case_insensitive_and_unknown_options_ignored() {
        let config = parse(
            "imapaccount a\nHOST h\nPipelineDepth 1\nSomeFutureOption x y z\n\n\
             imapstore s\naccount a\nUseNamespace no\n\n\
             maildirstore m\npath ~/M/\nAltMap yes\n\n\
             CHANNEL c\nfar :s:\nNEAR :m:\nMaxMessages 10\n\n\
             group g\nCHANNELS c\nFuture x\n",
        )
        .unwrap();
        assert_eq!(config.imap_accounts[0].host.as_deref(), Some("h"));
        assert_eq!(config.channels[0].far, ":s:");
        assert_eq!(config.groups[0].members, ["c"]);
    }

    #[test]
    fn port_zero_means_default() {
        let config = parse("IMAPAccount a\nHost h\nPort 0\n").unwrap();
        assert_eq!(config.imap_accounts[0].port, None);
    }

    #[test]
    fn host_url_notation_is_stripped() {
        let config = parse("IMAPAccount a\nHost imaps://imap.example.org\n").unwrap();
        assert_eq!(
            config.imap_accounts[0].host.as_deref(),
            Some("imap.example.org")
        );
        assert_eq!(config.imap_accounts[0].ssl_type.as_deref(), Some("IMAPS"));
    }

    #[test]
    fn the_deprecated_use_imaps_means_tls_unless_ssltype_says_otherwise() {
        let ssl = |text: &str| parse(text).unwrap().imap_accounts[0].ssl_type.clone();
        assert_eq!(
            ssl("IMAPAccount a\nHost h\nUseIMAPS yes\n").as_deref(),
            Some("IMAPS")
        );
        assert_eq!(ssl("IMAPAccount a\nHost h\nUseIMAPS no\n"), None);
        let both = "IMAPAccount a\nHost h\nSSLType STARTTLS\nUseIMAPS yes\n";
        assert_eq!(ssl(both).as_deref(), Some("STARTTLS"));
        assert!(parse("IMAPAccount a\nHost h\nUseIMAPS maybe\n").is_err());
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases: &[(&str, &str)] = &[
            ("IMAPAccount a\nHost h\nPass \"open\n", ":3: missing closing quote"),
            ("IMAPAccount a\nHost h\nPass end\\\n", ":3: unterminated escape sequence"),
            ("Bogus x\n", ":1: 'Bogus' is not a recognized section-starting or global keyword"),
            ("\n\nIMAPAccount a\nHost h\n\nCreate Both\n", ":6: global option 'Create' must come"),
            ("IMAPAccount a\nHost\n", ":2: 'Host' needs a value"),
            ("IMAPAccount a\nHost h\nPort 99999\n", ":3: invalid port number '99999'"),
            ("IMAPAccount a\nHost h\nPort imaps\n", ":3: invalid port number 'imaps'"),
            ("IMAPAccount a\nHost h\nUser John Doe\n", ":3: 'User' takes one value, but 'Doe' follows"),
            (
                "IMAPAccount a\nHost h\nPass hunter2 correct-horse\n",
                ":3: 'Pass' takes one value (quote a value",
            ),
            ("IMAPAccount a\nUser u\n", ":1: IMAP account 'a' has neither Host nor Tunnel"),
            ("IMAPStore s\nAccount nope\n", ":2: unknown IMAP account 'nope'"),
            ("IMAPStore s\nPath x\n", ":1: IMAP store 's' has neither Account nor Host/Tunnel"),
            (
                "IMAPAccount a\nHost h\n\nIMAPStore s\nAccount a\nUser u\n",
                ":4: IMAP store 's' has both Account and account options",
            ),
            (
                "MaildirStore m\nPath /m/\n\nChannel c\nFar :nostore:\nNear :m:\n",
                ":5: 'Far' refers to undefined store 'nostore'",
            ),
            ("MaildirStore m\n\nChannel c\nFar m\n", ":4: malformed mailbox spec 'm'"),
            ("MaildirStore m\n\nChannel c\nNear :m:\n", ":3: channel 'c' has no Far store"),
            ("MaildirStore m\n\n# c\nChannel c\nFar :m:\n\n", ":4: channel 'c' has no Near store"),
            (
                "MaildirStore m\n\nChannel c\nFar :m:\nNear :m:\n\nChannel c\nFar :m:\nNear :m:\n",
                ":7: duplicate channel name 'c' (first defined on line 3)",
            ),
            ("MaildirStore m\n\nMaildirStore m\n", ":3: duplicate store name 'm'"),
            (
                "MaildirStore m\nChannel c\nFar :m:\n",
                ":2: 'Channel' cannot start a section here: the MaildirStore section 'm' from line 1",
            ),
            (
                "MaildirStore m\n\nChannel c\nFar :m:\nNear :m:\n\nGroup g c\nChannel d\n",
                ":8: group 'g' refers to undefined channel 'd'",
            ),
            (
                "MaildirStore m\n\nChannel c\nFar :m:\nNear :m:\n\nGroup g\nChannels c:INBOX\n",
                ":8: group 'g' selects mailboxes of channel 'c', which has no Patterns",
            ),
        ];
        for (text, expected) in cases {
            let message = parse_err(text);
            assert!(
                message.starts_with("/home/me/.mbsyncrc:") && message.contains(expected),
                "{text:?}: got {message:?}, want {expected:?}"
            );
            assert!(!message.contains('\n'));
        }
    }

    #[test]
    fn group_may_name_channels_defined_later() {
        let config =
            parse("MaildirStore m\n\nGroup g\nChannel later\n\nChannel later\nFar :m:\nNear :m:\n")
                .unwrap();
        assert_eq!(config.groups[0].members, ["later"]);
    }

    #[test]
    fn secret_is_never_printed() {
        let config = parse("IMAPAccount a\nHost h\nPass hunter2\n").unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"));
        assert!(debug.contains("<redacted>"));
        let json = serde_json::to_string(&config).unwrap();
        assert!(!json.contains("hunter2"));
        assert!(json.contains(r#""pass":"<redacted>""#));
        assert_eq!(
            config.imap_accounts[0].pass.as_ref().unwrap().expose(),
            "hunter2"
        );
    }

    #[test]
    fn default_path_prefers_xdg_like_mbsync_1_5() {
        let home = Path::new("/home/me");
        let [xdg, legacy] = default_candidates(home, None);
        assert_eq!(xdg, Path::new("/home/me/.config/isyncrc"));
        assert_eq!(legacy, Path::new("/home/me/.mbsyncrc"));
        let [xdg, _] = default_candidates(home, Some(Path::new("/cfg")));
        assert_eq!(xdg, Path::new("/cfg/isyncrc"));
    }

    #[test]
    fn a_fifo_or_device_is_refused_at_once_as_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for path in [fifo.as_path(), Path::new("/dev/zero")] {
            let err = MbsyncConfig::load(Some(path)).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Config, "{path:?}");
            assert_eq!(
                err.message,
                format!(
                    "Cannot open config file '{}': not a regular file",
                    path.display()
                )
            );
        }
    }

    #[test]
    fn a_missing_default_file_names_both_places_and_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let err = MbsyncConfig::read(
            &dir.path().join("isyncrc"),
            Some(dir.path().join(".mbsyncrc")),
            false,
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert_eq!(
            err.message,
            format!(
                "Cannot open config file '{0}/isyncrc': No such file or directory (nor is there \
                 {0}/.mbsyncrc): name your mbsyncrc with mbsync.config in Neovim, -c on the \
                 command line",
                dir.path().display()
            )
        );
    }

    #[test]
    fn load_reports_missing_and_invalid_files() {
        let dir = std::env::temp_dir().join(format!("mbsync-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let missing = dir.join("nope");
        let err = MbsyncConfig::load(Some(&missing)).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert_eq!(
            err.message,
            format!(
                "Cannot open config file '{}': No such file or directory (named by mbsync.config \
                 in Neovim, -c on the command line)",
                missing.display()
            )
        );

        let bad = dir.join("bad");
        std::fs::write(&bad, b"IMAPAccount a\nHost h\nPass \xff\n").unwrap();
        let err = MbsyncConfig::load(Some(&bad)).unwrap_err();
        assert_eq!(err.message, format!("{}:3: not valid UTF-8", bad.display()));

        let good = dir.join("good");
        std::fs::write(&good, "MaildirStore m\n\nChannel c\nFar :m:\nNear :m:\n").unwrap();
        let config = MbsyncConfig::load(Some(&good)).unwrap();
        assert_eq!(config.path, good);
        assert_eq!(config.channels.len(), 1);

        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn config_cache_reads_a_changed_file_again() {
        let tmp = tempfile::tempdir().unwrap();
        let rc = tmp.path().join("mbsyncrc");
        let one = "MaildirStore m\n\nChannel one\nFar :m:\nNear :m:\n";
        let two = "MaildirStore m\n\nChannel two\nFar :m:\nNear :m:\n";
        std::fs::write(&rc, one).unwrap();
        // No settling time: the file just written is kept.
        let cache = ConfigCache::with_settle(Duration::ZERO);
        let first = cache.load(Some(&rc)).unwrap();
        assert_eq!(first, MbsyncConfig::load(Some(&rc)).unwrap());
        assert_eq!(cache.load(Some(&rc)).unwrap(), first);
        // Same size, new file in its place (as editors save): a new stamp.
        let next = tmp.path().join("next");
        std::fs::write(&next, two).unwrap();
        std::fs::rename(&next, &rc).unwrap();
        assert_eq!(cache.load(Some(&rc)).unwrap().channels[0].name, "two");
        // A file that is gone is an error again, not the old parse.
        std::fs::remove_file(&rc).unwrap();
        assert_eq!(cache.load(Some(&rc)).unwrap_err().kind, ErrorKind::Config);
    }

    #[test]
    fn config_cache_keeps_only_settled_files() {
        let tmp = tempfile::tempdir().unwrap();
        let rc = tmp.path().join("mbsyncrc");
        std::fs::write(&rc, "MaildirStore m\n").unwrap();
        // A file written just now is parsed on every load until it settles.
        let cache = ConfigCache::default();
        cache.load(Some(&rc)).unwrap();
        assert!(cache.last.lock().is_none());
    }

    #[test]
    fn empty_file_has_no_targets() {
        let config = parse("# nothing yet\n").unwrap();
        assert!(config.targets().is_empty());
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,300}") {
            let _ = parse(&text);
        }

        #[test]
        fn parse_never_panics_on_config_like_text(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("IMAPAccount a".to_owned()),
                    Just("IMAPStore s".to_owned()),
                    Just("MaildirStore m".to_owned()),
                    Just("Channel c".to_owned()),
                    Just("Group g c c:INBOX".to_owned()),
                    Just("Far :s:".to_owned()),
                    Just("Near :m:x".to_owned()),
                    Just("Account a".to_owned()),
                    Just("Host h".to_owned()),
                    Just("Patterns *".to_owned()),
                    Just("Channels c".to_owned()),
                    Just(String::new()),
                    "[A-Za-z:\" \\\\#~/]{0,20}",
                ],
                0..30,
            )
        ) {
            let text = lines.join("\n");
            if let Ok(config) = parse(&text) {
                for channel in &config.channels {
                    let _ = config.near_maildir(channel);
                    let _ = config.imap_account_for(channel);
                }
                let _ = config.targets();
            }
        }
    }

    #[test]
    fn errors_never_show_a_password_even_on_a_broken_line() {
        let text = "IMAPAccount a\nPas\"s \"hunter22-secret\nChannel c\nNear :x:hunter22-secret\n";
        let e = MbsyncConfig::parse(text, Path::new("/rc")).unwrap_err();
        assert!(!e.message.contains("hunter22-secret"), "{e}");
    }

    #[test]
    fn system_certificates_is_read_as_mbsync_reads_booleans() {
        for (value, want) in [
            ("no", false),
            ("Off", false),
            ("0", false),
            ("yes", true),
            ("1", true),
        ] {
            let text = format!("IMAPAccount a\nHost h\nSystemCertificates {value}\n");
            let c = MbsyncConfig::parse(&text, Path::new("/rc")).unwrap();
            assert_eq!(c.imap_accounts[0].system_certificates, want, "{value}");
        }
        let c = MbsyncConfig::parse("IMAPAccount a\nHost h\n", Path::new("/rc")).unwrap();
        assert!(c.imap_accounts[0].system_certificates, "yes unless said");
        let e = MbsyncConfig::parse(
            "IMAPAccount a\nHost h\nSystemCertificates maybe\n",
            Path::new("/rc"),
        )
        .unwrap_err();
        assert!(
            e.message.contains("invalid SystemCertificates 'maybe'"),
            "{e}"
        );
    }

    #[test]
    fn errors_never_show_a_password_command_or_tunnel() {
        for (line, secret) in [
            ("PassCmd echo Hunter2-SuperSecret", "Hunter2-SuperSecret"),
            ("passcmd \"printf Hunter2\" extra-Hunter3", "Hunter3"),
            ("Tunnel \"ssh -i key host\" user:Hunter4", "Hunter4"),
            ("UserCmd printf Hunter5", "Hunter5"),
        ] {
            // The second line is broken too, so that every case fails.
            let text = format!("IMAPAccount a\n{line}\nPort x\n");
            let e = MbsyncConfig::parse(&text, Path::new("/rc")).unwrap_err();
            assert!(!e.message.contains(secret), "{line}: {e}");
        }
    }
}
