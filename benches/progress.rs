//! The engine's progress parser on its own: how fast the reader thread of a
//! sync turns a recorded mbsync pty stream into progress frames.
//!
//! `make bench` runs this next to `parse_progress_line` called from Lua
//! (section 5 of BENCHMARKS.md). The Lua row pays for a call into the
//! library and the 13 tables of a frame per line; a sync pays neither: its
//! reader thread feeds what it read from the terminal to a
//! [`StreamParser`] and sends on only the latest frame. This measures that
//! feeding, in reads of the size a Linux terminal hands out.
//!
//! Usage: `cargo bench --bench progress -- STREAM [PASSES]`. Prints one JSON
//! object per pass: seconds, bytes, frames and other lines found.

use std::time::Instant;

use himalaya_sync::mbsync::progress::{StreamItem, StreamParser};

/// What one `read` of a Linux pty returns at most (its line-discipline
/// buffer hands out 4 KiB less the byte a canonical reader may need).
const READ: usize = 4095;

fn main() {
    // `cargo bench` adds `--bench` to the arguments it passes on.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(path) = args.first() else {
        eprintln!("usage: progress STREAM [PASSES]");
        std::process::exit(2);
    };
    let passes = match args.get(1).map(|p| p.parse::<u32>()) {
        None => 5,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("PASSES must be a whole number above 0, got {:?}", args[1]);
            std::process::exit(2);
        }
    };
    let stream = match std::fs::read(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(1);
        }
    };
    for _ in 0..passes {
        // Each pass runs the stream through a fresh parser enough times for
        // the clock to resolve it (about 0.2 s), as one sync would.
        let mut rounds = 0u64;
        let (mut frames, mut lines) = (0u64, 0u64);
        let mut count = |items: Vec<StreamItem>| {
            for item in items {
                match item {
                    StreamItem::Progress(_) => frames += 1,
                    StreamItem::Line(_) => lines += 1,
                }
            }
        };
        let start = Instant::now();
        while rounds == 0 || start.elapsed().as_secs_f64() < 0.2 {
            let mut parser = StreamParser::new();
            for chunk in stream.chunks(READ) {
                count(parser.feed(chunk));
            }
            count(parser.finish());
            rounds += 1;
        }
        let seconds = start.elapsed().as_secs_f64() / rounds as f64;
        println!(
            "{{\"seconds\": {seconds:.9}, \"bytes\": {}, \"frames\": {}, \"lines\": {}, \"rounds\": {rounds}}}",
            stream.len(),
            frames / rounds,
            lines / rounds
        );
    }
}
