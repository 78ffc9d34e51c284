//! The process environment, as engine threads may read it.
//!
//! Inside Neovim, Lua code changes the environment on the editor's thread
//! (`vim.env.X = ...` calls `setenv`). In glibc releases before its fix
//! (2.36 in Debian 12 and 2.39 in Ubuntu 24.04 still have it), a `setenv`
//! that adds a variable moves the environment array and frees the old one,
//! so a `getenv` or a spawn reading it on another thread at that moment can
//! read freed memory and crash Neovim. So engine threads never read the
//! environment themselves: the glue takes a [`snapshot`] on the editor's
//! thread before each call that hands work to them, and [`var_os`] and
//! [`vars_os`] read that snapshot on every other thread. On the thread that
//! took it they read the live environment (nothing else changes it there).
//!
//! Without a snapshot (the command-line tool, Rust tests) both read the
//! live environment: no thread of ours shares it with an editor there.
//!
//! The OAuth client's proxies (`HTTPS_PROXY` and the like) and the
//! certificate variables of IMAP checks and IDLE (`SSL_CERT_FILE`,
//! `SSL_CERT_DIR`) come from the copy too: reqwest is told the proxies, and
//! the system roots are loaded from paths worked out here, instead of
//! either library reading the environment itself.
//!
//! What this does not cover, because other code reads the environment
//! itself on our threads: glibc's name lookup (`getaddrinfo` reads
//! `LOCALDOMAIN` and `RES_OPTIONS` when it loads resolv.conf; Neovim's own
//! libuv threads do the same). The library takes its first snapshot and
//! sets up the time zone (`TZ`) when it is loaded, on Neovim's thread.

use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::thread::ThreadId;

use parking_lot::RwLock;

struct Snapshot {
    owner: ThreadId,
    /// The addresses of the `NAME=value` strings the copy was made from:
    /// `setenv` always installs a new string, so equal addresses mean
    /// nothing changed and the copy is kept.
    strings: Vec<usize>,
    vars: Arc<Vec<(OsString, OsString)>>,
}

static SNAPSHOT: RwLock<Option<Snapshot>> = RwLock::new(None);

extern "C" {
    // Mutable: `setenv` changes it.
    static mut environ: *const *const libc::c_char;
}

/// Copies the environment for engine threads. Call it on the thread that
/// may change the environment (Neovim's), before handing work to others.
/// Unchanged since the last call, it costs a walk over a few dozen
/// pointers (it runs at every call from Lua that may start work).
pub fn snapshot() {
    let strings = string_addresses();
    let owner = std::thread::current().id();
    let mut slot = SNAPSHOT.write();
    match slot.as_mut() {
        Some(s) if s.strings == strings => s.owner = owner,
        _ => {
            *slot = Some(Snapshot {
                owner,
                strings,
                vars: Arc::new(std::env::vars_os().collect()),
            })
        }
    }
}

/// The addresses in the `environ` array, in order.
fn string_addresses() -> Vec<usize> {
    let mut out = Vec::new();
    // SAFETY: called on the thread that changes the environment, so the
    // array and its strings stay put while we walk it; it ends with NULL.
    unsafe {
        let mut p = std::ptr::addr_of!(environ).read();
        if p.is_null() {
            return out;
        }
        while !(*p).is_null() {
            out.push(*p as usize);
            p = p.add(1);
        }
    }
    out
}

/// The snapshot to read on this thread, or None to read the live
/// environment.
fn current() -> Option<Arc<Vec<(OsString, OsString)>>> {
    let slot = SNAPSHOT.read();
    let s = slot.as_ref()?;
    (s.owner != std::thread::current().id()).then(|| s.vars.clone())
}

/// The value of `name`, like `std::env::var_os`.
pub fn var_os(name: impl AsRef<OsStr>) -> Option<OsString> {
    let name = name.as_ref();
    match current() {
        Some(vars) => vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
        None => std::env::var_os(name),
    }
}

/// The value of `name` when it is set and valid UTF-8, like
/// `std::env::var(name).ok()`.
pub fn var(name: impl AsRef<OsStr>) -> Option<String> {
    var_os(name).and_then(|v| v.into_string().ok())
}

/// Every variable, like `std::env::vars_os`.
pub fn vars_os() -> Vec<(OsString, OsString)> {
    match current() {
        Some(vars) => vars.as_ref().clone(),
        None => std::env::vars_os().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Installs `vars` as the snapshot owned by this thread, as `snapshot`
    /// would after a change.
    fn install(vars: Vec<(OsString, OsString)>) {
        *SNAPSHOT.write() = Some(Snapshot {
            owner: std::thread::current().id(),
            strings: Vec::new(),
            vars: Arc::new(vars),
        });
    }

    /// The test's snapshot is the real environment plus one variable, so
    /// tests running beside it on other threads read the same values.
    #[test]
    fn other_threads_read_the_snapshot_the_owner_the_live_environment() {
        const NAME: &str = "HIMALAYA_SYNC_TEST_ONLY_IN_SNAPSHOT";
        assert_eq!(std::env::var_os(NAME), None);
        let mut vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        vars.push((NAME.into(), "from the snapshot".into()));
        install(vars);
        assert_eq!(var_os(NAME), None, "the owner reads the live environment");
        let seen =
            std::thread::spawn(|| (var(NAME), vars_os().into_iter().any(|(k, _)| k == NAME)))
                .join()
                .unwrap();
        assert_eq!(seen, (Some("from the snapshot".to_string()), true));
        snapshot();
        let seen = std::thread::spawn(|| var_os(NAME)).join().unwrap();
        assert_eq!(seen, None, "a new snapshot replaces the old one");
    }

    #[test]
    fn the_environment_walk_sees_every_variable() {
        assert_eq!(string_addresses().len(), std::env::vars_os().count());
    }
}
