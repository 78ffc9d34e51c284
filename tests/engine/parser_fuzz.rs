//! Property tests that feed about a million generated inputs to the two
//! parsers of untrusted text: mbsync's progress output
//! ([`parse_progress_line`], [`StreamParser`]) and the mbsync configuration
//! ([`MbsyncConfig::parse`]).
//!
//! The properties: no panic, no hang (a watchdog thread aborts the run,
//! printing the input, when one call takes longer than [`HANG`]; each call
//! must also finish within [`SLOW`]), and the configuration's password
//! never shows in an error message or in `Debug` output. Inputs are mostly
//! mutated near-valid text, since purely random bytes rarely get past the
//! first check. Proptest generates a few thousand structured inputs per
//! property; each is then mutated [`VARIANTS`] times by a cheap
//! deterministic generator (proptest's own machinery costs more than the
//! parsers), so a failure names the proptest input and the variant. Meant
//! for `cargo test --release` (10-20 s there).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use himalaya_sync::mbsync::config::MbsyncConfig;
use himalaya_sync::mbsync::progress::{parse_progress_line, StreamParser};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

/// One call that used more CPU time than this fails the test. CPU time,
/// not wall time: on a busy machine the thread may wait for a CPU for a
/// while in the middle of a call (the watchdog catches hangs by wall time).
const SLOW: Duration = Duration::from_millis(250);
/// One call slower than this is a hang: the watchdog aborts the process.
const HANG: Duration = Duration::from_secs(5);

/// Proptest inputs per property.
const CASES: u32 = 2_500;
/// Mutated variants parsed per proptest input: with four properties, about
/// a million parser inputs in all.
const VARIANTS: usize = 100;

/// xorshift64*: a tiny deterministic generator for the mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Byte strings worth splicing into inputs (progress and config syntax).
const TOKENS: &[&[u8]] = &[
    b"C: ",
    b"B: ",
    b"F: ",
    b"N: ",
    b"M: ",
    b"S: ",
    b"+",
    b"*",
    b"#",
    b"-",
    b"~",
    b"/",
    b" ",
    b"\r",
    b"\n",
    b"\x1b[2K",
    b"\x1b[",
    b"\x1b]0;",
    b"\x07",
    b"0",
    b"4294967296",
    b"18446744073709551616",
    b"\"",
    b":",
    b"!",
    b"\\",
    b"~/",
    b"..",
    b"\t",
    b"\0",
    b"\xff",
    "é€".as_bytes(),
    b"Channel ",
    b"Group ",
    b"IMAPAccount ",
    b"MaildirStore ",
    b"Far :",
    b"Near :",
    b"Patterns ",
    b"Pass ",
    b"Path ",
    b"Channels ",
];

/// `base` with a few random edits: flips, splices, cuts, repeats.
fn mutate(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if at < v.len() => v[at] = rng.next() as u8,
            1 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            2 if at < v.len() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            3 => v.truncate(at),
            4 if at < v.len() => {
                let end = (at + 1 + rng.below(32)).min(v.len());
                let piece = v[at..end].to_vec();
                for _ in 0..1 + rng.below(8) {
                    v.splice(at..at, piece.iter().copied());
                }
            }
            _ => v.insert(at.min(v.len()), rng.next() as u8),
        }
    }
    v
}

/// Start of the call in progress (ms since the epoch, 0 when idle) and its
/// input, for the watchdog.
static BUSY_SINCE: AtomicU64 = AtomicU64::new(0);
static CURRENT: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Starts (once) the thread that aborts the process when a call hangs.
fn watchdog() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_millis(200));
            let since = BUSY_SINCE.load(Ordering::SeqCst);
            if since != 0 && now_ms().saturating_sub(since) > HANG.as_millis() as u64 {
                let input = CURRENT.lock().map(|i| i.clone()).unwrap_or_default();
                eprintln!(
                    "parser_fuzz: a parser call has run for over {HANG:?} on input {:?}",
                    String::from_utf8_lossy(&input)
                );
                std::process::abort();
            }
        });
    });
}

/// CPU time the calling thread has used so far.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` on `input` under the watchdog; fails when it was slow.
fn guarded<T>(input: &[u8], f: impl FnOnce() -> T) -> std::result::Result<T, TestCaseError> {
    watchdog();
    if let Ok(mut cur) = CURRENT.lock() {
        cur.clear();
        cur.extend_from_slice(input);
    }
    BUSY_SINCE.store(now_ms().max(1), Ordering::SeqCst);
    let started = thread_cpu_time();
    let out = f();
    let took = thread_cpu_time().saturating_sub(started);
    BUSY_SINCE.store(0, Ordering::SeqCst);
    prop_assert!(
        took < SLOW,
        "took {took:?} on {:?}",
        String::from_utf8_lossy(input)
    );
    Ok(out)
}

fn config() -> Config {
    Config {
        cases: CASES,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        // Shrinking a million-case run can take long; the input is printed.
        max_shrink_iters: 200,
        ..Config::default()
    }
}

/// Pieces of mbsync progress output, escape sequences and noise.
fn progress_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(b"C: ".to_vec()),
        3 => Just(b"B: ".to_vec()),
        3 => Just(b"F: ".to_vec()),
        3 => Just(b"N: ".to_vec()),
        2 => Just(b"M: ".to_vec()),
        2 => Just(b"S: ".to_vec()),
        3 => Just(b"+".to_vec()),
        3 => Just(b"*".to_vec()),
        3 => Just(b"#".to_vec()),
        2 => Just(b"-".to_vec()),
        2 => Just(b"~".to_vec()),
        6 => Just(b"/".to_vec()),
        6 => Just(b" ".to_vec()),
        2 => Just(b"  ".to_vec()),
        1 => Just(b"\r".to_vec()),
        1 => Just(b"\n".to_vec()),
        1 => Just(b"\x1b[2K".to_vec()),
        1 => Just(b"\x1b[?25l".to_vec()),
        1 => Just(b"\x1b]0;title\x07".to_vec()),
        1 => Just(b"\x1b[".to_vec()),
        8 => (0u64..100_000).prop_map(|n| n.to_string().into_bytes()),
        1 => Just(b"18446744073709551615".to_vec()),
        1 => Just(b"99999999999999999999999".to_vec()),
        2 => proptest::collection::vec(any::<u8>(), 0..6),
        1 => Just("é€\u{feff}".as_bytes().to_vec()),
    ]
}

/// A well-formed progress line (1.3/1.4 or 1.5 style).
fn progress_line() -> impl Strategy<Value = Vec<u8>> {
    let pair = || (0u64..5000, 0u64..5000).prop_map(|(a, b)| format!("{a}/{b}"));
    let side = move || (pair(), pair(), pair()).prop_map(|(n, f, t)| format!("+{n} *{f} #{t}"));
    (pair(), pair(), side(), side(), any::<bool>()).prop_map(|(c, b, far, near, new_names)| {
        let (x, y) = if new_names { ("F", "N") } else { ("M", "S") };
        format!("C: {c}  B: {b}  {x}: {far}  {y}: {near}").into_bytes()
    })
}

/// Progress-like input: mutated lines or glued pieces.
fn progress_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(progress_piece(), 0..40).prop_map(|v| v.concat()),
        3 => (progress_line(), proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4))
            .prop_map(|(mut line, edits)| {
                for (i, b) in edits {
                    let at = i.index(line.len() + 1);
                    if at < line.len() && b % 2 == 0 {
                        line[at] = b;
                    } else if at < line.len() && b % 3 == 0 {
                        line.truncate(at);
                    } else {
                        line.insert(at.min(line.len()), b);
                    }
                }
                line
            }),
        1 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => (progress_piece(), 0usize..3000).prop_map(|(p, n)| p.repeat(n)),
    ]
}

/// Lines of an mbsync configuration: keywords with plausible and hostile
/// values.
fn config_line(secret: String) -> impl Strategy<Value = String> {
    let keyword = prop::sample::select(vec![
        "IMAPAccount",
        "IMAPStore",
        "MaildirStore",
        "Channel",
        "Group",
        "Host",
        "Port",
        "User",
        "Pass",
        "PassCmd",
        "UserCmd",
        "Account",
        "Path",
        "Inbox",
        "SubFolders",
        "Flatten",
        "Far",
        "Near",
        "Master",
        "Slave",
        "Patterns",
        "Pattern",
        "Channels",
        "Sync",
        "Create",
        "Remove",
        "Expunge",
        "SyncState",
        "SSLType",
        "TLSType",
        "AuthMechs",
        "Tunnel",
        "Timeout",
        "MaxMessages",
        "CertificateFile",
        "FSync",
        "PipelineDepth",
        "Trash",
        "UseKeychain",
        "BufferLimit",
        "FieldDelimiter",
        "CopyArrivalDate",
        "Bogus",
        "",
    ]);
    let value = prop::sample::select(vec![
        "a",
        "demo",
        ":demo-remote:",
        ":demo-local:INBOX",
        ":a:\"sub dir\"",
        ":",
        "::",
        "*",
        "* !Trash !\"All Mail\"",
        "\"",
        "\"unterminated",
        "\"a\\\"b\"",
        "~/Mail/",
        "~",
        "~x/y",
        "/abs/path/",
        "../up",
        "993",
        "-1",
        "99999999999",
        "yes",
        "no",
        "Both",
        "Pull Push",
        "IMAPS",
        "None",
        "LOGIN PLAIN",
        "Verbatim",
        "Maildir++",
        "Legacy",
        ".",
        "#",
        "é€",
        "a:b",
        "  ",
        "\t",
        "demo:INBOX,Sent",
        "$(touch x)",
    ]);
    prop_oneof![
        6 => (keyword, proptest::collection::vec(value, 0..3))
            .prop_map(|(k, v)| format!("{k} {}", v.join(" "))),
        1 => Just(format!("Pass {secret}")),
        1 => Just(format!("Pass \"{secret}")),
        1 => Just(format!("Pass \"{secret}\" extra")),
        1 => Just(String::new()),
        1 => Just("# comment".to_owned()),
        1 => "\\PC{0,40}",
    ]
}

/// A whole configuration: a valid account and channel, plus generated lines.
fn config_input() -> impl Strategy<Value = (String, String)> {
    "[A-Za-z0-9]{8,16}".prop_flat_map(|tail| {
        let secret = format!("S3cr3t-{tail}");
        let head = format!(
            "IMAPAccount demo\nHost 127.0.0.1\nUser demo\nPass \"{secret}\"\n\n\
             IMAPStore demo-remote\nAccount demo\n\nMaildirStore demo-local\nPath /m/\n\n\
             Channel demo\nFar :demo-remote:\nNear :demo-local:\n"
        );
        (
            Just(secret.clone()),
            Just(head),
            proptest::collection::vec(config_line(secret), 0..25),
            any::<bool>(),
        )
            .prop_map(|(secret, head, lines, keep_head)| {
                let body = lines.join("\n");
                let text = if keep_head {
                    format!("{head}{body}")
                } else {
                    body
                };
                (secret, text)
            })
    })
}

/// Every line of `text` holding `secret` is `Pass secret` or `Pass "secret...`.
fn only_as_password(text: &str, secret: &str) -> bool {
    // The parser drops the backslash of an escape (`S3cr\3t` is `S3cr3t`),
    // and quotes join what they glue (`"S3c"r3t`), so lines are compared
    // without backslashes and quotes; an escaped blank joins two
    // words into one keyword (`Pass\ x`), which is no `Pass` line.
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            l.replace("\\ ", "\u{0}")
                .replace("\\\t", "\u{0}")
                .replace(['\\', '"'], "")
        })
        .collect();
    lines.iter().filter(|l| l.contains(secret)).all(|l| {
        l.trim_start()
            .strip_prefix("Pass")
            .filter(|rest| rest.starts_with([' ', '\t']))
            .is_some_and(|rest| {
                rest.trim_start()
                    .trim_start_matches('"')
                    .starts_with(secret)
            })
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn progress_line_parser_survives_anything(input in progress_input(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        guarded(&input, || parse_progress_line(&input))?;
        for _ in 0..VARIANTS {
            let v = mutate(&input, &mut rng);
            guarded(&v, || parse_progress_line(&v))?;
        }
    }

    #[test]
    fn well_formed_progress_lines_parse(line in progress_line(), seed in any::<u64>()) {
        let p = guarded(&line, || parse_progress_line(&line))?;
        prop_assert!(p.is_some(), "rejected {:?}", String::from_utf8_lossy(&line));
        // Noise around a frame, or frames before it, do not hide it.
        let mut rng = Rng::new(seed);
        for _ in 0..VARIANTS {
            let mut v = mutate(&line, &mut rng);
            v.push(b'\r');
            v.extend_from_slice(&line);
            let p = guarded(&v, || parse_progress_line(&v))?;
            prop_assert!(p.is_some(), "rejected {:?}", String::from_utf8_lossy(&v));
        }
    }

    #[test]
    fn stream_parser_survives_any_chunking(input in progress_input(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        for _ in 0..VARIANTS {
            let v = mutate(&input, &mut rng);
            let mut at: Vec<usize> = (0..rng.below(6)).map(|_| rng.below(v.len() + 1)).collect();
            at.sort_unstable();
            guarded(&v, || {
                let mut parser = StreamParser::new();
                let mut from = 0;
                let mut items = 0;
                for cut in at.into_iter().chain([v.len()]) {
                    items += parser.feed(&v[from..cut]).len();
                    from = cut;
                }
                items + parser.finish().len()
            })?;
        }
    }

    #[test]
    fn config_parser_survives_and_keeps_the_password_secret(
        (secret, text) in config_input(),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        for i in 0..=VARIANTS {
            let v = if i == 0 {
                text.clone()
            } else {
                String::from_utf8_lossy(&mutate(text.as_bytes(), &mut rng)).into_owned()
            };
            let parsed = guarded(v.as_bytes(), || {
                MbsyncConfig::parse(&v, Path::new("/home/me/.mbsyncrc"))
            })?;
            // A mutation may have glued the password to another word; only
            // a password that is still the value of a `Pass` must stay hidden.
            if !only_as_password(&v, &secret) {
                continue;
            }
            match parsed {
                Ok(cfg) => {
                    let shown = format!("{cfg:?}");
                    prop_assert!(!shown.contains(&secret), "Debug shows the password: {shown}");
                    let json = serde_json::to_string(&cfg).unwrap_or_default();
                    prop_assert!(!json.contains(&secret), "serialized config shows the password: {json}");
                }
                Err(e) => {
                    prop_assert!(
                        !e.message.contains(&secret),
                        "error shows the password: {} (input {v:?})",
                        e.message
                    );
                    prop_assert!(!e.message.contains('\n'), "error is one line: {}", e.message);
                }
            }
        }
    }
}
