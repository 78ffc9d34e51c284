//! What went wrong in an mbsync run, read from its output.
//!
//! mbsync exits with 0 or 1 and nothing finer, so the cause of a failure has
//! to be recognised in the messages it printed. The patterns here follow the
//! wording of isync 1.4 (`drv_imap.c`, `socket.c`, `sync.c`, `config.c`,
//! `main.c`) and match anywhere in a line, so prefixes such as a channel
//! label or a timestamp do not hide them.
//!
//! Output can hold credentials: debug output and some error messages echo
//! IMAP commands, and `AUTHENTICATE XOAUTH2` carries a bearer token. Every
//! line this module hands out goes through [`redact`] first.

use super::config::ImapAccount;
use crate::error::ErrorKind;

/// The message after which mbsync 1.4 waits about three minutes for the
/// server before giving up; the runner kills it as soon as it is seen.
const HANG_MESSAGE: &str = "IMAP wants more steps despite successful SASL authentication.";

/// How the runner's watchdog reports an mbsync that stopped while it waited
/// for the output of its `PassCmd` or `UserCmd`: the command may be asking
/// for a passphrase where nobody can type it.
pub const PASSCMD_SILENT: &str = "the PassCmd (or UserCmd) of the mbsync config gave no answer";

/// How the manager reports an OAuth2 login that failed with an mbsync
/// before 1.4: isync 1.3 reads at most 79 characters of PassCmd's output
/// (measured with Debian 11's 1.3.0), and cuts the token, which is longer.
pub const PASSCMD_CUT: &str = "mbsync older than 1.4 cut the OAuth2 token";

/// How the runner reports a `PassCmd` (or `UserCmd`) that asked a question
/// on mbsync's terminal, where nobody can answer it.
pub const PASSCMD_PROMPT: &str =
    "the PassCmd (or UserCmd) of the mbsync config asked for input on a terminal";

/// Replaces every secret found by [`redact`].
const REDACTED: &str = "<redacted>";

/// A blob this long, of base64 characters and mixed case with digits, is
/// taken for a token or encoded credentials wherever it appears.
const MIN_BLOB_LEN: usize = 40;

/// The failure an mbsync run ended with, and the line that shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Classified {
    pub kind: ErrorKind,
    /// The deciding output line, with secrets removed by [`redact`].
    pub line: String,
}

/// Credentials were rejected, could not be obtained, or the SASL exchange
/// broke down.
const AUTH_PATTERNS: &[&str] = &[
    // RFC 5530 response codes.
    "[AUTHENTICATIONFAILED]",
    "[AUTHORIZATIONFAILED]",
    "[EXPIRED]",
    // "Skipping account X, PassCmd exited with status 1", "... no password".
    "Skipping account ",
    HANG_MESSAGE,
    "IMAP command 'LOGIN",
    "IMAP command 'AUTHENTICATE",
    "Error performing SASL authentication step",
    "Error decoding SASL prompt",
    "Error encoding SASL response",
    "Error: Unknown SASL interaction ID",
    "Error setting SASL authentication id",
    "SASL(-",
    "Looking up Keychain failed",
    "LOGIN failed",
];

/// Auth failures whose wording varies between servers; matched without
/// regard to case.
const AUTH_PATTERNS_ANY_CASE: &[&str] = &["authentication failed", "invalid credentials"];

/// Another mbsync holds the lock of a channel's sync state.
const LOCKED_PATTERNS: &[&str] = &["Maildir error: cannot fcntl lock UIDVALIDITY"];

/// `IMAP error: cannot use unqualified 'inbox'. Did you mean INBOX?`: a
/// folder named inbox in another case.
const UNQUALIFIED_INBOX: &str = "cannot use unqualified";

/// What mbsync says of a first line from the server that is no IMAP
/// greeting: Host and Port lead to another kind of server (SSH, SMTP, ...).
const NOT_IMAP: &str = "IMAP error: unexpected reply: ";

/// The resolver's answers for a host name that does not exist (EAI_NONAME,
/// EAI_NODATA), as opposed to "Temporary failure in name resolution"
/// (EAI_AGAIN: no DNS reachable, offline), which is worth a retry.
const NO_SUCH_HOST: &[&str] = &[
    "Name or service not known",
    "No address associated with hostname",
];

/// Problems the user has to fix in the configuration or the installation.
const CONFIG_PATTERNS: &[&str] = &[
    "No channel or group named",
    "Cannot open config file",
    "No channels defined",
    "No channel specified",
    "Cannot override mailbox in channel",
    "refers to no far side store",
    "refers to no near side store",
    "refers to undefined store",
    "is not a recognized section-starting or global keyword",
    "is not recognized in",
    "unknown keyword",
    "has neither Tunnel nor Host",
    "has both User and UserCmd",
    "has both Pass and PassCmd",
    "has both Account and account-specific options",
    "despite specifying Pass/PassCmd",
    "mutually exclusive",
    "requires SSL but no SSL versions enabled",
    "Conflicting Sync args",
    "Conflicting Sync options",
    "Redundant Sync options",
    "Invalid combination of simple and compound Sync options",
    "Maildir error: store '",
    // The MaildirStore's Path is missing or no folder.
    "Maildir error: cannot open store '",
    "does not specify SubFolders style",
    "Setting Path is incompatible with",
    "does not support in-box sync state",
    "Error: invalid SyncState location",
    "hierarchy delimiter",
    UNQUALIFIED_INBOX,
    NOT_IMAP,
    "Unknown option",
    "requires an argument",
    // Authentication that cannot work as configured: retrying with a fresh
    // token does not help, installing a SASL plugin or fixing SSLType does.
    "selected SASL mechanism(s) not available",
    "server supports no acceptable authentication mechanism",
    "not using LOGIN because connection is not encrypted",
    "Error initializing SASL",
    "SSL support not available",
    // OpenSSL's answer to a TLS hello sent to a port that speaks plain
    // IMAP: SSLType IMAPS on the STARTTLS port.
    "wrong version number",
    // Certificate verification: a configuration (CertificateFile) matter.
    "SSL error connecting",
    "certificate owner does not match hostname",
    "no server certificate",
    "cannot get certificate",
];

/// The server could not be reached or the connection broke.
const NETWORK_PATTERNS: &[&str] = &[
    "Cannot connect to",
    "No working address found",
    "Socket error",
    "Cannot resolve server",
    "Connection refused",
    "Connection reset",
    "Network is unreachable",
    "No route to host",
    "Broken pipe",
    "IMAP connection lost",
    "unexpected BYE response",
];

/// Returns the kind of failure `line` reports, or `None` for a line that is
/// not recognised as an error.
///
/// A line matching several kinds gets the first of auth, uidvalidity,
/// locked, config, timeout, network.
pub fn classify_line(line: &str) -> Option<ErrorKind> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let lower = line.to_ascii_lowercase();
    let has = |patterns: &[&str]| patterns.iter().any(|p| line.contains(p));

    // The mbsyncrc gives no password (and nobody can type one in, see
    // `runner::read_terminal`) or no user: retrying or refreshing cannot help.
    if missing_credential(line).is_some() {
        return Some(ErrorKind::Config);
    }
    if has(AUTH_PATTERNS) || AUTH_PATTERNS_ANY_CASE.iter().any(|p| lower.contains(p)) {
        return Some(ErrorKind::Auth);
    }
    if is_uidvalidity_error(line) || is_maildir_uid_error(line) {
        return Some(ErrorKind::Uidvalidity);
    }
    if (line.contains("Error: channel ") && line.contains(" is locked")) || has(LOCKED_PATTERNS) {
        return Some(ErrorKind::Locked);
    }
    if has(CONFIG_PATTERNS)
        || is_config_file_error(line)
        || is_unopenable_box(line)
        || is_unknown_host(line)
    {
        return Some(ErrorKind::Config);
    }
    if is_local_file_error(line) {
        return Some(ErrorKind::Io);
    }
    let connection = line.contains("Socket error") || line.contains("Cannot connect to");
    if connection && (lower.contains("timeout") || lower.contains("timed out")) {
        return Some(ErrorKind::Timeout);
    }
    if has(NETWORK_PATTERNS) || lower.contains("unexpected eof") {
        return Some(ErrorKind::Network);
    }
    None
}

/// The account of `Skipping account X, no password` (mbsync asked for the
/// password on its terminal and got an empty answer), and whether it is
/// the password (true) or, in `Skipping account X, no user`, the user.
fn missing_credential(line: &str) -> Option<(&str, bool)> {
    let rest = line.strip_prefix("Skipping account ")?;
    match rest.strip_suffix(", no password") {
        Some(account) => Some((account, true)),
        None => rest
            .strip_suffix(", no user")
            .map(|account| (account, false)),
    }
}

/// `Maildir error: duplicate UID 3.` and `Maildir error: UID 10 is beyond
/// highest assigned UID 5.` (1.5 adds ` in PATH` before the full stop):
/// mbsync refuses a local folder where a mail client put a file that keeps
/// mbsync's `,U=` from the folder it came from (a move that kept the file
/// name). Every sync of that folder fails until it is repaired, and the
/// moved message, deleted from its old folder on the server by the sync
/// before, is then only here. The same lossless repair as for a changed
/// UIDVALIDITY mends it (the runner names the box in the line, see
/// [`locate_maildir_uid_error`]), so it is of that kind.
pub fn is_maildir_uid_error(line: &str) -> bool {
    let Some(at) = line.find("Maildir error: ") else {
        return false;
    };
    let rest = &line[at + "Maildir error: ".len()..];
    rest.starts_with("duplicate UID ")
        || (rest.starts_with("UID ") && rest.contains(" is beyond highest assigned UID "))
}

/// An [`is_maildir_uid_error`] line with the channel and the local box it
/// is about put in front, as mbsync's own box errors name them (`Error:
/// channel demo, near side box Archive: Maildir error: duplicate UID 3.`),
/// so that the repair finds the box; mbsync names neither (1.5 only the
/// folder's path). `channel` and `near_box` come from the `-V` lines
/// before it (`Channel demo`, `Opening near side box Archive...`).
pub fn locate_maildir_uid_error(line: &str, channel: &str, near_box: &str) -> String {
    format!("Error: channel {channel}, near side box {near_box}: {line}")
}

/// `Error: channel c, far side box INBOX: UIDVALIDITY genuinely changed (at
/// UID 42).` and its relatives from `sync.c`, plus a Maildir whose
/// UIDVALIDITY record is unreadable. Not the IMAP protocol complaint
/// `malformed UIDVALIDITY status` (a server bug), nor notices.
fn is_uidvalidity_error(line: &str) -> bool {
    line.contains("UIDVALIDITY")
        && (line.contains("Error: ")
            || line.contains("Unable to recover from UIDVALIDITY change")
            || line.contains("cannot read UIDVALIDITY"))
}

/// `Error: channel c: far side box Nope cannot be opened.` (and `both far
/// side … and near side … cannot be opened.`): a folder that does not exist
/// where the channel looks for it, and is not created there. A typo in a
/// folder name, or a Patterns/Create setting: retrying cannot help. (A lost
/// connection is reported otherwise, so this is no network failure.) Not
/// the warning about a box that cannot be opened while its peer is not
/// empty.
fn is_unopenable_box(line: &str) -> bool {
    line.starts_with("Error: channel ") && line.ends_with(" cannot be opened.")
}

/// A line `classify_output` made of [`is_unopenable_box`] lines, maybe
/// ending in how many more there were.
fn names_unopenable_boxes(line: &str) -> bool {
    line.starts_with("Error: channel ") && line.contains(" cannot be opened.")
}

/// `Error: Cannot resolve server 'imap.exmaple.com': Name or service not
/// known`: a typo in Host, which no retry mends.
fn is_unknown_host(line: &str) -> bool {
    line.contains("Cannot resolve server") && NO_SUCH_HOST.iter().any(|e| line.contains(e))
}

/// Folders named in one error message at most (see `classify_output`).
const MAX_BOXES_NAMED: usize = 5;

/// Where the folder of an [`is_unopenable_box`] line is missing: "both",
/// "far" or "near".
fn unopenable_side(line: &str) -> &'static str {
    if line.contains(" both ") {
        "both"
    } else if names_far_side(line) {
        "far"
    } else {
        "near"
    }
}

/// Whether an `Error: channel c: … cannot be opened.` line names the far
/// side (the server's): `far side box X`, or `master X` from mbsync 1.3.
fn names_far_side(line: &str) -> bool {
    line.contains("far side box ") || line.contains(": master ")
}

/// Why a local file or folder could not be written or read, as the system
/// says it (strerror). A full disk must be named as such: mbsync then goes
/// on and fails to open folders, which alone would read as a config error.
const FILE_ERRORS: &[&str] = &[
    "No space left on device",
    "Disk quota exceeded",
    "Read-only file system",
    "Permission denied",
    "Not a directory",
    "Input/output error",
];

/// A local file error: mbsync's Maildir and state-file messages (`Maildir
/// error: cannot write ...: No space left on device`, `Error: cannot create
/// lock file ...: Permission denied`), not a refused connection.
fn is_local_file_error(line: &str) -> bool {
    (line.starts_with("Maildir error: ") || line.starts_with("Error: cannot "))
        && FILE_ERRORS.iter().any(|e| line.contains(e))
}

/// A configuration parse error: `<file>:<line>: <problem>`, as printed by
/// mbsync's config reader, but not its `Notice:`/`Warning:` lines.
fn is_config_file_error(line: &str) -> bool {
    // A failed connection names HOST:PORT, which reads the same (the relay
    // of a throttled account says "Cannot connect to 127.0.0.1:993: ...").
    if line.contains("Cannot connect to") {
        return false;
    }
    let mut search = 0;
    while let Some(found) = line[search..].find(':') {
        let colon = search + found;
        let after = &line[colon + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if colon > 0 && digits > 0 {
            if let Some(problem) = after[digits..].strip_prefix(": ") {
                return !problem.starts_with("Notice:") && !problem.starts_with("Warning:");
            }
        }
        search = colon + 1;
    }
    false
}

/// What to check when Host and Port lead to another kind of server; the
/// fast check (`imap::client`) says the same.
pub const HOST_PORT_ADVICE: &str =
    "check Host and Port of the IMAPAccount: IMAP is usually port 143, IMAPS 993";

/// What to set when an account talks plain IMAP to port 993; the fast
/// check (`imap::client`) says the same.
pub const IMAPS_PORT_ADVICE: &str =
    "port 993 is for IMAPS: set SSLType IMAPS in that IMAPAccount, or use port 143 with STARTTLS";

/// Ends the `config` line [`without_tls`] makes.
const NO_TLS_ON_IMAPS_PORT: &str = "has Port 993 but does not start TLS";

/// A timeout while connecting to port 993 (`Socket error on HOST
/// (ADDRESS:993): timeout.`) from an IMAPAccount of `accounts` (those of
/// the channels synced) that has that Host and Port but no `SSLType IMAPS`:
/// mbsync waits for the server's greeting, the server for a TLS hello,
/// until the time limit. That is a setting to fix, not a server to retry;
/// the `config` error says so.
pub fn without_tls(c: &Classified, accounts: &[&ImapAccount]) -> Option<Classified> {
    if c.kind != ErrorKind::Timeout {
        return None;
    }
    let rest = c.line.strip_prefix("Socket error on ")?;
    let (host, addr) = rest.split_once(" (")?;
    if !addr.contains(":993)") {
        return None;
    }
    let account = accounts.iter().find(|a| {
        a.host.as_deref() == Some(host)
            && a.port == Some(993)
            && a.tunnel.is_none()
            && !a
                .ssl_type
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("IMAPS"))
    })?;
    Some(Classified {
        kind: ErrorKind::Config,
        line: format!(
            "{} (IMAPAccount {} {NO_TLS_ON_IMAPS_PORT})",
            c.line, account.name
        ),
    })
}

/// Whether `line` announces mbsync's post-SASL hang: it would then wait for
/// the server's timeout (about three minutes) before failing, so the runner
/// should stop it at once and report an authentication failure.
pub fn is_hang_line(line: &str) -> bool {
    line.contains(HANG_MESSAGE)
}

/// Works out why an mbsync run failed.
///
/// Returns `None` when the run succeeded (`exit_code` 0). Otherwise the
/// first line of the most important kind wins, in the order auth,
/// uidvalidity, locked, config, timeout, network: a rejected password often
/// comes with connection noise, and the password is what the user must fix.
/// Without any recognised line the kind is [`ErrorKind::Unknown`], with the
/// last line that mentions an error, else the last non-empty line.
/// `exit_code` is `None` when the process was killed by a signal, which
/// counts as failure.
pub fn classify_output(lines: &[String], exit_code: Option<i32>) -> Option<Classified> {
    if exit_code == Some(0) {
        return None;
    }
    let rank = |kind: ErrorKind| match kind {
        ErrorKind::Auth => 0,
        ErrorKind::Uidvalidity => 1,
        ErrorKind::Locked => 2,
        // A full disk also makes folders fail to open (config lines).
        ErrorKind::Io => 3,
        ErrorKind::Config => 4,
        ErrorKind::Timeout => 5,
        _ => 6,
    };
    let mut best: Option<(ErrorKind, &str)> = None;
    for line in lines {
        if let Some(kind) = classify_line(line) {
            if best.is_none_or(|(b, _)| rank(kind) < rank(b)) {
                best = Some((kind, line));
            }
        }
    }
    if let Some((kind, line)) = best {
        let line = line.trim();
        // Each missing folder gets a line of its own: name those missing
        // where the first one is missing (a renamed hierarchy misses
        // several), not just the first; the advice differs by side.
        let line = if is_unopenable_box(line) {
            let side = unopenable_side(line);
            let mut boxes: Vec<&str> = Vec::new();
            for l in lines.iter().map(|l| l.trim()) {
                if is_unopenable_box(l) && unopenable_side(l) == side && !boxes.contains(&l) {
                    boxes.push(l);
                }
            }
            let more = boxes.len().saturating_sub(MAX_BOXES_NAMED);
            boxes.truncate(MAX_BOXES_NAMED);
            let mut named = boxes.join(" ");
            if more > 0 {
                named.push_str(&format!(" And {more} more."));
            }
            named
        } else {
            line.to_string()
        };
        return Some(Classified {
            kind,
            line: redact(&line),
        });
    }

    let non_empty_from_end = || {
        lines
            .iter()
            .rev()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
    };
    let line = non_empty_from_end()
        .find(|l| {
            let lower = l.to_ascii_lowercase();
            lower.contains("error") || lower.contains("fatal") || lower.starts_with("cannot")
        })
        .or_else(|| non_empty_from_end().next());
    let line = match (line, exit_code) {
        (Some(line), _) => redact(line),
        (None, Some(code)) => format!("mbsync exited with status {code} without an error message"),
        (None, None) => "mbsync was killed before printing an error message".to_owned(),
    };
    Some(Classified {
        kind: ErrorKind::Unknown,
        line,
    })
}

/// A one-line explanation of a failure for the user: what happened, the
/// mbsync line (redacted), and what to do about it.
pub fn summary(kind: ErrorKind, line: &str) -> String {
    let line = redact(line.trim());
    match (kind, missing_credential(&line)) {
        (ErrorKind::Config, Some((account, true))) => {
            return format!(
                "mbsync asked for the password of {account}, which nobody can type in here \
                 (give {account}, an IMAPAccount or IMAPStore of the mbsync config, a PassCmd, \
                 the command of a password manager or keyring that prints it, or a Pass)"
            )
        }
        (ErrorKind::Config, Some((account, false))) => {
            return format!(
                "{account}, an IMAPAccount or IMAPStore of the mbsync config, has no User \
                 (give it a User, or a UserCmd that prints it)"
            )
        }
        _ => {}
    }
    let (what, hint) = match kind {
        ErrorKind::Auth if is_hang_line(&line) => (
            "authentication failed",
            "the server did not accept the OAuth2 token; refresh it and sync again",
        ),
        ErrorKind::Config if line.starts_with(PASSCMD_CUT) => (
            "the OAuth2 login cannot work with this mbsync",
            "isync 1.3 passes at most 79 characters of the PassCmd's output to the server, and \
             an OAuth2 token is longer: install isync 1.4 or later (a new token would be cut \
             the same way)",
        ),
        ErrorKind::Auth if line.starts_with(PASSCMD_SILENT) => (
            "no credentials",
            "the command may be waiting for a passphrase nobody can type here: run it once \
             in a terminal to unlock your password manager or gpg-agent, or use a graphical \
             pinentry, then sync again; if it is only slow, raise mbsync.timeout",
        ),
        ErrorKind::Auth if line.contains("PassCmd") => (
            "authentication failed",
            "the PassCmd in the mbsync config failed; run it by hand to see why",
        ),
        ErrorKind::Auth => (
            "authentication failed",
            "check the user name and password, or refresh the OAuth2 token",
        ),
        ErrorKind::Network => (
            "cannot reach the mail server",
            "check the network connection and the Host and Port in the mbsync config",
        ),
        ErrorKind::Timeout => (
            "the mail server stopped responding",
            "check the network and the server if this keeps happening",
        ),
        ErrorKind::Locked => (
            "another mbsync is syncing this channel",
            "wait for it to finish; if no mbsync runs, delete the .mbsyncstate.lock file in that local folder",
        ),
        ErrorKind::Uidvalidity if is_maildir_uid_error(&line) => (
            "local messages clash with mbsync's numbering",
            "a mail client moved messages between folders and kept mbsync's ,U= in their file \
             names; the folder needs to be repaired before it can sync",
        ),
        ErrorKind::Uidvalidity => (
            "the server renumbered a mailbox (UIDVALIDITY changed)",
            "the local copy of that mailbox needs to be repaired before it can sync",
        ),
        ErrorKind::Config
            if line.contains("SASL mechanism") || line.contains("Error initializing SASL") =>
        {
            (
                "mbsync cannot use the configured login method",
                "install the SASL plugin for it (e.g. cyrus-sasl-xoauth2) or change AuthMechs",
            )
        }
        ErrorKind::Config if line.contains("wrong version number") => (
            "the server does not speak TLS on that port",
            "check SSLType and Port of the IMAPAccount: IMAPS is usually port 993, STARTTLS \
             (or no TLS) port 143",
        ),
        ErrorKind::Config if line.starts_with(PASSCMD_PROMPT) => (
            "no credentials",
            "nobody can answer there: set the command up to work without a terminal, for \
             gpg with an agent that has a graphical pinentry or the passphrase cached, then \
             sync again",
        ),
        ErrorKind::Config if line.contains(NOT_IMAP) => (
            "the server at that Host and Port is no IMAP server",
            HOST_PORT_ADVICE,
        ),
        ErrorKind::Config if is_unknown_host(&line) => (
            "the mail server's host name does not exist",
            "check Host in the IMAPAccount of the mbsync config",
        ),
        ErrorKind::Config if line.ends_with(&format!("{NO_TLS_ON_IMAPS_PORT})")) => (
            "the server waits for TLS, which the account does not start",
            IMAPS_PORT_ADVICE,
        ),
        ErrorKind::Config if line.contains("SSL support not available") => (
            "the server offers no STARTTLS",
            "use its IMAPS port (usually 993) with SSLType IMAPS",
        ),
        ErrorKind::Config if line.contains("SSL error connecting") && line.contains("certificate") => (
            "the server's certificate is not trusted",
            "set CertificateFile in the IMAPAccount to the server's certificate or its CA's",
        ),
        ErrorKind::Config if line.starts_with("Maildir error: cannot open store '") => (
            "the local mail folder cannot be opened",
            "create that folder, or fix the Path of the MaildirStore in the mbsync config",
        ),
        // Create makes a folder on one side from the other's, so no setting
        // helps when neither side has it.
        ErrorKind::Config if names_unopenable_boxes(&line) && line.contains(" both ") => (
            "a folder cannot be opened",
            "check the folder name: no folder of that name exists on the server or locally; \
             names are case-sensitive, except INBOX",
        ),
        // Missing on the server: its local copy may be the only one left.
        ErrorKind::Config if names_unopenable_boxes(&line) && names_far_side(&line) => (
            "a folder is missing on the server",
            "check the folder name; if it was deleted or renamed on the server, its local \
             copy may be the only one: create it on the server again, or move its mail to \
             another folder before deleting it locally",
        ),
        // Missing locally: maybe deleted there after a sync.
        ErrorKind::Config if names_unopenable_boxes(&line) => (
            "a folder cannot be opened",
            "check the folder name: it must exist on the server or locally, or the channel \
             must Create it; a folder synced before and then deleted on one side is not \
             created again: delete it on the other side too, or let the channel's Remove do it",
        ),
        // mbsync prints the next line right after this one's "?", with no
        // line break: only this line is worth showing.
        ErrorKind::Config if line.contains(UNQUALIFIED_INBOX) => {
            let end = line.find('?').map_or(line.len(), |i| i + 1);
            return format!(
                "a folder name mbsync does not take: {} (the inbox is INBOX, in capitals, in \
                 the folders you sync and in the mbsync config)",
                &line[..end]
            );
        }
        ErrorKind::Config if line.starts_with("Unknown option") => (
            "mbsync was given an option it does not know",
            "check mbsync.extra_args",
        ),
        ErrorKind::Config if line.ends_with(crate::process::NOT_FOUND_ADVICE) => {
            let missing = line.trim_end_matches(crate::process::NOT_FOUND_ADVICE);
            return format!(
                "mbsync cannot be started: {missing} (install isync, which provides mbsync, or \
                 set mbsync.cmd to its path)"
            );
        }
        ErrorKind::Config => ("mbsync configuration error", "fix the mbsync config file"),
        ErrorKind::Cancelled => ("sync cancelled", "start it again when needed"),
        ErrorKind::Invalid => ("invalid request", "check the arguments"),
        ErrorKind::Io
            if line.contains("No space left on device") || line.contains("Disk quota exceeded") =>
        {
            (
                "the local disk is full",
                "free some space (or raise the quota) and sync again: what was not copied yet \
                 is still on the server",
            )
        }
        ErrorKind::Io => (
            "local file error",
            "check that you own the named file or folder and can write it",
        ),
        ErrorKind::Unknown => (
            "mbsync failed",
            "run mbsync -V with the same target in a terminal to see all of its output",
        ),
    };
    // `classify_output` names every folder that cannot be opened.
    let what = match what.strip_prefix("a folder ") {
        Some(rest)
            if line.matches(" cannot be opened.").count() > 1 || line.ends_with(" more.") =>
        {
            format!("folders {}", rest.replacen("is ", "are ", 1))
        }
        _ => what.to_string(),
    };
    if line.is_empty() {
        format!("{what} ({hint})")
    } else {
        format!("{what}: {line} ({hint})")
    }
}

/// Removes credentials from a line of mbsync output:
///
/// * the password argument of an IMAP `LOGIN user password` command, quoted
///   or not (the user name is kept; it helps to see which account failed);
/// * the initial response of `AUTHENTICATE <mechanism> <data>` and the
///   SASL continuations (`>+> <data>`) of mbsync's debug output, which for
///   XOAUTH2 carry the bearer token;
/// * any other long base64-like blob.
///
/// `LOGIN` only counts as a command where one can stand: at the start of
/// the line, after a quote, or after `>>>` and a tag, so that prose such as
/// `not using LOGIN because ...` stays readable.
pub fn redact(line: &str) -> String {
    let line = redact_commands(line);
    if names_boxes(&line) {
        return line;
    }
    redact_blobs(&line)
}

/// mbsync's own lines about a channel's boxes (`Error: channel c, far side
/// box B: UIDVALIDITY genuinely changed ...`, `Opening near side box B...`):
/// besides fixed words they hold only names from the mbsyncrc and the
/// server's folder list, never a credential, and a long folder name
/// (`Archive/2023/Project-Alpha-Meeting-Notes`) must stay readable there:
/// the repair and the error message take the box from the line.
fn names_boxes(line: &str) -> bool {
    line.starts_with("Error: channel ")
        || line.starts_with("Warning: channel ")
        || line.strip_prefix("Opening ").is_some_and(|rest| {
            ["far side box ", "near side box ", "master ", "slave "]
                .iter()
                .any(|side| rest.starts_with(side))
        })
}

/// Handles `LOGIN`, `AUTHENTICATE` and `>+>`.
fn redact_commands(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut copied = 0;
    let mut at = 0;
    while at < line.len() {
        let rest = &line[at..];
        let prefix = &line[..at];
        let secret = if starts_word(line, at, "LOGIN ") && is_command_position(prefix) {
            // Skip the user name, then cover the password.
            skip_blanks(line, at + "LOGIN".len()).and_then(|user| {
                let after_user = user + argument_len(&line[user..], prefix);
                skip_blanks(line, after_user)
            })
        } else if starts_word(line, at, "AUTHENTICATE ") {
            skip_blanks(line, at + "AUTHENTICATE".len()).and_then(|mech| {
                let after_mech = mech + argument_len(&line[mech..], prefix);
                skip_blanks(line, after_mech)
            })
        } else if rest.starts_with(">+> ") {
            skip_blanks(line, at + ">+>".len())
        } else {
            None
        };
        match secret {
            Some(start) if start < line.len() => {
                let end = start + argument_len(&line[start..], prefix);
                out.push_str(&line[copied..start]);
                out.push_str(REDACTED);
                copied = end;
                at = end.max(at + 1);
            }
            _ => at += rest.chars().next().map_or(1, char::len_utf8),
        }
        // Keep `at` on a character boundary after jumping.
        while !line.is_char_boundary(at) {
            at += 1;
        }
    }
    out.push_str(&line[copied.min(line.len())..]);
    out
}

/// Whether `word` starts at byte `at` of `line` and is not the tail of a
/// longer word.
fn starts_word(line: &str, at: usize, word: &str) -> bool {
    line[at..].starts_with(word)
        && line[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_')
}

/// Whether text ending in `prefix` puts the next word where an IMAP command
/// stands: line start, after a quote, after a tag at the line start, or
/// after `>>>` (optionally followed by a tag) as in mbsync's debug output.
fn is_command_position(prefix: &str) -> bool {
    if prefix.ends_with(['\'', '"']) {
        return true;
    }
    if !prefix.is_empty() && !prefix.ends_with([' ', '\t']) {
        return false;
    }
    // Only the last words matter; reading them from the end keeps long
    // lines with many `LOGIN`s linear.
    let mut words = prefix.split_whitespace().rev();
    match (words.next(), words.next()) {
        (None, _) | (Some(_), None) => true,
        (Some(last), Some(before)) => last.ends_with(">>>") || before.ends_with(">>>"),
    }
}

/// Index of the first non-blank byte at or after `at`, provided at least
/// one blank was skipped (arguments are separated by blanks); `None` at the
/// end of the line.
fn skip_blanks(line: &str, at: usize) -> Option<usize> {
    let rest = line.get(at..)?;
    let blanks = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    (blanks > 0 && at + blanks < line.len()).then_some(at + blanks)
}

/// Length in bytes of the IMAP argument at the start of `s`: a quoted
/// string up to its closing quote (to the end if unterminated) or an atom up
/// to the next blank. When the command itself sits inside single quotes
/// (`IMAP command 'LOGIN u p' returned ...`) an atom's closing quote is left
/// out.
fn argument_len(s: &str, prefix: &str) -> usize {
    if let Some(quoted) = s.strip_prefix('"') {
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => return i + 2,
                _ => {}
            }
        }
        return s.len();
    }
    let atom = s.find([' ', '\t']).unwrap_or(s.len());
    if prefix.ends_with('\'') && s[..atom].ends_with('\'') {
        atom - 1
    } else {
        atom
    }
}

/// Replaces long base64-like runs (tokens, encoded credentials).
fn redact_blobs(line: &str) -> String {
    let is_blob_char = |c: char| c.is_ascii_alphanumeric() || "+/=_-".contains(c);
    replace_runs(line, is_blob_char, looks_like_secret, REDACTED)
}

/// `line` with each longest run of `is_run_char` characters that `secret`
/// picks replaced by `with`.
pub(crate) fn replace_runs(
    line: &str,
    is_run_char: impl Fn(char) -> bool,
    secret: impl Fn(&str) -> bool,
    with: &str,
) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find(&is_run_char) {
        let len = rest[start..]
            .find(|c: char| !is_run_char(c))
            .unwrap_or(rest.len() - start);
        let run = &rest[start..start + len];
        out.push_str(&rest[..start]);
        out.push_str(if secret(run) { with } else { run });
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

/// A long run mixing upper case, lower case and digits; paths (which start
/// with `/`) are left alone.
fn looks_like_secret(run: &str) -> bool {
    run.len() >= MIN_BLOB_LEN
        && !run.starts_with('/')
        && run.bytes().any(|b| b.is_ascii_uppercase())
        && run.bytes().any(|b| b.is_ascii_lowercase())
        && run.bytes().any(|b| b.is_ascii_digit())
}

/// UIDVALIDITY error lines of mbsync 1.3, 1.4 and 1.5, with the channel
/// and box each names: every one is classified `uidvalidity`, and the
/// repair must find the box of every one that names one.
#[cfg(test)]
pub const UIDVALIDITY_LINES: &[(&str, Option<(&str, &str)>)] = &[
    (
        "Error: channel gmail, near side box INBOX: UIDVALIDITY genuinely changed (at UID 42).",
        Some(("gmail", "INBOX")),
    ),
    (
        "Error: channel demo, far side box Work/Projects: Unable to recover from UIDVALIDITY change.",
        Some(("demo", "Work/Projects")),
    ),
    (
        "Error: channel gmail: UIDVALIDITY of both far side INBOX and near side INBOX changed.",
        None,
    ),
    ("Maildir error: cannot read UIDVALIDITY.", None),
    // mbsync 1.5 puts the UID beside the box, after any `: ` in it.
    (
        "Error: channel d, far side box Re: old (at UID 3): UIDVALIDITY genuinely changed.",
        Some(("d", "Re: old")),
    ),
    (
        "Error: channel demo, far side box Work (x) (at UID 7): UIDVALIDITY genuinely changed.",
        Some(("demo", "Work (x)")),
    ),
    (
        "Error: channel g, near side box A (at UID 2): Unable to recover from both-sided \
         UIDVALIDITY change, as it is genuine on at least one side.",
        Some(("g", "A")),
    ),
    // mbsync 1.3: master and slave, no "box".
    (
        "Error: channel demo, master Work: UIDVALIDITY genuinely changed (at UID 1).",
        Some(("demo", "Work")),
    ),
    (
        "Error: channel demo-in, slave Lists/Rust: Unable to recover from UIDVALIDITY change",
        Some(("demo-in", "Lists/Rust")),
    ),
    ("Error: channel demo: UIDVALIDITY of both master and slave changed", None),
    // A local folder with a file that kept the UID of another folder
    // (1.3 and 1.4; 1.5 adds the path), as the runner locates it.
    (
        "Error: channel demo, near side box Archive: Maildir error: duplicate UID 3.",
        Some(("demo", "Archive")),
    ),
    (
        "Error: channel demo, near side box Sent: Maildir error: UID 10 is beyond highest \
         assigned UID 5 in /home/me/Mail/Sent.",
        Some(("demo", "Sent")),
    ),
    // Not located (no -V line named the box): still of the kind.
    ("Maildir error: duplicate UID 3 in /home/me/Mail/Archive.", None),
    ("Maildir error: UID 11 is beyond highest assigned UID 6.", None),
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn auth_lines() {
        for line in [
            "IMAP command 'LOGIN <user> <pass>' returned an error: NO [AUTHENTICATIONFAILED] Authentication failed.",
            "IMAP command 'AUTHENTICATE PLAIN <authdata>' returned an error: NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)",
            "Skipping account gmail, PassCmd exited with status 1",
            "Skipping account work, PassCmd crashed",
            "Skipping account work, PassCmd produced no output",
            "Error: IMAP wants more steps despite successful SASL authentication.",
            "Error performing SASL authentication step: SASL(-13): authentication failure: bad token",
            "IMAP error: LOGIN failed.",
            "Error from IMAP server: Authentication Failed",
        ] {
            assert_eq!(classify_line(line), Some(ErrorKind::Auth), "{line}");
        }
    }

    #[test]
    fn network_lines() {
        for line in [
            "Cannot connect to 127.0.0.1 (127.0.0.1:1): Connection refused",
            "No working address found for imap.example.org",
            "Socket error from imap.gmail.com (142.250.27.108:993): Broken pipe",
            "Socket error: write to imap.gmail.com (142.250.27.108:993): Broken pipe",
            "Socket error: read from imap.gmail.com (142.250.27.108:993): Connection reset by peer",
            "Error: Cannot resolve server 'imap.gmail.com': Temporary failure in name resolution",
            "IMAP error: unexpected EOF from imap.gmail.com (142.250.27.108:993)",
            "IMAP connection lost",
            "IMAP error: unexpected BYE response: [UNAVAILABLE] Temporary System Error",
        ] {
            assert_eq!(classify_line(line), Some(ErrorKind::Network), "{line}");
        }
    }

    #[test]
    fn timeout_lines() {
        for line in [
            "Socket error on imap.gmail.com (142.250.27.108:993): timeout.",
            "Cannot connect to imap.example.org (192.0.2.1:993): Connection timed out",
        ] {
            assert_eq!(classify_line(line), Some(ErrorKind::Timeout), "{line}");
        }
    }

    #[test]
    fn locked_lines() {
        assert_eq!(
            classify_line("Error: channel :gmail-remote:INBOX-:gmail-local:INBOX is locked"),
            Some(ErrorKind::Locked)
        );
    }

    #[test]
    fn uidvalidity_lines() {
        for (line, _) in UIDVALIDITY_LINES {
            assert_eq!(classify_line(line), Some(ErrorKind::Uidvalidity), "{line}");
        }
        for line in [
            "Notice: channel gmail, near side box INBOX: Recovered from change of UIDVALIDITY.",
            "Maildir notice: no UIDVALIDITY, creating new.",
        ] {
            assert_eq!(classify_line(line), None, "{line}");
        }
    }

    #[test]
    fn config_lines() {
        for line in [
            "No channel or group named 'nosuch' defined.",
            "Cannot open config file '/nonexist': No such file or directory",
            "/home/me/.mbsyncrc:1: 'Bogus' is not a recognized section-starting or global keyword",
            "/home/me/.mbsyncrc:2: unknown store 'nostore'",
            "rc4:2: keyword 'Foo' is not recognized in Channel sections",
            "rc4:3: missing closing quote",
            "channel 'x' refers to no far side store",
            "No channels defined. Try 'man mbsync'",
            "IMAP store 'work' has neither Tunnel nor Host",
            "IMAP error: selected SASL mechanism(s) not available;",
            "IMAP error: server supports no acceptable authentication mechanism",
            "Error: channel demo: both far side Nope and near side Nope cannot be opened.",
            "Error: channel demo: far side box Work/Gone cannot be opened.",
        ] {
            assert_eq!(classify_line(line), Some(ErrorKind::Config), "{line}");
        }
        assert_eq!(
            classify_line(
                "Warning: channel demo: far side box Old cannot be opened and near side box Old is not empty."
            ),
            None
        );
        assert_eq!(
            summary(
                ErrorKind::Config,
                "Error: channel demo: both far side Nope and near side Nope cannot be opened."
            ),
            "a folder cannot be opened: Error: channel demo: both far side Nope and near side \
             Nope cannot be opened. (check the folder name: no folder of that name exists on \
             the server or locally; names are case-sensitive, except INBOX)"
        );
        assert_eq!(
            classify_line(
                "/home/me/.mbsyncrc:4: Notice: URL notation is deprecated; use a plain host name"
            ),
            None
        );
    }

    #[test]
    fn ordinary_lines_are_not_errors() {
        for line in [
            "",
            "Opening far side box Work/Projects...",
            "Processed 3 box(es) in 1 channel(s),",
            "Maildir notice: sleeping due to recent directory modification.",
            "Connection is now encrypted",
        ] {
            assert_eq!(classify_line(line), None, "{line}");
        }
    }

    #[test]
    fn hang_line() {
        assert!(is_hang_line(
            "Error: IMAP wants more steps despite successful SASL authentication."
        ));
        assert!(!is_hang_line(
            "Warning: SASL wants more steps despite successful IMAP authentication. Ignoring..."
        ));
    }

    #[test]
    fn exit_zero_is_success() {
        let out = lines(&["Socket error on x (1.2.3.4:993): timeout."]);
        assert_eq!(classify_output(&out, Some(0)), None);
    }

    #[test]
    fn priority_prefers_auth_over_network() {
        let out = lines(&[
            "Socket error from imap.x.org (192.0.2.1:993): Broken pipe",
            "Socket error on imap.x.org (192.0.2.1:993): timeout.",
            "No channel or group named 'x' defined.",
            "Error: channel :a:INBOX-:b:INBOX is locked",
            "Error: channel a, far side box INBOX: UIDVALIDITY genuinely changed (at UID 3).",
            "Skipping account gmail, PassCmd exited with status 2",
        ]);
        let expected = [
            ErrorKind::Auth,
            ErrorKind::Uidvalidity,
            ErrorKind::Locked,
            ErrorKind::Config,
            ErrorKind::Timeout,
            ErrorKind::Network,
        ];
        // Dropping the winner each time reveals the next kind in order.
        for (skip, kind) in expected.iter().enumerate() {
            let rest = &out[..out.len() - skip];
            assert_eq!(classify_output(rest, Some(1)).unwrap().kind, *kind);
        }
    }

    #[test]
    fn first_line_of_the_winning_kind_is_kept() {
        let out = lines(&[
            "Cannot connect to imap.x.org (192.0.2.1:993): Connection refused",
            "No working address found for imap.x.org",
        ]);
        assert_eq!(
            classify_output(&out, Some(1)),
            Some(Classified {
                kind: ErrorKind::Network,
                line: out[0].clone(),
            })
        );
    }

    #[test]
    fn unknown_failure_reports_an_error_line() {
        let out = lines(&[
            "Opening far side box INBOX...",
            "IMAP error: unexpected tag 42",
            "Processed 0 box(es)",
            "",
        ]);
        let got = classify_output(&out, Some(1)).unwrap();
        assert_eq!(got.kind, ErrorKind::Unknown);
        assert_eq!(got.line, out[1]);

        let got = classify_output(&lines(&["something odd", "  "]), None).unwrap();
        assert_eq!(got.line, "something odd");

        let got = classify_output(&[], Some(1)).unwrap();
        assert_eq!(got.kind, ErrorKind::Unknown);
        assert!(got.line.contains("status 1"));
    }

    #[test]
    fn the_relays_failed_connection_is_a_network_error() {
        // What a throttled account's relay prints when the server is down.
        let line =
            "himalaya-sync: Cannot connect to 127.0.0.1:1: Connection refused (os error 111)";
        assert_eq!(classify_line(line), Some(ErrorKind::Network));
        assert_eq!(
            classify_line("/home/me/.mbsyncrc:12: unknown keyword 'Hots'"),
            Some(ErrorKind::Config)
        );
    }

    #[test]
    fn no_password_or_user_in_the_config_is_a_config_error_with_its_fix() {
        let line = "Skipping account work, no password";
        assert_eq!(classify_line(line), Some(ErrorKind::Config));
        // It wins over the connection noise that may come with it.
        let out = lines(&["Socket error on x (1.2.3.4:993): timeout.", line]);
        assert_eq!(
            classify_output(&out, Some(1)).unwrap().kind,
            ErrorKind::Config
        );
        assert_eq!(
            summary(ErrorKind::Config, line),
            "mbsync asked for the password of work, which nobody can type in here (give work, \
             an IMAPAccount or IMAPStore of the mbsync config, a PassCmd, the command of a \
             password manager or keyring that prints it, or a Pass)"
        );
        assert_eq!(
            classify_line("Skipping account work, no user"),
            Some(ErrorKind::Config)
        );
        assert_eq!(
            summary(ErrorKind::Config, "Skipping account work, no user"),
            "work, an IMAPAccount or IMAPStore of the mbsync config, has no User (give it a \
             User, or a UserCmd that prints it)"
        );
        // A PassCmd that fails is another matter: the credentials, not the config.
        assert_eq!(
            classify_line("Skipping account work, PassCmd exited with status 1"),
            Some(ErrorKind::Auth)
        );
    }

    #[test]
    fn a_wrong_folder_name_or_option_is_blamed_on_itself_not_on_the_config_file() {
        // mbsync 1.4 writes its next line right after the "?".
        let line =
            "IMAP error: cannot use unqualified 'inbox'. Did you mean INBOX?Opening near side box \
             inbox...";
        assert_eq!(classify_line(line), Some(ErrorKind::Config));
        assert_eq!(
            summary(ErrorKind::Config, line),
            "a folder name mbsync does not take: IMAP error: cannot use unqualified 'inbox'. Did \
             you mean INBOX? (the inbox is INBOX, in capitals, in the folders you sync and in the \
             mbsync config)"
        );
        let line = "Unknown option '--bogus'";
        assert_eq!(classify_line(line), Some(ErrorKind::Config));
        assert_eq!(
            summary(ErrorKind::Config, line),
            "mbsync was given an option it does not know: Unknown option '--bogus' (check \
             mbsync.extra_args)"
        );
    }

    #[test]
    fn a_missing_local_store_is_a_config_error_with_its_fix() {
        let line = "Maildir error: cannot open store '/home/me/Mail/'";
        assert_eq!(classify_line(line), Some(ErrorKind::Config));
        assert_eq!(
            summary(ErrorKind::Config, line),
            "the local mail folder cannot be opened: Maildir error: cannot open store \
             '/home/me/Mail/' (create that folder, or fix the Path of the MaildirStore in the \
             mbsync config)"
        );
    }

    #[test]
    fn summary_names_kind_and_hint() {
        let s = summary(
            ErrorKind::Auth,
            "Skipping account gmail, PassCmd exited with status 1",
        );
        assert_eq!(
            s,
            "authentication failed: Skipping account gmail, PassCmd exited with status 1 \
             (the PassCmd in the mbsync config failed; run it by hand to see why)"
        );
        assert!(summary(ErrorKind::Network, "").starts_with("cannot reach the mail server ("));
        assert!(!summary(ErrorKind::Timeout, "x\n").contains('\n'));
    }

    #[test]
    fn redacts_login_passwords() {
        assert_eq!(
            redact(r#"F: >>> 3 LOGIN "me@example.org" "s3cr\"et pass""#),
            r#"F: >>> 3 LOGIN "me@example.org" <redacted>"#
        );
        assert_eq!(redact("1 LOGIN me hunter2"), "1 LOGIN me <redacted>");
        assert_eq!(
            redact("LOGIN me hunter2 trailing"),
            "LOGIN me <redacted> trailing"
        );
        assert_eq!(
            redact(
                "IMAP command 'LOGIN me hunter2' returned an error: NO [AUTHENTICATIONFAILED] x"
            ),
            "IMAP command 'LOGIN me <redacted>' returned an error: NO [AUTHENTICATIONFAILED] x"
        );
        assert_eq!(
            redact("IMAP command 'LOGIN <user> <pass>' returned an error: NO bad"),
            "IMAP command 'LOGIN <user> <redacted>' returned an error: NO bad"
        );
        // An unterminated quoted password is covered to the end.
        assert_eq!(
            redact(r#">>> 1 LOGIN "me" "abc def"#),
            r#">>> 1 LOGIN "me" <redacted>"#
        );
        // Prose mentioning LOGIN is left alone.
        let note = "Note: not using LOGIN because connection is not encrypted;";
        assert_eq!(redact(note), note);
        assert_eq!(redact("XLOGIN a b"), "XLOGIN a b");
    }

    #[test]
    fn redacts_sasl_data() {
        let blob = "dXNlcj1tZUBleGFtcGxlLm9yZwFhdXRoPUJlYXJlciB5YTI5LmFiYwEB";
        assert_eq!(
            redact(&format!(">>> 2 AUTHENTICATE XOAUTH2 {blob}")),
            ">>> 2 AUTHENTICATE XOAUTH2 <redacted>"
        );
        assert_eq!(
            redact(&format!(
                "IMAP command 'AUTHENTICATE XOAUTH2 {blob}' returned an error: NO [AUTHENTICATIONFAILED]"
            )),
            "IMAP command 'AUTHENTICATE XOAUTH2 <redacted>' returned an error: NO [AUTHENTICATIONFAILED]"
        );
        assert_eq!(redact("N: >+> abc"), "N: >+> <redacted>");
        assert_eq!(
            redact(&format!("token {blob} seen")),
            "token <redacted> seen"
        );
        // Paths and ordinary words stay.
        let path = "Maildir error: cannot open /home/someone/Mail/Archive/AllMail/Projects2023/cur";
        assert_eq!(redact(path), path);
    }

    #[test]
    fn long_folder_names_in_box_lines_stay() {
        let name = "Archive/2023/Project-Alpha-Meeting-Notes";
        for line in [
            format!("Error: channel demo, far side box {name}: UIDVALIDITY genuinely changed (at UID 1)."),
            format!("Error: channel demo: near side box {name} cannot be opened."),
            format!("Opening far side box {name}..."),
            format!("Opening slave {name}..."),
        ] {
            assert_eq!(redact(&line), line);
        }
        let line = format!(
            "Error: channel demo, far side box {name}: UIDVALIDITY genuinely changed (at UID 1)."
        );
        assert_eq!(
            crate::manager::repair::parse_error_line(&redact(&line)),
            Some(("demo".to_string(), name.to_string()))
        );
        // Elsewhere such a run is still taken for a token.
        assert_eq!(redact(&format!("token {name}")), "token <redacted>");
        // A password in a LOGIN is removed whatever the line.
        assert_eq!(
            redact("Error: channel x: 'LOGIN me hunter2' failed"),
            "Error: channel x: 'LOGIN me <redacted>' failed"
        );
    }

    #[test]
    fn classified_line_is_redacted() {
        let out = lines(&[
            "IMAP command 'LOGIN me hunter2' returned an error: NO [AUTHENTICATIONFAILED] Invalid",
        ]);
        let got = classify_output(&out, Some(1)).unwrap();
        assert_eq!(got.kind, ErrorKind::Auth);
        assert!(!got.line.contains("hunter2"));
        assert!(!summary(got.kind, &out[0]).contains("hunter2"));
    }

    #[test]
    fn a_full_disk_is_named_before_the_folders_it_keeps_from_opening() {
        let lines: Vec<String> = [
            "Maildir error: cannot write /m/Archive/tmp/1.x: No space left on device",
            "Maildir error: cannot write UIDVALIDITY.",
            "Error: channel demo: near side box Sent cannot be opened.",
        ]
        .map(String::from)
        .to_vec();
        let got = classify_output(&lines, Some(1)).unwrap();
        assert_eq!(got.kind, ErrorKind::Io);
        assert!(got.line.contains("No space left"), "{}", got.line);
        let said = summary(got.kind, &got.line);
        assert!(said.starts_with("the local disk is full: "), "{said}");
        assert!(said.contains("still on the server"), "{said}");
    }

    #[test]
    fn local_permission_errors_are_io_but_a_refused_connection_is_not() {
        for line in [
            "Error: cannot create lock file /m/Work/.mbsyncstate.lock: Permission denied",
            "Maildir error: cannot create mailbox '/m/ro/INBOX': Permission denied",
            "Error: cannot read sync state /m/inboxfile/.mbsyncstate: Not a directory",
        ] {
            assert_eq!(classify_line(line), Some(ErrorKind::Io), "{line}");
            let said = summary(ErrorKind::Io, line);
            assert!(said.contains("can write it"), "{said}");
        }
        let refused = "Cannot connect to 127.0.0.1 (127.0.0.1:993): Permission denied";
        assert_eq!(classify_line(refused), Some(ErrorKind::Network));
    }

    #[test]
    fn tls_on_a_plain_port_is_a_config_error_naming_ssltype_and_port() {
        let line = "Socket error: secure connect to 127.0.0.1 (127.0.0.1:45973): \
                    error:0A00010B:SSL routines::wrong version number";
        assert_eq!(classify_line(line), Some(ErrorKind::Config));
        let said = summary(ErrorKind::Config, line);
        assert!(said.contains("check SSLType and Port"), "{said}");
        let untrusted = "SSL error connecting 127.0.0.1 (127.0.0.1:993): self-signed certificate";
        assert!(summary(ErrorKind::Config, untrusted).contains("CertificateFile"));
        let no_starttls = "IMAP error: SSL support not available";
        assert!(summary(ErrorKind::Config, no_starttls).contains("SSLType IMAPS"));
    }

    #[test]
    fn another_kind_of_server_and_an_unknown_host_are_config_errors() {
        let ssh = "IMAP error: unexpected reply: SSH-2.0-OpenSSH_9.2p1 Debian-2";
        assert_eq!(classify_line(ssh), Some(ErrorKind::Config));
        assert!(summary(ErrorKind::Config, ssh).contains("no IMAP server"));
        let typo = "Error: Cannot resolve server 'imap.exmaple.com': Name or service not known";
        assert_eq!(classify_line(typo), Some(ErrorKind::Config));
        assert!(summary(ErrorKind::Config, typo).contains("check Host"));
        // Offline: no DNS server answers, which a later retry may mend.
        let offline = "Error: Cannot resolve server 'imap.example.com': Temporary failure in \
                       name resolution";
        assert_eq!(classify_line(offline), Some(ErrorKind::Network));
    }

    #[test]
    fn a_timeout_on_port_993_without_tls_is_a_config_error_naming_the_account() {
        let account = |name: &str, port: u16, ssl: Option<&str>| ImapAccount {
            host: Some("imap.example.com".into()),
            port: Some(port),
            ssl_type: ssl.map(String::from),
            ..ImapAccount::new(name, 1)
        };
        let timeout = Classified {
            kind: ErrorKind::Timeout,
            line: "Socket error on imap.example.com (192.0.2.1:993): timeout.".into(),
        };
        for ssl in [None, Some("STARTTLS"), Some("None")] {
            let got = without_tls(&timeout, &[&account("work", 993, ssl)]).unwrap();
            assert_eq!(got.kind, ErrorKind::Config);
            let said = summary(got.kind, &got.line);
            assert!(
                said.starts_with("the server waits for TLS, which the account does not start: "),
                "{said}"
            );
            assert!(said.contains("IMAPAccount work has Port 993"), "{said}");
            assert!(said.contains("set SSLType IMAPS"), "{said}");
        }
        // With TLS from the start, or on another port, it is a plain timeout.
        assert_eq!(
            without_tls(&timeout, &[&account("work", 993, Some("imaps"))]),
            None
        );
        assert_eq!(without_tls(&timeout, &[&account("work", 143, None)]), None);
        let network = Classified {
            kind: ErrorKind::Network,
            ..timeout.clone()
        };
        assert_eq!(without_tls(&network, &[&account("work", 993, None)]), None);
    }

    #[test]
    fn every_folder_that_cannot_be_opened_is_named_once() {
        let lines: Vec<String> = [
            "Error: channel demo: far side box Work cannot be opened.",
            "Opening far side box Archive...",
            "Error: channel demo: near side box Sent cannot be opened.",
            "Error: channel demo: far side box Work/Projects cannot be opened.",
            "Error: channel demo: far side box Work cannot be opened.",
        ]
        .map(String::from)
        .to_vec();
        let got = classify_output(&lines, Some(1)).unwrap();
        assert_eq!(got.kind, ErrorKind::Config);
        assert_eq!(
            got.line,
            "Error: channel demo: far side box Work cannot be opened. \
             Error: channel demo: far side box Work/Projects cannot be opened."
        );
        assert!(summary(got.kind, &got.line).starts_with("folders are missing on the server: "));

        // Many: a few are named, and how many more there are.
        let many: Vec<String> = (0..80)
            .map(|i| format!("Error: channel demo: far side box F{i} cannot be opened."))
            .collect();
        let got = classify_output(&many, Some(1)).unwrap();
        assert!(
            got.line.ends_with("box F4 cannot be opened. And 75 more."),
            "{}",
            got.line
        );
        let said = summary(got.kind, &got.line);
        assert!(
            said.starts_with("folders are missing on the server: "),
            "{said}"
        );
        assert!(
            said.contains("its local copy may be the only one"),
            "{said}"
        );
    }

    /// mbsync 1.3 names the sides master and slave.
    #[test]
    fn folders_that_cannot_be_opened_in_the_words_of_mbsync_1_3() {
        let far = "Error: channel demo: master Archive cannot be opened.";
        assert_eq!(classify_line(far), Some(ErrorKind::Config));
        assert!(summary(ErrorKind::Config, far).starts_with("a folder is missing on the server: "));
        let near = "Error: channel demo: slave Archive cannot be opened.";
        assert!(summary(ErrorKind::Config, near).starts_with("a folder cannot be opened: "));
        let both = "Error: channel demo: both master Nope and slave Nope cannot be opened.";
        assert!(summary(ErrorKind::Config, both).contains("no folder of that name exists"));
    }

    #[test]
    fn a_token_cut_by_an_old_mbsync_is_told_with_what_to_do() {
        let line = format!(
            "{PASSCMD_CUT} (mbsync: Error: IMAP wants more steps despite successful SASL authentication.)"
        );
        let said = summary(ErrorKind::Config, &line);
        assert!(
            said.starts_with("the OAuth2 login cannot work with this mbsync: "),
            "{said}"
        );
        assert!(said.contains("install isync 1.4 or later"), "{said}");
    }

    #[test]
    fn a_folder_missing_on_the_server_is_not_advised_away() {
        let line = "Error: channel demo: far side box Archive cannot be opened.";
        let said = summary(ErrorKind::Config, line);
        assert!(
            said.starts_with("a folder is missing on the server: "),
            "{said}"
        );
        assert!(said.contains("may be the only one"), "{said}");
        assert!(!said.contains("delete it on the other side"), "{said}");
    }

    proptest! {
        #[test]
        fn never_panics(line in "\\PC{0,80}", code in proptest::option::of(-3i32..3)) {
            let _ = classify_line(&line);
            let _ = is_hang_line(&line);
            let _ = summary(ErrorKind::Unknown, &line);
            let _ = classify_output(std::slice::from_ref(&line), code);
        }

        #[test]
        fn login_password_never_survives(
            user in "[a-z@.]{1,12}",
            pass in "[!-~]{6,20}",
            quoted in any::<bool>(),
            lead in prop_oneof![Just(""), Just(">>> 1 "), Just("F: >>> 12 "), Just("IMAP command '")],
        ) {
            // Avoid passwords that occur in the rest of the line anyway.
            prop_assume!(!format!("{lead}LOGIN {user} <redacted> tail").contains(&pass));
            let arg = if quoted {
                format!("\"{}\"", pass.replace('\\', "\\\\").replace('"', "\\\""))
            } else {
                pass.clone()
            };
            let line = format!("{lead}LOGIN {user} {arg} tail");
            prop_assert!(!redact(&line).contains(&pass), "{}", redact(&line));
        }
    }
}
