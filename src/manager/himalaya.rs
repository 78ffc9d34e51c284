//! The himalaya CLI's accounts as the manager sees them: each with the
//! mbsync channels (or group) that fill its Maildir (see
//! [`crate::himalaya`]).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Manager;
use crate::error::Result;
use crate::himalaya::{discover, match_channels, AccountMatch, HimalayaAccount};

/// himalaya's configuration file, its accounts and their mbsync side.
#[derive(Debug, Clone, Serialize)]
pub struct HimalayaAccounts {
    /// The (base) configuration file read.
    pub config: PathBuf,
    /// Sorted by name.
    pub accounts: Vec<HimalayaAccount>,
    /// One per account, same order.
    pub matches: Vec<AccountMatch>,
}

impl Manager {
    /// Reads himalaya's configuration (`path`, else `$HIMALAYA_CONFIG` or
    /// the default locations) and matches its accounts with the channels
    /// of the mbsyncrc in use. `None` when himalaya has no configuration.
    pub fn himalaya_accounts(&self, path: Option<&Path>) -> Result<Option<HimalayaAccounts>> {
        let Some((config, accounts)) = discover(path)? else {
            return Ok(None);
        };
        let matches = match_channels(&accounts, &self.mbsync_config()?);
        Ok(Some(HimalayaAccounts {
            config,
            accounts,
            matches,
        }))
    }
}
