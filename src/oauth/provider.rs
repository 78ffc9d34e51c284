//! OAuth2 providers: Google, Microsoft, generic; client credentials.
//!
//! A [`ProviderSpec`] is what the configuration says. [`Provider::resolve`]
//! checks it and fills in what a well-known provider implies (endpoints,
//! scopes, extra authorization parameters), so that the flows in
//! [`super::flow`] never see an unchecked URL. Errors name the spec field
//! (`tenant`, `token_url`, ...); the caller prefixes the account path.
//!
//! Resolving never runs a command: a [`ClientSecret::Command`] or
//! [`ClientSecret::Env`] is only read when a flow needs the secret, through
//! [`ClientSecret::resolve`].

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use oauth2::url::Url;

use crate::error::{Error, ErrorKind, Result};

/// How long a `client_secret` command may run before it is killed.
pub(crate) const SECRET_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time allowed to open a connection to a provider endpoint.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time allowed for one whole request to a provider endpoint.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

const GOOGLE_AUTH_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const GOOGLE_DEVICE_URL: &str = "https://oauth2.googleapis.com/device/code";
const GOOGLE_SCOPE: &str = "https://mail.google.com/";
/// Where the original plugin read Google client credentials from.
const GMAIL_CLIENT_ID_ENV: &str = "GMAIL_CLIENT_ID";
const GMAIL_CLIENT_SECRET_ENV: &str = "GMAIL_CLIENT_SECRET";

const MICROSOFT_LOGIN: &str = "https://login.microsoftonline.com";
const MICROSOFT_SCOPES: [&str; 2] = [
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "offline_access",
];

/// Where the OAuth2 client secret comes from. Debug output never shows the
/// secret or the command that prints it.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum ClientSecret {
    /// A public client: no secret is sent.
    #[default]
    None,
    /// The secret itself, from the configuration.
    Literal(String),
    /// The name of an environment variable holding the secret.
    Env(String),
    /// A shell command (`sh -c`) whose first line of output is the secret.
    Command(String),
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientSecret::None => f.write_str("None"),
            ClientSecret::Literal(_) => f.write_str("Literal(<redacted>)"),
            ClientSecret::Env(name) => f.debug_tuple("Env").field(name).finish(),
            ClientSecret::Command(_) => f.write_str("Command(<redacted>)"),
        }
    }
}

impl ClientSecret {
    /// Reads the secret: `None` for a public client. Blocks while a command
    /// runs (at most 10 s, or until `stop`); async callers use
    /// [`crate::command::off_thread`].
    pub fn resolve(&self, stop: Option<&AtomicBool>) -> Result<Option<String>> {
        match self {
            ClientSecret::None => Ok(None),
            ClientSecret::Literal(s) => Ok(Some(s.clone())),
            ClientSecret::Env(name) => match crate::env::var(name) {
                Some(v) if !v.is_empty() => Ok(Some(v)),
                _ => Err(Error::new(
                    ErrorKind::Config,
                    format!("client_secret: environment variable {name} is not set"),
                )),
            },
            ClientSecret::Command(cmd) => {
                run_secret_command(cmd, SECRET_COMMAND_TIMEOUT, stop).map(Some)
            }
        }
    }
}

/// Runs the client-secret command: the first line of its output.
fn run_secret_command(cmd: &str, timeout: Duration, stop: Option<&AtomicBool>) -> Result<String> {
    crate::command::first_line("the client_secret command", cmd, timeout, stop).map_err(|e| {
        let kind = match e.kind {
            ErrorKind::Timeout => ErrorKind::Timeout,
            _ => ErrorKind::Config,
        };
        Error::new(kind, format!("client_secret: {}", e.message))
    })
}

/// The provider part of an account's configuration, as written by the user.
///
/// `kind` is `"google"`, `"microsoft"` or `"generic"`. For Google and
/// Microsoft the URLs and scopes are optional overrides of the well-known
/// values; for `generic`, `token_url` is required.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderSpec {
    pub kind: String,
    /// Microsoft only: `common` (default), `organizations`, `consumers`, a
    /// tenant GUID or a domain.
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: ClientSecret,
    pub auth_url: Option<String>,
    pub token_url: Option<String>,
    pub device_url: Option<String>,
    pub scopes: Option<Vec<String>>,
    /// Port of the loopback redirect listener; ephemeral when `None`.
    pub redirect_port: Option<u16>,
}

/// Which well-known provider a [`Provider`] was resolved as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Google,
    Microsoft,
    Generic,
}

/// A checked provider: every URL parsed and http(s), a client id present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    kind: ProviderKind,
    client_id: String,
    client_secret: ClientSecret,
    auth_url: Option<Url>,
    token_url: Url,
    device_url: Option<Url>,
    scopes: Vec<String>,
    auth_params: Vec<(String, String)>,
    redirect_port: Option<u16>,
    connect_timeout: Duration,
    timeout: Duration,
}

impl Provider {
    /// Checks `spec` and fills in the well-known values for its kind. Reads
    /// `GMAIL_CLIENT_ID` / `GMAIL_CLIENT_SECRET` for a Google spec that lacks
    /// them.
    pub fn resolve(spec: &ProviderSpec) -> Result<Provider> {
        Self::resolve_with_env(spec, &|name| crate::env::var(name))
    }

    /// [`Provider::resolve`] with the environment looked up through `env`.
    pub fn resolve_with_env(
        spec: &ProviderSpec,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Provider> {
        let kind = match spec.kind.trim() {
            "google" => ProviderKind::Google,
            "microsoft" => ProviderKind::Microsoft,
            "generic" => ProviderKind::Generic,
            other => {
                return Err(config(format!(
                    "kind: unknown provider {other:?} (expected google, microsoft or generic)"
                )))
            }
        };
        if kind != ProviderKind::Microsoft && spec.tenant.is_some() {
            return Err(config("tenant: only a microsoft provider has a tenant"));
        }
        let non_empty = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        let mut client_id = non_empty(&spec.client_id);
        let mut client_secret = spec.client_secret.clone();
        let defaults = match kind {
            ProviderKind::Google => {
                if client_id.is_none() {
                    client_id = env(GMAIL_CLIENT_ID_ENV).filter(|s| !s.trim().is_empty());
                }
                if client_secret == ClientSecret::None {
                    if env(GMAIL_CLIENT_SECRET_ENV).is_some_and(|s| !s.is_empty()) {
                        client_secret = ClientSecret::Env(GMAIL_CLIENT_SECRET_ENV.into());
                    } else {
                        return Err(config(format!(
                                "client_secret: Google needs a client secret (set client_secret or {GMAIL_CLIENT_SECRET_ENV})"
                            )));
                    }
                }
                Defaults {
                    auth: GOOGLE_AUTH_URL.into(),
                    token: GOOGLE_TOKEN_URL.into(),
                    device: GOOGLE_DEVICE_URL.into(),
                    scopes: vec![GOOGLE_SCOPE],
                    // Without these Google issues no refresh token on a
                    // second authorization of the same client.
                    auth_params: vec![("access_type", "offline"), ("prompt", "consent")],
                }
            }
            ProviderKind::Microsoft => {
                let tenant = non_empty(&spec.tenant).unwrap_or_else(|| "common".into());
                check_tenant(&tenant)?;
                let base = format!("{MICROSOFT_LOGIN}/{tenant}/oauth2/v2.0");
                Defaults {
                    auth: format!("{base}/authorize"),
                    token: format!("{base}/token"),
                    device: format!("{base}/devicecode"),
                    scopes: MICROSOFT_SCOPES.to_vec(),
                    auth_params: Vec::new(),
                }
            }
            ProviderKind::Generic => Defaults::default(),
        };
        let client_id = client_id.ok_or_else(|| {
            if kind == ProviderKind::Google {
                config(format!(
                    "client_id: not set (set client_id or {GMAIL_CLIENT_ID_ENV})"
                ))
            } else {
                config("client_id: not set")
            }
        })?;
        let generic = kind == ProviderKind::Generic;
        let pick = |field: &str, given: &Option<String>, default: String| -> Result<Option<Url>> {
            match non_empty(given) {
                Some(u) => check_url(field, &u).map(Some),
                None if generic => Ok(None),
                None => check_url(field, &default).map(Some),
            }
        };
        let auth_url = pick("auth_url", &spec.auth_url, defaults.auth)?;
        let token_url = pick("token_url", &spec.token_url, defaults.token)?
            .ok_or_else(|| config("token_url: not set (a generic provider needs it)"))?;
        let device_url = pick("device_url", &spec.device_url, defaults.device)?;
        let scopes = match &spec.scopes {
            Some(list) => {
                if let Some(bad) = list
                    .iter()
                    .find(|s| s.is_empty() || s.contains(char::is_whitespace))
                {
                    return Err(config(format!("scopes: {bad:?} is not a single scope")));
                }
                list.clone()
            }
            None => defaults.scopes.into_iter().map(String::from).collect(),
        };
        Ok(Provider {
            kind,
            client_id,
            client_secret,
            auth_url,
            token_url,
            device_url,
            scopes,
            auth_params: defaults
                .auth_params
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            redirect_port: spec.redirect_port,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Sets the time allowed to connect and for each whole request
    /// (defaults: 10 s and 30 s).
    pub fn with_timeouts(mut self, connect: Duration, overall: Duration) -> Provider {
        self.connect_timeout = connect;
        self.timeout = overall;
        self
    }

    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn client_secret(&self) -> &ClientSecret {
        &self.client_secret
    }

    /// The authorization endpoint; `None` for a generic provider without one.
    pub fn auth_url(&self) -> Option<&Url> {
        self.auth_url.as_ref()
    }

    pub fn token_url(&self) -> &Url {
        &self.token_url
    }

    /// The device authorization endpoint; `None` for a generic provider
    /// without one.
    pub fn device_url(&self) -> Option<&Url> {
        self.device_url.as_ref()
    }

    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// Extra query parameters for the authorization URL.
    pub fn auth_params(&self) -> &[(String, String)] {
        &self.auth_params
    }

    pub fn redirect_port(&self) -> Option<u16> {
        self.redirect_port
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// What a well-known provider implies; empty for a generic one.
#[derive(Default)]
struct Defaults {
    auth: String,
    token: String,
    device: String,
    scopes: Vec<&'static str>,
    auth_params: Vec<(&'static str, &'static str)>,
}

fn config(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, msg)
}

/// Accepts an absolute http(s) URL with a host and no credentials. The value
/// is not echoed: a URL may carry a password.
fn check_url(field: &str, value: &str) -> Result<Url> {
    let url = Url::parse(value).map_err(|e| config(format!("{field}: not a valid URL ({e})")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(config(format!(
            "{field}: scheme {:?} is not allowed (use http or https)",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(config(format!("{field}: the URL has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(config(format!(
            "{field}: the URL must not contain a user name or password"
        )));
    }
    Ok(url)
}

/// A Microsoft tenant: one of the three special names, a GUID or a domain.
fn check_tenant(tenant: &str) -> Result<()> {
    let t = tenant.to_ascii_lowercase();
    if matches!(t.as_str(), "common" | "organizations" | "consumers")
        || is_guid(&t)
        || is_domain(&t)
    {
        Ok(())
    } else {
        Err(config(format!(
            "tenant: {tenant:?} is not common, organizations, consumers, a tenant GUID or a domain"
        )))
    }
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_domain(s: &str) -> bool {
    s.len() <= 253
        && s.contains('.')
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str) -> ProviderSpec {
        ProviderSpec {
            kind: kind.into(),
            client_id: Some("id".into()),
            client_secret: ClientSecret::Literal("s3cret".into()),
            ..Default::default()
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn google_defaults() {
        let p = Provider::resolve_with_env(&spec("google"), &no_env).unwrap();
        assert_eq!(p.kind(), ProviderKind::Google);
        assert_eq!(p.token_url().as_str(), GOOGLE_TOKEN_URL);
        assert_eq!(p.auth_url().unwrap().as_str(), GOOGLE_AUTH_URL);
        assert_eq!(p.device_url().unwrap().as_str(), GOOGLE_DEVICE_URL);
        assert_eq!(p.scopes(), [GOOGLE_SCOPE.to_string()]);
        assert!(p
            .auth_params()
            .iter()
            .any(|(k, v)| k == "access_type" && v == "offline"));
    }

    #[test]
    fn google_env_fallback() {
        let env = |name: &str| match name {
            "GMAIL_CLIENT_ID" => Some("env-id".to_string()),
            "GMAIL_CLIENT_SECRET" => Some("env-secret".to_string()),
            _ => None,
        };
        let s = ProviderSpec {
            kind: "google".into(),
            ..Default::default()
        };
        let p = Provider::resolve_with_env(&s, &env).unwrap();
        assert_eq!(p.client_id(), "env-id");
        assert_eq!(
            p.client_secret(),
            &ClientSecret::Env("GMAIL_CLIENT_SECRET".into())
        );
        let err = Provider::resolve_with_env(&s, &no_env).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.starts_with("client_secret:"), "{}", err.message);
    }

    #[test]
    fn microsoft_tenants() {
        let mut s = spec("microsoft");
        let p = Provider::resolve_with_env(&s, &no_env).unwrap();
        assert_eq!(
            p.token_url().as_str(),
            "https://login.microsoftonline.com/common/oauth2/v2.0/token"
        );
        assert_eq!(
            p.device_url().unwrap().as_str(),
            "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode"
        );
        assert!(p.scopes().contains(&"offline_access".to_string()));
        for ok in [
            "organizations",
            "consumers",
            "contoso.onmicrosoft.com",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
        ] {
            s.tenant = Some(ok.into());
            let p = Provider::resolve_with_env(&s, &no_env).unwrap();
            assert!(p.auth_url().unwrap().as_str().contains(ok), "{ok}");
        }
        for bad in [
            "../x",
            "a b",
            "x/y",
            "nodots",
            "-bad.com",
            "72f988bf-86f1-41af-91ab",
        ] {
            s.tenant = Some(bad.into());
            let err = Provider::resolve_with_env(&s, &no_env).unwrap_err();
            assert!(err.message.starts_with("tenant:"), "{bad}: {}", err.message);
        }
    }

    #[test]
    fn generic_needs_token_url_and_checks_urls() {
        let mut s = spec("generic");
        let err = Provider::resolve_with_env(&s, &no_env).unwrap_err();
        assert!(err.message.starts_with("token_url:"), "{}", err.message);
        s.token_url = Some("http://127.0.0.1:1/token".into());
        let p = Provider::resolve_with_env(&s, &no_env).unwrap();
        assert!(p.auth_url().is_none() && p.device_url().is_none());
        assert!(p.scopes().is_empty());
        for (field, bad) in [
            ("auth_url", "ftp://x/y"),
            ("device_url", "not a url"),
            ("auth_url", "https://user:pw@host/"),
        ] {
            let mut s = s.clone();
            if field == "auth_url" {
                s.auth_url = Some(bad.into());
            } else {
                s.device_url = Some(bad.into());
            }
            let err = Provider::resolve_with_env(&s, &no_env).unwrap_err();
            assert!(err.message.starts_with(field), "{}", err.message);
            assert!(!err.message.contains("pw"), "{}", err.message);
        }
    }

    #[test]
    fn bad_kind_scope_and_stray_tenant() {
        let err = Provider::resolve_with_env(&spec("yahoo"), &no_env).unwrap_err();
        assert!(err.message.starts_with("kind:"));
        let mut s = spec("google");
        s.tenant = Some("common".into());
        assert!(Provider::resolve_with_env(&s, &no_env)
            .unwrap_err()
            .message
            .starts_with("tenant:"));
        let mut s = spec("google");
        s.scopes = Some(vec!["a b".into()]);
        assert!(Provider::resolve_with_env(&s, &no_env)
            .unwrap_err()
            .message
            .starts_with("scopes:"));
    }

    #[test]
    fn secret_sources_and_redaction() {
        assert_eq!(ClientSecret::None.resolve(None).unwrap(), None);
        let lit = ClientSecret::Literal("hunter2".into());
        assert_eq!(lit.resolve(None).unwrap().as_deref(), Some("hunter2"));
        let cmd = ClientSecret::Command("printf 'hunter2\\nmore\\n'".into());
        assert_eq!(cmd.resolve(None).unwrap().as_deref(), Some("hunter2"));
        for s in [&lit, &cmd] {
            assert!(!format!("{s:?}").contains("hunter2"));
        }
        let p = Provider::resolve_with_env(&spec("google"), &no_env).unwrap();
        assert!(!format!("{p:?}").contains("s3cret"));
        let err = ClientSecret::Command("exit 3".into())
            .resolve(None)
            .unwrap_err();
        assert!(err.message.starts_with("client_secret:"));
        let err = ClientSecret::Env("HIMALAYA_SYNC_TEST_UNSET_VAR".into())
            .resolve(None)
            .unwrap_err();
        assert!(err.message.contains("HIMALAYA_SYNC_TEST_UNSET_VAR"));
    }
}
