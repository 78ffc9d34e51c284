//! OAuth2 tokens: storage, providers, flows and refresh.
//!
//! [`Tokens`] is the one entry point used by the editor glue, the sync
//! manager and the token command alike:
//!
//! * a cached access token that does not expire within the account's margin
//!   is returned at once;
//! * otherwise one process at a time refreshes it, under the named lock
//!   `oauth-<account>` from [`crate::lock`]. Whoever waited re-reads the
//!   store first and finds the fresh token instead of refreshing again (a
//!   second refresh could invalidate a refresh token the first one rotated);
//! * every new refresh token is saved the moment it arrives;
//! * `invalid_grant` becomes an `auth` error saying "re-authorization
//!   needed", with the provider's own text; network trouble retries with
//!   backoff, then keeps the old token while it is still valid, for a
//!   caller asking for a valid token (a forced refresh reports it).
//!
//! No token or secret ever enters an error message or a log line: errors
//! from other programs are passed through [`token::Token::redact`].

pub mod account;
pub mod flow;
pub mod provider;
pub mod store;
pub mod token;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

use crate::command::{off_thread, off_thread_finishing, off_thread_stoppable};
use crate::error::{Error, ErrorKind, Result};
use crate::lock::{LockDir, LockGuard};
use account::AccountSettings;
use provider::Provider;
use store::TokenStore;
use token::Token;

/// Attempts at a refresh that fails with a network error or a timeout.
const REFRESH_ATTEMPTS: u32 = 3;

/// First pause between refresh attempts; doubles each time.
const REFRESH_BACKOFF: Duration = Duration::from_millis(500);

/// The longest a refresh script may run.
const REFRESH_CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest the engine takes to answer operation `op` (as the editor
/// names it) for `acct`, each step at its own limit; None for `authorize`,
/// which waits for the user. A caller waiting for the answer waits longer
/// than this, so that the engine's own, precise error comes first.
pub fn answer_limit(acct: &AccountSettings, op: &str) -> Option<Duration> {
    match op {
        // The lock wait, three store operations (the load before the lock,
        // the load under it, the save or the load after a script that
        // stored the token itself) and the refresh: the script, or the
        // client secret command and every attempt at the provider with the
        // pauses between them.
        "token" | "refresh" => {
            let refresh = match acct.refresh_cmd {
                Some(_) => REFRESH_CMD_TIMEOUT,
                None => {
                    let pauses: Duration = (0..REFRESH_ATTEMPTS - 1)
                        .map(|n| REFRESH_BACKOFF * 2u32.pow(n))
                        .sum();
                    provider::SECRET_COMMAND_TIMEOUT
                        + provider::DEFAULT_TIMEOUT * REFRESH_ATTEMPTS
                        + pauses
                }
            };
            Some(acct.wait() + store::OPERATION_LIMIT * 3 + refresh)
        }
        "store" | "clear" | "status" => Some(store::OPERATION_LIMIT),
        _ => None,
    }
}

/// Unix seconds now (0 if the clock is before 1970).
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What the last refresh in this process did, per account.
#[derive(Clone, Default)]
struct Recent {
    last_refresh: Option<i64>,
    last_error: Option<LastError>,
}

/// The last error of an account: kind, redacted text, time.
#[derive(Clone, Serialize)]
pub struct LastError {
    pub kind: ErrorKind,
    pub message: String,
    pub time: i64,
}

/// An account's token state, safe to show: never the token itself.
#[derive(Clone, Serialize)]
pub struct Status {
    pub account: String,
    pub provider: Option<String>,
    pub store: String,
    pub has_token: bool,
    pub has_refresh_token: bool,
    /// Seconds until the access token expires (negative: expired).
    pub expires_in: Option<i64>,
    /// When the stored token was obtained (unix seconds).
    pub obtained_at: Option<i64>,
    pub last_refresh: Option<i64>,
    pub last_error: Option<LastError>,
    /// Why the store could not be read, when it could not.
    pub store_error: Option<String>,
}

/// How `authorize` asks the user to approve access.
pub enum Authorize {
    /// Authorization code with PKCE: the URL to open goes to `on_url`.
    Browser(flow::CodeOptions),
    /// Device code (RFC 8628): `on_code` gets the user code, the page where
    /// to enter it and the seconds it stays valid.
    Device(flow::DeviceOptions),
}

/// Token operations for every OAuth account. A clone shares everything
/// with the original (a provider refresh runs on such a clone, see
/// [`Tokens::refresh_locked`]).
#[derive(Clone)]
pub struct Tokens {
    locks: Arc<LockDir>,
    state_dir: PathBuf,
    recent: Arc<Mutex<HashMap<String, Recent>>>,
}

/// What a `refresh_cmd` gave.
enum Refreshed {
    /// A token it printed, not saved yet.
    Printed(Token),
    /// The token it saved itself.
    Stored(Token),
}

impl Tokens {
    pub fn new(locks: Arc<LockDir>, state_dir: PathBuf) -> Tokens {
        Tokens {
            locks,
            state_dir,
            recent: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn store(&self, acct: &AccountSettings) -> Result<Box<dyn TokenStore>> {
        store::open(&acct.store_spec(&self.state_dir)?)
    }

    /// A valid access token: the stored one unless it expires within the
    /// margin, else a fresh one.
    pub async fn valid_token(&self, acct: &AccountSettings) -> Result<String> {
        let current = self.load(acct).await?;
        if let Some(t) = current
            .as_ref()
            .filter(|t| !t.expires_within(acct.margin(), now()))
        {
            return Ok(t.access_token.clone());
        }
        let seen = current.map(|t| t.access_token);
        let token = self.record(acct, self.refresh_locked(acct, Some(seen)).await);
        Ok(token?.access_token)
    }

    /// Refreshes the token now, whatever its expiry.
    pub async fn refresh(&self, acct: &AccountSettings) -> Result<Token> {
        self.record(acct, self.refresh_locked(acct, None).await)
    }

    /// Remembers how a refresh ended, for [`Tokens::status`].
    fn record(&self, acct: &AccountSettings, result: Result<Token>) -> Result<Token> {
        let mut recent = self.recent.lock();
        let entry = recent.entry(acct.name.clone()).or_default();
        match &result {
            Ok(_) => {
                entry.last_refresh = Some(now());
                entry.last_error = None;
            }
            Err(e) => {
                entry.last_error = Some(LastError {
                    kind: e.kind,
                    message: e.message.clone(),
                    time: now(),
                })
            }
        }
        result
    }

    /// Refreshes under the account's lock. With `seen` (the access token
    /// found stale before waiting, if any), a token that another process
    /// stored meanwhile is used as it is, as long as it has not expired:
    /// refreshing again would only waste (and maybe rotate away) a grant.
    async fn refresh_locked(
        &self,
        acct: &AccountSettings,
        seen: Option<Option<String>>,
    ) -> Result<Token> {
        let name = format!("oauth-{}", acct.name);
        let (wait, purpose) = (acct.wait(), format!("OAuth refresh of {}", acct.name));
        // Every IDLE connection, check and sync of the account may wait here
        // behind one slow refresh: the wait holds no thread (see
        // `LockDir::acquire_async`), and ends when its caller gives up.
        let guard = self
            .locks
            .acquire_async(&name, wait, &purpose, Some(crate::runtime::stop_flag()))
            .await?;
        let current = self.load(acct).await?;
        if let (Some(seen), Some(t)) = (&seen, current.as_ref()) {
            let renewed = seen.as_deref() != Some(t.access_token.as_str());
            if !t.expires_within(acct.margin(), now()) || (renewed && !t.expires_within(0, now())) {
                return Ok(t.clone());
            }
        }
        let (this, acct) = (self.clone(), acct.clone());
        match &acct.refresh_cmd {
            // A script is stopped (TERM first) when nobody waits for it;
            // what it printed is saved as the provider's answer is.
            Some(cmd) => match self.run_refresh_cmd(&acct, cmd, current.as_ref()).await? {
                Refreshed::Printed(token) => {
                    Self::finish_holding(guard, async move {
                        this.save(&acct, &token).await.map(|()| token)
                    })
                    .await
                }
                Refreshed::Stored(token) => Ok(token),
            },
            None => {
                let keep_valid = seen.is_some();
                Self::finish_holding(guard, async move {
                    this.refresh_with_provider(&acct, current.as_ref(), keep_valid)
                        .await
                })
                .await
            }
        }
    }

    /// Runs `work` as a task of its own that holds the account's lock
    /// (`guard`) until it ends; the caller only waits for it. The waiter may
    /// go away (a cancelled sync, a check past its timeout, CTRL-C) once the
    /// provider may have rotated the refresh token, and the new one is safe
    /// only once saved: dropped midway, the store would keep a grant the
    /// provider no longer takes, and the lock would let another refresh
    /// start from it while the save still runs. Quitting Neovim waits for
    /// such work too (a little while).
    async fn finish_holding<T: Send + 'static>(
        guard: LockGuard,
        work: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let keep = crate::runtime::must_finish();
        tokio::spawn(async move {
            let _keep = keep;
            let done = work.await;
            drop(guard);
            done
        })
        .await
        .map_err(|e| match e.is_cancelled() {
            true => Error::new(
                ErrorKind::Cancelled,
                "the token refresh was stopped: the engine is shutting down",
            ),
            false => Error::new(ErrorKind::Unknown, format!("internal error: {e}")),
        })?
    }

    /// Runs the user's refresh script; its stdout is the token (JSON or a
    /// bare access token), to be saved by the caller, or, when it prints
    /// nothing, the script stored the token itself. The `current` token's
    /// secrets are kept out of its error (a script may well print the
    /// refresh token it was using).
    async fn run_refresh_cmd(
        &self,
        acct: &AccountSettings,
        cmd: &str,
        current: Option<&Token>,
    ) -> Result<Refreshed> {
        let (cmd, name) = (cmd.to_string(), acct.name.clone());
        let secrets = current.map(Token::secrets).unwrap_or_default();
        let out = off_thread(move |stop| {
            store::user_command(store::UserCommand {
                what: "refresh_cmd",
                cmd: &cmd,
                account: Some(&name),
                stdin: None,
                secrets: &secrets,
                timeout: REFRESH_CMD_TIMEOUT,
                kind: ErrorKind::Auth,
                stop: Some(stop),
            })
        })
        .await
        // A script that fails says the credentials are bad (Auth, set by
        // user_command); one that times out or cannot run keeps its kind,
        // so that a timeout can be retried.
        .map_err(|e| Error::new(e.kind, format!("{}: {}", acct.name, e.message)))?;
        let text = String::from_utf8_lossy(&out);
        if text.trim().is_empty() {
            return match self.load(acct).await? {
                Some(t) if !t.expires_within(0, now()) => Ok(Refreshed::Stored(t)),
                _ => Err(Error::new(
                    ErrorKind::Auth,
                    format!(
                        "refresh_cmd of {} printed nothing and stored no valid token",
                        acct.name
                    ),
                )),
            };
        }
        Token::parse_external(&text, now())
            .map(Refreshed::Printed)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Auth,
                    format!("refresh_cmd of {}: {}", acct.name, e.message),
                )
            })
    }

    /// Refreshes at the provider. With `keep_valid`, a provider that cannot
    /// be reached leaves the `current` token in use while it has not
    /// expired; without it (a forced refresh) that failure is the answer:
    /// the caller asked for a new token, and got none.
    async fn refresh_with_provider(
        &self,
        acct: &AccountSettings,
        current: Option<&Token>,
        keep_valid: bool,
    ) -> Result<Token> {
        let provider = self.provider(acct)?;
        let Some(refresh_token) = current.and_then(|t| t.refresh_token.clone()) else {
            return Err(Error::new(
                ErrorKind::Auth,
                format!(
                    "re-authorization needed: no refresh token stored for {0} (run :HimalayaSync oauth authorize {0})",
                    acct.name
                ),
            ));
        };
        let mut pause = REFRESH_BACKOFF;
        let mut attempt = 1;
        let response = loop {
            match flow::refresh(&provider, &refresh_token).await {
                Ok(r) => break r,
                Err(e)
                    if matches!(e.kind, ErrorKind::Network | ErrorKind::Timeout)
                        && attempt < REFRESH_ATTEMPTS =>
                {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                Err(e) => {
                    // The old token stays stored; while it has not expired
                    // it is still good to use.
                    if let Some(t) = current.filter(|t| {
                        keep_valid
                            && matches!(e.kind, ErrorKind::Network | ErrorKind::Timeout)
                            && !t.expires_within(0, now())
                    }) {
                        return Ok(t.clone());
                    }
                    return Err(Error::new(
                        e.kind,
                        format!(
                            "{}: {}",
                            acct.name,
                            crate::mbsync::errors::redact(&redact_all(current, &e.message))
                        ),
                    ));
                }
            }
        };
        let mut token = token_from_response(response, now());
        let rotated = token.refresh_token.is_some()
            && token.refresh_token != current.and_then(|t| t.refresh_token.clone());
        if let Some(old) = current {
            token.keep_refresh_from(old);
        }
        // Saved before anything else can fail: a rotated refresh token that
        // is not saved is lost for good. Most providers still take the old
        // one; the user is told what to do when this one does not.
        self.save(acct, &token).await.map_err(|e| match rotated {
            false => e,
            true => Error::new(
                e.kind,
                format!(
                    "{}; the provider sent a new refresh token, which is lost: if the next \
                     refresh fails, run :HimalayaSync oauth authorize {}",
                    e.message, acct.name
                ),
            ),
        })?;
        Ok(token)
    }

    fn provider(&self, acct: &AccountSettings) -> Result<Provider> {
        let spec = acct.provider_spec()?.ok_or_else(|| {
            // Only `authorize` gets here with a refresh_cmd: refreshes use
            // the script.
            let message = match acct.refresh_cmd {
                Some(_) => format!(
                    "accounts.{0}.oauth: authorize needs a provider (google, microsoft, generic); \
                     {0} refreshes through refresh_cmd",
                    acct.name
                ),
                None => format!(
                    "accounts.{}.oauth: set provider (google, microsoft, generic) or refresh_cmd",
                    acct.name
                ),
            };
            Error::new(ErrorKind::Config, message)
        })?;
        Provider::resolve(&spec).map_err(|e| {
            Error::new(
                e.kind,
                format!("accounts.{}.oauth: {}", acct.name, e.message),
            )
        })
    }

    async fn load(&self, acct: &AccountSettings) -> Result<Option<Token>> {
        let store = self.store(acct)?;
        let name = acct.name.clone();
        let shared = acct.himalaya_keyring.clone();
        off_thread_stoppable(move || match (store.load(&name)?, shared) {
            (None, Some(himalaya)) => store::read_himalaya_keyring(
                &store::HimalayaKeyringEntries::imap_defaults(&himalaya),
                now(),
            ),
            (token, _) => Ok(token),
        })
        .await
    }

    async fn save(&self, acct: &AccountSettings, token: &Token) -> Result<()> {
        let store = self.store(acct)?;
        let (name, token) = (acct.name.clone(), token.clone());
        off_thread_finishing(move || store.save(&name, &token)).await
    }

    /// Stores a token handed over by the user or another tool.
    pub async fn store_token(&self, acct: &AccountSettings, token: Token) -> Result<()> {
        self.save(acct, &token).await
    }

    /// Removes everything stored for the account.
    pub async fn clear(&self, acct: &AccountSettings) -> Result<()> {
        let store = self.store(acct)?;
        let name = acct.name.clone();
        off_thread_stoppable(move || store.clear(&name)).await?;
        self.recent.lock().remove(&acct.name);
        Ok(())
    }

    /// The account's token state, without any secret.
    pub async fn status(&self, acct: &AccountSettings) -> Status {
        let (store_kind, loaded) = match self.store(acct) {
            Ok(store) => (store.kind().to_string(), self.load(acct).await),
            Err(e) => ("none".to_string(), Err(e)),
        };
        let recent = self
            .recent
            .lock()
            .get(&acct.name)
            .cloned()
            .unwrap_or_default();
        let (token, store_error) = match loaded {
            Ok(t) => (t, None),
            Err(e) => (None, Some(e.message)),
        };
        Status {
            account: acct.name.clone(),
            provider: acct
                .provider
                .clone()
                .or_else(|| acct.refresh_cmd.as_ref().map(|_| "refresh_cmd".into())),
            store: store_kind,
            has_token: token.is_some(),
            has_refresh_token: token.as_ref().is_some_and(|t| t.refresh_token.is_some()),
            expires_in: token.as_ref().and_then(|t| t.expires_at).map(|e| e - now()),
            obtained_at: token.as_ref().and_then(|t| t.obtained_at),
            last_refresh: recent.last_refresh,
            last_error: recent.last_error,
            store_error,
        }
    }

    /// Asks the user to grant access (browser or device code), then stores
    /// the new tokens.
    pub async fn authorize(&self, acct: &AccountSettings, how: Authorize) -> Result<()> {
        let provider = self.provider(acct)?;
        let response = match how {
            Authorize::Browser(opts) => flow::authorize_code(&provider, opts).await?,
            Authorize::Device(opts) => flow::authorize_device(&provider, opts).await?,
        };
        let token = token_from_response(response, now());
        self.save(acct, &token).await?;
        let mut recent = self.recent.lock();
        let entry = recent.entry(acct.name.clone()).or_default();
        entry.last_refresh = Some(now());
        entry.last_error = None;
        Ok(())
    }
}

/// A token from a provider's response, its expiry made absolute.
fn token_from_response(r: flow::TokenResponse, now: i64) -> Token {
    Token {
        expires_at: r
            .expires_in
            .map(|s| now.saturating_add(s.min(i64::MAX as u64) as i64)),
        access_token: r.access_token,
        refresh_token: r.refresh_token,
        scope: r.scope,
        token_type: r.token_type,
        obtained_at: Some(now),
    }
}

fn redact_all(token: Option<&Token>, text: &str) -> String {
    match token {
        Some(t) => t.redact(text),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(settings: serde_json::Value) -> AccountSettings {
        let mut v = serde_json::json!({ "name": "demo" });
        for (k, x) in settings.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    /// The editor's blocking calls wait a little longer than this: the
    /// worst case of a refresh, every step at its limit, must fit in it
    /// (the 90 s they waited before did not: the engine's own error came
    /// a moment after the caller had given up).
    #[test]
    fn the_answer_limit_outlasts_every_step_at_its_limit() {
        let s = Duration::from_secs;
        let store_ops = store::COMMAND_TIMEOUT * 3;
        let provider = account(serde_json::json!({ "provider": "generic" }));
        let limit = answer_limit(&provider, "refresh").unwrap();
        // Lock wait, client secret command, three requests and the pauses.
        assert!(limit >= s(30) + s(10) + s(3 * 30) + Duration::from_millis(1500) + store_ops);
        assert_eq!(answer_limit(&provider, "token"), Some(limit));
        let script = account(serde_json::json!({ "refresh_cmd": "true" }));
        // Lock wait and the script.
        assert!(answer_limit(&script, "token").unwrap() >= s(30) + s(60) + store_ops);
        // A longer lock wait is waited out too.
        let patient = account(serde_json::json!({ "provider": "generic", "wait": 600 }));
        assert_eq!(answer_limit(&patient, "token").unwrap(), limit + s(570));
        for op in ["store", "clear", "status"] {
            assert!(answer_limit(&provider, op).unwrap() >= store::COMMAND_TIMEOUT);
        }
        assert_eq!(answer_limit(&provider, "authorize"), None);
    }
}
