//! Fuzzes [`MbsyncConfig::parse`] with arbitrary text (invalid UTF-8 is
//! replaced, as a file read lossily would be). Any panic or hang is a bug.
#![no_main]

use std::path::Path;

use himalaya_sync::mbsync::config::MbsyncConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(cfg) = MbsyncConfig::parse(&text, Path::new("/home/fuzz/.mbsyncrc")) {
        let _ = cfg.targets();
    }
});
