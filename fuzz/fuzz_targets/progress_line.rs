//! Fuzzes mbsync progress parsing: one line ([`parse_progress_line`]) and
//! the pseudo-terminal stream split at an input-chosen point
//! ([`StreamParser`]). Any panic or hang is a bug.
#![no_main]

use himalaya_sync::mbsync::progress::{parse_progress_line, StreamParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_progress_line(data);
    let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let mut parser = StreamParser::new();
    let _ = parser.feed(&data[..cut]);
    let _ = parser.feed(&data[cut..]);
    let _ = parser.finish();
});
