//! Where tokens live: Secret Service, GPG, encrypted file, command, plain file.
//!
//! [`open`] turns a [`StoreSpec`] into a [`TokenStore`] that loads, saves and
//! clears one [`Token`] per account. Every backend keeps tokens out of
//! messages: errors name the account, file, program and what went wrong;
//! output of foreign programs is cleaned of anything that looks like the
//! secret before it is quoted; user-written command strings are never
//! quoted either (a key command such as `printf <key>` holds the key).
//!
//! # Accounts
//!
//! An account name becomes part of a file name and is handed to user
//! commands, so [`validate_account`] allows only ASCII letters, digits and
//! `. _ @ + -`, no leading `.`, no `..`, at most 100 bytes. Commands get the
//! name in the environment variable `HIMALAYA_SYNC_ACCOUNT`, never spliced
//! into the shell string.
//!
//! # Files (`plain`, `encrypted`, `gpg`)
//!
//! One file per account in a private directory (created `0700`, then
//! checked like the lock directory: a real directory, ours, no group or
//! other bits): `<account>.json`, `<account>.enc` or `<account>.gpg`.
//!
//! * Reads open the file with `O_NOFOLLOW` and check the open descriptor:
//!   a symlink, anything but a regular file, a file owned by someone else,
//!   or a mode with any group/other bit (such as `0644`) is refused with an
//!   error naming the path and mode. Saves refuse the same things before
//!   writing, so nothing is followed and nothing is overwritten.
//! * Writes go to a fresh temporary file in the same directory, created
//!   with `O_EXCL | O_NOFOLLOW` and mode `0600`, then fsynced and renamed
//!   over the old file: a crash leaves the old token or the new one.
//! * [`TokenStore::clear`] unlinks whatever entry is at the path; unlinking
//!   never follows a symlink.
//!
//! ## Encrypted file format
//!
//! `HSYNCTOK` (8 bytes), format version `1` (1 byte), a random 96-bit
//! nonce (12 bytes), then the ChaCha20-Poly1305 ciphertext and tag of the
//! token JSON. The associated data is the 9-byte header followed by the
//! account name, so a file copied to another account's name, or a changed
//! header, fails to decrypt just like a wrong key.
//!
//! The 32-byte key comes from [`KeySource`]:
//!
//! * [`KeySource::Command`]: the command's output, trimmed. If it is
//!   standard base64 of exactly 32 bytes (`head -c 32 /dev/urandom |
//!   base64`), those bytes are the key. Anything else is taken as a
//!   passphrase and the key is SHA-256 of `himalaya-sync token key v1\0`
//!   followed by the passphrase. SHA-256 is a fast hash, not a password
//!   KDF: it makes any passphrase the right length but does nothing to slow
//!   down guessing, so a short passphrase can be brute-forced by whoever
//!   gets the file. Use a random key, kept in a password manager.
//! * [`KeySource::SecretService`]: a random key stored in the Secret Service
//!   (attributes `service himalaya-sync`, `kind token-encryption-key`), made
//!   on first use under a lock in the token directory so two processes
//!   don't each make one.
//!
//! The key is cached for the life of the store, so a key command that asks
//! for a password asks once.
//!
//! # GPG
//!
//! `gpg --batch --yes --quiet --encrypt --recipient R` with the token JSON
//! on stdin; the ciphertext is written by us as above. Loading reads and
//! checks the file itself, then feeds it to `gpg --batch --quiet --decrypt`
//! on stdin, so gpg never opens a path that could have been swapped.
//! `GNUPGHOME` and the agent come from the environment. Errors quote gpg's
//! last stderr line, which is where it says what failed.
//!
//! # Secret Service
//!
//! Through `secret-tool` (libsecret over D-Bus): items with the attributes
//! `service <service> account <account>`, the token JSON as the secret.
//! A lookup may also find a bare access token (see [`Token::parse_external`]).
//! [`read_himalaya_keyring`] reads what the himalaya CLI stored.
//!
//! # Commands
//!
//! `sh -c <load>` prints the token (JSON or a bare access token) on stdout;
//! printing nothing with exit status 0 means "no token". `sh -c <save>` gets
//! the token JSON on stdin. Tokens are never put in arguments.
//!
//! Every program we run (user commands, `gpg`, `secret-tool`) runs in its
//! own process group, registered for shutdown, and is killed with its
//! group after [`COMMAND_TIMEOUT`] (or [`StoreOptions::command_timeout`]).

use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key as AeadKey, Nonce};
use nix::errno::Errno;
use nix::fcntl::{self, OFlag};
use nix::sys::stat::{self, FileStat, Mode};
use nix::unistd;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::command::{run, Output, Run, SHELL_ARGS, SHELL_CMD_ENV};
use crate::error::{Error, ErrorKind, Result};
use crate::lock::{ensure_private_dir, LockDir};
use crate::oauth::token::{redact_all, Token};
use crate::runtime;

/// How long any program we run may take before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest one load, save or clear takes: four programs or waits of
/// at most [`COMMAND_TIMEOUT`] one after another (the encrypted store's
/// first key from the Secret Service: look it up, wait for the key lock,
/// look it up again, store it; fewer for every other store).
pub const OPERATION_LIMIT: Duration = Duration::from_secs(4 * COMMAND_TIMEOUT.as_secs());
/// The environment variable that tells user commands which account.
pub const ACCOUNT_ENV: &str = "HIMALAYA_SYNC_ACCOUNT";
/// The Secret Service `service` attribute the himalaya CLI v1 uses.
pub const HIMALAYA_KEYRING_SERVICE: &str = "himalaya-cli";

/// Longest account name, in bytes.
const MAX_ACCOUNT_LEN: usize = 100;
/// Largest token file or program output we accept; a token is a few KiB.
const MAX_DATA_LEN: u64 = 1 << 20;
/// Encrypted file header: magic and format version.
const MAGIC: &[u8; 8] = b"HSYNCTOK";
const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
/// Domain separation for passphrase-derived keys.
const PASSPHRASE_CONTEXT: &[u8] = b"himalaya-sync token key v1\0";
/// Secret Service attributes of the generated encryption key.
const KEY_ATTRS: [&str; 4] = ["service", "himalaya-sync", "kind", "token-encryption-key"];
/// Lock (in the token directory) held while the Secret Service key is made.
const KEY_LOCK: &str = "token-key";
/// Longest stderr line quoted in an error.
const MAX_QUOTED_LINE: usize = 300;
/// Shortest run of token-like characters treated as a possible secret when
/// cleaning one program stream with the other.
const MIN_SECRET_LEN: usize = 8;

/// Where the encryption key of [`StoreSpec::Encrypted`] comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A shell command printing a base64 key or a passphrase (module docs).
    Command(String),
    /// A random key kept in the Secret Service, made on first use.
    SecretService,
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Command(cmd) => f.debug_tuple("Command").field(&HiddenCmd(cmd)).finish(),
            KeySource::SecretService => f.write_str("SecretService"),
        }
    }
}

/// Which backend keeps the tokens, and its settings.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// Unencrypted JSON files; only when explicitly chosen.
    Plain { dir: PathBuf },
    /// ChaCha20-Poly1305 encrypted files.
    Encrypted { dir: PathBuf, key: KeySource },
    /// Files encrypted to a GPG recipient; `program` defaults to `gpg`.
    Gpg {
        dir: PathBuf,
        recipient: String,
        program: Option<String>,
    },
    /// The Secret Service (GNOME Keyring, KWallet, KeePassXC) via `secret-tool`.
    SecretService { service: String },
    /// User commands; `clear` is optional.
    Command {
        load: String,
        save: String,
        clear: Option<String>,
    },
}

impl fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Plain { dir } => f.debug_struct("Plain").field("dir", dir).finish(),
            StoreSpec::Encrypted { dir, key } => f
                .debug_struct("Encrypted")
                .field("dir", dir)
                .field("key", key)
                .finish(),
            StoreSpec::Gpg {
                dir,
                recipient,
                program,
            } => f
                .debug_struct("Gpg")
                .field("dir", dir)
                .field("recipient", recipient)
                .field("program", program)
                .finish(),
            StoreSpec::SecretService { service } => f
                .debug_struct("SecretService")
                .field("service", service)
                .finish(),
            StoreSpec::Command { load, save, clear } => f
                .debug_struct("Command")
                .field("load", &HiddenCmd(load))
                .field("save", &HiddenCmd(save))
                .field("clear", &clear.as_deref().map(HiddenCmd))
                .finish(),
        }
    }
}

/// A user command in Debug output: it may hold a secret (`printf <key>`).
struct HiddenCmd<'a>(&'a str);

impl fmt::Debug for HiddenCmd<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<command, {} chars>", self.0.chars().count())
    }
}

/// Settings shared by every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// How long a program may run before it is killed.
    pub command_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            command_timeout: COMMAND_TIMEOUT,
        }
    }
}

/// Loads, saves and clears one token per account.
pub trait TokenStore: Send + Sync {
    /// `"plain"`, `"encrypted"`, `"gpg"`, `"secret-service"` or `"command"`.
    fn kind(&self) -> &'static str;
    /// The account's token, `None` if none is stored.
    fn load(&self, account: &str) -> Result<Option<Token>>;
    /// Stores `token` for the account, replacing any previous one.
    fn save(&self, account: &str, token: &Token) -> Result<()>;
    /// Forgets the account's token; fine if there is none.
    fn clear(&self, account: &str) -> Result<()>;
}

/// Opens the store `spec` describes, with default [`StoreOptions`].
pub fn open(spec: &StoreSpec) -> Result<Box<dyn TokenStore>> {
    open_with(spec, StoreOptions::default())
}

/// Opens the store `spec` describes. Checks the settings only; directories
/// are created and checked, and programs run, when tokens are used.
pub fn open_with(spec: &StoreSpec, options: StoreOptions) -> Result<Box<dyn TokenStore>> {
    let timeout = options.command_timeout;
    Ok(match spec {
        StoreSpec::Plain { dir } => Box::new(PlainStore {
            files: FileDir::new(dir, "json")?,
        }),
        StoreSpec::Encrypted { dir, key } => {
            if let KeySource::Command(cmd) = key {
                non_empty_command(cmd, "key command")?;
            }
            Box::new(EncryptedStore {
                files: FileDir::new(dir, "enc")?,
                source: key.clone(),
                key: Mutex::new(None),
                timeout,
            })
        }
        StoreSpec::Gpg {
            dir,
            recipient,
            program,
        } => {
            plain_setting(recipient, "gpg recipient")?;
            let program = program.clone().unwrap_or_else(|| "gpg".to_owned());
            plain_setting(&program, "gpg program")?;
            Box::new(GpgStore {
                files: FileDir::new(dir, "gpg")?,
                recipient: recipient.clone(),
                program,
                timeout,
            })
        }
        StoreSpec::SecretService { service } => {
            plain_setting(service, "secret service name")?;
            Box::new(SecretServiceStore {
                service: service.clone(),
                timeout,
            })
        }
        StoreSpec::Command { load, save, clear } => {
            non_empty_command(load, "token load command")?;
            non_empty_command(save, "token save command")?;
            if let Some(clear) = clear {
                non_empty_command(clear, "token clear command")?;
            }
            Box::new(CommandStore {
                load: load.clone(),
                save: save.clone(),
                clear: clear.clone(),
                timeout,
            })
        }
    })
}

/// Checks that `account` is safe in a file name and a command environment
/// (see the module docs for the rules).
pub fn validate_account(account: &str) -> Result<()> {
    let problem = if account.is_empty() {
        "it must not be empty".to_owned()
    } else if account.len() > MAX_ACCOUNT_LEN {
        format!(
            "it is {} bytes long; the limit is {MAX_ACCOUNT_LEN}",
            account.len()
        )
    } else if let Some(c) = account
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._@+-".contains(*c)))
    {
        format!("{c:?} is not allowed (use letters, digits and . _ @ + -)")
    } else if account.starts_with('.') {
        "it must not start with '.'".to_owned()
    } else if account.contains("..") {
        "\"..\" is not allowed".to_owned()
    } else {
        return Ok(());
    };
    let shown: String = account.chars().take(2 * MAX_ACCOUNT_LEN).collect();
    Err(Error::invalid(format!(
        "invalid account name {shown:?}: {problem}"
    )))
}

/// Secret Service entries where the himalaya CLI keeps an account's OAuth2
/// tokens.
///
/// Himalaya v1 (`secret-lib`/`keyring-lib` over keyring-rs 3) stores each
/// secret as its own item with the attributes `service himalaya-cli`,
/// `username <entry>`, `target default` and `application rust-keyring`; the
/// secret is the bare token. We look items up by `service` and `username`
/// only, which also finds items made by older keyring-rs versions (no
/// `target`). Himalaya v2 dropped keyring support (it runs a command such as
/// `secret-tool lookup ...` instead), so this only helps v1 users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HimalayaKeyringEntries {
    /// Entry of the access token, e.g. `gmail-imap-oauth2-access-token`.
    pub access: String,
    /// Entry of the refresh token, if any.
    pub refresh: Option<String>,
}

impl HimalayaKeyringEntries {
    /// The entries himalaya v1 uses when the config names none for the IMAP
    /// side of account `name`: `<name>-imap-oauth2-access-token` and
    /// `<name>-imap-oauth2-refresh-token` (email-lib's
    /// `ImapAuthConfig::replace_empty_secrets`).
    pub fn imap_defaults(name: &str) -> HimalayaKeyringEntries {
        HimalayaKeyringEntries {
            access: format!("{name}-imap-oauth2-access-token"),
            refresh: Some(format!("{name}-imap-oauth2-refresh-token")),
        }
    }
}

/// Reads the tokens the himalaya CLI keeps in the Secret Service (read
/// only; see [`HimalayaKeyringEntries`]). `Ok(None)` when there is no
/// access token entry. Himalaya stores no expiry, so `expires_at` is
/// `None`: the token is used until the server rejects it.
pub fn read_himalaya_keyring(entries: &HimalayaKeyringEntries, now: i64) -> Result<Option<Token>> {
    plain_setting(&entries.access, "himalaya keyring entry")?;
    let lookup = |entry: &str| {
        secret_tool_lookup(
            &["service", HIMALAYA_KEYRING_SERVICE, "username", entry],
            COMMAND_TIMEOUT,
        )
    };
    let Some(access) = lookup(&entries.access)? else {
        return Ok(None);
    };
    let mut token = Token::parse_external(&access, now)
        .map_err(|e| prefix(e, &format!("himalaya keyring entry {:?}", entries.access)))?;
    if let Some(entry) = &entries.refresh {
        plain_setting(entry, "himalaya keyring entry")?;
        if let Some(refresh) = lookup(entry)? {
            let refresh = refresh.trim();
            if !refresh.is_empty() {
                token.refresh_token = Some(refresh.to_owned());
            }
        }
    }
    Ok(Some(token))
}

// ---------------------------------------------------------------------------
// Files

/// A private directory with one file per account.
struct FileDir {
    dir: PathBuf,
    ext: &'static str,
}

impl FileDir {
    fn new(dir: &Path, ext: &'static str) -> Result<FileDir> {
        if !dir.is_absolute() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("token directory {} is not an absolute path", dir.display()),
            ));
        }
        Ok(FileDir {
            dir: dir.to_owned(),
            ext,
        })
    }

    /// The checked directory and the account's file in it.
    fn path(&self, account: &str) -> Result<PathBuf> {
        validate_account(account)?;
        ensure_private_dir(&self.dir, "token directory")?;
        Ok(self.dir.join(format!("{account}.{}", self.ext)))
    }

    fn read(&self, account: &str) -> Result<Option<(PathBuf, Vec<u8>)>> {
        let path = self.path(account)?;
        Ok(read_private_file(&path)?.map(|data| (path, data)))
    }

    fn write(&self, account: &str, data: &[u8]) -> Result<PathBuf> {
        let path = self.path(account)?;
        write_private_file(&self.dir, &path, data)?;
        Ok(path)
    }

    fn remove(&self, account: &str) -> Result<()> {
        let path = self.path(account)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(
                format!("cannot remove token file {}", path.display()),
                e,
            )),
        }
    }
}

/// Reads a token file that must be a private regular file of ours;
/// `Ok(None)` if it does not exist.
pub(crate) fn read_private_file(path: &Path) -> Result<Option<Vec<u8>>> {
    // O_NONBLOCK: a FIFO planted at the path must not block the open.
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        | OFlag::O_NOCTTY
        | OFlag::O_NONBLOCK;
    let fd = match fcntl::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => return Err(symlink_error(path)),
        Err(e) => {
            return Err(Error::io(
                format!("cannot open token file {}", path.display()),
                e,
            ))
        }
    };
    let st = stat::fstat(&fd)
        .map_err(|e| Error::io(format!("cannot inspect token file {}", path.display()), e))?;
    check_private_file(path, &st)?;
    let mut data = Vec::new();
    File::from(fd)
        .take(MAX_DATA_LEN + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io(format!("cannot read token file {}", path.display()), e))?;
    if data.len() as u64 > MAX_DATA_LEN {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "token file {} is larger than {MAX_DATA_LEN} bytes; it is not a token file",
                path.display()
            ),
        ));
    }
    Ok(Some(data))
}

/// Replaces `path` atomically with `data` in a new `0600` file, after
/// checking that whatever is at `path` now may be replaced.
pub(crate) fn write_private_file(dir: &Path, path: &Path, data: &[u8]) -> Result<()> {
    match stat::lstat(path) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => return Err(symlink_error(path)),
        Ok(st) => check_private_file(path, &st)?,
        Err(Errno::ENOENT) => {}
        Err(e) => {
            return Err(Error::io(
                format!("cannot inspect token file {}", path.display()),
                e,
            ))
        }
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        hex(&random_bytes::<8>()?)
    ));
    let fd = fcntl::open(
        &tmp,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
    let mut file = File::from(fd);
    let written = (|| -> std::io::Result<()> {
        // The umask may have removed owner bits; the mode must be exactly 0600.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(
            format!("cannot write token file {}", path.display()),
            e,
        ));
    }
    // Make the rename itself durable. The new file is in place either way,
    // so a failure here is not worth failing the save for.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Refuses a token file that is not a regular file of ours with mode
/// `0600` or stricter.
fn check_private_file(path: &Path, st: &FileStat) -> Result<()> {
    let shown = path.display();
    let me = unistd::geteuid().as_raw();
    let mode = st.st_mode & 0o7777;
    let problem = if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        format!("token file {shown} is not a regular file; remove or rename it")
    } else if st.st_uid != me {
        format!(
            "token file {shown} (mode {mode:04o}) is owned by uid {}, not you (uid {me}); \
             refusing to use it: remove it",
            st.st_uid
        )
    } else if mode & 0o077 != 0 {
        format!(
            "token file {shown} has mode {mode:04o}; it must be 0600 (owner only) because it \
             holds a token: check who could have read it, then run chmod 600 {shown}"
        )
    } else {
        return Ok(());
    };
    Err(Error::new(ErrorKind::Config, problem))
}

fn symlink_error(path: &Path) -> Error {
    Error::new(
        ErrorKind::Config,
        format!(
            "token file {} is a symlink; refusing to follow or replace it: remove it",
            path.display()
        ),
    )
}

/// Parses token JSON read from `path`.
fn parse_token_json(path: &Path, data: &[u8]) -> Result<Token> {
    let value: serde_json::Value = serde_json::from_slice(data).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("token file {} is corrupt: {e}", path.display()),
        )
    })?;
    Token::from_json_value(&value, unix_now())
        .map_err(|e| prefix(e, &format!("token file {} is corrupt", path.display())))
}

fn token_json(token: &Token) -> Result<Vec<u8>> {
    serde_json::to_vec(token).map_err(|e| Error::io("cannot encode the token", e))
}

// ---------------------------------------------------------------------------
// Backends

struct PlainStore {
    files: FileDir,
}

impl TokenStore for PlainStore {
    fn kind(&self) -> &'static str {
        "plain"
    }

    fn load(&self, account: &str) -> Result<Option<Token>> {
        match self.files.read(account)? {
            Some((path, data)) => parse_token_json(&path, &data).map(Some),
            None => Ok(None),
        }
    }

    fn save(&self, account: &str, token: &Token) -> Result<()> {
        self.files.write(account, &token_json(token)?).map(drop)
    }

    fn clear(&self, account: &str) -> Result<()> {
        self.files.remove(account)
    }
}

/// A 256-bit key; Debug never shows it.
#[derive(Clone)]
struct SecretKey([u8; 32]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

struct EncryptedStore {
    files: FileDir,
    source: KeySource,
    key: Mutex<Option<SecretKey>>,
    timeout: Duration,
}

impl EncryptedStore {
    /// The key, fetched once and then cached.
    fn key(&self) -> Result<SecretKey> {
        let mut cached = self.key.lock();
        if let Some(key) = cached.as_ref() {
            return Ok(key.clone());
        }
        let key = match &self.source {
            KeySource::Command(cmd) => self.key_from_command(cmd)?,
            KeySource::SecretService => self.key_from_secret_service()?,
        };
        *cached = Some(key.clone());
        Ok(key)
    }

    fn key_from_command(&self, cmd: &str) -> Result<SecretKey> {
        let out = user_command(UserCommand {
            what: "key command",
            cmd,
            account: None,
            stdin: None,
            secrets: &[],
            timeout: self.timeout,
            kind: ErrorKind::Auth,
            stop: None,
        })?;
        let stdout = String::from_utf8_lossy(&out);
        let text = stdout.trim();
        if text.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "key command printed nothing; it must print a base64 key or a passphrase",
            ));
        }
        Ok(key_from_text(text))
    }

    fn key_from_secret_service(&self) -> Result<SecretKey> {
        let decode = |text: String| {
            decode_key(text.trim()).ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    "the token encryption key in the Secret Service is not a base64 32-byte key",
                )
            })
        };
        if let Some(text) = secret_tool_lookup(&KEY_ATTRS, self.timeout)? {
            return decode(text);
        }
        // Made under a lock so that two processes starting at once agree on
        // one key instead of each encrypting with its own.
        ensure_private_dir(&self.files.dir, "token directory")?;
        let locks = LockDir::open(&self.files.dir)?;
        let _guard = locks.acquire(
            KEY_LOCK,
            self.timeout,
            "create token key",
            Some(runtime::stop_flag()),
        )?;
        if let Some(text) = secret_tool_lookup(&KEY_ATTRS, self.timeout)? {
            return decode(text);
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(random_bytes::<32>()?);
        secret_tool_store(
            "himalaya-sync token encryption key",
            &KEY_ATTRS,
            encoded.as_bytes(),
            self.timeout,
        )?;
        decode(encoded)
    }
}

/// A base64 32-byte key as is; anything else as a passphrase.
fn key_from_text(text: &str) -> SecretKey {
    decode_key(text).unwrap_or_else(|| {
        let mut hash = Sha256::new();
        hash.update(PASSPHRASE_CONTEXT);
        hash.update(text.as_bytes());
        SecretKey(hash.finalize().into())
    })
}

fn decode_key(text: &str) -> Option<SecretKey> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    bytes.try_into().ok().map(SecretKey)
}

fn header() -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.push(FORMAT_VERSION);
    h
}

fn aad(account: &str) -> Vec<u8> {
    let mut aad = header();
    aad.extend_from_slice(account.as_bytes());
    aad
}

fn encrypt(key: &SecretKey, account: &str, plain: &[u8]) -> Result<Vec<u8>> {
    let cipher = ChaCha20Poly1305::new(AeadKey::from_slice(&key.0));
    let nonce = random_bytes::<NONCE_LEN>()?;
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: &aad(account),
            },
        )
        .map_err(|_| Error::io("cannot encrypt the token", "encryption failed"))?;
    let mut out = header();
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn decrypt(key: &SecretKey, account: &str, path: &Path, data: &[u8]) -> Result<Vec<u8>> {
    let shown = path.display();
    let head = MAGIC.len() + 1;
    if data.len() < head + NONCE_LEN || &data[..MAGIC.len()] != MAGIC {
        return Err(Error::new(
            ErrorKind::Config,
            format!("token file {shown} is corrupt: not a himalaya-sync encrypted token file"),
        ));
    }
    if data[MAGIC.len()] != FORMAT_VERSION {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "token file {shown} has format version {}; this version reads {FORMAT_VERSION}",
                data[MAGIC.len()]
            ),
        ));
    }
    let cipher = ChaCha20Poly1305::new(AeadKey::from_slice(&key.0));
    cipher
        .decrypt(
            Nonce::from_slice(&data[head..head + NONCE_LEN]),
            Payload {
                msg: &data[head + NONCE_LEN..],
                aad: &aad(account),
            },
        )
        .map_err(|_| {
            Error::new(
                ErrorKind::Auth,
                format!("cannot decrypt {shown}: wrong key or tampered file"),
            )
        })
}

impl TokenStore for EncryptedStore {
    fn kind(&self) -> &'static str {
        "encrypted"
    }

    fn load(&self, account: &str) -> Result<Option<Token>> {
        let Some((path, data)) = self.files.read(account)? else {
            return Ok(None);
        };
        let plain = decrypt(&self.key()?, account, &path, &data)?;
        parse_token_json(&path, &plain).map(Some)
    }

    fn save(&self, account: &str, token: &Token) -> Result<()> {
        validate_account(account)?;
        let sealed = encrypt(&self.key()?, account, &token_json(token)?)?;
        self.files.write(account, &sealed).map(drop)
    }

    fn clear(&self, account: &str) -> Result<()> {
        self.files.remove(account)
    }
}

struct GpgStore {
    files: FileDir,
    recipient: String,
    program: String,
    timeout: Duration,
}

impl TokenStore for GpgStore {
    fn kind(&self) -> &'static str {
        "gpg"
    }

    fn load(&self, account: &str) -> Result<Option<Token>> {
        let Some((path, data)) = self.files.read(account)? else {
            return Ok(None);
        };
        let out = run(&Run {
            what: &self.program,
            program: &self.program,
            args: &["--batch", "--quiet", "--decrypt"],
            env: &[],
            stdin: Some(&data),
            timeout: self.timeout,
            stop: None,
        })?;
        if !out.status.success() {
            let stdout = String::from_utf8_lossy(&out.stdout);
            return Err(prefix(
                failed(
                    &self.program,
                    &out,
                    &secret_words(&stdout),
                    true,
                    ErrorKind::Auth,
                ),
                &format!("cannot decrypt {}", path.display()),
            ));
        }
        parse_token_json(&path, &out.stdout).map(Some)
    }

    fn save(&self, account: &str, token: &Token) -> Result<()> {
        validate_account(account)?;
        let json = token_json(token)?;
        let out = run(&Run {
            what: &self.program,
            program: &self.program,
            args: &[
                "--batch",
                "--yes",
                "--quiet",
                "--encrypt",
                "--recipient",
                &self.recipient,
            ],
            env: &[],
            stdin: Some(&json),
            timeout: self.timeout,
            stop: None,
        })?;
        if !out.status.success() {
            return Err(prefix(
                failed(&self.program, &out, &token.secrets(), true, ErrorKind::Io),
                &format!(
                    "cannot encrypt the token of {account} to {:?}",
                    self.recipient
                ),
            ));
        }
        if out.stdout.is_empty() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("{} printed no ciphertext for {account}", self.program),
            ));
        }
        self.files.write(account, &out.stdout).map(drop)
    }

    fn clear(&self, account: &str) -> Result<()> {
        self.files.remove(account)
    }
}

struct SecretServiceStore {
    service: String,
    timeout: Duration,
}

impl TokenStore for SecretServiceStore {
    fn kind(&self) -> &'static str {
        "secret-service"
    }

    fn load(&self, account: &str) -> Result<Option<Token>> {
        validate_account(account)?;
        let attrs = ["service", self.service.as_str(), "account", account];
        match secret_tool_lookup(&attrs, self.timeout)? {
            Some(text) => Token::parse_external(&text, unix_now())
                .map(Some)
                .map_err(|e| prefix(e, &format!("keyring entry for {account}"))),
            None => Ok(None),
        }
    }

    fn save(&self, account: &str, token: &Token) -> Result<()> {
        validate_account(account)?;
        let label = format!("himalaya-sync OAuth2 token for {account}");
        let attrs = ["service", self.service.as_str(), "account", account];
        secret_tool_store(&label, &attrs, &token_json(token)?, self.timeout)
            .map_err(|e| Error::new(e.kind, token.redact(&e.message)))
    }

    fn clear(&self, account: &str) -> Result<()> {
        validate_account(account)?;
        let out = run(&Run {
            what: "secret-tool",
            program: "secret-tool",
            args: &["clear", "service", &self.service, "account", account],
            env: &[],
            stdin: None,
            timeout: self.timeout,
            stop: None,
        })?;
        // Exit status 1 without a message means nothing matched.
        if out.status.success() || (out.status.code() == Some(1) && out.stderr.is_empty()) {
            Ok(())
        } else {
            Err(failed("secret-tool clear", &out, &[], false, ErrorKind::Io))
        }
    }
}

/// `secret-tool lookup ATTRS`: the secret, or `None` when nothing matches.
fn secret_tool_lookup(attrs: &[&str], timeout: Duration) -> Result<Option<String>> {
    let mut args = vec!["lookup"];
    args.extend_from_slice(attrs);
    let out = run(&Run {
        what: "secret-tool",
        program: "secret-tool",
        args: &args,
        env: &[],
        stdin: None,
        timeout,
        stop: None,
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(Some(stdout));
    }
    // Exit status 1 without a message means nothing matched.
    if out.status.code() == Some(1) && out.stderr.is_empty() && stdout.is_empty() {
        return Ok(None);
    }
    Err(failed(
        "secret-tool lookup",
        &out,
        &secret_words(&stdout),
        false,
        ErrorKind::Auth,
    ))
}

/// `secret-tool store --label=LABEL ATTRS` with `secret` on stdin.
fn secret_tool_store(label: &str, attrs: &[&str], secret: &[u8], timeout: Duration) -> Result<()> {
    let label = format!("--label={label}");
    let mut args = vec!["store", label.as_str()];
    args.extend_from_slice(attrs);
    let out = run(&Run {
        what: "secret-tool",
        program: "secret-tool",
        args: &args,
        env: &[],
        stdin: Some(secret),
        timeout,
        stop: None,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(secret);
        Err(failed(
            "secret-tool store",
            &out,
            &secret_words(&text),
            false,
            ErrorKind::Io,
        ))
    }
}

struct CommandStore {
    load: String,
    save: String,
    clear: Option<String>,
    timeout: Duration,
}

impl TokenStore for CommandStore {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn load(&self, account: &str) -> Result<Option<Token>> {
        validate_account(account)?;
        let out = user_command(UserCommand {
            what: "token load command",
            cmd: &self.load,
            account: Some(account),
            stdin: None,
            secrets: &[],
            timeout: self.timeout,
            kind: ErrorKind::Auth,
            stop: None,
        })?;
        let stdout = String::from_utf8_lossy(&out);
        if stdout.trim().is_empty() {
            return Ok(None);
        }
        Token::parse_external(&stdout, unix_now())
            .map(Some)
            .map_err(|e| prefix(e, &format!("token load command for {account}")))
    }

    fn save(&self, account: &str, token: &Token) -> Result<()> {
        validate_account(account)?;
        let mut json = token_json(token)?;
        json.push(b'\n');
        user_command(UserCommand {
            what: "token save command",
            cmd: &self.save,
            account: Some(account),
            stdin: Some(&json),
            secrets: &token.secrets(),
            timeout: self.timeout,
            kind: ErrorKind::Io,
            stop: None,
        })
        .map(|_| ())
    }

    fn clear(&self, account: &str) -> Result<()> {
        validate_account(account)?;
        let Some(clear) = &self.clear else {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the command token store has no clear command, so the token of {account} \
                     stays where the save command put it; set one or remove it yourself"
                ),
            ));
        };
        user_command(UserCommand {
            what: "token clear command",
            cmd: clear,
            account: Some(account),
            stdin: None,
            secrets: &[],
            timeout: self.timeout,
            kind: ErrorKind::Io,
            stop: None,
        })
        .map(|_| ())
    }
}

// ---------------------------------------------------------------------------
// Running programs (see crate::command)

/// One run of a user's command (`sh -c`).
pub(crate) struct UserCommand<'a> {
    /// Names the command in messages ("token load command").
    pub what: &'a str,
    pub cmd: &'a str,
    /// Given to the command in `$HIMALAYA_SYNC_ACCOUNT`.
    pub account: Option<&'a str>,
    pub stdin: Option<&'a [u8]>,
    /// Secrets to keep out of the message besides what it printed.
    pub secrets: &'a [String],
    pub timeout: Duration,
    /// The kind of the error when it exits unsuccessfully.
    pub kind: ErrorKind,
    /// See [`Run::stop`].
    pub stop: Option<&'a AtomicBool>,
}

/// Runs a user's command and returns its stdout. A failure quotes its
/// first stderr line, without `secrets` and without anything token-like it
/// printed on stdout.
pub(crate) fn user_command(c: UserCommand<'_>) -> Result<Vec<u8>> {
    let env: Vec<(&str, &str)> = std::iter::once((SHELL_CMD_ENV, c.cmd))
        .chain(c.account.map(|a| (ACCOUNT_ENV, a)))
        .collect();
    let out = run(&Run {
        what: c.what,
        program: "sh",
        args: &SHELL_ARGS,
        env: &env,
        stdin: c.stdin,
        timeout: c.timeout,
        stop: c.stop,
    })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let mut secrets = secret_words(&String::from_utf8_lossy(&out.stdout));
    secrets.extend(c.secrets.iter().cloned());
    Err(failed(c.what, &out, &secrets, false, c.kind))
}

/// The error for a program that exited unsuccessfully, quoting one stderr
/// line (the last one when `last_line`, else the first) with `secrets` and
/// anything that looks like one of them removed.
fn failed(what: &str, out: &Output, secrets: &[String], last_line: bool, kind: ErrorKind) -> Error {
    let status = match (out.status.code(), out.status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "unknown status".to_owned(),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut lines = stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    let line = if last_line {
        lines.next_back()
    } else {
        lines.next()
    };
    let message = match line {
        Some(line) => {
            let mut refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
            // Then whatever else looks like a token, key or password.
            let clean = redact_program_line(&redact_all(line, &mut refs));
            let cut: String = clean.chars().take(MAX_QUOTED_LINE).collect();
            format!("{what} failed ({status}): {cut}")
        }
        None => format!("{what} failed ({status}) and printed nothing on stderr"),
    };
    Error::new(kind, message)
}

/// Words that, ending a key (`client_secret=`, `"refresh_token": `,
/// `--password=`), say that its value is a credential.
const SECRET_KEYS: &[&str] = &[
    "secret",
    "token",
    "password",
    "passwd",
    "pwd",
    "key",
    "code",
    "assertion",
    "credential",
    "credentials",
    "authorization",
];

/// Shortest run of letters and digits, with at least one of each, that is
/// taken for a secret in a program's error output: a hex client secret or
/// key, an API key, a password generator's output.
const MIN_PROGRAM_SECRET_LEN: usize = 20;

/// One line of what a helper program (the user's refresh script, token or
/// key command, gpg, secret-tool) printed, made fit for an error message.
/// Such programs are `curl … -d client_secret=…`, `pass`, `oauth2.py`:
/// they echo what they were given. So besides what mbsync's own redaction
/// removes (IMAP logins, long mixed-case blobs), this hides the value of
/// every `KEY=value` or `"KEY": "value"` whose key names a credential, the
/// word after `Bearer` or `Basic`, and every run of
/// [`MIN_PROGRAM_SECRET_LEN`] letters and digits or more (lower-case hex
/// too) between dots and slashes. What is left (`curl: (22) … error: 401`,
/// `gpg: decryption failed: No secret key`) still says what went wrong.
pub(crate) fn redact_program_line(line: &str) -> String {
    let line = crate::mbsync::errors::redact(line);
    let keyed = redact_keyed_values(&line);
    let is_word_char = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    // Looked at piece by piece between dots and slashes, so that host
    // names, URLs and paths stay (`www.googleapis.com/oauth2/v4/token`),
    // while `ya29.<token>` and each part of a JWT do not.
    let secret = |word: &str| {
        !word.starts_with('/')
            && word.split(['.', '/']).any(|piece| {
                piece.bytes().filter(u8::is_ascii_alphanumeric).count() >= MIN_PROGRAM_SECRET_LEN
                    && piece.bytes().any(|b| b.is_ascii_digit())
                    && piece.bytes().any(|b| b.is_ascii_alphabetic())
            })
    };
    crate::mbsync::errors::replace_runs(&keyed, is_word_char, secret, crate::oauth::token::REDACTED)
}

/// The values of keys in [`SECRET_KEYS`] (`KEY=v`, `KEY: v`, `"KEY": "v"`)
/// and the credentials after `Bearer ` or `Basic `, replaced.
fn redact_keyed_values(line: &str) -> String {
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let ends_value = |c: char| c.is_whitespace() || "\"',;&}]".contains(c);
    let mut out = String::with_capacity(line.len());
    let mut at = 0;
    while at < line.len() {
        let rest = &line[at..];
        let word_len = rest.find(|c: char| !is_key_char(c)).unwrap_or(rest.len());
        if word_len == 0 {
            let c = rest.chars().next().map_or(1, char::len_utf8);
            out.push_str(&rest[..c]);
            at += c;
            continue;
        }
        let word = &rest[..word_len];
        out.push_str(word);
        at += word_len;
        let lower = word.to_ascii_lowercase();
        let after = &line[at..];
        // Where the value starts: after `=`, `:` (with a closing quote of
        // the key before it and blanks and an opening quote after it), or
        // the blank after Bearer or Basic.
        let value_at = if lower == "bearer" || lower == "basic" {
            after.starts_with(' ').then_some(1)
        } else if SECRET_KEYS.iter().any(|k| lower.ends_with(k)) {
            let quoted = usize::from(after.starts_with('"'));
            match after[quoted..].chars().next() {
                Some('=' | ':') => {
                    let skip = quoted + 1;
                    let blanks = after[skip..].len() - after[skip..].trim_start_matches(' ').len();
                    let open = usize::from(after[skip + blanks..].starts_with('"'));
                    Some(skip + blanks + open)
                }
                _ => None,
            }
        } else {
            None
        };
        if let Some(v) = value_at {
            let value = &after[v..];
            let len = value.find(ends_value).unwrap_or(value.len());
            // `Authorization: Bearer X`: X is hidden as Bearer's word.
            let scheme = ["bearer", "basic"].contains(&value[..len].to_ascii_lowercase().as_str());
            if len > 0 && !scheme {
                out.push_str(&after[..v]);
                out.push_str(crate::oauth::token::REDACTED);
                at += v + len;
            }
        }
    }
    out
}

/// Runs of token-like characters (letters, digits, `-._~+/=`) at least
/// [`MIN_SECRET_LEN`] long: whatever a program printed that might be a
/// token or key, so it can be removed from its error output.
fn secret_words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "-._~+/=".contains(c)))
        .filter(|w| w.len() >= MIN_SECRET_LEN)
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------
// Small helpers

/// Puts `context: ` in front of an error's message, keeping its kind.
fn prefix(e: Error, context: &str) -> Error {
    Error::new(e.kind, format!("{context}: {}", e.message))
}

fn non_empty_command(cmd: &str, what: &str) -> Result<()> {
    if cmd.trim().is_empty() {
        return Err(Error::new(ErrorKind::Config, format!("{what} is empty")));
    }
    Ok(())
}

/// A setting passed as one program argument: non-empty, no control chars.
fn plain_setting(value: &str, what: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::new(ErrorKind::Config, format!("{what} is empty")));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::new(
            ErrorKind::Config,
            format!("{what} {value:?} contains control characters"),
        ));
    }
    Ok(())
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf)
        .map_err(|e| Error::io("cannot get random bytes from the system", e))?;
    Ok(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        for ok in ["gmail", "me@example.com", "work-2", "a.b_c+d"] {
            validate_account(ok).unwrap();
        }
        for bad in [
            "", "../x", "a/b", ".hidden", "a..b", "a b", "$(id)", "a;b", "a`b", "é",
        ] {
            let e = validate_account(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Invalid, "{bad}");
        }
        assert!(validate_account(&"a".repeat(101)).is_err());
    }

    #[test]
    fn key_from_base64_or_passphrase() {
        let raw = [7u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(key_from_text(&b64).0, raw);
        let a = key_from_text("correct horse battery staple");
        let b = key_from_text("correct horse battery staple!");
        assert_ne!(a.0, b.0);
        // Base64 of the wrong length is a passphrase, not a short key.
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert_ne!(key_from_text(&short).0[..16], [1u8; 16]);
    }

    #[test]
    fn encryption_binds_key_and_account() {
        let key = key_from_text("k");
        let path = Path::new("/t/a.enc");
        let sealed = encrypt(&key, "a", b"{\"access_token\":\"x\"}").unwrap();
        assert_eq!(&sealed[..8], MAGIC);
        assert_eq!(
            decrypt(&key, "a", path, &sealed).unwrap(),
            b"{\"access_token\":\"x\"}"
        );
        let wrong = decrypt(&key_from_text("other"), "a", path, &sealed).unwrap_err();
        assert_eq!(
            wrong.message,
            "cannot decrypt /t/a.enc: wrong key or tampered file"
        );
        assert!(decrypt(&key, "b", path, &sealed).is_err());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(decrypt(&key, "a", path, &flipped).is_err());
        let mut newer = sealed;
        newer[8] = 9;
        let e = decrypt(&key, "a", path, &newer).unwrap_err();
        assert!(e.message.contains("format version 9"), "{}", e.message);
        let e = decrypt(&key, "a", path, b"junk").unwrap_err();
        assert!(e.message.contains("corrupt"), "{}", e.message);
    }

    #[test]
    fn debug_hides_commands() {
        let spec = StoreSpec::Encrypted {
            dir: "/x".into(),
            key: KeySource::Command("printf s3cr3tkey".into()),
        };
        let shown = format!("{spec:?}");
        assert!(!shown.contains("s3cr3tkey"), "{shown}");
        let spec = StoreSpec::Command {
            load: "pass show tok".into(),
            save: "pass insert tok".into(),
            clear: None,
        };
        assert!(!format!("{spec:?}").contains("pass"));
    }

    #[test]
    fn secret_words_split_json_and_lines() {
        let words = secret_words("{\"access_token\":\"ya29.abc-DEF_123\",\"expires_in\":3599}");
        assert!(words.contains(&"ya29.abc-DEF_123".to_owned()));
        assert!(!words.contains(&"3599".to_owned()));
    }

    #[test]
    fn program_output_loses_keyed_values_and_long_runs() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b";
        for (line, kept) in [
            (
                format!("curl: (22) HTTP 401 with client_secret={hex}"),
                "curl: (22) HTTP 401 with client_secret=[redacted]",
            ),
            (
                "error: {\"refresh_token\": \"1//0gx-y\", \"code\":\"4/abc\"}".to_owned(),
                "error: {\"refresh_token\": \"[redacted]\", \"code\":\"[redacted]\"}",
            ),
            (
                "sent Authorization: Bearer ya29.short and --password=hunter2&x=1".to_owned(),
                "sent Authorization: Bearer [redacted] and --password=[redacted]&x=1",
            ),
            (
                format!("unexpected {hex} in reply"),
                "unexpected [redacted] in reply",
            ),
            (
                "curl: (6) Could not resolve host: www.googleapis.com/oauth2/v4/token".to_owned(),
                "curl: (6) Could not resolve host: www.googleapis.com/oauth2/v4/token",
            ),
            (
                "gpg: decryption failed: No secret key".to_owned(),
                "gpg: decryption failed: No secret key",
            ),
            (
                "cannot open /home/me/.config/tokens/0123456789abcdef0123.gpg: No such file"
                    .to_owned(),
                "cannot open /home/me/.config/tokens/0123456789abcdef0123.gpg: No such file",
            ),
            ("token: ".to_owned(), "token: "),
            ("é key=café ü".to_owned(), "é key=[redacted] ü"),
        ] {
            assert_eq!(redact_program_line(&line), kept, "{line}");
        }
    }

    #[test]
    fn relative_dir_is_refused() {
        let e = open(&StoreSpec::Plain {
            dir: "tokens".into(),
        })
        .err()
        .unwrap();
        assert_eq!(e.kind, ErrorKind::Config);
    }
}
