//! Bandwidth throttling through mbsync's own `Tunnel` option.
//!
//! For a throttled account the manager runs mbsync with a derived copy of
//! the mbsyncrc in which each IMAP account the channels use gets
//! `Tunnel "himalaya-sync relay --kbps N HOST PORT"`: mbsync then talks to
//! the server through our rate-limited relay. TLS stays end to end (mbsync
//! still does TLS over the tunnel and checks the certificate against
//! `Host`), and nothing else in the configuration changes. The copy holds
//! the user's settings, secrets included, so it is written 0600 into the
//! private state folder and removed after the sync.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::mbsync::config::MbsyncConfig;

/// Writes the derived configuration for `channels` and returns its path.
pub fn derived_config(
    cfg: &MbsyncConfig,
    channels: &[String],
    kbps: u32,
    relay: &Path,
    dir: &Path,
    tag: u64,
) -> Result<PathBuf> {
    let refuse = |why: String| Error::new(ErrorKind::Config, format!("cannot throttle: {why}"));
    if kbps == 0 {
        return Err(refuse("throttle.kbps must be at least 1".into()));
    }
    if !relay.is_file() {
        return Err(refuse(format!(
            "the relay program {} is missing; run cargo build --release in the plugin folder",
            relay.display()
        )));
    }
    let text = crate::files::read_regular_text(&cfg.path, crate::files::MAX_CONFIG_BYTES)
        .map_err(|e| Error::io(format!("cannot read {}", cfg.path.display()), e))?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // (line number of the section header, tunnel command), last first so
    // insertions do not move the lines still to change.
    let mut inserts: Vec<(usize, String)> = Vec::new();
    for name in channels {
        let chan = cfg
            .channel(name)
            .ok_or_else(|| refuse(format!("no channel {name:?}")))?;
        let acct = cfg
            .imap_account_for(chan)
            .ok_or_else(|| refuse(format!("channel {name} has no IMAP side")))?;
        if acct.tunnel.is_some() {
            return Err(refuse(format!(
                "IMAP account {} already uses a Tunnel",
                acct.name
            )));
        }
        let host = acct
            .host
            .as_deref()
            .ok_or_else(|| refuse(format!("IMAP account {} has no Host", acct.name)))?;
        let imaps = acct
            .ssl_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("IMAPS"));
        let port = acct.port.unwrap_or(if imaps { 993 } else { 143 });
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let cmd = format!(
            "{} relay --kbps {kbps} {} {port}",
            quote(&relay.display().to_string()),
            quote(host)
        );
        if !inserts.iter().any(|(l, _)| *l == acct.line) {
            inserts.push((acct.line, cmd));
        }
    }
    inserts.sort_by_key(|(line, _)| std::cmp::Reverse(*line));
    for (line, cmd) in inserts {
        // mbsync's own quoting: a double-quoted value with \" and \\.
        let value = cmd.replace('\\', "\\\\").replace('"', "\\\"");
        lines.insert(line, format!("Tunnel \"{value}\""));
    }
    remove_leftovers(dir);
    let path = dir.join(format!("{PREFIX}{}-{tag}", std::process::id()));
    // A file of this name can only be a leftover of a dead process that had
    // our pid: tags are unique within a process, and pids among the living.
    let _ = fs::remove_file(&path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    if let Err(e) = f.write_all((lines.join("\n") + "\n").as_bytes()) {
        // Part of a file that holds the account's password is not left.
        let _ = fs::remove_file(&path);
        return Err(Error::io(format!("cannot write {}", path.display()), e));
    }
    Ok(path)
}

/// Names of the derived copies: `PREFIX<pid>-<tag>`.
const PREFIX: &str = "mbsyncrc-throttled-";

/// Removes the derived copies of processes that are gone. A copy holds the
/// mbsyncrc's passwords, and a process killed with SIGKILL (or a crash)
/// never runs its [`Cleanup`].
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
            .filter(|&pid| pid > 0)
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Removes the derived copy when dropped.
pub struct Cleanup(pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn inserts_a_tunnel_into_the_account_section_only() {
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join("rc");
        fs::write(
            &rc,
            "IMAPAccount a\nHost mail.example.org\nUser me\nPass \"s3cret\"\nSSLType IMAPS\n\n\
             IMAPStore a-remote\nAccount a\n\nMaildirStore l\nPath /tmp/m/\n\n\
             Channel a\nFar :a-remote:\nNear :l:\nPatterns *\nSyncState *\n",
        )
        .unwrap();
        let cfg = MbsyncConfig::load(Some(&rc)).unwrap();
        let relay = dir.path().join("himalaya-sync");
        fs::write(&relay, "").unwrap();
        let out = derived_config(&cfg, &["a".into()], 50, &relay, dir.path(), 1).unwrap();
        let text = fs::read_to_string(&out).unwrap();
        assert!(
            text.starts_with(&format!(
                "IMAPAccount a\nTunnel \"'{}' relay --kbps 50 'mail.example.org' 993\"\nHost",
                relay.display()
            )),
            "{text}"
        );
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = MbsyncConfig::load(Some(&out)).unwrap();
        assert!(again.imap_accounts[0].tunnel.is_some());
        drop(Cleanup(out.clone()));
        assert!(!out.exists());

        // Left by processes killed before their cleanup: one whose pid is
        // free now (a child already reaped), and one of a dead process that
        // had our pid, under the name this call uses.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = dir.path().join(format!("{PREFIX}{dead}-7"));
        let reused = dir.path().join(format!("{PREFIX}{}-2", std::process::id()));
        let alive = dir.path().join(format!("{PREFIX}1-3"));
        for f in [&stale, &reused, &alive] {
            fs::write(f, "Pass \"old\"\n").unwrap();
        }
        let out = derived_config(&cfg, &["a".into()], 50, &relay, dir.path(), 2).unwrap();
        assert_eq!(out, reused);
        assert!(fs::read_to_string(&out).unwrap().contains("Tunnel"));
        assert!(!stale.exists(), "a dead process's copy is removed");
        assert!(alive.exists(), "a live process's copy (pid 1) is kept");
    }

    #[test]
    fn refuses_what_it_cannot_do_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join("rc");
        fs::write(
            &rc,
            "IMAPAccount a\nTunnel \"ssh x\"\n\nIMAPStore r\nAccount a\n\nMaildirStore l\nPath /tmp/m/\n\n\
             Channel a\nFar :r:\nNear :l:\n",
        )
        .unwrap();
        let cfg = MbsyncConfig::load(Some(&rc)).unwrap();
        let relay = dir.path().join("relay");
        let e = derived_config(&cfg, &["a".into()], 50, &relay, dir.path(), 1).unwrap_err();
        assert!(e.message.contains("relay program"), "{e}");
        fs::write(&relay, "").unwrap();
        let e = derived_config(&cfg, &["a".into()], 50, &relay, dir.path(), 1).unwrap_err();
        assert!(e.message.contains("already uses a Tunnel"), "{e}");
    }
}
