//! mbsync's progress counters, read from its terminal output.
//!
//! When its standard output is a terminal, mbsync keeps one status line up to
//! date by printing `\r` followed by a new frame:
//!
//! ```text
//! C: 1/2  B: 3/4  M: +13/13 *23/42 #0/0  S: +0/7 *0/0 #0/0          (1.3)
//! C: 1/2  B: 3/4  F: +13/13 *23/42 #0/0  N: +0/7 *0/0 #0/0          (1.4)
//! C: 1/2  B: 3/4  F: +13/13 *23/42 #0/0 -0/0  N: +0/7 *0/0 #0/0 -0/0 (1.5)
//! ```
//!
//! `C` counts channels, `B` mailboxes; each side then counts new messages
//! (`+`), flag changes (`*`), messages moved to the trash (`#`) and, from 1.5
//! on, expunged messages (`-`). When the terminal is narrow mbsync cuts each
//! side to the same width and replaces its last visible character with `~`.
//!
//! [`parse_progress_line`] reads one frame; [`StreamParser`] splits the raw
//! byte stream of a pseudo-terminal into progress frames and ordinary lines
//! (mailbox names, warnings, errors). Both accept arbitrary bytes, including
//! invalid UTF-8 and terminal escape sequences, and never panic.

use serde::Serialize;

/// Longest line [`StreamParser`] buffers while waiting for its end. mbsync's
/// own lines are far shorter; this only bounds memory when something writes
/// megabytes without a line break.
const MAX_LINE: usize = 64 * 1024;

/// Longest frame (after removing escape sequences) that can be a progress
/// line. A real frame holds at most fourteen 10-digit numbers and its labels,
/// about 250 bytes; anything longer is ordinary output, so it is rejected
/// without being looked at and the parser can work in a fixed stack buffer.
const MAX_FRAME: usize = 512;

const ESC: u8 = 0x1b;

/// A `done/total` pair as mbsync prints it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counter {
    pub done: u64,
    pub total: u64,
}

/// The message counters of one side (far or near) of the synchronisation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Side {
    /// `+`: messages copied to this side.
    pub new: Counter,
    /// `*`: flag changes applied to this side.
    pub flags: Counter,
    /// `#`: messages moved to this side's trash.
    pub trash: Counter,
    /// `-`: messages expunged from this side (mbsync 1.5 and later; zero
    /// for older versions).
    pub expunge: Counter,
}

impl Side {
    fn counters(&self) -> [Counter; 4] {
        [self.new, self.flags, self.trash, self.expunge]
    }
}

/// One progress frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub channels: Counter,
    pub boxes: Counter,
    /// The far side (`F:`, `M:` before mbsync 1.4).
    pub far: Side,
    /// The near side (`N:`, `S:` before mbsync 1.4).
    pub near: Side,
    /// Part of the frame was missing or cut off (a side ending in `~`, or
    /// trailing fields absent); the counters that could not be read are zero.
    pub truncated: bool,
}

impl Progress {
    /// Overall completion in percent (0 to 100), or `None` while mbsync has
    /// not yet said how much work there is.
    ///
    /// Progress is counted in mailboxes, with the share of message
    /// operations done filling the gap to the next one; when no mailbox total
    /// is known yet, channels are used the same way. mbsync's message
    /// counters cover the whole run rather than the current mailbox, so that
    /// share is an estimate.
    ///
    /// The value can move backwards: mbsync only learns how many mailboxes
    /// and messages there are as it goes, so totals grow during a run. A
    /// caller showing the value should keep it from decreasing.
    pub fn percent(&self) -> Option<f64> {
        let unit = if self.boxes.total > 0 {
            self.boxes
        } else if self.channels.total > 0 {
            self.channels
        } else {
            return None;
        };
        // Once every unit is done the message counters belong to no unit in
        // progress; adding them would push the value past the end.
        let frac = if unit.done < unit.total {
            self.message_fraction()
        } else {
            0.0
        };
        let percent = 100.0 * (unit.done as f64 + frac) / unit.total as f64;
        Some(percent.clamp(0.0, 100.0))
    }

    /// Raises each total to `last`'s where that was larger: a summary
    /// (all done) after a frame that announced more work than was done.
    fn keep_totals(&mut self, last: &Progress) {
        let raise = |c: &mut Counter, l: Counter| c.total = c.total.max(l.total);
        raise(&mut self.channels, last.channels);
        raise(&mut self.boxes, last.boxes);
        for (side, last) in [(&mut self.far, &last.far), (&mut self.near, &last.near)] {
            raise(&mut side.new, last.new);
            raise(&mut side.flags, last.flags);
            raise(&mut side.trash, last.trash);
            raise(&mut side.expunge, last.expunge);
        }
    }

    /// Message operations (both sides, all kinds): (done, announced).
    pub fn message_totals(&self) -> (u64, u64) {
        self.far
            .counters()
            .into_iter()
            .chain(self.near.counters())
            .fold((0u64, 0u64), |(d, t), c| {
                (d.saturating_add(c.done), t.saturating_add(c.total))
            })
    }

    /// Share of the announced message operations (both sides, all kinds)
    /// that are done, between 0 and 1.
    fn message_fraction(&self) -> f64 {
        let (done, total) = self.message_totals();
        if total == 0 {
            0.0
        } else {
            (done as f64 / total as f64).min(1.0)
        }
    }
}

/// Reads a progress frame from `line`.
///
/// `line` may hold several frames separated by `\r` or `\n` (as one read
/// from a terminal often does); the last one that is a progress frame wins.
/// Terminal escape sequences are ignored, as are extra blanks. A frame whose
/// trailing fields are missing or whose sides were cut short with `~` is
/// still accepted, with [`Progress::truncated`] set. Anything else, including
/// text that merely starts like a progress line, gives `None`.
///
/// Runs in time linear in `line.len()` and does not allocate.
pub fn parse_progress_line(line: &[u8]) -> Option<Progress> {
    line.rsplit(|&b| b == b'\r' || b == b'\n')
        .find_map(parse_frame)
}

/// Parses one frame (no `\r` or `\n` inside).
fn parse_frame(frame: &[u8]) -> Option<Progress> {
    // Cheap rejection of ordinary output before any copying.
    if !frame.contains(&b'C') {
        return None;
    }
    let mut buf = [0u8; MAX_FRAME];
    let mut len = 0;
    for b in Visible::new(frame) {
        *buf.get_mut(len)? = b;
        len += 1;
    }
    let mut words = buf[..len]
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty())
        .peekable();
    let mut progress = Progress::default();

    // The channel counter is required: without it nothing shows that this
    // is a progress frame at all.
    if words.next()? != b"C:" {
        return None;
    }
    progress.channels = parse_counter(words.next()?)?;

    // From here on the frame may end early or be cut; `truncated` tells the
    // caller that some counters could not be read.
    progress.truncated = !parse_rest(&mut words, &mut progress)?;
    Some(progress)
}

/// Parses everything after the channel counter. Returns `Some(true)` for a
/// complete frame, `Some(false)` for one that ended early or was cut with
/// `~`, and `None` for something that is not a progress frame.
fn parse_rest<'a, I>(words: &mut std::iter::Peekable<I>, progress: &mut Progress) -> Option<bool>
where
    I: Iterator<Item = &'a [u8]>,
{
    if !next_label(words, &[b"B:"])? {
        return Some(false);
    }
    match words.next() {
        None => return Some(false),
        Some(w) => match parse_counter(w) {
            Some(c) => progress.boxes = c,
            None if words.peek().is_none() && is_counter_prefix(w) => return Some(false),
            None => return None,
        },
    }
    if !next_label(words, &[b"F:", b"M:"])? {
        return Some(false);
    }
    let far_complete = parse_side(words, &mut progress.far)?;
    if !next_label(words, &[b"N:", b"S:"])? {
        return Some(false);
    }
    let near_complete = parse_side(words, &mut progress.near)?;
    // Nothing may follow the near side.
    if words.peek().is_some() {
        return None;
    }
    Some(far_complete && near_complete)
}

/// Takes the next word, which must be one of `labels`. Returns `Some(true)`
/// if it is, `Some(false)` if the frame ends before the label or inside it
/// (`B` without its colon), and `None` if something else stands there.
fn next_label<'a, I>(words: &mut std::iter::Peekable<I>, labels: &[&[u8]]) -> Option<bool>
where
    I: Iterator<Item = &'a [u8]>,
{
    let Some(word) = words.next() else {
        return Some(false);
    };
    if labels.contains(&word) {
        return Some(true);
    }
    if words.peek().is_none() && labels.iter().any(|l| l.starts_with(word)) {
        return Some(false);
    }
    None
}

/// Parses the items of one side (`+a/b *c/d #e/f [-g/h]`) up to the next
/// side label or the end. Returns whether the side is complete: all of `+`,
/// `*` and `#` present and not cut off.
fn parse_side<'a, I>(words: &mut std::iter::Peekable<I>, side: &mut Side) -> Option<bool>
where
    I: Iterator<Item = &'a [u8]>,
{
    let mut seen = [false; 3];
    let mut cut = false;
    while let Some(&word) = words.peek() {
        if matches!(word, b"N:" | b"S:") {
            break;
        }
        words.next();
        if cut {
            // mbsync puts `~` on the last character it prints, so nothing
            // of this side can follow it.
            return None;
        }
        if let Some(body) = word.strip_suffix(b"~") {
            // The item holding `~` lost characters; keep its counter at zero
            // rather than report a wrong number.
            if !is_item_prefix(body) {
                return None;
            }
            cut = true;
            continue;
        }
        let (&kind, rest) = word.split_first()?;
        let last = words.peek().is_none();
        let counter = match parse_counter(rest) {
            Some(c) => c,
            // The frame stopped inside this counter.
            None if last && is_item_prefix(word) => {
                cut = true;
                continue;
            }
            None => return None,
        };
        match kind {
            b'+' => (side.new, seen[0]) = (counter, true),
            b'*' => (side.flags, seen[1]) = (counter, true),
            b'#' => (side.trash, seen[2]) = (counter, true),
            b'-' => side.expunge = counter,
            _ => return None,
        }
    }
    Some(!cut && seen.iter().all(|&s| s))
}

/// Parses `done/total`, both plain decimal numbers.
fn parse_counter(word: &[u8]) -> Option<Counter> {
    let slash = word.iter().position(|&b| b == b'/')?;
    Some(Counter {
        done: parse_number(&word[..slash])?,
        total: parse_number(&word[slash + 1..])?,
    })
}

/// Parses a non-empty run of ASCII digits; `None` on anything else or on
/// overflow (a number that large is not one mbsync printed).
fn parse_number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Whether `word` could be the beginning of a counter: digits, optionally a
/// slash and more digits.
fn is_counter_prefix(word: &[u8]) -> bool {
    let mut slashes = 0;
    word.iter().all(|&b| {
        if b == b'/' {
            slashes += 1;
            slashes == 1
        } else {
            b.is_ascii_digit()
        }
    })
}

/// Whether `word` could be the beginning of a side item such as `+13/42`.
fn is_item_prefix(word: &[u8]) -> bool {
    match word.split_first() {
        None => true,
        Some((kind, rest)) => b"+*#-".contains(kind) && is_counter_prefix(rest),
    }
}

/// The bytes of `bytes` with terminal escape sequences left out.
///
/// Understands CSI sequences (`ESC [ ... final`, colours and line clearing),
/// string sequences (`ESC ]` and friends, ended by BEL or `ESC \`) and the
/// short two- and three-byte escapes. An escape sequence that is cut off is
/// dropped as far as it goes.
struct Visible<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Visible<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Visible { bytes, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skips the rest of an escape sequence whose ESC was just read.
    fn skip_escape(&mut self) {
        let Some(first) = self.peek() else {
            return;
        };
        self.pos += 1;
        match first {
            b'[' => {
                // Parameters and intermediates, then one final byte. A byte
                // outside those ranges ends a malformed sequence and is kept.
                while let Some(b) = self.peek() {
                    match b {
                        0x20..=0x3f => self.pos += 1,
                        0x40..=0x7e => {
                            self.pos += 1;
                            return;
                        }
                        _ => return,
                    }
                }
            }
            b']' | b'P' | b'X' | b'^' | b'_' => {
                while let Some(b) = self.peek() {
                    self.pos += 1;
                    if b == 0x07 {
                        return;
                    }
                    if b == ESC {
                        if self.peek() == Some(b'\\') {
                            self.pos += 1;
                        }
                        return;
                    }
                }
            }
            // `ESC ( B` and similar: intermediates, then one final byte.
            0x20..=0x2f => {
                while let Some(b) = self.peek() {
                    self.pos += 1;
                    if !(0x20..=0x2f).contains(&b) {
                        return;
                    }
                }
            }
            // Two-byte escapes such as `ESC 7` or `ESC M`.
            0x30..=0x7e => {}
            // A lone ESC before an ordinary byte: keep that byte.
            _ => self.pos -= 1,
        }
    }
}

impl Iterator for Visible<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        loop {
            let b = self.peek()?;
            self.pos += 1;
            if b != ESC {
                return Some(b);
            }
            self.skip_escape();
        }
    }
}

impl Counter {
    fn add(&mut self, o: Counter) {
        self.done = self.done.saturating_add(o.done);
        self.total = self.total.saturating_add(o.total);
    }
}

impl Side {
    fn add(&mut self, o: &Side) {
        self.new.add(o.new);
        self.flags.add(o.flags);
        self.trash.add(o.trash);
        self.expunge.add(o.expunge);
    }
}

impl Progress {
    /// Adds another run's counters: several mbsync processes working on
    /// disjoint boxes of one sync report as one.
    pub fn add(&mut self, o: &Progress) {
        self.channels.add(o.channels);
        self.boxes.add(o.boxes);
        self.far.add(&o.far);
        self.near.add(&o.near);
        self.truncated |= o.truncated;
    }
}

/// A percentage for a whole run that only moves forward and stays below
/// 100: mbsync counts a box that failed as done too, so only the run's
/// success (which the manager reports as 100) ends the count.
///
/// mbsync's message counters add up over the run while boxes are opened
/// (several at once), so the plain ratio in [`Progress::percent`] jumps.
/// This estimate counts finished boxes and adds the share of the messages
/// announced since the last box finished.
///
/// A run of several channels (a group) counts channels first: mbsync syncs
/// them one after another and learns a channel's boxes only when it starts
/// it, so the boxes alone said 99 % once the first channel's last box was
/// nearly done. Each channel is an equal share, split by its own boxes.
#[derive(Debug, Default, Clone)]
pub struct PercentEstimate {
    /// Whether the run syncs several channels (see [`Self::for_channels`]).
    by_channel: bool,
    boxes_done: u64,
    base: (u64, u64),
    /// Channels done, and boxes done and known, when the current channel
    /// began.
    channel: (u64, u64, u64),
    last: Option<f64>,
}

impl PercentEstimate {
    /// For a run of `channels` channels. The processes that split one
    /// channel's boxes (parallel folders) add up to several channels in
    /// their summed counters, but run side by side: they are one channel
    /// here, counted by boxes.
    pub fn for_channels(channels: usize) -> Self {
        PercentEstimate {
            by_channel: channels > 1,
            ..PercentEstimate::default()
        }
    }

    /// Feeds one frame; returns the estimate so far.
    pub fn update(&mut self, p: &Progress) -> Option<f64> {
        let (done, total) = p.message_totals();
        if p.boxes.done != self.boxes_done {
            self.boxes_done = p.boxes.done;
            self.base = (done, total);
        }
        let now = if p.boxes.total == 0 {
            p.percent().map(|v| v.min(99.0))
        } else {
            let (base_done, base_total) = self.base;
            let frac = if total > base_total {
                (done.saturating_sub(base_done) as f64 / (total - base_total) as f64)
                    .clamp(0.0, 1.0)
            } else {
                0.0
            };
            let units = (p.boxes.done as f64 + frac).min(p.boxes.total as f64);
            if self.by_channel && p.channels.total > 1 {
                if p.channels.done != self.channel.0 {
                    self.channel = (p.channels.done, p.boxes.done, p.boxes.total);
                }
                let (_, boxes_before, known_before) = self.channel;
                let in_channel = if p.boxes.total > known_before {
                    ((units - boxes_before as f64) / (p.boxes.total - known_before) as f64)
                        .clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let channels = (p.channels.done as f64 + in_channel).min(p.channels.total as f64);
                Some((100.0 * channels / p.channels.total as f64).min(99.0))
            } else {
                Some((100.0 * units / p.boxes.total as f64).min(99.0))
            }
        };
        self.last = match (self.last, now) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => b.or(a),
        };
        self.last
    }
}

/// One piece of mbsync's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum StreamItem {
    /// A progress frame.
    Progress(Progress),
    /// Any other non-empty line, without escape sequences or trailing
    /// blanks; invalid UTF-8 is replaced with U+FFFD.
    Line(String),
}

/// Splits a raw pseudo-terminal byte stream into [`StreamItem`]s.
///
/// Frames and lines end at `\r` or `\n` (so `\r\n` ends one line). Data
/// without an ending yet is kept until a later [`feed`](Self::feed) or
/// [`finish`](Self::finish). A line longer than 64 KiB is reported when it
/// reaches that size and the rest of it is dropped, so memory stays bounded
/// whatever the process writes.
#[derive(Debug, Default)]
pub struct StreamParser {
    pending: Vec<u8>,
    /// The current line already overflowed and was reported; skip the rest.
    overflowed: bool,
    /// The last progress frame, whose totals a summary keeps.
    last: Option<Progress>,
}

impl StreamParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` and returns the items completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<StreamItem> {
        let mut items = Vec::new();
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            self.append(&rest[..end], &mut items);
            self.end_line(&mut items);
            rest = &rest[end + 1..];
        }
        self.append(rest, &mut items);
        items
    }

    /// The start of a line not ended yet: a prompt waiting for an answer
    /// shows here (see `runner::read_terminal`).
    pub fn unfinished(&self) -> &[u8] {
        &self.pending
    }

    /// Returns the item held back for want of a line ending (the last
    /// output of a process that has exited) and resets the parser.
    pub fn finish(&mut self) -> Vec<StreamItem> {
        let mut items = Vec::new();
        self.end_line(&mut items);
        items
    }

    fn append(&mut self, bytes: &[u8], items: &mut Vec<StreamItem>) {
        if self.overflowed {
            return;
        }
        let room = MAX_LINE - self.pending.len();
        if bytes.len() <= room {
            self.pending.extend_from_slice(bytes);
        } else {
            self.pending.extend_from_slice(&bytes[..room]);
            let line = std::mem::take(&mut self.pending);
            items.extend(self.classify(&line));
            self.overflowed = true;
        }
    }

    fn end_line(&mut self, items: &mut Vec<StreamItem>) {
        let line = std::mem::take(&mut self.pending);
        if !self.overflowed {
            items.extend(self.classify(&line));
        }
        self.overflowed = false;
    }

    /// Turns one frame or line into an item; `None` if nothing visible is
    /// left. A summary keeps the totals of the frame before it: mbsync 1.5
    /// prints one after a failed box too, which is then not 100 % done.
    fn classify(&mut self, line: &[u8]) -> Option<StreamItem> {
        if let Some(progress) = parse_frame(line) {
            self.last = Some(progress.clone());
            return Some(StreamItem::Progress(progress));
        }
        if let Some(mut summary) = parse_summary(line) {
            if let Some(last) = self.last.take() {
                summary.keep_totals(&last);
            }
            return Some(StreamItem::Progress(summary));
        }
        let visible: Vec<u8> = Visible::new(line).collect();
        let text = String::from_utf8_lossy(&visible);
        let text = text.trim_end();
        (!text.is_empty()).then(|| StreamItem::Line(text.to_owned()))
    }
}

/// Reads the summary mbsync 1.5 prints when it is done, as a frame with
/// everything done:
///
/// ```text
/// Channels: 1    Boxes: 5    Far: +0 *0 #0 -0    Near: +3000 *0 #0 -0
/// ```
///
/// 1.5 draws its counters at most every 200 ms, so its last frame can be
/// far behind the end (1,459 of 3,000 new messages); only this line has the
/// final figures.
fn parse_summary(line: &[u8]) -> Option<Progress> {
    if !line.starts_with(b"Channels: ") || line.len() > MAX_FRAME {
        return None;
    }
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split_whitespace();
    let mut number = |label: &str, sign: &str| -> Option<u64> {
        if !label.is_empty() && words.next()? != label {
            return None;
        }
        words.next()?.strip_prefix(sign)?.parse().ok()
    };
    let all = |n: u64| Counter { done: n, total: n };
    let channels = all(number("Channels:", "")?);
    let boxes = all(number("Boxes:", "")?);
    let mut side = |label: &str| -> Option<Side> {
        Some(Side {
            new: all(number(label, "+")?),
            flags: all(number("", "*")?),
            trash: all(number("", "#")?),
            expunge: all(number("", "-")?),
        })
    };
    let far = side("Far:")?;
    let near = side("Near:")?;
    words.next().is_none().then_some(Progress {
        channels,
        boxes,
        far,
        near,
        truncated: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(done: u64, total: u64) -> Counter {
        Counter { done, total }
    }

    fn side(new: Counter, flags: Counter, trash: Counter) -> Side {
        Side {
            new,
            flags,
            trash,
            expunge: Counter::default(),
        }
    }

    fn example() -> Progress {
        Progress {
            channels: c(1, 2),
            boxes: c(3, 4),
            far: side(c(13, 13), c(23, 42), c(0, 0)),
            near: side(c(0, 7), c(0, 0), c(0, 0)),
            truncated: false,
        }
    }

    #[test]
    fn parses_1_4_format() {
        let line = b"C: 1/2  B: 3/4  F: +13/13 *23/42 #0/0  N: +0/7 *0/0 #0/0";
        assert_eq!(parse_progress_line(line), Some(example()));
    }

    #[test]
    fn parses_1_3_master_slave_format() {
        let line = b"C: 1/2  B: 3/4  M: +13/13 *23/42 #0/0  S: +0/7 *0/0 #0/0";
        assert_eq!(parse_progress_line(line), Some(example()));
    }

    #[test]
    fn parses_1_5_format_with_expunge() {
        let line = b"C: 1/2  B: 3/4  F: +13/13 *23/42 #0/0 -1/2  N: +0/7 *0/0 #0/0 -5/6";
        let mut expected = example();
        expected.far.expunge = c(1, 2);
        expected.near.expunge = c(5, 6);
        assert_eq!(parse_progress_line(line), Some(expected));
    }

    #[test]
    fn tolerates_extra_blanks_and_leading_carriage_return() {
        let line = b"\r  C:  1/2 \t B: 3/4   F: +13/13  *23/42 #0/0    N: +0/7 *0/0 #0/0   ";
        assert_eq!(parse_progress_line(line), Some(example()));
    }

    #[test]
    fn truncated_sides_keep_complete_counters() {
        // What mbsync prints with COLUMNS=60: each side cut to 12 columns.
        let line = b"C: 1/2  B: 3/4  F: +13/13 *23~  N: +0/7 *0/0 ~";
        let p = parse_progress_line(line).unwrap();
        assert!(p.truncated);
        assert_eq!(p.channels, c(1, 2));
        assert_eq!(p.boxes, c(3, 4));
        assert_eq!(p.far.new, c(13, 13));
        // The cut counter is not trusted.
        assert_eq!(p.far.flags, Counter::default());
        assert_eq!(p.near.new, c(0, 7));
        assert_eq!(p.near.flags, c(0, 0));
    }

    #[test]
    fn side_cut_to_a_single_tilde() {
        let p = parse_progress_line(b"C: 0/1  B: 0/3  F: ~  N: ~").unwrap();
        assert!(p.truncated);
        assert_eq!(p.boxes, c(0, 3));
        assert_eq!(p.far, Side::default());
    }

    #[test]
    fn missing_trailing_fields_are_truncation() {
        let p = parse_progress_line(b"C: 0/1  B: 0/0").unwrap();
        assert!(p.truncated);
        assert_eq!(p.channels, c(0, 1));

        let p = parse_progress_line(b"C: 0/1").unwrap();
        assert!(p.truncated);

        let p = parse_progress_line(b"C: 1/2  B: 3/4  F: +13/13 *23/42 #0/0").unwrap();
        assert!(p.truncated);
        assert_eq!(p.far.flags, c(23, 42));

        // Cut inside a counter or a label at the very end.
        let p = parse_progress_line(b"C: 1/2  B: 3/").unwrap();
        assert!(p.truncated);
        assert_eq!(p.boxes, Counter::default());
        let p = parse_progress_line(b"C: 1/2  B: 3/4  F: +13/13 *2").unwrap();
        assert!(p.truncated);
        assert_eq!(p.far.new, c(13, 13));
        assert!(parse_progress_line(b"C: 1/2  B").unwrap().truncated);
    }

    #[test]
    fn strips_ansi_sequences() {
        let line = b"\x1b[2K\x1b[0mC: 1/2  B: 3/4  \x1b[1mF:\x1b[0m +13/13 *23/42 #0/0  N: +0/7 *0/0 #0/0\x1b[K";
        assert_eq!(parse_progress_line(line), Some(example()));
        let osc = b"\x1b]0;mbsync\x07C: 1/2  B: 3/4  F: +13/13 *23/42 #0/0  N: +0/7 *0/0 #0/0";
        assert_eq!(parse_progress_line(osc), Some(example()));
    }

    #[test]
    fn several_frames_take_the_last_progress_frame() {
        let line = b"\rC: 0/2  B: 0/0  F: +0/0 *0/0 #0/0  N: +0/0 *0/0 #0/0\
                     \rC: 1/2  B: 3/4  F: +13/13 *23/42 #0/0  N: +0/7 *0/0 #0/0\
                     \rOpening far side box INBOX...";
        assert_eq!(parse_progress_line(line), Some(example()));
    }

    #[test]
    fn rejects_other_output() {
        for line in [
            &b""[..],
            b"Opening far side box Work/Projects...",
            b"Error: channel :gmail-remote:INBOX-:gmail-local:INBOX is locked",
            b"C: everything",
            b"C: 1/2 and more",
            b"C: 1/2  B: 3/4  F: +13/13 *23/42 #0/0  N: +0/7 *0/0 #0/0 trailing",
            b"C: 1/2  B: 3/4  F: +13/13 ?1/1 #0/0  N: +0/7 *0/0 #0/0",
            b"C: 1/2  B: 3/4  F: +1~3/13  N: +0/7",
            b"C: 99999999999999999999/1",
            b"Channels: 1/2",
        ] {
            assert_eq!(
                parse_progress_line(line),
                None,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    /// mbsync 1.5's closing summary is the last frame, everything done; a
    /// line that only starts like it is ordinary output.
    #[test]
    fn the_summary_of_mbsync_1_5_is_a_final_frame() {
        let mut parser = StreamParser::new();
        // As 1.5 writes it: the frame is wiped with blanks before the line.
        let items = parser.feed(
            b"\rC: 1/1  B: 3/5  F: +0/0 *0/0 #0/0 -0/0  N: +1459/3000 *0/0 #0/0 -0/0\r     \r\
              Channels: 1    Boxes: 5    Far: +2 *1 #0 -0    Near: +3000 *4 #5 -6\r\n\
              Channels: 1    Boxes: 5    Far: +2 *1 #0 -0    Near: +3000 *4 #5\r\n\
              Channels: 1    Boxes: 5    Far: +2 *1 #0 -0    Near: +3000 *4 #5 -6 more\r\n",
        );
        let all = |n| c(n, n);
        let summary = Progress {
            channels: all(1),
            boxes: all(5),
            far: Side {
                new: all(2),
                flags: all(1),
                ..Side::default()
            },
            near: Side {
                new: all(3000),
                flags: all(4),
                trash: all(5),
                expunge: all(6),
            },
            truncated: false,
        };
        assert_eq!(items[1], StreamItem::Progress(summary));
        assert_eq!(
            items[2..],
            [
                StreamItem::Line(
                    "Channels: 1    Boxes: 5    Far: +2 *1 #0 -0    Near: +3000 *4 #5".into()
                ),
                StreamItem::Line(
                    "Channels: 1    Boxes: 5    Far: +2 *1 #0 -0    Near: +3000 *4 #5 -6 more"
                        .into()
                ),
            ]
        );
        let StreamItem::Progress(last) = &items[1] else {
            unreachable!()
        };
        assert_eq!(last.percent(), Some(100.0));
        // After a box failed: done as the summary says, of the totals the
        // last frame announced.
        let items = parser.feed(
            b"\rC: 0/1  B: 1/2  F: +0/0 *0/0 #0/0 -0/0  N: +7/9 *0/0 #0/0 -0/0\r     \r\
              Channels: 1    Boxes: 1    Far: +0 *0 #0 -0    Near: +7 *0 #0 -0\n",
        );
        let StreamItem::Progress(failed) = &items[1] else {
            panic!("{items:?}")
        };
        assert_eq!((failed.boxes, failed.near.new), (c(1, 2), c(7, 9)));
        assert!(failed.percent() < Some(100.0));
    }

    #[test]
    fn percent_uses_boxes_and_message_fraction() {
        assert_eq!(Progress::default().percent(), None);

        // 3 of 4 boxes done; in the fourth, 36 of 62 operations done.
        let p = example();
        let expected = 100.0 * (3.0 + 36.0 / 62.0) / 4.0;
        assert!((p.percent().unwrap() - expected).abs() < 1e-9);

        let mut done = example();
        done.boxes = c(4, 4);
        assert_eq!(done.percent(), Some(100.0));

        // Boxes not known yet: channels instead.
        let mut early = Progress {
            channels: c(1, 4),
            ..Progress::default()
        };
        assert_eq!(early.percent(), Some(25.0));
        early.far.new = c(1, 2);
        assert_eq!(early.percent(), Some(37.5));

        // Inconsistent counters stay within range.
        let odd = Progress {
            boxes: c(9, 4),
            ..Progress::default()
        };
        assert_eq!(odd.percent(), Some(100.0));
    }

    #[test]
    fn stream_splits_frames_and_lines() {
        let mut parser = StreamParser::new();
        let mut items = parser
            .feed(b"Opening far side box Work/Projects...\r\n\rC: 1/2  B: 3/4  F: +13/13 *23/4");
        items.extend(parser.feed(b"2 #0/0  N: +0/7 *0/0 #0/0"));
        items.extend(parser.feed(b"\n\x1b[31mError: something\x1b[0m   \r\n\r\n"));
        items.extend(parser.feed(b"\x1b[K"));
        items.extend(parser.finish());
        assert_eq!(
            items,
            vec![
                StreamItem::Line("Opening far side box Work/Projects...".into()),
                StreamItem::Progress(example()),
                StreamItem::Line("Error: something".into()),
            ]
        );
    }

    #[test]
    fn stream_finish_flushes_partial_line() {
        let mut parser = StreamParser::new();
        assert!(parser
            .feed(b"Skipping account x, PassCmd exited with status 1")
            .is_empty());
        assert_eq!(
            parser.finish(),
            vec![StreamItem::Line(
                "Skipping account x, PassCmd exited with status 1".into()
            )]
        );
        assert!(parser.finish().is_empty());
    }

    #[test]
    fn stream_replaces_invalid_utf8() {
        let mut parser = StreamParser::new();
        assert_eq!(
            parser.feed(b"Opening box caf\xe9\n"),
            vec![StreamItem::Line("Opening box caf\u{fffd}".into())]
        );
    }

    #[test]
    fn stream_caps_unterminated_lines() {
        let mut parser = StreamParser::new();
        let chunk = vec![b'x'; 10_000];
        let mut items = Vec::new();
        for _ in 0..20 {
            items.extend(parser.feed(&chunk));
        }
        assert_eq!(items.len(), 1);
        assert!(matches!(&items[0], StreamItem::Line(l) if l.len() == MAX_LINE));
        assert!(parser.pending.is_empty());
        items = parser.feed(b"yyy\nnext\n");
        assert_eq!(items, vec![StreamItem::Line("next".into())]);
    }

    fn format_1_4(p: &Progress) -> String {
        let s = |s: &Side| {
            format!(
                "+{}/{} *{}/{} #{}/{}",
                s.new.done, s.new.total, s.flags.done, s.flags.total, s.trash.done, s.trash.total
            )
        };
        format!(
            "\rC: {}/{}  B: {}/{}  F: {}  N: {}",
            p.channels.done,
            p.channels.total,
            p.boxes.done,
            p.boxes.total,
            s(&p.far),
            s(&p.near)
        )
    }

    fn counter() -> impl Strategy<Value = Counter> {
        (any::<u64>(), any::<u64>()).prop_map(|(done, total)| Counter { done, total })
    }

    fn side_1_4() -> impl Strategy<Value = Side> {
        (counter(), counter(), counter()).prop_map(|(new, flags, trash)| side(new, flags, trash))
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_progress_line(&bytes);
        }

        #[test]
        fn parse_never_panics_on_near_misses(s in "[CBFNMS: +*#~/0-9\\-\x1b\\[\r]{0,120}") {
            if let Some(p) = parse_progress_line(s.as_bytes()) {
                let _ = p.percent();
            }
        }

        #[test]
        fn stream_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let mut parser = StreamParser::new();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut start = 0;
            for cut in cuts {
                let _ = parser.feed(&bytes[start..cut]);
                start = cut;
            }
            let _ = parser.feed(&bytes[start..]);
            let _ = parser.finish();
        }

        #[test]
        fn chunking_does_not_change_the_items(
            bytes in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'C'), Just(b' '), any::<u8>()], 0..300),
            cut in any::<usize>(),
        ) {
            let cut = cut % (bytes.len() + 1);
            let mut whole = StreamParser::new();
            let mut expected = whole.feed(&bytes);
            expected.extend(whole.finish());
            let mut split = StreamParser::new();
            let mut got = split.feed(&bytes[..cut]);
            got.extend(split.feed(&bytes[cut..]));
            got.extend(split.finish());
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn round_trips_1_4_lines(channels in counter(), boxes in counter(), far in side_1_4(), near in side_1_4()) {
            let p = Progress { channels, boxes, far, near, truncated: false };
            prop_assert_eq!(parse_progress_line(format_1_4(&p).as_bytes()), Some(p));
        }

        #[test]
        fn percent_stays_in_range(channels in counter(), boxes in counter(), far in side_1_4(), near in side_1_4()) {
            let p = Progress { channels, boxes, far, near, truncated: false };
            if let Some(v) = p.percent() {
                prop_assert!((0.0..=100.0).contains(&v));
            }
        }
    }

    #[test]
    fn the_estimate_only_moves_forward_and_stops_short_of_100() {
        let frames = [
            "C: 0/1  B: 0/3  F: +0/0 *0/0 #0/0  N: +0/10 *0/0 #0/0",
            "C: 0/1  B: 0/3  F: +0/0 *0/0 #0/0  N: +5/10 *0/0 #0/0",
            "C: 0/1  B: 1/3  F: +0/0 *0/0 #0/0  N: +10/10 *0/0 #0/0",
            "C: 0/1  B: 1/3  F: +0/0 *0/0 #0/0  N: +10/30 *0/0 #0/0",
            "C: 0/1  B: 1/3  F: +0/0 *0/0 #0/0  N: +20/30 *0/0 #0/0",
            "C: 0/1  B: 2/3  F: +0/0 *0/0 #0/0  N: +30/30 *0/0 #0/0",
            "C: 1/1  B: 3/3  F: +0/0 *0/0 #0/0  N: +30/30 *0/0 #0/0",
        ];
        let mut est = PercentEstimate::for_channels(1);
        let mut last = 0.0;
        let mut seen = Vec::new();
        for f in frames {
            let p = parse_progress_line(f.as_bytes()).unwrap();
            let v = est.update(&p).unwrap();
            assert!(v >= last, "{v} < {last} at {f}");
            last = v;
            seen.push(v.round());
        }
        assert_eq!(seen, [0.0, 17.0, 33.0, 33.0, 50.0, 67.0, 99.0]);
    }

    /// A group: mbsync learns each channel's boxes when it starts it.
    #[test]
    fn a_group_counts_each_channel_as_an_equal_share() {
        let frames = [
            "C: 0/3  B: 0/1  F: +0/0 *0/0 #0/0  N: +0/10 *0/0 #0/0",
            "C: 0/3  B: 0/1  F: +0/0 *0/0 #0/0  N: +9/10 *0/0 #0/0",
            "C: 0/3  B: 1/1  F: +0/0 *0/0 #0/0  N: +10/10 *0/0 #0/0",
            "C: 1/3  B: 1/1  F: +0/0 *0/0 #0/0  N: +10/10 *0/0 #0/0",
            "C: 1/3  B: 1/3  F: +0/0 *0/0 #0/0  N: +10/30 *0/0 #0/0",
            "C: 1/3  B: 2/3  F: +0/0 *0/0 #0/0  N: +20/30 *0/0 #0/0",
            "C: 2/3  B: 3/3  F: +0/0 *0/0 #0/0  N: +30/30 *0/0 #0/0",
            "C: 2/3  B: 3/4  F: +0/0 *0/0 #0/0  N: +30/40 *0/0 #0/0",
            "C: 2/3  B: 3/4  F: +0/0 *0/0 #0/0  N: +35/40 *0/0 #0/0",
            "C: 3/3  B: 4/4  F: +0/0 *0/0 #0/0  N: +40/40 *0/0 #0/0",
        ];
        let mut est = PercentEstimate::for_channels(3);
        let seen: Vec<f64> = frames
            .iter()
            .map(|f| {
                let p = parse_progress_line(f.as_bytes()).unwrap();
                est.update(&p).unwrap().round()
            })
            .collect();
        assert_eq!(
            seen,
            [0.0, 30.0, 33.0, 33.0, 33.0, 50.0, 67.0, 67.0, 83.0, 99.0]
        );
        // Two processes splitting one channel's boxes, summed: by boxes.
        let mut split = PercentEstimate::for_channels(1);
        let p = parse_progress_line(b"C: 0/2  B: 1/2  F: +0/0 *0/0 #0/0  N: +10/10 *0/0 #0/0");
        assert_eq!(split.update(&p.unwrap()).map(f64::round), Some(50.0));
    }
}
