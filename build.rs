//! Embeds the crate version and a build id into the library so the Lua
//! loader can tell a stale or foreign build from the one it expects.
//!
//! This script must never fail the build: no git, an unusual
//! `CARGO_TARGET_DIR` or a `--target` triple only degrade the build id.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "nogit".to_string());
    println!("cargo:rustc-env=HIMALAYA_SYNC_BUILD_ID={commit}-{stamp:x}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src");
}
