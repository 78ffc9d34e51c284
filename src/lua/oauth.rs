//! Glue for `himalaya.sync.oauth`: every operation runs on the runtime and
//! answers with an `oauth` event carrying the request id; `authorize` first
//! sends an `oauth_prompt` event (the URL to open, or the device code).

use std::collections::HashMap;
use std::time::Duration;

use mlua::{Lua, LuaSerdeExt, Table};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::func;
use super::manager::manager;
use crate::error::{Error, ErrorKind, Result};
use crate::oauth::flow::{CodeOptions, DeviceOptions, Until};
use crate::oauth::token::Token;
use crate::oauth::{answer_limit, now, Authorize};
use crate::runtime;

/// How long an authorization may wait for the user, unless given.
const AUTHORIZE_TIMEOUT: Duration = Duration::from_secs(300);

/// The authorization under way, per account: its request id and what ends
/// it. A new `authorize` of the account ends the old one while that one
/// still waits for the user (its browser tab was closed, its code was
/// lost), and so does `oauth_cancel_authorize`; either frees a fixed
/// `redirect_port` at once instead of when the authorization times out.
/// One the user has answered finishes (see [`Until`]).
static PENDING: Mutex<Option<HashMap<String, Pending>>> = Mutex::new(None);

/// An authorization under way: its request id, the way to end it (its
/// receiver is gone once it no longer waits for the user, and with it the
/// listener), and what tells that it has ended.
type Pending = (u64, oneshot::Sender<Ended>, oneshot::Receiver<()>);

/// Why a waiting authorization was ended.
enum Ended {
    Replaced,
    Cancelled,
}

/// Runs `authorize` (request `id`) until it ends. A newer authorization of
/// the same account, or a cancel, ends it through the [`Until`] it is
/// given, as long as it is still waiting for the user.
async fn authorize_replaceable<F, Fut>(id: u64, account: String, authorize: F) -> Result<Value>
where
    F: FnOnce(Until) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let (end, ended) = oneshot::channel();
    let (gone, gone_rx) = oneshot::channel::<()>();
    let older = PENDING
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(account.clone(), (id, end, gone_rx));
    if let Some((_, older, older_gone)) = older {
        // Its listener may hold a fixed redirect_port: this one listens
        // only once that one is closed. One that no longer waits for the
        // user has closed it already, and finishes on its own.
        if older.send(Ended::Replaced).is_ok() {
            let _ = older_gone.await;
        }
    }
    let name = account.clone();
    let until: Until = Box::pin(async move {
        let why = match ended.await {
            Ok(Ended::Cancelled) => "was cancelled",
            Ok(Ended::Replaced) => "was replaced by a newer one",
            // Its end is dropped unsent only once this one is over.
            Err(_) => std::future::pending().await,
        };
        Error::new(
            ErrorKind::Cancelled,
            format!("the authorization of {name} {why}"),
        )
    });
    let result = authorize(until).await.map(|_| Value::Bool(true));
    drop(gone);
    let mut pending = PENDING.lock();
    if let Some(map) = pending.as_mut() {
        if map.get(&account).is_some_and(|(owner, _, _)| *owner == id) {
            map.remove(&account);
        }
    }
    result
}

fn answer(id: u64, result: Result<Value>) {
    let data = match result {
        Ok(value) => json!({ "ok": true, "value": value }),
        Err(e) => json!({ "ok": false, "error": { "kind": e.kind, "message": e.message } }),
    };
    runtime::emit(id, "oauth", data);
}

/// Ends the authorizations of `account`, or of every account, that still
/// wait for the user. Returns how many it ended, and how many it found
/// finishing: one that has its answer no longer listens (it dropped its
/// `Until`), and goes on to store its token.
fn cancel_authorizations(account: Option<&str>) -> (usize, usize) {
    let ended: Vec<Pending> = match PENDING.lock().as_mut() {
        Some(map) => {
            let names: Vec<String> = map
                .keys()
                .filter(|k| account.is_none_or(|a| a == k.as_str()))
                .cloned()
                .collect();
            names.iter().filter_map(|n| map.remove(n)).collect()
        }
        None => Vec::new(),
    };
    let found = ended.len();
    let cancelled = ended
        .into_iter()
        .map(|(_, end, _)| end.send(Ended::Cancelled).is_ok())
        .filter(|&ended| ended)
        .count();
    (cancelled, found - cancelled)
}

pub(super) fn register(lua: &Lua, m: &Table) -> mlua::Result<()> {
    m.set(
        "oauth_cancel_authorize",
        func(lua, |_, account: Option<String>| {
            Ok(cancel_authorizations(account.as_deref()))
        })?,
    )?;
    // `op`: token | refresh | store | clear | status | authorize;
    // `arg`: the token table for `store`, `{ device = bool, timeout = s }`
    // for `authorize`. Returns at once the request id and the seconds the
    // engine may take to answer (none for `authorize`: see
    // `oauth::answer_limit`).
    m.set(
        "oauth_call",
        func(
            lua,
            |lua, (op, account, arg): (String, String, Option<mlua::Value>)| {
                let mgr = manager()?;
                let acct = mgr.oauth_account(&account)?;
                let limit = answer_limit(&acct, &op).map(|d| d.as_secs_f64());
                let tokens = mgr.tokens()?;
                let arg: Value = match arg {
                    Some(v) => lua
                        .from_value(v)
                        .map_err(|e| Error::invalid(format!("invalid argument: {e}")))?,
                    None => Value::Null,
                };
                let id = runtime::next_id();
                let handle = runtime::handle()?;
                let work: std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value>> + Send>> =
                    match op.as_str() {
                        "token" => Box::pin(async move {
                            // The token goes to the caller who asked for it,
                            // never into a log or a message.
                            tokens.valid_token(&acct).await.map(Value::String)
                        }),
                        "refresh" => Box::pin(async move {
                            tokens.refresh(&acct).await.map(|_| Value::Bool(true))
                        }),
                        "store" => {
                            // A token refused here is the caller's argument
                            // (`invalid`), not a configured script's output.
                            let as_invalid =
                                |e: Error| Error::new(ErrorKind::Invalid, e.message);
                            let token = match &arg {
                                Value::String(s) => Token::parse_text(s, now(), "the token string")
                                    .map_err(|e| Error::invalid(format!("invalid token: {}", e.message)))?,
                                v @ Value::Object(_) => {
                                    Token::from_json_value(v, now()).map_err(as_invalid)?
                                }
                                _ => {
                                    return Err(Error::invalid(
                                        "invalid token: expected a table or an access-token string",
                                    ))
                                }
                            };
                            Box::pin(async move {
                                tokens.store_token(&acct, token).await.map(|_| Value::Bool(true))
                            })
                        }
                        "clear" => Box::pin(async move {
                            tokens.clear(&acct).await.map(|_| Value::Bool(true))
                        }),
                        "status" => Box::pin(async move {
                            serde_json::to_value(tokens.status(&acct).await).map_err(|e| {
                                Error::new(ErrorKind::Unknown, format!("cannot encode status: {e}"))
                            })
                        }),
                        "authorize" => {
                            let device = arg.get("device").and_then(Value::as_bool).unwrap_or(false);
                            let timeout = match arg.get("timeout").and_then(Value::as_f64) {
                                Some(s) => super::lock::limit_seconds("authorize timeout", s)?,
                                None => AUTHORIZE_TIMEOUT,
                            };
                            Box::pin(async move {
                                let name = acct.name.clone();
                                authorize_replaceable(id, name, |until| async move {
                                    let until = Some(until);
                                    let how = if device {
                                        Authorize::Device(DeviceOptions {
                                            on_code: Box::new(move |code, uri, expires_in| {
                                                runtime::emit(id, "oauth_prompt", json!({
                                                    "user_code": code,
                                                    "verification_uri": uri,
                                                    "expires_in": expires_in,
                                                }))
                                            }),
                                            timeout,
                                            until,
                                        })
                                    } else {
                                        Authorize::Browser(CodeOptions {
                                            on_url: Box::new(move |url| {
                                                runtime::emit(id, "oauth_prompt", json!({ "url": url }))
                                            }),
                                            timeout,
                                            until,
                                        })
                                    };
                                    tokens.authorize(&acct, how).await
                                })
                                .await
                            })
                        }
                        other => {
                            return Err(Error::invalid(format!(
                                "unknown OAuth operation {other:?}: expected token, refresh, store, clear, status or authorize"
                            )))
                        }
                    };
                handle.spawn(async move { answer(id, work.await) });
                Ok((id, limit))
            },
        )?,
    )?;
    Ok(())
}
