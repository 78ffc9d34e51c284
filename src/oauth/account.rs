//! One OAuth account's settings, as the editor hands them over, and the
//! file that lets the token command (mbsync's `PassCmd`) see them too.
//!
//! mbsync runs the token command as a separate process that knows nothing
//! of Neovim's config. So whenever the editor configures OAuth accounts,
//! their settings are written to `<state dir>/oauth/accounts.json` (0600 in
//! a checked 0700 folder, atomically); the command reads them from there.
//! The state folder comes from `$HIMALAYA_SYNC_STATE_DIR` (set by the editor
//! for the processes it starts) or the default that Neovim would use.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::provider::{ClientSecret, ProviderSpec};
use super::store::{KeySource, StoreSpec};
use crate::error::{Error, ErrorKind, Result};

/// Refresh this long before the access token expires, unless configured.
pub const DEFAULT_MARGIN: u64 = 300;

/// How long a caller waits for another process's refresh, unless configured.
pub const DEFAULT_WAIT: u64 = 30;

/// Where and how tokens are stored (see [`super::store`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `secret-service`, `gpg`, `encrypted`, `command` or `plain`.
    pub backend: String,
    /// Folder for the file backends (default: `<state dir>/oauth/tokens`).
    pub dir: Option<PathBuf>,
    /// `encrypted`: command printing the key (else the Secret Service).
    pub key_cmd: Option<String>,
    /// `gpg`: the key to encrypt for.
    pub recipient: Option<String>,
    /// `gpg`: the program (default `gpg`).
    pub gpg: Option<String>,
    /// `secret-service`: the `service` attribute (default `himalaya-sync`).
    pub service: Option<String>,
    /// `command`: commands that load, save and clear a token.
    pub load_cmd: Option<String>,
    pub save_cmd: Option<String>,
    pub clear_cmd: Option<String>,
}

/// Everything about one OAuth account. Field names are the Lua config's.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    pub name: String,
    /// `google`, `microsoft` or `generic`; none with only a `refresh_cmd`.
    pub provider: Option<String>,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    pub client_secret_cmd: Option<String>,
    pub auth_url: Option<String>,
    pub token_url: Option<String>,
    pub device_url: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub redirect_port: Option<u16>,
    /// A user script that refreshes the token (the original plugin's way).
    pub refresh_cmd: Option<String>,
    /// Seconds before expiry at which a token counts as expiring.
    pub margin: Option<u64>,
    /// Seconds to wait for another process's refresh.
    pub wait: Option<u64>,
    pub store: Option<StoreSettings>,
    /// A himalaya CLI (v1) account whose keyring tokens are used while our
    /// store has none, so that both tools share one login.
    pub himalaya_keyring: Option<String>,
}

impl std::fmt::Debug for AccountSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client secret may be written inline: never shown.
        f.debug_struct("AccountSettings")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("refresh_cmd", &self.refresh_cmd.is_some())
            .finish_non_exhaustive()
    }
}

impl AccountSettings {
    pub fn margin(&self) -> i64 {
        self.margin.unwrap_or(DEFAULT_MARGIN).min(86_400) as i64
    }

    pub fn wait(&self) -> Duration {
        Duration::from_secs(self.wait.unwrap_or(DEFAULT_WAIT).min(86_400))
    }

    /// The provider to refresh and authorize with, or None when only a
    /// refresh script is configured.
    pub fn provider_spec(&self) -> Result<Option<ProviderSpec>> {
        let Some(kind) = self.provider.clone() else {
            return Ok(None);
        };
        let secrets = [
            self.client_secret.is_some(),
            self.client_secret_env.is_some(),
            self.client_secret_cmd.is_some(),
        ];
        if secrets.iter().filter(|s| **s).count() > 1 {
            return Err(self.field_error(
                "client_secret",
                "give only one of client_secret, client_secret_env, client_secret_cmd",
            ));
        }
        let client_secret = if let Some(s) = &self.client_secret {
            ClientSecret::Literal(s.clone())
        } else if let Some(v) = &self.client_secret_env {
            ClientSecret::Env(v.clone())
        } else if let Some(c) = &self.client_secret_cmd {
            ClientSecret::Command(c.clone())
        } else {
            ClientSecret::None
        };
        Ok(Some(ProviderSpec {
            kind,
            tenant: self.tenant.clone(),
            client_id: self.client_id.clone(),
            client_secret,
            auth_url: self.auth_url.clone(),
            token_url: self.token_url.clone(),
            device_url: self.device_url.clone(),
            scopes: self.scopes.clone(),
            redirect_port: self.redirect_port,
        }))
    }

    /// The token store; `state_dir` gives the default folder.
    pub fn store_spec(&self, state_dir: &Path) -> Result<StoreSpec> {
        let default = StoreSettings {
            backend: "secret-service".into(),
            dir: None,
            key_cmd: None,
            recipient: None,
            gpg: None,
            service: None,
            load_cmd: None,
            save_cmd: None,
            clear_cmd: None,
        };
        let s = self.store.as_ref().unwrap_or(&default);
        let dir = s
            .dir
            .clone()
            .unwrap_or_else(|| state_dir.join("oauth").join("tokens"));
        let need = |v: &Option<String>, field: &str| {
            v.clone()
                .ok_or_else(|| self.field_error(&format!("store.{field}"), "is required"))
        };
        Ok(match s.backend.as_str() {
            "plain" => StoreSpec::Plain { dir },
            "encrypted" => StoreSpec::Encrypted {
                dir,
                key: match &s.key_cmd {
                    Some(c) => KeySource::Command(c.clone()),
                    None => KeySource::SecretService,
                },
            },
            "gpg" => StoreSpec::Gpg {
                dir,
                recipient: need(&s.recipient, "recipient")?,
                program: s.gpg.clone(),
            },
            "secret-service" => StoreSpec::SecretService {
                service: s.service.clone().unwrap_or_else(|| "himalaya-sync".into()),
            },
            "command" => StoreSpec::Command {
                load: need(&s.load_cmd, "load_cmd")?,
                save: need(&s.save_cmd, "save_cmd")?,
                clear: s.clear_cmd.clone(),
            },
            other => {
                return Err(self.field_error(
                    "store.backend",
                    &format!(
                        "must be secret-service, gpg, encrypted, command or plain, got {other:?}"
                    ),
                ))
            }
        })
    }

    fn field_error(&self, field: &str, what: &str) -> Error {
        Error::new(
            ErrorKind::Config,
            format!("accounts.{}.oauth.{field}: {what}", self.name),
        )
    }
}

/// The state folder shared by the editor and the token command:
/// `$HIMALAYA_SYNC_STATE_DIR`, else Neovim's default, `stdpath("state")`
/// plus `himalaya-sync`, for the app name in `$NVIM_APPNAME` (`nvim` when
/// unset), as a Neovim started from the same shell would pick it.
pub fn state_dir() -> Result<PathBuf> {
    state_dir_from(|name| crate::env::var_os(name))
}

/// [`state_dir`] with the environment passed in, for tests.
fn state_dir_from(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(d) = set("HIMALAYA_SYNC_STATE_DIR") {
        return Ok(PathBuf::from(d));
    }
    let base = match set("XDG_STATE_HOME") {
        Some(d) => PathBuf::from(d),
        None => {
            let home = set("HOME").ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    "no state folder: set HIMALAYA_SYNC_STATE_DIR, XDG_STATE_HOME or HOME",
                )
            })?;
            PathBuf::from(home).join(".local").join("state")
        }
    };
    // Neovim refuses an app name that is a path leading out of its folder;
    // such a name is not Neovim's, so the default one is used.
    let app = set("NVIM_APPNAME")
        .map(PathBuf::from)
        .filter(|a| {
            a.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        })
        .unwrap_or_else(|| PathBuf::from("nvim"));
    Ok(base.join(app).join("himalaya-sync"))
}

fn accounts_file(state_dir: &Path) -> PathBuf {
    state_dir.join("oauth").join("accounts.json")
}

/// Writes every OAuth account's settings for the token command.
pub fn save_all(state_dir: &Path, accounts: &[AccountSettings]) -> Result<()> {
    let dir = state_dir.join("oauth");
    crate::lock::ensure_private_dir(state_dir, "state directory")?;
    crate::lock::ensure_private_dir(&dir, "OAuth folder")?;
    let map: BTreeMap<&str, &AccountSettings> =
        accounts.iter().map(|a| (a.name.as_str(), a)).collect();
    let text = serde_json::to_vec_pretty(&map)
        .map_err(|e| Error::new(ErrorKind::Unknown, format!("cannot encode accounts: {e}")))?;
    super::store::write_private_file(&dir, &accounts_file(state_dir), &text)
}

/// Reads one account's settings, as written by [`save_all`].
pub fn load(state_dir: &Path, name: &str) -> Result<AccountSettings> {
    let path = accounts_file(state_dir);
    let text = match super::store::read_private_file(&path)? {
        Some(t) => t,
        None => {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "no OAuth account {name:?}: {} does not exist (configure accounts.{name}.oauth in Neovim first)",
                    path.display()
                ),
            ))
        }
    };
    let mut map: BTreeMap<String, AccountSettings> = serde_json::from_slice(&text)
        .map_err(|e| Error::new(ErrorKind::Config, format!("{}: {e}", path.display())))?;
    map.remove(name).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!(
                "no OAuth account {name:?} in {} (configured: {})",
                path.display(),
                map.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(json: &str) -> AccountSettings {
        serde_json::from_str(json).expect("test json")
    }

    #[test]
    fn the_state_folder_is_neovims_for_its_app_name() {
        let dir = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, OsString)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect();
            state_dir_from(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        };
        let path = |p: &str| PathBuf::from(p);
        assert_eq!(
            dir(&[("HOME", "/h")]).unwrap(),
            path("/h/.local/state/nvim/himalaya-sync")
        );
        assert_eq!(
            dir(&[
                ("HOME", "/h"),
                ("XDG_STATE_HOME", "/s"),
                ("NVIM_APPNAME", "mail")
            ])
            .unwrap(),
            path("/s/mail/himalaya-sync")
        );
        assert_eq!(
            dir(&[("XDG_STATE_HOME", "/s"), ("NVIM_APPNAME", "../x")]).unwrap(),
            path("/s/nvim/himalaya-sync")
        );
        assert_eq!(
            dir(&[("HIMALAYA_SYNC_STATE_DIR", "/st"), ("NVIM_APPNAME", "mail")]).unwrap(),
            path("/st")
        );
        assert_eq!(dir(&[]).unwrap_err().kind, ErrorKind::Config);
    }

    #[test]
    fn one_client_secret_source_only() {
        let a = account(
            r#"{"name":"g","provider":"google","client_secret":"s","client_secret_env":"E"}"#,
        );
        let e = a.provider_spec().unwrap_err();
        assert!(
            e.message.starts_with("accounts.g.oauth.client_secret"),
            "{e}"
        );
        assert!(!e.message.contains("\"s\""));
    }

    #[test]
    fn store_defaults_and_errors_name_the_field() {
        let a = account(r#"{"name":"g","store":{"backend":"gpg"}}"#);
        let e = a.store_spec(Path::new("/s")).unwrap_err();
        assert_eq!(e.message, "accounts.g.oauth.store.recipient: is required");
        let a = account(r#"{"name":"g","store":{"backend":"floppy"}}"#);
        let e = a.store_spec(Path::new("/s")).unwrap_err();
        assert!(e.message.contains("store.backend") && e.message.contains("floppy"));
        let a = account(r#"{"name":"g"}"#);
        assert!(matches!(
            a.store_spec(Path::new("/s")).unwrap(),
            StoreSpec::SecretService { .. }
        ));
    }

    #[test]
    fn debug_hides_the_client_secret() {
        let a = account(r#"{"name":"g","client_secret":"very-secret-value"}"#);
        assert!(!format!("{a:?}").contains("very-secret-value"));
    }

    #[test]
    fn accounts_file_round_trip_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let a = account(r#"{"name":"g","provider":"google","client_id":"id"}"#);
        save_all(&state, std::slice::from_ref(&a)).unwrap();
        assert_eq!(load(&state, "g").unwrap(), a);
        let mode = std::fs::metadata(accounts_file(&state))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = load(&state, "other").unwrap_err();
        assert!(e.message.contains("configured: g"), "{e}");
    }
}
