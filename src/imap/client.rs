//! IMAP connection: TLS, STARTTLS or plain; LOGIN or AUTHENTICATE.
//!
//! [`Connection`] holds the settings of one account (built from an mbsyncrc
//! [`ImapAccount`]); [`Connection::connect`] opens a logged-in [`Session`].
//! The client speaks only the handful of commands the fast check and IDLE
//! need, and bounds every step by the configured timeout.
//!
//! Errors are classified for the manager: rejected credentials are
//! [`ErrorKind::Auth`] (with the server's text, never the credentials), a
//! refused, unreachable or broken connection is [`ErrorKind::Network`],
//! silence past the timeout is [`ErrorKind::Timeout`], and a certificate the
//! configured roots do not trust, an unknown folder or unusable settings are
//! [`ErrorKind::Config`] (the user has to change something).

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use once_cell::sync::OnceCell;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use super::mutf7::{decode_mutf7, encode_mutf7};
use crate::error::{Error, ErrorKind, Result};
use crate::mbsync::config::ImapAccount;
use crate::mbsync::errors::{HOST_PORT_ADVICE, IMAPS_PORT_ADVICE};

/// Timeout of every step when the caller does not set one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// A response larger than this is refused: the commands used here never
/// need one, so it can only be a broken or hostile server.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// How long a `PassCmd` may run.
const PASS_CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// How the connection is protected (`SSLType`/`TLSType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (`IMAPS`, port 993).
    Tls,
    /// Plain connection upgraded with `STARTTLS` (mbsync's default).
    StartTls,
    /// No encryption (`None`).
    None,
}

/// A password that never shows in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Self {
        Password(password.into())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// `Pass`.
    Literal(Password),
    /// `PassCmd`: run with `sh -c`, the first line of its output is used.
    Command(String),
    /// Neither (in IMAPAccount `.0`): only a token source (XOAUTH2) can
    /// log in.
    Missing(String),
}

/// The future a [`TokenSource`] returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String>> + Send>>;

/// Supplies OAuth2 access tokens for XOAUTH2 (the OAuth module plugs in
/// here). Any `Fn(&str) -> TokenFuture` closure is one; it gets the user.
pub trait TokenSource: Send + Sync {
    fn token(&self, user: &str) -> TokenFuture;
}

impl<F> TokenSource for F
where
    F: Fn(&str) -> TokenFuture + Send + Sync,
{
    fn token(&self, user: &str) -> TokenFuture {
        self(user)
    }
}

/// The settings of one IMAP account.
#[derive(Clone)]
pub struct Connection {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: PasswordSource,
    pub security: Security,
    /// Extra trusted certificates (PEM), added to the system roots.
    pub certificate_file: Option<PathBuf>,
    /// Whether the system's trusted roots count (`SystemCertificates`);
    /// without them only `certificate_file` is trusted.
    pub system_certificates: bool,
    /// `AuthMechs`, upper-cased; empty or `*` allows any.
    pub auth_mechs: Vec<String>,
    /// Bound of every step (connect, greeting, each command).
    pub timeout: Duration,
    /// Used for XOAUTH2.
    pub token_source: Option<Arc<dyn TokenSource>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("security", &self.security)
            .field("certificate_file", &self.certificate_file)
            .field("system_certificates", &self.system_certificates)
            .field("auth_mechs", &self.auth_mechs)
            .field("timeout", &self.timeout)
            .field("token_source", &self.token_source.is_some())
            .finish()
    }
}

impl Connection {
    /// Settings from an mbsyncrc account. `Tunnel` accounts are refused
    /// (Config): the check talks to the server directly.
    pub fn from_account(account: &ImapAccount) -> Result<Connection> {
        let name = &account.name;
        if account.tunnel.is_some() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "IMAP account '{name}' uses Tunnel, which the new-mail check does not support"
                ),
            ));
        }
        let host = account.host.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("IMAP account '{name}' has no Host"),
            )
        })?;
        let security = match account.ssl_type.as_deref() {
            None => Security::StartTls,
            Some(t) if t.eq_ignore_ascii_case("IMAPS") => Security::Tls,
            Some(t) if t.eq_ignore_ascii_case("STARTTLS") => Security::StartTls,
            Some(t) if t.eq_ignore_ascii_case("None") => Security::None,
            Some(other) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("IMAP account '{name}': unknown SSLType '{other}' (want IMAPS, STARTTLS or None)"),
                ))
            }
        };
        let port = account.port.unwrap_or(match security {
            Security::Tls => 993,
            _ => 143,
        });
        let password = match (&account.pass, &account.pass_cmd) {
            (Some(pass), _) => PasswordSource::Literal(Password::new(pass.expose())),
            (None, Some(cmd)) => PasswordSource::Command(cmd.clone()),
            (None, None) => PasswordSource::Missing(name.clone()),
        };
        let user = account.user.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("IMAP account '{name}' has no User"),
            )
        })?;
        Ok(Connection {
            host,
            port,
            user,
            password,
            security,
            certificate_file: account.certificate_file.clone(),
            system_certificates: account.system_certificates,
            auth_mechs: account
                .auth_mechs
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            timeout: DEFAULT_TIMEOUT,
            token_source: None,
        })
    }

    /// The same settings with another step timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same settings with a token source for XOAUTH2.
    pub fn with_token_source(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.token_source = Some(source);
        self
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn allows(&self, mech: &str) -> bool {
        self.auth_mechs.is_empty() || self.auth_mechs.iter().any(|m| m == "*" || m == mech)
    }

    /// Connects, protects the connection as configured and logs in.
    pub async fn connect(&self) -> Result<Session> {
        let address = self.address();
        let tcp = step(self.timeout, &address, "connect", async {
            TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| network(&address, "cannot connect", &e))
        })
        .await?;
        // Small commands and answers: do not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        keepalive(&tcp);
        let stream: Box<dyn Io> = match self.security {
            Security::Tls => Box::new(self.tls(tcp).await?),
            _ => Box::new(tcp),
        };
        let mut session = Session {
            io: stream,
            buf: Vec::new(),
            tag: 0,
            capabilities: Vec::new(),
            timeout: self.timeout,
            address,
        };
        let greeting = session
            .read_with_timeout("greeting")
            .await
            .map_err(|e| no_greeting(e, self.port, self.security))?;
        let greeting = Response::parse(&greeting);
        match greeting.kind {
            Kind::Untagged(ref word) if word == "OK" || word == "PREAUTH" => {}
            Kind::Untagged(ref word) if word == "BYE" => {
                return Err(Error::new(
                    ErrorKind::Network,
                    format!(
                        "IMAP server {} refused the connection: {}",
                        session.address,
                        greeting.text()
                    ),
                ))
            }
            // Host and Port lead to another kind of server: a setting to
            // fix, as with mbsync ("unexpected reply").
            _ => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "{} did not greet like an IMAP server ({HOST_PORT_ADVICE})",
                        session.address
                    ),
                ))
            }
        }
        session.capabilities = greeting.capabilities().unwrap_or_default();
        let preauth = matches!(greeting.kind, Kind::Untagged(ref w) if w == "PREAUTH");
        if self.security == Security::StartTls {
            if session.capabilities.is_empty() {
                session.refresh_capabilities().await?;
            }
            if !session.has("STARTTLS") {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "IMAP server {} does not offer STARTTLS; set SSLType IMAPS or None",
                        session.address
                    ),
                ));
            }
            session.command_ok("STARTTLS").await?;
            if !session.buf.is_empty() {
                return Err(Error::new(
                    ErrorKind::Network,
                    format!(
                        "IMAP server {} sent data before the TLS handshake",
                        session.address
                    ),
                ));
            }
            let plain = std::mem::replace(&mut session.io, Box::new(tokio::io::empty()));
            session.io = Box::new(self.tls_over(plain).await?);
            session.capabilities.clear();
        }
        if !preauth {
            if session.capabilities.is_empty() {
                session.refresh_capabilities().await?;
            }
            self.login(&mut session).await?;
        }
        // Servers may change their list after login; dovecot sends it in
        // the tagged OK, otherwise ask.
        if session.capabilities.is_empty() || !session.has("IMAP4REV1") {
            session.refresh_capabilities().await?;
        }
        Ok(session)
    }

    async fn tls(&self, tcp: TcpStream) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let connector = self.connector()?;
        let name = self.server_name()?;
        let address = self.address();
        step(self.timeout, &address, "TLS handshake", async {
            connector
                .connect(name, tcp)
                .await
                .map_err(|e| tls_error(&address, &e))
        })
        .await
    }

    async fn tls_over(
        &self,
        io: Box<dyn Io>,
    ) -> Result<tokio_rustls::client::TlsStream<Box<dyn Io>>> {
        let connector = self.connector()?;
        let name = self.server_name()?;
        let address = self.address();
        step(self.timeout, &address, "TLS handshake", async {
            connector
                .connect(name, io)
                .await
                .map_err(|e| tls_error(&address, &e))
        })
        .await
    }

    fn server_name(&self) -> Result<rustls::pki_types::ServerName<'static>> {
        rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|_| {
            Error::new(
                ErrorKind::Config,
                format!("'{}' is not a valid host name for TLS", self.host),
            )
        })
    }

    fn connector(&self) -> Result<tokio_rustls::TlsConnector> {
        // `SystemCertificates no` pins trust to CertificateFile: a root the
        // system trusts (a company's inspecting proxy, say) is not enough,
        // as it is not for mbsync.
        let mut roots = match (self.system_certificates, &self.certificate_file) {
            (true, _) => system_roots().clone(),
            (false, Some(_)) => rustls::RootCertStore::empty(),
            (false, None) => return Err(Error::new(
                ErrorKind::Config,
                "SystemCertificates no needs a CertificateFile: no certificate would be trusted",
            )),
        };
        if let Some(path) = &self.certificate_file {
            let text =
                crate::files::read_regular(path, crate::files::MAX_CONFIG_BYTES).map_err(|e| {
                    crate::files::error(
                        &format!("Cannot read CertificateFile '{}'", path.display()),
                        &e,
                    )
                })?;
            let mut added = 0;
            for cert in rustls_pemfile::certs(&mut text.as_slice()) {
                let cert = cert.map_err(|e| {
                    Error::new(
                        ErrorKind::Config,
                        format!("CertificateFile '{}' is not valid PEM: {e}", path.display()),
                    )
                })?;
                // A certificate rustls cannot use as a root is skipped, as
                // mbsync skips what OpenSSL rejects.
                if roots.add(cert).is_ok() {
                    added += 1;
                }
            }
            if added == 0 {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "CertificateFile '{}' holds no usable certificate",
                        path.display()
                    ),
                ));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(ErrorKind::Config, format!("TLS setup failed: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    async fn login(&self, session: &mut Session) -> Result<()> {
        let xoauth2 = session.has("AUTH=XOAUTH2") && self.allows("XOAUTH2");
        if let (true, Some(source)) = (xoauth2, &self.token_source) {
            let token = step(
                self.timeout,
                &session.address,
                "getting an OAuth2 token",
                async { source.token(&self.user).await },
            )
            .await?;
            let encoded = xoauth2_response(&self.user, &token);
            return session.authenticate("XOAUTH2", &encoded).await;
        }
        if self.allows("XOAUTH2")
            && !self.allows("PLAIN")
            && !self.allows("LOGIN")
            && self.token_source.is_none()
        {
            return Err(Error::new(
                ErrorKind::Auth,
                format!(
                    "AuthMechs XOAUTH2 for {} needs an OAuth2 token, and none is configured",
                    self.user
                ),
            ));
        }
        let password = self.password().await?;
        if session.has("AUTH=PLAIN") && self.allows("PLAIN") {
            let raw = format!("\0{}\0{}", self.user, password.0);
            let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
            return session.authenticate("PLAIN", &encoded).await;
        }
        if self.allows("LOGIN") && !session.has("LOGINDISABLED") {
            let command = format!("LOGIN {} {}", quote(&self.user), quote(&password.0));
            let done = session.command_secret(&command, "LOGIN").await?;
            // As after AUTHENTICATE: the list may change with the login, so
            // it is kept only when the answer carries it (else asked again).
            session.capabilities = done_capabilities(&done).unwrap_or_default();
            return done.auth_result(&session.address);
        }
        Err(Error::new(
            ErrorKind::Config,
            format!(
                "IMAP server {} offers no login method allowed by AuthMechs {}",
                session.address,
                if self.auth_mechs.is_empty() {
                    "*".to_owned()
                } else {
                    self.auth_mechs.join(" ")
                }
            ),
        ))
    }

    async fn password(&self) -> Result<Password> {
        match &self.password {
            PasswordSource::Literal(p) => Ok(p.clone()),
            PasswordSource::Command(cmd) => run_pass_cmd(cmd, PASS_CMD_TIMEOUT).await,
            // As when mbsync asks for it (see `mbsync::errors::summary`):
            // a password nobody can type in is a matter of the config.
            PasswordSource::Missing(account) => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "IMAP account {account:?} has no Pass or PassCmd, and nobody can type a \
                     password in here (give it a PassCmd, the command of a password manager \
                     or keyring that prints it, or a Pass)"
                ),
            )),
        }
    }
}

/// Runs a `PassCmd` (a leading `+` is mbsync's "interactive" mark and is
/// dropped) and returns the first line of its output.
async fn run_pass_cmd(cmd: &str, limit: Duration) -> Result<Password> {
    let cmd = cmd.strip_prefix('+').unwrap_or(cmd).to_owned();
    crate::command::off_thread(move |stop| {
        crate::command::first_line("PassCmd", &cmd, limit, Some(stop))
    })
    .await
    .map(Password)
}

/// The XOAUTH2 initial client response, base64-encoded.
fn xoauth2_response(user: &str, token: &str) -> String {
    let raw = format!("user={user}\x01auth=Bearer {token}\x01\x01");
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// System trust roots, loaded once (it reads many files).
fn system_roots() -> &'static rustls::RootCertStore {
    static ROOTS: OnceCell<rustls::RootCertStore> = OnceCell::new();
    ROOTS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        // Unreadable or unusable system certificates are skipped: the
        // handshake fails with a clear message if nothing trusts the server.
        match root_paths(
            crate::env::var_os("SSL_CERT_FILE"),
            crate::env::var_os("SSL_CERT_DIR"),
        ) {
            Some((file, dirs)) => {
                let file = rustls_native_certs::load_certs_from_paths(file.as_deref(), None);
                roots.add_parsable_certificates(file.certs);
                for dir in dirs {
                    let found = rustls_native_certs::load_certs_from_paths(None, Some(&dir));
                    roots.add_parsable_certificates(found.certs);
                }
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        roots
    })
}

/// Where the system trust roots are read from, as rustls-native-certs finds
/// them: the file `SSL_CERT_FILE` and the folders in `SSL_CERT_DIR` (a `:`
/// list) when either is set, else on Linux the system's certificate
/// folders (Debian's and Fedora's also hold the bundle file). The variables
/// come from the engine's copy of the environment ([`crate::env`]), since
/// rustls-native-certs and openssl-probe read the live one, which is not
/// safe on an engine thread. None: let rustls-native-certs ask the system
/// (macOS and Windows keep their roots in a system store).
fn root_paths(
    file: Option<std::ffi::OsString>,
    dirs: Option<std::ffi::OsString>,
) -> Option<(Option<PathBuf>, Vec<PathBuf>)> {
    let file = file.map(PathBuf::from);
    let dirs: Vec<PathBuf> = dirs
        .map(|d| {
            std::env::split_paths(&d)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    if file.is_some() || !dirs.is_empty() {
        return Some((file, dirs));
    }
    if cfg!(any(target_os = "macos", target_os = "windows")) {
        return None;
    }
    Some((
        None,
        openssl_probe::candidate_cert_dirs()
            .map(std::path::Path::to_path_buf)
            .collect(),
    ))
}

/// Anything the session can talk through: TCP, TLS over TCP, TLS over the
/// STARTTLS-upgraded stream.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The counters of `STATUS (MESSAGES UIDNEXT UNSEEN UIDVALIDITY)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct FolderStatus {
    pub messages: u32,
    pub uidnext: u32,
    pub unseen: u32,
    pub uidvalidity: u32,
}

/// What `EXAMINE`/`SELECT` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Selected {
    pub exists: u32,
    pub uidvalidity: u32,
    pub uidnext: u32,
}

/// One `LIST` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The name on the wire (modified UTF-7).
    pub name: String,
    /// Hierarchy delimiter, if the server has one.
    pub delimiter: Option<char>,
    /// Attributes such as `\Noselect`, as sent.
    pub attributes: Vec<String>,
}

impl ListEntry {
    /// Whether the folder can be opened (not `\Noselect`/`\NonExistent`).
    pub fn selectable(&self) -> bool {
        !self.attributes.iter().any(|a| {
            a.eq_ignore_ascii_case("\\Noselect") || a.eq_ignore_ascii_case("\\NonExistent")
        })
    }
}

/// A logged-in IMAP connection.
pub struct Session {
    io: Box<dyn Io>,
    /// Received bytes not yet parsed into responses.
    buf: Vec<u8>,
    tag: u32,
    capabilities: Vec<String>,
    timeout: Duration,
    address: String,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The end of a command: its tagged status and text.
#[derive(Debug)]
pub(crate) struct Done {
    status: String,
    text: String,
    code: Option<String>,
}

impl Done {
    fn ok(&self) -> bool {
        self.status == "OK"
    }

    fn auth_result(&self, address: &str) -> Result<()> {
        if self.ok() {
            return Ok(());
        }
        let kind = match transient(self.code.as_deref()) {
            true => ErrorKind::Network,
            false => ErrorKind::Auth,
        };
        Err(Error::new(
            kind,
            format!("IMAP server {address} rejected the login: {}", self.text),
        ))
    }
}

impl Session {
    /// The server's capabilities, upper-cased.
    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    /// Whether the server announced `capability` (case-insensitive).
    pub fn has(&self, capability: &str) -> bool {
        self.capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case(capability))
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    async fn refresh_capabilities(&mut self) -> Result<()> {
        let (untagged, done) = self.command("CAPABILITY").await?;
        if !done.ok() {
            return Err(self.unexpected("CAPABILITY", &done));
        }
        for line in &untagged {
            let response = Response::parse(line);
            if let Some(caps) = response.capabilities() {
                self.capabilities = caps;
            }
        }
        if let Some(caps) = done_capabilities(&done) {
            self.capabilities = caps;
        }
        Ok(())
    }

    async fn authenticate(&mut self, mech: &str, encoded: &str) -> Result<()> {
        let address = self.address.clone();
        let timeout = self.timeout;
        let ir = self.has("SASL-IR");
        let done = step(timeout, &address, "AUTHENTICATE", async {
            let tag = self.next_tag();
            let line = if ir {
                format!("{tag} AUTHENTICATE {mech} {encoded}\r\n")
            } else {
                format!("{tag} AUTHENTICATE {mech}\r\n")
            };
            self.write(line.as_bytes()).await?;
            let mut sent = ir;
            loop {
                let raw = self.read_response().await?;
                let response = Response::parse(&raw);
                match response.kind {
                    Kind::Continuation if !sent => {
                        self.write(format!("{encoded}\r\n").as_bytes()).await?;
                        sent = true;
                    }
                    // XOAUTH2 failure: the server sends an error challenge
                    // and waits for an empty answer before the tagged NO.
                    Kind::Continuation => self.write(b"\r\n").await?,
                    Kind::Tagged(ref t) if *t == tag => break Ok(response.done()),
                    _ => self.absorb(&response),
                }
            }
        })
        .await?;
        if let Some(caps) = done_capabilities(&done) {
            self.capabilities = caps;
        } else {
            self.capabilities.clear();
        }
        done.auth_result(&self.address)
    }

    /// `LIST "" "*"`-style listing below `reference` matching `pattern`.
    pub async fn list(&mut self, reference: &str, pattern: &str) -> Result<Vec<ListEntry>> {
        let command = format!(
            "LIST {} {}",
            quote(reference),
            quote(&encode_mutf7(pattern))
        );
        let (untagged, done) = self.command(&command).await?;
        if !done.ok() {
            return Err(self.unexpected("LIST", &done));
        }
        Ok(untagged
            .iter()
            .filter_map(|line| parse_list(line))
            .collect())
    }

    /// `STATUS folder (MESSAGES UIDNEXT UNSEEN UIDVALIDITY)`; `folder` is
    /// a Unicode name (encoded to modified UTF-7 here).
    pub async fn status(&mut self, folder: &str) -> Result<FolderStatus> {
        let mut all = self.status_many(&[folder]).await?;
        all.pop()
            .unwrap_or_else(|| Err(Error::new(ErrorKind::Unknown, "no STATUS result")))
    }

    /// STATUS of several folders, pipelined (all commands sent at once,
    /// which saves a round trip per folder). One result per folder, in the
    /// order given: an inner error is the server's refusal of that folder
    /// alone (a tagged NO or BAD, see `folder_error`), and the answers to
    /// the commands after it are still read and matched by tag. Anything
    /// else (the connection, a timeout, a BYE, an OK without the STATUS
    /// data) fails the whole batch. The timeout bounds each wait for the
    /// server, not the whole batch: a server that answers hundreds of
    /// folders slowly but steadily is not timed out, one that falls silent
    /// is.
    pub async fn status_many(&mut self, folders: &[&str]) -> Result<Vec<Result<FolderStatus>>> {
        let address = self.address.clone();
        let timeout = self.timeout;
        let mut tags = Vec::with_capacity(folders.len());
        let mut out = String::new();
        for folder in folders {
            let tag = self.next_tag();
            out.push_str(&format!(
                "{tag} STATUS {} (MESSAGES UIDNEXT UNSEEN UIDVALIDITY)\r\n",
                quote(&encode_mutf7(folder))
            ));
            tags.push(tag);
        }
        step(timeout, &address, "STATUS", self.write(out.as_bytes())).await?;
        let mut found: Vec<Option<FolderStatus>> = vec![None; folders.len()];
        let mut results: Vec<Option<Result<FolderStatus>>> =
            (0..folders.len()).map(|_| None).collect();
        let mut remaining = folders.len();
        while remaining > 0 {
            let raw = step(timeout, &address, "STATUS", self.read_response()).await?;
            let response = Response::parse(&raw);
            match &response.kind {
                Kind::Tagged(tag) => {
                    // A tag answered twice counts once, so that every
                    // folder gets its own answer before the loop ends.
                    let Some(i) = tags.iter().position(|t| t == tag) else {
                        continue;
                    };
                    if results[i].is_some() {
                        continue;
                    }
                    let done = response.done();
                    results[i] = Some(if done.ok() {
                        let status = found[i].ok_or_else(|| {
                            Error::new(
                                ErrorKind::Unknown,
                                format!(
                                    "IMAP server {address} sent no STATUS for '{}'",
                                    folders[i]
                                ),
                            )
                        })?;
                        Ok(status)
                    } else {
                        Err(folder_error(&address, folders[i], &done))
                    });
                    remaining -= 1;
                }
                Kind::Untagged(word) if word == "STATUS" => {
                    if let Some((name, status)) = parse_status(&raw) {
                        let name = decode_mutf7(&name);
                        if let Some(i) = folders.iter().position(|f| same_folder(f, &name)) {
                            found[i] = Some(status);
                        }
                    }
                }
                // Its reason (Gmail's bandwidth alert, say) is worth more
                // than the timeout that would follow.
                Kind::Untagged(word) if word == "BYE" => return Err(self.bye(&response)),
                _ => self.absorb(&response),
            }
        }
        // Every folder has its answer here: the loop ends only then.
        Ok(results.into_iter().flatten().collect())
    }

    /// `EXAMINE folder` (read-only open).
    pub async fn examine(&mut self, folder: &str) -> Result<Selected> {
        self.open("EXAMINE", folder).await?
    }

    /// [`Session::examine`] telling the server's refusal of the folder (the
    /// inner error: a tagged NO or BAD, after which the session goes on)
    /// from a failure of the connection (the outer one).
    pub async fn try_examine(&mut self, folder: &str) -> Result<Result<Selected>> {
        self.open("EXAMINE", folder).await
    }

    /// `SELECT folder`.
    pub async fn select(&mut self, folder: &str) -> Result<Selected> {
        self.open("SELECT", folder).await?
    }

    /// Opens `folder`; the inner error is the server's refusal of it.
    async fn open(&mut self, verb: &str, folder: &str) -> Result<Result<Selected>> {
        let command = format!("{verb} {}", quote(&encode_mutf7(folder)));
        let (untagged, done) = self.command(&command).await?;
        if !done.ok() {
            return Ok(Err(folder_error(&self.address, folder, &done)));
        }
        let mut selected = Selected::default();
        for line in &untagged {
            let response = Response::parse(line);
            if let Some(n) = response.number("EXISTS") {
                selected.exists = n;
            }
            match response.code_value() {
                Some(("UIDVALIDITY", n)) => selected.uidvalidity = n,
                Some(("UIDNEXT", n)) => selected.uidnext = n,
                _ => {}
            }
        }
        Ok(Ok(selected))
    }

    /// UIDs of the open folder that are `>= uid` (`UID SEARCH UID uid:*`).
    /// The search also returns the highest message when every UID is lower
    /// (`n:*` means `*:n` then); such UIDs are dropped here. The inner
    /// error is the server's refusal of the search (a tagged NO or BAD),
    /// after which the session goes on; the outer one a failure of the
    /// connection.
    pub async fn uid_search_from(&mut self, uid: u32) -> Result<Result<Vec<u32>>> {
        let (untagged, done) = self.command(&format!("UID SEARCH UID {uid}:*")).await?;
        if !done.ok() {
            return Ok(Err(self.unexpected("UID SEARCH", &done)));
        }
        let mut uids = Vec::new();
        for line in &untagged {
            let response = Response::parse(line);
            if matches!(response.kind, Kind::Untagged(ref w) if w == "SEARCH") {
                uids.extend(
                    response
                        .rest
                        .split_ascii_whitespace()
                        .filter_map(|n| n.parse::<u32>().ok())
                        .filter(|&n| n >= uid),
                );
            }
        }
        Ok(Ok(uids))
    }

    /// `LOGOUT`, waiting at most the timeout; errors are ignored since the
    /// connection is closed either way.
    pub async fn logout(mut self) {
        let _ = self.command("LOGOUT").await;
        let _ = self.io.shutdown().await;
    }

    /// Starts `IDLE`; returns its tag once the server accepted it, and the
    /// untagged responses that came first (servers send pending `EXISTS`
    /// and `EXPUNGE` right there).
    pub(crate) async fn idle_start(&mut self) -> Result<(String, Vec<Vec<u8>>)> {
        let address = self.address.clone();
        let timeout = self.timeout;
        step(timeout, &address, "IDLE", async {
            let tag = self.next_tag();
            self.write(format!("{tag} IDLE\r\n").as_bytes()).await?;
            let (mut untagged, mut kept) = (Vec::new(), 0);
            loop {
                let raw = self.read_response().await?;
                let response = Response::parse(&raw);
                match response.kind {
                    Kind::Continuation => return Ok((tag, untagged)),
                    // It said it supports IDLE (checked before): a refusal
                    // now is taken for a passing one, retried with backoff.
                    Kind::Tagged(ref t) if *t == tag => {
                        return Err(Error::new(
                            ErrorKind::Network,
                            format!("IMAP server {address} refused IDLE: {}", response.text()),
                        ))
                    }
                    // At once, with the server's words: it may keep the
                    // connection open, and waiting would end as a timeout.
                    Kind::Untagged(ref w) if w == "BYE" => return Err(self.bye(&response)),
                    _ => {
                        self.absorb(&response);
                        keep(&mut untagged, &mut kept, raw, &address)?;
                    }
                }
            }
        })
        .await
    }

    /// Ends `IDLE` and waits for its tagged answer; untagged responses in
    /// between are returned.
    pub(crate) async fn idle_done(&mut self, tag: &str) -> Result<Vec<Vec<u8>>> {
        let address = self.address.clone();
        let timeout = self.timeout;
        step(timeout, &address, "IDLE", async {
            self.write(b"DONE\r\n").await?;
            let (mut untagged, mut kept) = (Vec::new(), 0);
            loop {
                let raw = self.read_response().await?;
                let response = Response::parse(&raw);
                match response.kind {
                    Kind::Tagged(ref t) if t == tag => return Ok(untagged),
                    Kind::Untagged(ref w) if w == "BYE" => return Err(self.bye(&response)),
                    _ => keep(&mut untagged, &mut kept, raw, &address)?,
                }
            }
        })
        .await
    }

    /// Sends raw bytes without waiting for anything (used to leave IDLE
    /// and log out at once on cancel).
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let address = self.address.clone();
        let timeout = self.timeout;
        step(timeout, &address, "write", self.write(bytes)).await
    }

    /// Reads the next response, with no timeout (IDLE waits for as long as
    /// the server is silent; the caller bounds it). Cancel-safe: bytes read
    /// before a cancellation stay buffered.
    pub(crate) async fn next_response(&mut self) -> Result<Vec<u8>> {
        self.read_response().await
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("h{}", self.tag)
    }

    /// Runs one command and collects its untagged responses.
    async fn command(&mut self, command: &str) -> Result<(Vec<Vec<u8>>, Done)> {
        let verb = command.split(' ').next().unwrap_or(command).to_owned();
        self.command_named(command, &verb).await
    }

    /// Like [`Session::command`], for a command holding a secret: `name`
    /// is what messages show.
    async fn command_secret(&mut self, command: &str, name: &str) -> Result<Done> {
        Ok(self.command_named(command, name).await?.1)
    }

    async fn command_named(&mut self, command: &str, name: &str) -> Result<(Vec<Vec<u8>>, Done)> {
        let address = self.address.clone();
        let timeout = self.timeout;
        step(timeout, &address, name, async {
            let tag = self.next_tag();
            self.write(format!("{tag} {command}\r\n").as_bytes())
                .await?;
            let (mut untagged, mut kept) = (Vec::new(), 0);
            loop {
                let raw = self.read_response().await?;
                let response = Response::parse(&raw);
                match response.kind {
                    Kind::Tagged(ref t) if *t == tag => return Ok((untagged, response.done())),
                    Kind::Untagged(ref w) if w == "BYE" && name != "LOGOUT" => {
                        return Err(self.bye(&response))
                    }
                    _ => keep(&mut untagged, &mut kept, raw, &address)?,
                }
            }
        })
        .await
    }

    async fn command_ok(&mut self, command: &str) -> Result<()> {
        let (_, done) = self.command(command).await?;
        if done.ok() {
            Ok(())
        } else {
            Err(self.unexpected(command, &done))
        }
    }

    /// Notes what an unrelated response tells (capabilities).
    fn absorb(&mut self, response: &Response) {
        if let Some(caps) = response.capabilities() {
            self.capabilities = caps;
        }
    }

    fn bye(&self, response: &Response) -> Error {
        Error::new(
            ErrorKind::Network,
            format!(
                "IMAP server {} closed the connection: {}",
                self.address,
                response.text()
            ),
        )
    }

    fn unexpected(&self, command: &str, done: &Done) -> Error {
        // A refusal for now (STARTTLS with UNAVAILABLE, say) is retried.
        let kind = match transient(done.code.as_deref()) {
            true => ErrorKind::Network,
            false => ErrorKind::Unknown,
        };
        Error::new(
            kind,
            format!(
                "IMAP server {} answered {command} with {}: {}",
                self.address, done.status, done.text
            ),
        )
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let address = &self.address;
        self.io
            .write_all(bytes)
            .await
            .map_err(|e| network(address, "connection lost", &e))?;
        self.io
            .flush()
            .await
            .map_err(|e| network(address, "connection lost", &e))
    }

    async fn read_with_timeout(&mut self, what: &str) -> Result<Vec<u8>> {
        let address = self.address.clone();
        let timeout = self.timeout;
        step(timeout, &address, what, self.read_response()).await
    }

    /// One complete response (a line plus any literals it announces),
    /// without the final CRLF.
    async fn read_response(&mut self) -> Result<Vec<u8>> {
        loop {
            match complete_response(&self.buf) {
                Ok(Some(end)) => {
                    let mut line: Vec<u8> = self.buf.drain(..end).collect();
                    line.truncate(line.len().saturating_sub(2));
                    return Ok(line);
                }
                Ok(None) => {}
                Err(()) => {
                    return Err(Error::new(
                        ErrorKind::Network,
                        format!("IMAP server {} sent an oversized response", self.address),
                    ))
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self
                .io
                .read(&mut chunk)
                .await
                .map_err(|e| network(&self.address, "connection lost", &e))?;
            if n == 0 {
                return Err(Error::new(
                    ErrorKind::Network,
                    format!("IMAP server {} closed the connection", self.address),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// TCP keepalive of a connection: probes after this long without traffic,
/// then every [`KEEPALIVE_INTERVAL`], given up after [`KEEPALIVE_PROBES`].
const KEEPALIVE_IDLE: libc::c_int = 60;
const KEEPALIVE_INTERVAL: libc::c_int = 20;
const KEEPALIVE_PROBES: libc::c_int = 3;

/// Turns on TCP keepalive: a connection that dies without a word (a NAT
/// that forgot it, a laptop on another network) fails a read within about
/// two minutes, instead of going unnoticed while IDLE waits (up to its
/// renewal, 25 minutes). Best effort: a socket that refuses keeps working.
fn keepalive(tcp: &TcpStream) {
    use std::os::fd::AsRawFd;
    let fd = tcp.as_raw_fd();
    for (level, option, value) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES),
    ] {
        // SAFETY: `fd` is the open socket `tcp` owns; the option value is a
        // c_int on the stack, passed with its size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                option,
                std::ptr::addr_of!(value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Most bytes of untagged responses kept for one command: a server that
/// floods them (it may, until the command's timeout) does not fill memory.
const MAX_UNTAGGED: usize = 8 * 1024 * 1024;

/// Adds `raw` to the untagged responses of a command, within
/// [`MAX_UNTAGGED`].
fn keep(untagged: &mut Vec<Vec<u8>>, kept: &mut usize, raw: Vec<u8>, address: &str) -> Result<()> {
    *kept += raw.len();
    if *kept > MAX_UNTAGGED {
        return Err(Error::new(
            ErrorKind::Network,
            format!(
                "IMAP server {address} sent more than 8 MiB of untagged responses to one command"
            ),
        ));
    }
    untagged.push(raw);
    Ok(())
}

/// Where the first complete response in `buf` ends (after its CRLF), or
/// `None` if more bytes are needed. Literals `{n}` are followed. A
/// response (all its lines and literals together) longer than
/// [`MAX_RESPONSE`] is an error: a server chaining literal after literal
/// would otherwise be buffered without end.
fn complete_response(buf: &[u8]) -> std::result::Result<Option<usize>, ()> {
    let mut pos = 0;
    loop {
        let Some(rel) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
            return if buf.len() > MAX_RESPONSE {
                Err(())
            } else {
                Ok(None)
            };
        };
        let line_end = pos + rel;
        let line = &buf[pos..line_end];
        match literal_len(line) {
            Some(n) => {
                let after = (line_end + 2).saturating_add(n);
                if after > MAX_RESPONSE {
                    return Err(());
                }
                if buf.len() < after {
                    return Ok(None);
                }
                pos = after;
            }
            None if line_end + 2 > MAX_RESPONSE => return Err(()),
            None => return Ok(Some(line_end + 2)),
        }
    }
}

/// The length of a literal announced at the end of a line: `{12}` or `{12+}`.
fn literal_len(line: &[u8]) -> Option<usize> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[derive(Debug, PartialEq)]
enum Kind {
    /// `* WORD ...` (for `* 12 EXISTS` the word is `12`).
    Untagged(String),
    Tagged(String),
    Continuation,
}

/// A response split into its first words; enough for the replies used here.
struct Response {
    kind: Kind,
    /// Everything after the tag/`*` and the first word.
    rest: String,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let text = String::from_utf8_lossy(raw);
        let (first, rest) = split_word(&text);
        if first == "+" {
            return Response {
                kind: Kind::Continuation,
                rest: rest.to_owned(),
            };
        }
        let (word, rest) = split_word(rest);
        let kind = if first == "*" {
            Kind::Untagged(word.to_ascii_uppercase())
        } else {
            Kind::Tagged(first.to_owned())
        };
        let rest = if first == "*" || first == "+" {
            rest.to_owned()
        } else {
            // Tagged: keep the status word in `rest` for done().
            format!("{word} {rest}")
        };
        Response { kind, rest }
    }

    /// For `* 12 EXISTS`: 12 when `name` is EXISTS.
    fn number(&self, name: &str) -> Option<u32> {
        let Kind::Untagged(word) = &self.kind else {
            return None;
        };
        let n = word.parse().ok()?;
        let (next, _) = split_word(&self.rest);
        next.eq_ignore_ascii_case(name).then_some(n)
    }

    /// `[CODE n]` at the start of the text of an untagged OK.
    fn code_value(&self) -> Option<(&'static str, u32)> {
        let (code, _) = response_code(&self.rest)?;
        let (name, value) = split_word(&code);
        let value = value.trim().parse().ok()?;
        ["UIDVALIDITY", "UIDNEXT"]
            .into_iter()
            .find(|n| name.eq_ignore_ascii_case(n))
            .map(|n| (n, value))
    }

    /// Capabilities from `* CAPABILITY ...` or `* OK [CAPABILITY ...]`.
    fn capabilities(&self) -> Option<Vec<String>> {
        match &self.kind {
            Kind::Untagged(word) if word == "CAPABILITY" => Some(words_upper(&self.rest)),
            Kind::Untagged(word) if word == "OK" || word == "PREAUTH" => {
                let (code, _) = response_code(&self.rest)?;
                let (name, caps) = split_word(&code);
                name.eq_ignore_ascii_case("CAPABILITY")
                    .then(|| words_upper(caps))
            }
            _ => None,
        }
    }

    /// Text of an untagged response, without a response code; cleaned for
    /// messages.
    fn text(&self) -> String {
        let text = match response_code(&self.rest) {
            Some((_, after)) => after,
            None => self.rest.clone(),
        };
        clean_text(&text)
    }

    /// The tagged completion.
    fn done(&self) -> Done {
        let (status, text) = split_word(&self.rest);
        let (code, text) = match response_code(text) {
            Some((code, after)) => (Some(code), after),
            None => (None, text.to_owned()),
        };
        Done {
            status: status.to_ascii_uppercase(),
            text: clean_text(&text),
            code: code.map(|c| c.to_ascii_uppercase()),
        }
    }
}

fn done_capabilities(done: &Done) -> Option<Vec<String>> {
    let code = done.code.as_deref()?;
    let (name, caps) = split_word(code);
    (name == "CAPABILITY").then(|| words_upper(caps))
}

/// `[CODE args] text` → (`CODE args`, `text`).
fn response_code(text: &str) -> Option<(String, String)> {
    let inner = text.trim_start().strip_prefix('[')?;
    let close = inner.find(']')?;
    Some((
        inner[..close].to_owned(),
        inner[close + 1..].trim_start().to_owned(),
    ))
}

fn split_word(text: &str) -> (&str, &str) {
    match text.split_once(' ') {
        Some((a, b)) => (a, b),
        None => (text, ""),
    }
}

fn words_upper(text: &str) -> Vec<String> {
    text.split_ascii_whitespace()
        .map(|w| w.to_ascii_uppercase())
        .collect()
}

/// Server text for a one-line message: no control characters, bounded.
fn clean_text(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    cleaned.trim().to_owned()
}

/// A reader over one response for the structured parts (LIST, STATUS).
struct Cursor<'a> {
    raw: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(raw: &'a [u8]) -> Self {
        Cursor { raw, pos: 0 }
    }

    fn skip_spaces(&mut self) {
        while self.raw.get(self.pos) == Some(&b' ') {
            self.pos += 1;
        }
    }

    fn expect_word(&mut self, word: &str) -> Option<()> {
        self.skip_spaces();
        let end = self.pos + word.len();
        let got = self.raw.get(self.pos..end)?;
        if !got.eq_ignore_ascii_case(word.as_bytes()) {
            return None;
        }
        self.pos = end;
        Some(())
    }

    fn peek(&self) -> Option<u8> {
        self.raw.get(self.pos).copied()
    }

    /// An atom, quoted string or literal; `NIL` is `None` inside `Some`.
    fn string(&mut self) -> Option<Option<Vec<u8>>> {
        self.skip_spaces();
        match self.peek()? {
            b'"' => {
                self.pos += 1;
                let mut out = Vec::new();
                loop {
                    let b = self.peek()?;
                    self.pos += 1;
                    match b {
                        b'\\' => {
                            out.push(self.peek()?);
                            self.pos += 1;
                        }
                        b'"' => return Some(Some(out)),
                        b => out.push(b),
                    }
                }
            }
            b'{' => {
                let close = self.raw[self.pos..].iter().position(|&b| b == b'}')? + self.pos;
                let n = literal_len(&self.raw[self.pos..=close])?;
                let start = close + 3; // "}\r\n"
                let end = start.checked_add(n)?;
                let data = self.raw.get(start..end)?.to_vec();
                self.pos = end;
                Some(Some(data))
            }
            _ => {
                let start = self.pos;
                while let Some(b) = self.peek() {
                    if b == b' ' || b == b')' || b == b'(' {
                        break;
                    }
                    self.pos += 1;
                }
                let atom = &self.raw[start..self.pos];
                if atom.is_empty() {
                    return None;
                }
                if atom.eq_ignore_ascii_case(b"NIL") {
                    return Some(None);
                }
                Some(Some(atom.to_vec()))
            }
        }
    }

    /// A parenthesized list of atoms/strings (no nesting needed here).
    fn list(&mut self) -> Option<Vec<Vec<u8>>> {
        self.skip_spaces();
        if self.peek()? != b'(' {
            return None;
        }
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_spaces();
            if self.peek()? == b')' {
                self.pos += 1;
                return Some(items);
            }
            items.push(self.string()?.unwrap_or_default());
        }
    }
}

/// `* LIST (attrs) "/" name`.
fn parse_list(raw: &[u8]) -> Option<ListEntry> {
    let mut c = Cursor::new(raw);
    c.expect_word("*")?;
    c.expect_word("LIST")?;
    let attributes = c
        .list()?
        .into_iter()
        .map(|a| String::from_utf8_lossy(&a).into_owned())
        .collect();
    let delimiter = c
        .string()?
        .and_then(|d| String::from_utf8_lossy(&d).chars().next());
    let name = String::from_utf8_lossy(&c.string()??).into_owned();
    Some(ListEntry {
        name,
        delimiter,
        attributes,
    })
}

/// `* STATUS name (MESSAGES 3 UIDNEXT 4 ...)` → (wire name, counters).
fn parse_status(raw: &[u8]) -> Option<(String, FolderStatus)> {
    let mut c = Cursor::new(raw);
    c.expect_word("*")?;
    c.expect_word("STATUS")?;
    let name = String::from_utf8_lossy(&c.string()??).into_owned();
    let items = c.list()?;
    let mut status = FolderStatus::default();
    for pair in items.chunks(2) {
        let [key, value] = pair else { break };
        let value: u32 = std::str::from_utf8(value).ok()?.parse().ok()?;
        match key.to_ascii_uppercase().as_slice() {
            b"MESSAGES" => status.messages = value,
            b"UIDNEXT" => status.uidnext = value,
            b"UNSEEN" => status.unseen = value,
            b"UIDVALIDITY" => status.uidvalidity = value,
            _ => {}
        }
    }
    Some((name, status))
}

/// Folder names compare exactly, except INBOX which is case-insensitive.
fn same_folder(a: &str, b: &str) -> bool {
    a == b || (a.eq_ignore_ascii_case("INBOX") && b.eq_ignore_ascii_case("INBOX"))
}

/// A quoted IMAP string.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Runs `fut`, turning silence past `limit` into a Timeout error.
async fn step<T>(
    limit: Duration,
    address: &str,
    what: &str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "IMAP server {address} did not answer within {} ({what})",
                human(limit)
            ),
        )),
    }
}

/// A greeting that never came on port 993 without TLS: the server waits for
/// a TLS hello, the client for the greeting. That is the account's SSLType
/// to fix, as the mbsync runs say too, not a server to retry.
fn no_greeting(e: Error, port: u16, security: Security) -> Error {
    if e.kind == ErrorKind::Timeout && port == 993 && security != Security::Tls {
        Error::new(
            ErrorKind::Config,
            format!("{e}: the account does not start TLS ({IMAPS_PORT_ADVICE})"),
        )
    } else {
        e
    }
}

fn human(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn network(address: &str, what: &str, err: &std::io::Error) -> Error {
    let text = err.to_string();
    let reason = text.split(" (os error").next().unwrap_or(&text);
    Error::new(
        ErrorKind::Network,
        format!("IMAP server {address}: {what}: {reason}"),
    )
}

/// Certificate problems need the user (CertificateFile, host name): Config.
/// Any other handshake failure is the network's.
fn tls_error(address: &str, err: &std::io::Error) -> Error {
    let certificate = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        });
    if certificate {
        Error::new(
            ErrorKind::Config,
            format!(
                "IMAP server {address}: TLS certificate not trusted ({}); check Host or CertificateFile",
                clean_text(&err.to_string())
            ),
        )
    } else {
        network(address, "TLS handshake failed", err)
    }
}

/// Whether a NO carrying response `code` (RFC 5530) is worth trying again
/// later: the server is busy or broken for now (`UNAVAILABLE`, `SERVERBUG`),
/// too many connections are open (`LIMIT`), or the folder is in use
/// (`INUSE`). Kind Network, so that IDLE and syncs retry with backoff
/// instead of giving up for good.
fn transient(code: Option<&str>) -> bool {
    matches!(code, Some("UNAVAILABLE" | "SERVERBUG" | "LIMIT" | "INUSE"))
}

/// NO/BAD to STATUS/EXAMINE/SELECT: a missing folder is the configuration's
/// fault (Config, naming it); other refusals keep the server's words.
fn folder_error(address: &str, folder: &str, done: &Done) -> Error {
    let kind = match transient(done.code.as_deref()) {
        true => ErrorKind::Network,
        false => ErrorKind::Config,
    };
    Error::new(
        kind,
        format!("IMAP folder '{folder}' on {address}: {}", done.text),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_paths_follow_the_openssl_variables() {
        let some = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(
            root_paths(some("/x/ca.pem"), None),
            Some((Some(PathBuf::from("/x/ca.pem")), Vec::new()))
        );
        assert_eq!(
            root_paths(None, some("/a::/b")),
            Some((None, vec![PathBuf::from("/a"), PathBuf::from("/b")]))
        );
        // Unset or empty: the system's folders (this test runs on Linux).
        let (file, dirs) = root_paths(None, some("")).expect("Linux");
        assert_eq!(file, None);
        assert!(dirs.contains(&PathBuf::from("/etc/ssl/certs")), "{dirs:?}");
        assert_eq!(root_paths(None, None), Some((None, dirs)));
    }

    #[test]
    fn xoauth2_initial_response() {
        let encoded = xoauth2_response("me@example.org", "ya29.tok");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(raw, b"user=me@example.org\x01auth=Bearer ya29.tok\x01\x01");
    }

    #[tokio::test]
    async fn an_account_without_pass_or_passcmd_is_a_config_error() {
        let rc = crate::mbsync::config::MbsyncConfig::parse(
            "IMAPAccount work\nHost 127.0.0.1\nUser me\nSSLType None\n",
            std::path::Path::new("/rc"),
        )
        .unwrap();
        let c = Connection::from_account(&rc.imap_accounts[0]).unwrap();
        let e = c.password().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert_eq!(
            e.message,
            "IMAP account \"work\" has no Pass or PassCmd, and nobody can type a password in \
             here (give it a PassCmd, the command of a password manager or keyring that prints \
             it, or a Pass)"
        );
    }

    #[test]
    fn no_greeting_on_port_993_without_tls_is_a_config_error() {
        let timeout = || {
            Error::new(
                ErrorKind::Timeout,
                "IMAP server h:993 did not answer within 3s (greeting)",
            )
        };
        let e = no_greeting(timeout(), 993, Security::StartTls);
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(e.message.contains("set SSLType IMAPS"), "{e}");
        assert_eq!(
            no_greeting(timeout(), 993, Security::Tls).kind,
            ErrorKind::Timeout
        );
        assert_eq!(
            no_greeting(timeout(), 143, Security::None).kind,
            ErrorKind::Timeout
        );
    }

    #[tokio::test]
    async fn another_kind_of_server_is_a_config_error() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut peer, _) = listener.accept().await.unwrap();
            let _ = peer.write_all(b"SSH-2.0-OpenSSH_9.2p1\r\n").await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let rc = crate::mbsync::config::MbsyncConfig::parse(
            &format!("IMAPAccount a\nHost 127.0.0.1\nPort {port}\nUser u\nPass p\nSSLType None\n"),
            std::path::Path::new("/rc"),
        )
        .unwrap();
        let c = Connection::from_account(&rc.imap_accounts[0]).unwrap();
        let e = c.connect().await.expect_err("no session");
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(
            e.message
                .contains("did not greet like an IMAP server (check Host and Port"),
            "{e}"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(r#"a "b" \c"#), r#""a \"b\" \\c""#);
    }

    #[tokio::test]
    async fn connections_probe_a_silent_peer() {
        use std::os::fd::AsRawFd;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        keepalive(&tcp);
        let get = |level, option| {
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: reads one c_int option of the open socket into `value`.
            let rc = unsafe {
                libc::getsockopt(
                    tcp.as_raw_fd(),
                    level,
                    option,
                    std::ptr::addr_of_mut!(value).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0);
            value
        };
        assert_eq!(get(libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), KEEPALIVE_IDLE);
        assert_eq!(
            get(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
            KEEPALIVE_INTERVAL
        );
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPCNT), KEEPALIVE_PROBES);
    }

    #[test]
    fn untagged_responses_of_one_command_are_bounded() {
        let (mut untagged, mut kept) = (Vec::new(), 0);
        let line = vec![b'*'; 1024 * 1024];
        for _ in 0..8 {
            keep(&mut untagged, &mut kept, line.clone(), "h:143").unwrap();
        }
        let e = keep(&mut untagged, &mut kept, b"* OK".to_vec(), "h:143").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Network);
        assert!(e.message.contains("more than 8 MiB"), "{e}");
    }

    #[test]
    fn responses_and_literals() {
        assert_eq!(complete_response(b"* OK hi\r\nrest"), Ok(Some(9)));
        assert_eq!(complete_response(b"* OK hi"), Ok(None));
        let lit = b"* LIST () \"/\" {3}\r\na b\r\nnext";
        assert_eq!(complete_response(lit), Ok(Some(lit.len() - 4)));
        assert_eq!(complete_response(b"* LIST () \"/\" {3}\r\na"), Ok(None));
        // Literal after literal: the whole response counts against the cap.
        let mut chained = Vec::new();
        let part = vec![b'x'; 6 * 1024 * 1024];
        for _ in 0..3 {
            chained.extend_from_slice(format!(" {{{}}}\r\n", part.len()).as_bytes());
            chained.extend_from_slice(&part);
        }
        chained.splice(0..0, b"* 1 FETCH (BODY[]".iter().copied());
        assert_eq!(complete_response(&chained), Err(()));
        let two = &chained[..chained.len() - part.len() - 20];
        assert_eq!(
            complete_response(two),
            Ok(None),
            "12 MiB so far: still fine"
        );
        let entry = parse_list(b"* LIST () \"/\" {3}\r\na b").unwrap();
        assert_eq!(entry.name, "a b");
        let entry =
            parse_list(br#"* LIST (\HasNoChildren \Noselect) "/" "Work/Caf&AOk-""#).unwrap();
        assert_eq!(entry.name, "Work/Caf&AOk-");
        assert_eq!(entry.delimiter, Some('/'));
        assert!(!entry.selectable());
        let entry = parse_list(br#"* LIST () NIL INBOX"#).unwrap();
        assert_eq!((entry.name.as_str(), entry.delimiter), ("INBOX", None));
    }

    #[test]
    fn status_and_codes() {
        let (name, st) =
            parse_status(br#"* STATUS "Sent" (MESSAGES 4 UIDNEXT 5 UNSEEN 2 UIDVALIDITY 77)"#)
                .unwrap();
        assert_eq!(name, "Sent");
        assert_eq!(
            st,
            FolderStatus {
                messages: 4,
                uidnext: 5,
                unseen: 2,
                uidvalidity: 77
            }
        );
        let r = Response::parse(b"* OK [UIDVALIDITY 123] UIDs valid");
        assert_eq!(r.code_value(), Some(("UIDVALIDITY", 123)));
        let r = Response::parse(b"* 12 EXISTS");
        assert_eq!(r.number("EXISTS"), Some(12));
        let r = Response::parse(b"h3 NO [AUTHENTICATIONFAILED] Authentication failed.");
        let done = r.done();
        assert_eq!(done.status, "NO");
        assert_eq!(done.code.as_deref(), Some("AUTHENTICATIONFAILED"));
        assert_eq!(done.text, "Authentication failed.");
        let r = Response::parse(b"* OK [CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN] ready");
        assert_eq!(
            r.capabilities().unwrap(),
            ["IMAP4REV1", "IDLE", "AUTH=PLAIN"]
        );
    }

    #[test]
    fn from_account_and_redaction() {
        let config = crate::mbsync::config::MbsyncConfig::parse(
            "IMAPAccount a\nHost h.example\nUser u\nPass hunter2\nSSLType IMAPS\nAuthMechs plain\n",
            std::path::Path::new("/x"),
        )
        .unwrap();
        let conn = Connection::from_account(&config.imap_accounts[0]).unwrap();
        assert_eq!(conn.port, 993);
        assert_eq!(conn.security, Security::Tls);
        assert_eq!(conn.auth_mechs, ["PLAIN"]);
        assert!(conn.allows("PLAIN") && !conn.allows("LOGIN"));
        assert!(!format!("{conn:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn pass_cmd_first_line_and_failures() {
        let p = run_pass_cmd("+printf 'one\\ntwo\\n'", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(p, Password::new("one"));
        let err = run_pass_cmd("echo secret; exit 3", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Auth);
        assert!(!err.message.contains("secret"));
        let err = run_pass_cmd("sleep 5", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout);
    }
}
