//! The token type and how external tools hand tokens over.
//!
//! A [`Token`] is what an OAuth2 token endpoint returns, with the relative
//! `expires_in` turned into an absolute `expires_at` (Unix seconds) when it
//! is received, so a stored token still knows when it expires.
//!
//! Tokens never appear in messages: [`Token`]'s `Debug` shows only whether a
//! token is present and how long it is, parse errors name the bad field but
//! never echo a token value, and [`Token::redact`] cleans text that came
//! from elsewhere (a server's or a script's error output) before it is shown.

use std::fmt;

use serde_json::{Map, Value};

use crate::error::{Error, ErrorKind, Result};

/// What replaces a token in text shown to the user.
pub(crate) const REDACTED: &str = "[redacted]";
/// Longest non-token value quoted back in an error message; a longer one is
/// described by its length so a misplaced secret is not echoed in full.
const MAX_QUOTED: usize = 12;

/// An OAuth2 token set for one account.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Token {
    /// The bearer token sent to the IMAP/SMTP server.
    pub access_token: String,
    /// The long-lived token used to get a new access token.
    pub refresh_token: Option<String>,
    /// When the access token expires, in Unix seconds; `None` if unknown.
    pub expires_at: Option<i64>,
    /// The scopes granted, space-separated as in OAuth2.
    pub scope: Option<String>,
    /// Usually `Bearer`.
    pub token_type: Option<String>,
    /// When the token was received, in Unix seconds.
    pub obtained_at: Option<i64>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &Hidden(&self.access_token))
            .field("refresh_token", &self.refresh_token.as_deref().map(Hidden))
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("token_type", &self.token_type)
            .field("obtained_at", &self.obtained_at)
            .finish()
    }
}

/// Shows a secret as its length only.
struct Hidden<'a>(&'a str);

impl fmt::Debug for Hidden<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} chars>", self.0.chars().count())
    }
}

impl Token {
    /// A token with only an access token, received at `now`.
    pub fn new(access_token: impl Into<String>, now: i64) -> Token {
        Token {
            access_token: access_token.into(),
            refresh_token: None,
            expires_at: None,
            scope: None,
            token_type: None,
            obtained_at: Some(now),
        }
    }

    /// Builds a token from a JSON object: a token endpoint response, a
    /// refresh script's output, or a stored token.
    ///
    /// `access_token` is required (a non-empty string). Optional:
    /// `refresh_token`, `scope`, `token_type` (strings), `expires_at` (Unix
    /// seconds) or `expires_in` (seconds from `now`), each a number or a
    /// numeric string, and `obtained_at` (defaults to `now`). When both
    /// expiry fields are given, `expires_at` wins because it does not depend
    /// on when the text was produced. `null` counts as absent and unknown
    /// fields (`id_token`, `ext_expires_in`, ...) are ignored.
    pub fn from_json_value(v: &Value, now: i64) -> Result<Token> {
        let Some(obj) = v.as_object() else {
            return Err(bad(format!(
                "token must be a JSON object, got {}",
                type_name(v)
            )));
        };
        let access_token = match secret_field(obj, "access_token")? {
            Some(t) => t,
            None => return Err(bad("token.access_token is missing")),
        };
        let refresh_token = secret_field(obj, "refresh_token")?;
        let mut token = Token {
            access_token,
            refresh_token,
            expires_at: None,
            scope: None,
            token_type: None,
            obtained_at: None,
        };
        token.fill_plain_fields(obj, now)?;
        Ok(token)
    }

    /// The fields of [`Token::from_json_value`] that are not secrets.
    fn fill_plain_fields(&mut self, obj: &Map<String, Value>, now: i64) -> Result<()> {
        // A token pasted into the wrong field must not be quoted back.
        let secrets: Vec<&str> = std::iter::once(self.access_token.as_str())
            .chain(self.refresh_token.as_deref())
            .collect();
        let number = |name, what| number_field(obj, name, what, &secrets);
        let expires_at = match number("expires_at", "a Unix time in seconds")? {
            Some(at) => Some(at),
            None => match number("expires_in", "a number of seconds")? {
                Some(secs) if secs < 0 => {
                    return Err(bad(format!(
                        "token.expires_in must not be negative, got {secs}"
                    )))
                }
                Some(secs) => Some(
                    now.checked_add(secs)
                        .ok_or_else(|| bad(format!("token.expires_in is too large, got {secs}")))?,
                ),
                None => None,
            },
        };
        let obtained_at = number("obtained_at", "a Unix time in seconds")?.unwrap_or(now);
        self.expires_at = expires_at;
        self.obtained_at = Some(obtained_at);
        self.scope = text_field(obj, "scope")?;
        self.token_type = text_field(obj, "token_type")?;
        Ok(())
    }

    /// Reads what a user's refresh script printed: a JSON object (see
    /// [`Token::from_json_value`]) or a bare access token on one line.
    ///
    /// Surrounding whitespace is ignored. A bare token must be a single line
    /// without inner whitespace or control characters, so that a script
    /// printing a message instead of a token is caught rather than sent to
    /// the server; nor may it be one of the words a script prints for a
    /// missing value ([`NOT_TOKENS`]: `curl ... | jq -r .access_token`
    /// prints `null` for an error reply).
    pub fn parse_external(text: &str, now: i64) -> Result<Token> {
        Token::parse_text(text, now, "the token output")
    }

    /// [`Token::parse_external`] for a text its messages call `what`.
    pub fn parse_text(text: &str, now: i64, what: &str) -> Result<Token> {
        let text = text.trim();
        if text.is_empty() {
            return Err(bad(format!("{what} is empty")));
        }
        if text.starts_with('{') {
            let value: Value = serde_json::from_str(text).map_err(|e| {
                // serde_json's syntax errors give a position, never the text.
                bad(format!("{what} is not valid JSON: {e}"))
            })?;
            return Token::from_json_value(&value, now);
        }
        let lines = text.lines().count();
        if lines > 1 {
            return Err(bad(format!(
                "{what} has {lines} lines; expected one access token or a JSON object"
            )));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(format!(
                "{what} contains whitespace or control characters; \
                 expected one access token or a JSON object"
            )));
        }
        if let Some(word) = NOT_TOKENS.iter().find(|w| w.eq_ignore_ascii_case(text)) {
            // One of a few fixed words, never a secret: safe to quote.
            return Err(bad(format!("{what} holds no token, only `{word}`")));
        }
        Ok(Token::new(text, now))
    }

    /// True when the access token expires within `margin_secs` of `now` (or
    /// already has).
    ///
    /// A token whose expiry is unknown is reported as *not* expiring: there
    /// is nothing to base a refresh on, and refreshing before every use
    /// would fail outright for tokens that cannot be refreshed. Such a token
    /// is used until the server rejects it; that `Auth` error is what
    /// triggers a refresh.
    pub fn expires_within(&self, margin_secs: i64, now: i64) -> bool {
        match self.expires_at {
            Some(at) => at <= now.saturating_add(margin_secs),
            None => false,
        }
    }

    /// Fills in what a refresh response may leave out, from the token it
    /// replaces.
    ///
    /// A response without a refresh token means the old one stays valid, so
    /// it is kept; a response with one rotates it, and the new one wins. A
    /// missing `scope` means the scope is unchanged (RFC 6749, 5.1).
    pub fn keep_refresh_from(&mut self, previous: &Token) {
        if self.refresh_token.is_none() {
            self.refresh_token = previous.refresh_token.clone();
        }
        if self.scope.is_none() {
            self.scope = previous.scope.clone();
        }
    }

    /// The access token and the refresh token, for cleaning messages.
    pub fn secrets(&self) -> Vec<String> {
        std::iter::once(self.access_token.clone())
            .chain(self.refresh_token.clone())
            .collect()
    }

    /// `text` with every occurrence of this token's access or refresh token
    /// replaced by `[redacted]`; for cleaning foreign error text.
    pub fn redact(&self, text: &str) -> String {
        let mut secrets: Vec<&str> = std::iter::once(self.access_token.as_str())
            .chain(self.refresh_token.as_deref())
            .collect();
        redact_all(text, &mut secrets)
    }
}

/// Replaces every occurrence of each non-empty secret in `text`, also
/// where it appears as a form body or URL writes it (percent-encoded) or as
/// JSON escapes it (`\/`): a provider or a script that echoes the request
/// it got shows the refresh token that way. Longer forms go first so one
/// that contains another is removed whole.
pub(crate) fn redact_all(text: &str, secrets: &mut [&str]) -> String {
    let mut forms: Vec<String> = secrets
        .iter()
        .filter(|s| !s.is_empty())
        .flat_map(|s| {
            [
                s.to_string(),
                percent_encoded(s, true),
                percent_encoded(s, false),
                s.replace('/', "\\/"),
            ]
        })
        .collect();
    forms.sort_by_key(|s| std::cmp::Reverse(s.len()));
    forms.dedup();
    let mut out = text.to_owned();
    for form in &forms {
        if out.contains(form.as_str()) {
            out = out.replace(form.as_str(), REDACTED);
        }
    }
    out
}

/// `s` percent-encoded as `application/x-www-form-urlencoded` bodies and
/// URLs write it: everything but `A-Z a-z 0-9 - . _ ~` as `%XX`, with upper
/// or lower case hex digits.
fn percent_encoded(s: &str, upper: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// Words that programs print for a value that is missing or an error (in
/// any case), refused as bare access tokens.
const NOT_TOKENS: [&str; 9] = [
    "null",
    "(null)",
    "nil",
    "none",
    "undefined",
    "nan",
    "false",
    "true",
    "error",
];

fn bad(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, message)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field that holds a token: a non-empty string. Its value is never put
/// into a message, not even when it has the wrong type.
fn secret_field(obj: &Map<String, Value>, name: &str) -> Result<Option<String>> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(bad(format!("token.{name} must not be empty"))),
        Some(other) => Err(bad(format!(
            "token.{name} must be a string, got {}",
            type_name(other)
        ))),
    }
}

/// A plain text field (`scope`, `token_type`).
fn text_field(obj: &Map<String, Value>, name: &str) -> Result<Option<String>> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(format!(
            "token.{name} must be a string, got {}",
            type_name(other)
        ))),
    }
}

/// A whole number of seconds given as a JSON number or a numeric string
/// (some providers send `"expires_in": "3599"`). Fractions are cut off.
fn number_field(
    obj: &Map<String, Value>,
    name: &str,
    what: &str,
    secrets: &[&str],
) -> Result<Option<i64>> {
    let wrong = |shown: String| bad(format!("token.{name} must be {what}, got {shown}"));
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Some(i)),
            None => match n.as_f64().filter(|f| f.is_finite() && f.abs() < 1e15) {
                Some(f) => Ok(Some(f.trunc() as i64)),
                None => Err(wrong(n.to_string())),
            },
        },
        Some(Value::String(s)) => {
            let t = s.trim();
            match t.parse::<i64>() {
                Ok(i) => Ok(Some(i)),
                Err(_) => match t
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                {
                    Some(f) => Ok(Some(f.trunc() as i64)),
                    None => Err(wrong(quote_short(s, secrets))),
                },
            }
        }
        Some(other) => Err(wrong(type_name(other).to_owned())),
    }
}

/// `s` quoted, or only its length when it is one of `secrets` or long
/// enough to be some other secret that ended up in the wrong field.
fn quote_short(s: &str, secrets: &[&str]) -> String {
    let secret = secrets.iter().any(|t| !t.is_empty() && s.contains(t));
    if !secret && s.chars().count() <= MAX_QUOTED {
        format!("{s:?}")
    } else {
        format!("a string of {} characters", s.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;

    fn full() -> Token {
        Token {
            access_token: "ya29.ACCESS-secret".into(),
            refresh_token: Some("1//REFRESH-secret".into()),
            expires_at: Some(NOW + 3600),
            scope: Some("https://mail.google.com/".into()),
            token_type: Some("Bearer".into()),
            obtained_at: Some(NOW),
        }
    }

    #[test]
    fn debug_hides_tokens() {
        let shown = format!("{:?}", full());
        assert!(!shown.contains("ACCESS-secret"), "{shown}");
        assert!(!shown.contains("REFRESH-secret"), "{shown}");
        assert!(shown.contains("<redacted, 17 chars>"), "{shown}");
        assert!(shown.contains("https://mail.google.com/"), "{shown}");
        assert!(shown.contains(&(NOW + 3600).to_string()), "{shown}");
    }

    #[test]
    fn parses_token_response_with_expires_in() {
        let v = json!({"access_token": "a1", "refresh_token": "r1", "expires_in": 3599,
                       "scope": "s", "token_type": "Bearer", "id_token": "ignored"});
        let t = Token::from_json_value(&v, NOW).unwrap();
        assert_eq!(t.access_token, "a1");
        assert_eq!(t.refresh_token.as_deref(), Some("r1"));
        assert_eq!(t.expires_at, Some(NOW + 3599));
        assert_eq!(t.obtained_at, Some(NOW));
        assert_eq!(t.token_type.as_deref(), Some("Bearer"));
    }

    #[test]
    fn expiry_as_string_float_or_absolute() {
        let t = Token::from_json_value(&json!({"access_token": "a", "expires_in": " 60 "}), NOW);
        assert_eq!(t.unwrap().expires_at, Some(NOW + 60));
        let t = Token::from_json_value(&json!({"access_token": "a", "expires_in": 60.9}), NOW);
        assert_eq!(t.unwrap().expires_at, Some(NOW + 60));
        let v = json!({"access_token": "a", "expires_at": "123", "expires_in": 60});
        assert_eq!(
            Token::from_json_value(&v, NOW).unwrap().expires_at,
            Some(123)
        );
        let v = json!({"access_token": "a", "expires_in": null});
        assert_eq!(Token::from_json_value(&v, NOW).unwrap().expires_at, None);
    }

    #[test]
    fn errors_name_the_field_not_the_token() {
        let err = |v: Value| Token::from_json_value(&v, NOW).unwrap_err().message;
        assert_eq!(
            err(json!({"access_token": "tok", "expires_in": "abc"})),
            r#"token.expires_in must be a number of seconds, got "abc""#
        );
        assert_eq!(
            err(json!({"refresh_token": "r"})),
            "token.access_token is missing"
        );
        assert_eq!(
            err(json!({"access_token": ""})),
            "token.access_token must not be empty"
        );
        assert_eq!(
            err(json!({"access_token": 5})),
            "token.access_token must be a string, got a number"
        );
        assert_eq!(
            err(json!({"access_token": "a", "expires_in": -5})),
            "token.expires_in must not be negative, got -5"
        );
        assert_eq!(
            err(json!(["a"])),
            "token must be a JSON object, got an array"
        );
        let long = "x".repeat(64);
        let m = err(json!({"access_token": "a", "expires_at": long}));
        assert!(!m.contains(&long), "{m}");
        assert!(m.contains("a string of 64 characters"), "{m}");
        let m = err(json!({"access_token": "tok123", "expires_at": "tok123"}));
        assert!(m.ends_with("got a string of 6 characters"), "{m}");
        let m = err(json!({"access_token": "a", "expires_in": i64::MAX}));
        assert!(m.contains("too large"), "{m}");
    }

    #[test]
    fn external_bare_token_or_json() {
        let t = Token::parse_external("  tok.en-1_2~/+=\n", NOW).unwrap();
        assert_eq!(t.access_token, "tok.en-1_2~/+=");
        assert_eq!(t.refresh_token, None);
        assert_eq!(t.obtained_at, Some(NOW));
        let t = Token::parse_external("{\"access_token\":\"j\",\"expires_in\":10}\n", NOW).unwrap();
        assert_eq!(
            (t.access_token.as_str(), t.expires_at),
            ("j", Some(NOW + 10))
        );
    }

    #[test]
    fn external_rejects_non_tokens() {
        let err = |s: &str| Token::parse_external(s, NOW).unwrap_err().message;
        assert!(err(" \n").contains("empty"));
        assert!(err("secret1\nsecret2").contains("2 lines"));
        assert!(err("Error: no such entry").contains("whitespace"));
        assert!(err("tab\tsecret").contains("whitespace"));
        let m = err("{\"access_token\": \"secret\"");
        assert!(
            m.contains("not valid JSON") && !m.contains("secret\""),
            "{m}"
        );
        for s in [
            "null",
            "NULL\n",
            "None",
            "undefined",
            "nil",
            "false",
            "Error",
            "(null)",
        ] {
            let m = err(s);
            assert!(m.contains("holds no token, only `"), "{s}: {m}");
        }
        // A word that merely starts like one is a token.
        assert!(Token::parse_external("nullable-ab12", NOW).is_ok());
        for s in [
            "secret1\nsecret2",
            "tab\tsecret",
            "{\"access_token\": \"secret\"",
        ] {
            assert!(!err(s).contains("secret"), "{}", err(s));
        }
    }

    #[test]
    fn expiry_margin_and_unknown_expiry() {
        let t = full();
        assert!(!t.expires_within(60, NOW));
        assert!(t.expires_within(60, NOW + 3540));
        assert!(t.expires_within(0, NOW + 4000));
        assert!(!Token::new("a", NOW).expires_within(i64::MAX, i64::MAX));
    }

    #[test]
    fn refresh_token_kept_or_rotated() {
        let old = full();
        let mut fresh = Token::new("new-access", NOW);
        fresh.keep_refresh_from(&old);
        assert_eq!(fresh.refresh_token, old.refresh_token);
        assert_eq!(fresh.scope, old.scope);
        let mut rotated = Token::new("new-access", NOW);
        rotated.refresh_token = Some("new-refresh".into());
        rotated.scope = Some("narrower".into());
        rotated.keep_refresh_from(&old);
        assert_eq!(rotated.refresh_token.as_deref(), Some("new-refresh"));
        assert_eq!(rotated.scope.as_deref(), Some("narrower"));
    }

    #[test]
    fn redact_replaces_both_tokens() {
        let t = full();
        let text = "bad ya29.ACCESS-secret and 1//REFRESH-secret; again ya29.ACCESS-secret";
        assert_eq!(
            t.redact(text),
            "bad [redacted] and [redacted]; again [redacted]"
        );
        let mut nested = vec!["abc", "abcdef", ""];
        assert_eq!(
            redact_all("xabcdefx abc", &mut nested),
            "x[redacted]x [redacted]"
        );
    }

    #[test]
    fn redact_finds_the_encoded_forms_of_a_secret() {
        let mut secrets = vec!["1//0gOLD+refresh=TOKEN42"];
        for echoed in [
            "refresh_token=1%2F%2F0gOLD%2Brefresh%3DTOKEN42&grant_type=refresh_token",
            "refresh_token=1%2f%2f0gOLD%2brefresh%3dTOKEN42",
            r#"{"refresh_token":"1\/\/0gOLD+refresh=TOKEN42"}"#,
            "plain 1//0gOLD+refresh=TOKEN42.",
        ] {
            let clean = redact_all(echoed, &mut secrets);
            assert!(clean.contains("[redacted]"), "{clean}");
            assert!(!clean.contains("0gOLD"), "{clean}");
        }
    }

    #[test]
    fn serde_round_trip_through_from_json_value() {
        let t = full();
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(Token::from_json_value(&v, 0).unwrap(), t);
    }
}
