//! OAuth2 flows: refresh, authorization code with PKCE, device code.
//!
//! The `oauth2` crate speaks the protocol; this module supplies the HTTP
//! client (rustls, no redirects, connect and overall timeouts from the
//! [`Provider`]), the loopback listener that receives the browser's
//! redirect, and the mapping of every failure to an [`ErrorKind`] the sync
//! manager can act on: `Auth` when the user must authorize again, `Network`
//! and `Timeout` when a retry may help, `Config` when the setup is wrong.
//!
//! No message built here contains a token, a code, a verifier or a secret.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use oauth2::basic::{BasicClient, BasicTokenResponse};
use oauth2::url::form_urlencoded;
use oauth2::{
    AsyncHttpClient, AuthType, AuthUrl, AuthorizationCode, ClientId, CsrfToken,
    DeviceAuthorizationUrl, ErrorResponseType, HttpClientError, HttpRequest, HttpResponse,
    PkceCodeChallenge, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    StandardDeviceAuthorizationResponse, StandardErrorResponse, TokenResponse as _, TokenUrl,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::provider::Provider;
use crate::error::{Error, ErrorKind, Result};

/// Shortest wait between two device-code polls, whatever the server says.
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait between polls after the token endpoint could not be reached.
const MAX_POLL_BACKOFF: Duration = Duration::from_secs(10);
/// Time a connection to the loopback listener has to send its request.
const REDIRECT_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest redirect request read; a real one is a few hundred bytes.
const REDIRECT_MAX_REQUEST: usize = 16 * 1024;

/// What a token endpoint granted. Debug output hides both tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenResponse {
    pub access_token: String,
    /// A new refresh token, when the server rotates or first issues one.
    pub refresh_token: Option<String>,
    /// Lifetime of the access token in seconds, as the server said.
    pub expires_in: Option<u64>,
    /// Granted scopes, space separated.
    pub scope: Option<String>,
    pub token_type: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("token_type", &self.token_type)
            .finish()
    }
}

impl From<BasicTokenResponse> for TokenResponse {
    fn from(r: BasicTokenResponse) -> Self {
        TokenResponse {
            access_token: r.access_token().secret().clone(),
            refresh_token: r.refresh_token().map(|t| t.secret().clone()),
            expires_in: r.expires_in().map(|d| d.as_secs()),
            scope: r.scopes().map(|s| {
                s.iter()
                    .map(|scope| scope.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
            token_type: Some(r.token_type().as_ref().to_string()),
        }
    }
}

/// Options of [`authorize_code`].
pub struct CodeOptions {
    /// Receives the authorization URL to open in a browser. It must return
    /// promptly (open a browser, spawn a task): the loopback listener only
    /// answers once it has returned.
    pub on_url: Box<dyn FnOnce(String) + Send>,
    /// How long to wait for the browser's redirect.
    pub timeout: Duration,
    /// Ends the wait for the browser early (see [`Until`]).
    pub until: Option<Until>,
}

/// Ends a flow's wait for the user early (the authorization was cancelled,
/// or replaced by a newer one): the flow returns the error it resolves to.
/// Once the user's answer has reached the flow (the browser's redirect with
/// the code; in the device flow, the poll that brings the tokens) it no
/// longer listens to it: the code is single-use, so exchanging it and
/// handing the tokens over is finished, or the user's approval would be
/// lost and they would have to give it again. (An approval in the device
/// flow is seen only at the next poll; until then it can still be ended.)
pub type Until = Pin<Box<dyn Future<Output = Error> + Send>>;

/// Runs `work`, or returns the error `until` resolves to first. When both
/// are ready at once, `work` wins: an answer that has arrived is kept.
async fn unless<T>(until: Option<&mut Until>, work: impl Future<Output = Result<T>>) -> Result<T> {
    match until {
        Some(until) => tokio::select! {
            biased;
            done = work => done,
            e = until => Err(e),
        },
        None => work.await,
    }
}

/// Options of [`authorize_device`].
pub struct DeviceOptions {
    /// Receives the user code, the verification URI and the code's lifetime
    /// in seconds, to show to the user. Must return promptly.
    pub on_code: Box<dyn FnOnce(String, String, u64) + Send>,
    /// How long to wait for the user's approval in all.
    pub timeout: Duration,
    /// Ends the wait for the user early (see [`Until`]).
    pub until: Option<Until>,
}

/// Exchanges a refresh token for a new access token. The returned
/// `refresh_token` is the rotated one when the server sent one.
///
/// A rejected refresh token (`invalid_grant`) gives an `Auth` error
/// starting "re-authorization needed:".
pub async fn refresh(p: &Provider, refresh_token: &str) -> Result<TokenResponse> {
    let http = Http::new(p)?;
    let send = http.sender();
    let secret = client_secret(p).await?;
    let mut client = BasicClient::new(ClientId::new(p.client_id().to_string()))
        .set_token_uri(TokenUrl::from_url(p.token_url().clone()))
        .set_auth_type(AuthType::RequestBody);
    if let Some(s) = secret {
        client = client.set_client_secret(oauth2::ClientSecret::new(s));
    }
    let token = RefreshToken::new(refresh_token.to_string());
    let mut req = client.exchange_refresh_token(&token);
    // Microsoft wants the scopes again; others keep the granted ones.
    if !p.scopes().is_empty() {
        req = req.add_scopes(p.scopes().iter().cloned().map(Scope::new));
    }
    req.request_async(&send)
        .await
        .map(TokenResponse::from)
        .map_err(|e| request_error("token endpoint", &http, e, refresh_server_error))
}

/// Runs the authorization code flow with PKCE (S256) through a one-shot
/// loopback listener on `127.0.0.1` (the provider's `redirect_port`, or an
/// ephemeral one) with redirect URI `http://127.0.0.1:PORT/`.
///
/// A redirect whose `state` does not match is answered with an error page
/// and ignored (it cannot be the browser we sent), and the listener keeps
/// waiting for the genuine one until `opts.timeout`. The listener is closed
/// when this returns, whatever the outcome.
pub async fn authorize_code(p: &Provider, mut opts: CodeOptions) -> Result<TokenResponse> {
    let auth_url = p.auth_url().ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            "auth_url: not set; the authorization code flow needs it",
        )
    })?;
    let http = Http::new(p)?;
    let send = http.sender();
    let secret = unless(opts.until.as_mut(), client_secret(p)).await?;
    let port = p.redirect_port().unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| {
        Error::io(
            format!("redirect_port: cannot listen on 127.0.0.1:{port}"),
            e,
        )
    })?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("redirect listener", e))?
        .port();
    let redirect = RedirectUrl::new(format!("http://127.0.0.1:{port}/"))
        .map_err(|e| Error::invalid(format!("redirect URL: {e}")))?;
    let mut client = BasicClient::new(ClientId::new(p.client_id().to_string()))
        .set_auth_uri(AuthUrl::from_url(auth_url.clone()))
        .set_token_uri(TokenUrl::from_url(p.token_url().clone()))
        .set_redirect_uri(redirect)
        .set_auth_type(AuthType::RequestBody);
    if let Some(s) = secret {
        client = client.set_client_secret(oauth2::ClientSecret::new(s));
    }
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(p.scopes().iter().cloned().map(Scope::new))
        .set_pkce_challenge(challenge);
    for (k, v) in p.auth_params() {
        req = req.add_extra_param(k.as_str(), v.as_str());
    }
    let (url, state) = req.url();
    (opts.on_url)(url.to_string());

    let mut rejected_state = false;
    let waited = unless(opts.until.as_mut(), async {
        Ok(tokio::time::timeout(
            opts.timeout,
            wait_for_redirect(&listener, state.secret(), &mut rejected_state),
        )
        .await)
    })
    .await;
    drop(listener);
    // The user has answered: nothing ends this flow any more.
    drop(opts.until.take());
    let (code, mut browser) = match waited? {
        Ok(result) => result?,
        Err(_) => {
            let why = if rejected_state {
                "; a redirect with a wrong state was rejected"
            } else {
                ""
            };
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "no authorization arrived within {}{why}",
                    seconds(opts.timeout)
                ),
            ));
        }
    };
    // Told only now: a flow ended before it took the code leaves the
    // browser without an answer, not with "complete".
    respond(
        &mut browser,
        "200 OK",
        "Authorization complete. You can close this tab and return to Neovim.",
    )
    .await;
    drop(browser);
    client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&send)
        .await
        .map(TokenResponse::from)
        .map_err(|e| request_error("token endpoint", &http, e, code_server_error))
}

/// Runs the device authorization grant (RFC 8628): gets a user code, hands
/// it to `opts.on_code`, then polls the token endpoint at the server's
/// interval (at least 1 s; `slow_down` adds 5 s) until the user approves,
/// denies, the code expires or `opts.timeout` passes.
pub async fn authorize_device(p: &Provider, mut opts: DeviceOptions) -> Result<TokenResponse> {
    let device_url = p.device_url().ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            "device_url: not set; the device code flow needs it",
        )
    })?;
    let http = Http::new(p)?;
    let send = http.sender();
    let secret = unless(opts.until.as_mut(), client_secret(p)).await?;
    let mut client = BasicClient::new(ClientId::new(p.client_id().to_string()))
        .set_token_uri(TokenUrl::from_url(p.token_url().clone()))
        .set_device_authorization_url(DeviceAuthorizationUrl::from_url(device_url.clone()))
        .set_auth_type(AuthType::RequestBody);
    if let Some(s) = secret {
        client = client.set_client_secret(oauth2::ClientSecret::new(s));
    }
    let details: StandardDeviceAuthorizationResponse = unless(opts.until.as_mut(), async {
        client
            .exchange_device_code()
            .add_scopes(p.scopes().iter().cloned().map(Scope::new))
            .request_async(&send)
            .await
            .map_err(|e| {
                request_error("device authorization endpoint", &http, e, code_server_error)
            })
    })
    .await?;
    (opts.on_code)(
        details.user_code().secret().clone(),
        details.verification_uri().to_string(),
        details.expires_in().as_secs(),
    );
    let sleep = |d: Duration| tokio::time::sleep(d.max(MIN_POLL_INTERVAL));
    let poll = client
        .exchange_device_access_token(&details)
        .set_max_backoff_interval(MAX_POLL_BACKOFF)
        .request_async(&send, sleep, None);
    // The poll that brings the tokens may still be ended: until the server
    // answers, nothing tells an approval from a user who walked away.
    let polled = unless(opts.until.as_mut(), async {
        Ok(tokio::time::timeout(opts.timeout, poll).await)
    })
    .await?;
    match polled {
        Ok(result) => result
            .map(TokenResponse::from)
            .map_err(|e| request_error("token endpoint", &http, e, device_server_error)),
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "the device code was not approved within {}",
                seconds(opts.timeout)
            ),
        )),
    }
}

/// The HTTP client of one flow: rustls, no redirects (a token endpoint that
/// redirects is misconfigured, and following could leak the body). It
/// remembers the last status so that an answer that is not OAuth2 (a 503
/// page) can still be classified.
struct Http {
    client: reqwest::Client,
    timeout: Duration,
    last_status: Arc<AtomicU16>,
}

/// One request in flight; owns what it uses, so the flows stay `Send`.
type Sent = Pin<
    Box<
        dyn Future<Output = std::result::Result<HttpResponse, HttpClientError<reqwest::Error>>>
            + Send,
    >,
>;

impl Http {
    fn new(p: &Provider) -> Result<Http> {
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(p.connect_timeout())
            .timeout(p.timeout());
        let (builder, ignored) =
            with_proxies(builder, &Proxies::read(|name| crate::env::var(name)));
        for name in ignored {
            crate::log::write(
                "warn",
                &format!("{name} in the environment is not a proxy address; ignored"),
            );
        }
        let client = builder.build().map_err(|e| {
            Error::new(ErrorKind::Unknown, format!("cannot build HTTP client: {e}"))
        })?;
        Ok(Http {
            client,
            timeout: p.timeout(),
            last_status: Arc::new(AtomicU16::new(0)),
        })
    }

    /// The function `oauth2` sends its requests through.
    fn sender(&self) -> impl Fn(HttpRequest) -> Sent {
        let client = self.client.clone();
        let last_status = self.last_status.clone();
        move |req| {
            let client = client.clone();
            let last_status = last_status.clone();
            Box::pin(async move {
                let resp = client.call(req).await?;
                last_status.store(resp.status().as_u16(), Ordering::Relaxed);
                Ok(resp)
            })
        }
    }
}

/// The proxy settings of the environment, as reqwest reads them: the
/// lower-case names too (a set upper-case name wins even when empty, and
/// an empty value means no proxy), `ALL_PROXY` for what has no proxy of
/// its own, none at all under CGI (`REQUEST_METHOD` set, where
/// `HTTP_PROXY` could come from a request header). They are read from the
/// engine's copy of the environment ([`crate::env`]): left to reqwest, the
/// reading would run `getenv` on this thread while Lua may be changing the
/// environment.
#[derive(Default, PartialEq, Eq)]
struct Proxies {
    /// `(variable, value)` to try in order for plain HTTP endpoints: its
    /// own variable, then `ALL_PROXY`.
    http: Vec<(&'static str, String)>,
    /// The same for HTTPS endpoints.
    https: Vec<(&'static str, String)>,
    /// Hosts that are reached directly (`NO_PROXY`).
    no: Option<String>,
}

/// Names the variables only: a proxy address can hold a password.
impl fmt::Debug for Proxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |v: &Vec<(&'static str, String)>| v.iter().map(|(n, _)| *n).collect::<Vec<_>>();
        f.debug_struct("Proxies")
            .field("http", &names(&self.http))
            .field("https", &names(&self.https))
            .field("no", &self.no.is_some())
            .finish()
    }
}

impl Proxies {
    fn read(var: impl Fn(&str) -> Option<String>) -> Proxies {
        if var("REQUEST_METHOD").is_some() {
            return Proxies::default();
        }
        let first = |names: [&'static str; 2]| {
            names
                .into_iter()
                .find_map(|n| var(n).map(|v| (n, v)))
                .filter(|(_, v)| !v.is_empty())
        };
        let all = first(["ALL_PROXY", "all_proxy"]);
        Proxies {
            http: first(["HTTP_PROXY", "http_proxy"])
                .into_iter()
                .chain(all.clone())
                .collect(),
            https: first(["HTTPS_PROXY", "https_proxy"])
                .into_iter()
                .chain(all)
                .collect(),
            no: first(["NO_PROXY", "no_proxy"]).map(|(_, v)| v),
        }
    }
}

/// `builder` with exactly the proxies of `proxies`, and the variables whose
/// value is not a proxy address. Such a value is passed over for the next
/// candidate, as reqwest does, so that a broken `HTTP_PROXY` does not stop
/// requests to https endpoints.
fn with_proxies(
    builder: reqwest::ClientBuilder,
    proxies: &Proxies,
) -> (reqwest::ClientBuilder, Vec<&'static str>) {
    let mut builder = builder.no_proxy();
    let mut ignored = Vec::new();
    let no = proxies
        .no
        .as_deref()
        .and_then(reqwest::NoProxy::from_string);
    for (candidates, https) in [(&proxies.http, false), (&proxies.https, true)] {
        let made = candidates.iter().find_map(|(name, value)| {
            let proxy = if https {
                reqwest::Proxy::https(value)
            } else {
                reqwest::Proxy::http(value)
            };
            if proxy.is_err() && !ignored.contains(name) {
                ignored.push(*name);
            }
            proxy.ok()
        });
        if let Some(proxy) = made {
            builder = builder.proxy(proxy.no_proxy(no.clone()));
        }
    }
    (builder, ignored)
}

/// Reads the client secret off the async threads: it may run a command.
async fn client_secret(p: &Provider) -> Result<Option<String>> {
    let source = p.client_secret().clone();
    crate::command::off_thread(move |stop| source.resolve(Some(stop))).await
}

/// What one connection to the loopback listener brought.
enum Redirect {
    /// Not a redirect (a favicon request, a browser's idle preconnect).
    Ignored,
    /// A redirect with someone else's `state`.
    WrongState,
    /// The code, and the browser's connection: it is answered once the
    /// flow has taken the code.
    Code(String, TcpStream),
    Denied(Error),
}

/// Accepts connections until one carries the redirect with our `state`,
/// and returns its code and the browser's connection, still unanswered.
/// Each connection is served by its own task, so a browser's idle
/// preconnect cannot hold up the real redirect; the tasks still running
/// are aborted when this returns.
async fn wait_for_redirect(
    listener: &TcpListener,
    state: &str,
    rejected_state: &mut bool,
) -> Result<(String, TcpStream)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted.map_err(|e| Error::io("redirect listener", e))?;
                let (tx, state) = (tx.clone(), state.to_string());
                tasks.spawn(async move {
                    let _ = tx.send(serve_redirect(stream, &state).await).await;
                });
            }
            Some(outcome) = rx.recv() => match outcome {
                Redirect::Ignored => {}
                Redirect::WrongState => *rejected_state = true,
                Redirect::Code(code, stream) => return Ok((code, stream)),
                Redirect::Denied(err) => return Err(err),
            },
            // Reap finished tasks so a long wait does not pile them up.
            Some(_) = tasks.join_next() => {}
        }
    }
}

/// Reads one request from the listener and answers it, except the
/// redirect that brings the code (see [`Redirect::Code`]).
async fn serve_redirect(mut stream: TcpStream, state: &str) -> Redirect {
    let Ok(Ok(target)) =
        tokio::time::timeout(REDIRECT_READ_TIMEOUT, read_request_target(&mut stream)).await
    else {
        return Redirect::Ignored;
    };
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let mut code = None;
    let mut error = None;
    let mut description = None;
    let mut got_state = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "code" => code = Some(v.into_owned()),
            "error" => error = Some(v.into_owned()),
            "error_description" => description = Some(v.into_owned()),
            "state" => got_state = Some(v.into_owned()),
            _ => {}
        }
    }
    if path != "/" || (code.is_none() && error.is_none()) {
        respond(&mut stream, "404 Not Found", "Not found.").await;
        return Redirect::Ignored;
    }
    if got_state.as_deref() != Some(state) {
        respond(
            &mut stream,
            "400 Bad Request",
            "This authorization response does not belong to the running sign-in \
             (state mismatch) and was ignored.",
        )
        .await;
        return Redirect::WrongState;
    }
    if let Some(error) = error {
        respond(
            &mut stream,
            "200 OK",
            "Authorization was not granted. You can close this tab.",
        )
        .await;
        return Redirect::Denied(Error::new(
            ErrorKind::Auth,
            format!(
                "authorization denied: {}",
                describe(&error, description.as_deref())
            ),
        ));
    }
    match code {
        Some(code) => Redirect::Code(code, stream),
        None => Redirect::Ignored,
    }
}

/// Reads an HTTP request head and returns its request target (path and
/// query). Only `GET` is accepted.
async fn read_request_target(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < REDIRECT_MAX_REQUEST {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) => Ok(target.to_string()),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a GET request",
        )),
    }
}

/// Answers the browser with a tiny static page (nothing from the request
/// is echoed into it) and closes the connection.
async fn respond(stream: &mut TcpStream, status: &str, text: &str) {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>himalaya-sync</title>\
         </head><body><p>{text}</p></body></html>"
    );
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// "code: description" on one line, bounded, for a provider's error.
fn describe(code: &str, description: Option<&str>) -> String {
    let text = match description {
        Some(d) if !d.trim().is_empty() => format!("{code}: {d}"),
        _ => code.to_string(),
    };
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    one_line.trim().to_string()
}

/// How the refresh grant's error codes map to kinds.
fn refresh_server_error(code: &str, text: String) -> Error {
    match code {
        "invalid_grant" => Error::new(ErrorKind::Auth, format!("re-authorization needed: {text}")),
        _ => code_server_error(code, text),
    }
}

/// How error codes of the other token requests map to kinds.
fn code_server_error(code: &str, text: String) -> Error {
    match code {
        "server_error" | "temporarily_unavailable" => Error::new(
            ErrorKind::Network,
            format!("the provider is unavailable: {text}"),
        ),
        _ => Error::new(
            ErrorKind::Auth,
            format!("the provider refused the request: {text}"),
        ),
    }
}

/// How the device poll's final error codes map to kinds.
fn device_server_error(code: &str, text: String) -> Error {
    match code {
        "access_denied" => Error::new(ErrorKind::Auth, format!("authorization denied: {text}")),
        "expired_token" => Error::new(
            ErrorKind::Auth,
            format!("the device code expired before it was approved; start again ({text})"),
        ),
        _ => code_server_error(code, text),
    }
}

/// Maps an `oauth2` request failure to an engine error; `server` classifies
/// an OAuth error response by its code.
fn request_error<T>(
    endpoint: &str,
    http: &Http,
    err: RequestTokenError<HttpClientError<reqwest::Error>, StandardErrorResponse<T>>,
    server: fn(&str, String) -> Error,
) -> Error
where
    T: ErrorResponseType + AsRef<str> + fmt::Display + 'static,
{
    match err {
        RequestTokenError::ServerResponse(resp) => {
            let code = resp.error().as_ref();
            server(
                code,
                describe(code, resp.error_description().map(String::as_str)),
            )
        }
        RequestTokenError::Request(HttpClientError::Reqwest(e)) => {
            let host = e
                .url()
                .map(|u| {
                    format!(
                        " at {}:{}",
                        u.host_str().unwrap_or("?"),
                        u.port_or_known_default().unwrap_or(0)
                    )
                })
                .unwrap_or_default();
            if e.is_timeout() {
                Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the {endpoint}{host} did not answer within {}",
                        seconds(http.timeout)
                    ),
                )
            } else if e.is_connect() {
                Error::new(
                    ErrorKind::Network,
                    format!("cannot connect to the {endpoint}{host}: {}", root_cause(&e)),
                )
            } else {
                Error::new(
                    ErrorKind::Network,
                    format!("request to the {endpoint}{host} failed: {}", root_cause(&e)),
                )
            }
        }
        RequestTokenError::Request(e) => Error::new(
            ErrorKind::Network,
            format!("request to the {endpoint} failed: {e}"),
        ),
        RequestTokenError::Parse(..) | RequestTokenError::Other(_)
            if http.last_status.load(Ordering::Relaxed) >= 500 =>
        {
            Error::new(
                ErrorKind::Network,
                format!(
                    "the {endpoint} is unavailable (HTTP {})",
                    http.last_status.load(Ordering::Relaxed)
                ),
            )
        }
        RequestTokenError::Parse(..) | RequestTokenError::Other(_)
            if (300..400).contains(&http.last_status.load(Ordering::Relaxed)) =>
        {
            Error::new(
                ErrorKind::Config,
                format!(
                    "the {endpoint} answered with a redirect (HTTP {}); check its URL",
                    http.last_status.load(Ordering::Relaxed)
                ),
            )
        }
        // A client error without an OAuth2 error body comes from something
        // other than an OAuth2 endpoint answering: a wrong URL (404, 405),
        // a proxy or firewall refusing us (401, 403), a rate limit (429).
        RequestTokenError::Parse(..) | RequestTokenError::Other(_)
            if (400..500).contains(&http.last_status.load(Ordering::Relaxed)) =>
        {
            client_error(endpoint, http.last_status.load(Ordering::Relaxed))
        }
        // The serde error text may quote a value from the body (a token),
        // so only the path of the bad field is shown, when there is one.
        RequestTokenError::Parse(e, _) => {
            let path = e.path().to_string();
            let at = match path.as_str() {
                "." => String::new(),
                p => format!(" (at `{p}`)"),
            };
            Error::new(
                ErrorKind::Unknown,
                format!("the {endpoint} sent a response that is not valid OAuth2{at}"),
            )
        }
        RequestTokenError::Other(msg) => Error::new(
            ErrorKind::Unknown,
            format!("the {endpoint} sent an unexpected response: {msg}"),
        ),
    }
}

/// An HTTP client error `status` of `endpoint` that came without an OAuth2
/// error: 404 and 405 say its URL is wrong (config), 401 and 403 that we
/// were refused (auth), 429 to come back later (network, retried); any
/// other is a request this endpoint does not take, most likely because it
/// is not the endpoint meant (config).
fn client_error(endpoint: &str, status: u16) -> Error {
    let setting = match endpoint {
        "device authorization endpoint" => "device_url",
        _ => "token_url",
    };
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map_or(String::new(), |r| format!(" {r}"));
    let answered = format!("the {endpoint} answered HTTP {status}{reason}");
    match status {
        404 | 405 => Error::new(
            ErrorKind::Config,
            format!("{answered}: check {setting}"),
        ),
        401 | 403 => Error::new(
            ErrorKind::Auth,
            format!("{answered} without an OAuth2 error: check {setting}, client_id and the client secret"),
        ),
        429 => Error::new(ErrorKind::Network, answered),
        _ => Error::new(
            ErrorKind::Config,
            format!("{answered} without an OAuth2 error: check {setting}"),
        ),
    }
}

/// "1.5 s", "30 s": a duration for a message.
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

/// The innermost cause of an error chain ("Connection refused"), which is
/// what a user can act on.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_response_debug_hides_tokens() {
        let t = TokenResponse {
            access_token: "ya29.secret".into(),
            refresh_token: Some("1//refresh".into()),
            expires_in: Some(3599),
            scope: Some("https://mail.google.com/".into()),
            token_type: Some("Bearer".into()),
        };
        let s = format!("{t:?}");
        assert!(!s.contains("ya29") && !s.contains("1//refresh"), "{s}");
        assert!(s.contains("3599"));
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn proxies_are_read_as_reqwest_reads_them() {
        assert_eq!(Proxies::read(env(&[])), Proxies::default());
        // Upper case first, even when empty; empty means no proxy.
        let p = Proxies::read(env(&[
            ("HTTPS_PROXY", ""),
            ("https_proxy", "http://lower:3128"),
            ("HTTP_PROXY", "http://upper:3128"),
            ("http_proxy", "http://lower:3128"),
            ("no_proxy", "localhost,.internal"),
        ]));
        assert_eq!(p.http, [("HTTP_PROXY", "http://upper:3128".into())]);
        assert_eq!(p.https, []);
        assert_eq!(p.no.as_deref(), Some("localhost,.internal"));
        // ALL_PROXY comes after a scheme's own proxy, and fills in for none.
        let p = Proxies::read(env(&[
            ("ALL_PROXY", "socks5://all:1080"),
            ("HTTP_PROXY", "http://h:3128"),
            ("HTTPS_PROXY", ""),
        ]));
        let all = ("ALL_PROXY", "socks5://all:1080".to_string());
        assert_eq!(
            p.http,
            [("HTTP_PROXY", "http://h:3128".into()), all.clone()]
        );
        assert_eq!(p.https, [all]);
        // Under CGI, HTTP_PROXY may come from a request header: no proxies.
        let p = Proxies::read(env(&[
            ("REQUEST_METHOD", "GET"),
            ("HTTP_PROXY", "http://evil:80"),
        ]));
        assert_eq!(p, Proxies::default());
    }

    #[test]
    fn a_bad_proxy_address_is_passed_over_and_named_not_shown() {
        let p = Proxies::read(env(&[
            ("HTTP_PROXY", "http://user:s3cret@[bad"),
            ("ALL_PROXY", "http://all:3128"),
        ]));
        assert!(!format!("{p:?}").contains("s3cret"));
        let (_, ignored) = with_proxies(reqwest::Client::builder(), &p);
        assert_eq!(ignored, ["HTTP_PROXY"]);
        let (_, ignored) = with_proxies(reqwest::Client::builder(), &Proxies::default());
        assert!(ignored.is_empty());
    }

    #[test]
    fn describe_is_one_bounded_line() {
        assert_eq!(describe("invalid_grant", None), "invalid_grant");
        assert_eq!(
            describe("invalid_grant", Some("Token\nrevoked")),
            "invalid_grant: Token revoked"
        );
        assert_eq!(describe("x", Some(&"a".repeat(1000))).len(), 300);
    }

    /// The integrator spawns the flows on the runtime: they must be `Send`.
    #[test]
    fn flows_are_send() {
        fn assert_send<T: Send>(_: T) {}
        let spec = crate::oauth::provider::ProviderSpec {
            kind: "generic".into(),
            client_id: Some("id".into()),
            token_url: Some("http://127.0.0.1:1/token".into()),
            ..Default::default()
        };
        let p = Provider::resolve(&spec).unwrap();
        assert_send(refresh(&p, "rt"));
        assert_send(authorize_code(
            &p,
            CodeOptions {
                on_url: Box::new(|_| {}),
                timeout: Duration::from_secs(1),
                until: None,
            },
        ));
        assert_send(authorize_device(
            &p,
            DeviceOptions {
                on_code: Box::new(|_, _, _| {}),
                timeout: Duration::from_secs(1),
                until: None,
            },
        ));
    }

    #[test]
    fn seconds_reads_well() {
        assert_eq!(seconds(Duration::from_secs(30)), "30 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
    }

    #[test]
    fn error_codes_map_to_kinds() {
        assert_eq!(
            refresh_server_error("invalid_grant", "invalid_grant: gone".into()).message,
            "re-authorization needed: invalid_grant: gone"
        );
        assert_eq!(
            refresh_server_error("temporarily_unavailable", String::new()).kind,
            ErrorKind::Network
        );
        assert_eq!(
            device_server_error("access_denied", String::new()).kind,
            ErrorKind::Auth
        );
        assert!(device_server_error("expired_token", String::new())
            .message
            .contains("expired"));
    }
}
