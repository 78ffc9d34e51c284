//! The sync manager: one coordinator for every sync this process runs.
//!
//! * **Queue.** Requests for an account that already has a sync waiting
//!   (or running, but before its mbsync started) are coalesced when that
//!   sync covers them (a full sync covers everything; an inbox sync covers
//!   inbox requests); otherwise they wait for it, so that every request is
//!   answered by an mbsync that started after it. Different accounts run
//!   in parallel, at most `max_parallel` at once. The queue lives here, so
//!   every caller gets the same behaviour.
//! * **Locks.** A running sync holds the account's named lock for the life
//!   of the mbsync process, so two syncs of one account never overlap,
//!   whichever Neovim or tool started them.
//! * **Retry.** Transient failures (`network`, `timeout`, and `locked` when
//!   mbsync itself found the channel locked by a foreign mbsync) are retried
//!   with exponential backoff and jitter; every retry is visible and
//!   cancellable. `config` and the rest are never retried.
//! * **Events.** `sync_queued` (only for a request that has to wait),
//!   `sync_started` (when mbsync starts), `sync_progress` (at most five a
//!   second per sync, always the latest and the final one), `sync_waiting`
//!   (when another process holds the account's lock and the sync waits for
//!   it, and again when the wait is over), `sync_retry` and `sync_done`,
//!   each carrying the sync's [`SyncInfo`].
//! * **History** per account is recorded after every finished sync
//!   ([`history`]).
//! * **Syncs elsewhere**: `sync_elsewhere` tells the syncs other processes
//!   run, as their locks come and go ([`elsewhere`]).

pub mod check;
pub mod elsewhere;
pub mod himalaya;
pub mod history;
pub mod idle;
pub mod repair;
pub mod targets;
pub mod throttle;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::error::{Error, ErrorKind, Result};
use crate::lock::LockDir;
use crate::maildir::FolderCounts;
use crate::mbsync::config::{ConfigCache, ImapAccount, MbsyncConfig};
use crate::mbsync::errors::{summary, without_tls, Classified, PASSCMD_CUT};
use crate::mbsync::names;
use crate::mbsync::progress::{PercentEstimate, Progress};
use crate::mbsync::runner::{self, Outcome, RunSpec, Update};
use crate::oauth::account::AccountSettings;
use crate::oauth::Tokens;
use history::{Held, History, Record};
pub use targets::{AccountOverrides, SyncType};

/// Progress events are sent at most this often per sync. Each one costs
/// the editor's thread 0.3 to 0.6 ms while mbsync and the server keep the
/// CPUs busy (event, status line, `User` autocommands): five a second keep
/// a percentage smooth at half the cost of ten.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);
/// Finished syncs kept (their state answers late questions about them).
const KEEP_FINISHED: usize = 20;

/// Exponential backoff with jitter for transient failures.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub factor: f64,
    pub cap: Duration,
    /// Retries after the first attempt; 0 disables retrying.
    pub max_attempts: u32,
    /// Fraction of the delay added or removed at random (0.2 = ±20 %), so
    /// many Neovims do not retry in lockstep.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(10),
            factor: 2.0,
            cap: Duration::from_secs(300),
            max_attempts: 3,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1-based); `unit` in [0, 1).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self
            .factor
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let raw = (self.base.as_secs_f64() * exp).min(self.cap.as_secs_f64());
        // NaN compares false everywhere and survives clamp(): a jitter or
        // unit that is not a number counts as none, and a delay that is
        // still not a number waits the cap (from_secs_f64 would panic).
        let finite = |x: f64, default: f64| if x.is_finite() { x } else { default };
        let jitter = finite(self.jitter, 0.0).clamp(0.0, 1.0);
        let spread = raw * jitter * (2.0 * finite(unit, 0.5).clamp(0.0, 1.0) - 1.0);
        Duration::try_from_secs_f64((raw + spread).clamp(0.0, self.cap.as_secs_f64()))
            .unwrap_or(self.cap)
    }
}

/// How the manager runs mbsync; set from the Lua configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mbsync_cmd: PathBuf,
    pub mbsync_config: Option<PathBuf>,
    pub idle_timeout: Duration,
    pub extra_args: Vec<String>,
    pub accounts: HashMap<String, AccountOverrides>,
    pub max_parallel: usize,
    pub retry: RetryPolicy,
    /// Where the sync history (and repair backups) live; None keeps none.
    pub state_dir: Option<PathBuf>,
    pub uidvalidity: UidvalidityPolicy,
    /// mbsync processes one full sync of a channel may run at once, each on
    /// its own boxes (1: one process, the default). Servers cap connections
    /// per account (Gmail: 15).
    pub max_connections: usize,
    /// The `himalaya-sync` program, used as the relay of throttled accounts.
    pub relay_cmd: Option<PathBuf>,
    /// Accounts whose credentials the editor can refresh (OAuth): an `auth`
    /// failure asks for a refresh (`sync_auth` event) and retries once.
    pub auth_refresh: HashSet<String>,
    /// OAuth accounts: their token is made fresh before each sync.
    pub oauth: HashMap<String, AccountSettings>,
    /// How long the editor may take to answer `sync_auth` before the sync
    /// ends as an auth failure (a `refresh` function that never calls
    /// `done` would otherwise hold the sync, and every request joined to
    /// it, for good).
    pub auth_refresh_limit: Duration,
}

/// What to do when a folder's UIDVALIDITY genuinely changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UidvalidityPolicy {
    /// Repair it without loss (see [`repair`]) and sync again.
    Repair,
    /// Report it; the editor asks the user whether to repair.
    Ask,
    /// Report it only.
    Off,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mbsync_cmd: "mbsync".into(),
            mbsync_config: None,
            idle_timeout: Duration::from_secs(120),
            extra_args: Vec::new(),
            accounts: HashMap::new(),
            max_parallel: 2,
            retry: RetryPolicy::default(),
            state_dir: None,
            uidvalidity: UidvalidityPolicy::Repair,
            max_connections: 1,
            relay_cmd: None,
            auth_refresh: HashSet::new(),
            oauth: HashMap::new(),
            auth_refresh_limit: Duration::from_secs(300),
        }
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub kind: SyncType,
    pub account: String,
    pub folders: Vec<String>,
    /// How long to wait when another process syncs the account (0: fail at once).
    pub wait_lock: Duration,
}

impl StartOptions {
    /// True when a sync for `self` also does everything `other` asks for.
    fn covers(&self, other: &StartOptions) -> bool {
        if self.account != other.account {
            return false;
        }
        match (self.kind, other.kind) {
            (SyncType::Repair, _) | (_, SyncType::Repair) => {
                self.kind == other.kind && self.folders == other.folders
            }
            (SyncType::Full, _) => true,
            (SyncType::Inbox, SyncType::Inbox) => true,
            (SyncType::Folders, SyncType::Folders) => {
                other.folders.iter().all(|f| self.folders.contains(f))
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for a free slot or for another sync of the same account.
    Queued,
    Running,
    /// Failed transiently; waiting for the next attempt.
    Retrying,
    /// Repairing a folder whose UIDVALIDITY changed; the sync runs again after.
    Repairing,
    Completed,
    Error,
    Cancelled,
}

impl Status {
    fn active(self) -> bool {
        matches!(
            self,
            Status::Queued | Status::Running | Status::Retrying | Status::Repairing
        )
    }

    /// Holds a slot and its channels.
    fn occupying(self) -> bool {
        matches!(self, Status::Running | Status::Repairing)
    }
}

/// Parsed counters plus what the status line needs.
#[derive(Debug, Clone, Serialize)]
pub struct ProgressInfo {
    #[serde(flatten)]
    pub counters: Progress,
    pub percent: Option<f64>,
    #[serde(rename = "box")]
    pub current_box: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorInfo {
    pub kind: ErrorKind,
    /// One line for the user.
    pub message: String,
    /// The mbsync line it came from (secrets redacted).
    pub line: String,
}

/// The result handed to completion callbacks.
#[derive(Debug, Clone, Serialize)]
pub struct SyncResult {
    pub success: bool,
    pub error: Option<String>,
    pub kind: Option<ErrorKind>,
    /// Seconds from the request to the end, retries included.
    pub duration: f64,
    /// Seconds of `duration` spent waiting for another process that
    /// synced the account (its lock).
    pub waited: f64,
    /// Messages copied to the local (near) side.
    pub pulled: u64,
    /// Messages copied to the server (far) side.
    pub pushed: u64,
    pub flags_changed: u64,
    pub trashed: u64,
    /// Attempts made (1 without retries).
    pub attempts: u32,
}

/// Everything known about one sync.
#[derive(Debug, Clone, Serialize)]
pub struct SyncInfo {
    pub id: u64,
    #[serde(rename = "type")]
    pub kind: SyncType,
    pub account: String,
    /// The mbsync targets, space separated.
    pub channel: String,
    /// The mbsync channels it syncs, sorted (a group's members), each
    /// locked while mbsync runs.
    pub channels: Vec<String>,
    pub folders: Vec<String>,
    pub status: Status,
    pub progress: Option<ProgressInfo>,
    /// Unix seconds of the request.
    pub start_time: f64,
    pub end_time: Option<f64>,
    pub message: String,
    pub error: Option<ErrorInfo>,
    pub result: Option<SyncResult>,
    /// Attempt in progress (1 for the first run).
    pub attempt: u32,
    /// Unix seconds of the next attempt while retrying.
    pub next_retry: Option<f64>,
    /// Requests this sync answers (more than 1 when coalesced).
    pub requests: u32,
    /// What a UIDVALIDITY repair did for this sync.
    pub repair: Option<repair::Report>,
    /// The folder whose UIDVALIDITY changed, when that ended the sync.
    pub damaged: Option<String>,
    /// The mbsync channel of that folder: what a repair is asked for (the
    /// account may be a group of several channels).
    pub damaged_channel: Option<String>,
    /// Why that folder needs a repair, in a phrase (see [`repair::why`]):
    /// what the editor's question names, so it never reads mbsync's lines.
    pub damaged_why: Option<String>,
    /// While the sync waits for another process that syncs the account:
    /// who holds the account's lock (`lock "sync-demo" is held by pid …`).
    pub waiting_for: Option<String>,
    /// Exact counts of the account's local folders, read when the sync
    /// ended (see [`check::folder_counts`]); absent while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Vec<FolderCounts>>,
}

struct Entry {
    info: SyncInfo,
    opts: StartOptions,
    targets: Vec<String>,
    config: PathBuf,
    cancel: watch::Sender<bool>,
    cancel_flag: Arc<AtomicBool>,
    estimate: PercentEstimate,
    last_sent: Option<Instant>,
    dirty: bool,
    /// Credentials were refreshed once already for this sync.
    auth_refreshed: bool,
    /// `sync_queued` went out for this request (see `pump`).
    announced: bool,
    /// `sync_started` went out for the current attempt (see `on_update`).
    started_sent: bool,
    /// The current attempt's mbsync is about to run or runs: it may have
    /// read a folder already, so a request now cannot join it (see
    /// [`Entry::joinable`]).
    began: Arc<AtomicBool>,
    /// When the current attempt was started (its lock wait starts later).
    launched: Instant,
    /// How long the current attempt waits for a lock another process
    /// holds: its requests' longest wait, grown when a request that asks
    /// for more joins it while it waits (read again by the wait).
    patience: Arc<Mutex<Duration>>,
    /// The folder counts of the current attempt, read as soon as its
    /// mbsync exited (see [`Manager::count_early`]).
    early_counts: Option<std::sync::mpsc::Receiver<Option<Vec<FolderCounts>>>>,
    /// Since when it waits for another process's lock, while it does.
    wait_began: Option<Instant>,
    /// Time spent waiting for other processes' locks, all attempts.
    waited: Duration,
    /// The boxes (channel, box) an automatic repair ran for, with what it
    /// did (None: nothing needed repairing). A server moved to new storage
    /// renumbers every folder, and mbsync names one per run: each is
    /// repaired in turn, but only once, so that a box still refused after
    /// its repair ends the sync instead of being repaired forever.
    auto_repairs: Vec<(String, String, Option<repair::Report>)>,
}

impl Entry {
    /// A new request, queued.
    fn new(
        id: u64,
        opts: StartOptions,
        targets: Vec<String>,
        channels: Vec<String>,
        config: PathBuf,
    ) -> Entry {
        let info = SyncInfo {
            id,
            kind: opts.kind,
            account: opts.account.clone(),
            channel: targets.join(" "),
            channels,
            folders: opts.folders.clone(),
            status: Status::Queued,
            progress: None,
            start_time: now(),
            end_time: None,
            message: format!("{} sync of {} is queued", opts.kind.as_str(), opts.account),
            error: None,
            result: None,
            attempt: 1,
            next_retry: None,
            requests: 1,
            repair: None,
            damaged: None,
            damaged_channel: None,
            damaged_why: None,
            waiting_for: None,
            counts: None,
        };
        let estimate = PercentEstimate::for_channels(info.channels.len());
        Entry {
            info,
            opts,
            targets,
            config,
            cancel: watch::channel(false).0,
            cancel_flag: Arc::new(AtomicBool::new(false)),
            estimate,
            last_sent: None,
            dirty: false,
            auth_refreshed: false,
            announced: false,
            started_sent: false,
            began: Arc::new(AtomicBool::new(false)),
            launched: Instant::now(),
            patience: Arc::new(Mutex::new(Duration::ZERO)),
            early_counts: None,
            wait_began: None,
            waited: Duration::ZERO,
            auto_repairs: Vec::new(),
        }
    }

    /// Whether a request that `covers` can be answered by this sync: only
    /// by one whose mbsync starts after the request, or it could miss
    /// mail that arrived before the request (new mail announced by IDLE
    /// while a full sync is past the inbox). A repair covers the same
    /// repair whenever it runs. A sync being cancelled answers nothing new.
    ///
    /// A request must also get at least the lock wait it asked for: the
    /// sync takes the longer wait on joining (see [`Entry::join`]), also
    /// while it waits for the lock already.
    fn joinable(&self, opts: &StartOptions) -> bool {
        if self.cancel_flag.load(Ordering::SeqCst) || !self.opts.covers(opts) {
            return false;
        }
        match self.info.status {
            Status::Queued | Status::Retrying => true,
            Status::Running => opts.kind == SyncType::Repair || !self.began.load(Ordering::SeqCst),
            Status::Repairing | Status::Completed | Status::Error | Status::Cancelled => false,
        }
    }

    /// Takes on a `joinable` request: the sync waits for the lock as long
    /// as the most patient of its requests asked, counted for each from
    /// when it asked.
    fn join(&mut self, opts: &StartOptions) {
        self.info.requests += 1;
        self.opts.wait_lock = self.opts.wait_lock.max(opts.wait_lock);
        if self.info.status == Status::Running {
            let mut patience = self.patience.lock();
            *patience = (*patience).max(self.launched.elapsed() + opts.wait_lock);
        }
    }
}

/// Receives events: `(sync id, event name, data)`.
pub type Emit = Arc<dyn Fn(u64, &str, Value) + Send + Sync>;

/// Which box list: the mbsyncrc used (None: mbsync's default) and the channel.
type BoxKey = (Option<PathBuf>, String);

pub struct Manager {
    settings: Mutex<Settings>,
    entries: Mutex<Vec<Entry>>,
    locks: Arc<LockDir>,
    history: Mutex<Option<(PathBuf, Arc<History>)>>,
    /// Why the last entry could not be saved, if it could not: the user is
    /// told once per reason, not at every sync.
    history_problem: Arc<Mutex<Option<String>>>,
    emit: Emit,
    next_id: Box<dyn Fn() -> u64 + Send + Sync>,
    rt: Handle,
    tokens: Mutex<Option<(PathBuf, Arc<Tokens>)>>,
    /// The boxes each (mbsyncrc, channel) had at its last split sync.
    box_cache: Mutex<HashMap<BoxKey, Vec<String>>>,
    /// The mbsyncrc, parsed again only when it changes.
    rc_cache: ConfigCache,
    /// Accounts whose Maildir was counted while their first sync ran.
    counted: Mutex<HashSet<String>>,
    /// The cancel switch of each running check, by id (a check is not an
    /// entry: it takes no lock and never queues).
    checks: Mutex<HashMap<u64, watch::Sender<bool>>>,
}

pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A duration for messages: "40 ms", "3.2 s", "2 min 5 s".
pub(crate) fn took(seconds: f64) -> String {
    // Rounded before the unit is chosen: 0.9996 s is "1.0 s", not "1000 ms".
    let seconds = seconds.max(0.0);
    let ms = (seconds * 1000.0).round();
    let tenths = (seconds * 10.0).round() / 10.0;
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if tenths < 60.0 {
        format!("{tenths:.1} s")
    } else {
        let whole = seconds.round() as u64;
        format!("{} min {} s", whole / 60, whole % 60)
    }
}

/// A number in [0, 1) that differs between processes and calls; good
/// enough to spread retries, not for anything secret.
fn jitter_unit(seed: u64) -> f64 {
    let mut x = seed
        ^ (now() * 1e6) as u64
        ^ (std::process::id() as u64).rotate_left(32)
        ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The lock that serialises syncs of one mbsync channel across processes.
pub fn channel_lock_name(channel: &str) -> String {
    format!("sync-{channel}")
}

/// Everything one attempt needs, moved into its task.
struct Job {
    id: u64,
    opts: StartOptions,
    spec: RunSpec,
    channels: Vec<String>,
    cancel_rx: watch::Receiver<bool>,
    cancel_flag: Arc<AtomicBool>,
    /// Set when mbsync is about to run (see [`Entry::joinable`]).
    began: Arc<AtomicBool>,
    /// See [`Entry::patience`].
    patience: Arc<Mutex<Duration>>,
    /// Kilobytes per second when the account is throttled.
    throttle: Option<u32>,
    /// Taken when mbsync is about to run (a repair: once it has its lock)
    /// and held until the attempt's end is recorded: Neovim's exit stops
    /// mbsync and then lets the sync say so in the log and the history
    /// (see [`crate::runtime::MustFinish`]). Not before: a sync waiting
    /// for a lock would hold up the exit.
    ending: Arc<Mutex<Option<crate::runtime::MustFinish>>>,
}

/// What `finish` needs from one attempt.
enum Attempt {
    /// mbsync ran (successfully or not).
    Ran(Box<Outcome>),
    /// It never started: lock conflict, cancelled while waiting, spawn error.
    NotRun(Error),
    /// A repair request finished its work.
    Repaired(repair::Report),
}

/// The box a repair mends (its channel, and the box as mbsync names it in
/// `channel:box`), and the mbsyncrc its runs use when the account is
/// throttled (the raw one otherwise).
struct RepairOf<'a> {
    channel: &'a str,
    mailbox: &'a str,
    throttled: Option<&'a Path>,
}

/// How a repair ended that did not fail.
enum RepairEnd {
    /// The folder was moved aside and fetched afresh.
    Repaired(repair::Report),
    /// mbsync synced the folder as it was (its UIDVALIDITY had not
    /// changed): nothing needed repairing.
    Unneeded(Outcome),
}

impl Manager {
    pub fn new(
        locks: Arc<LockDir>,
        emit: Emit,
        next_id: Box<dyn Fn() -> u64 + Send + Sync>,
        rt: Handle,
    ) -> Self {
        Manager {
            settings: Mutex::new(Settings::default()),
            entries: Mutex::new(Vec::new()),
            locks,
            history: Mutex::new(None),
            history_problem: Arc::new(Mutex::new(None)),
            emit,
            next_id,
            rt,
            tokens: Mutex::new(None),
            box_cache: Mutex::new(HashMap::new()),
            rc_cache: ConfigCache::default(),
            counted: Mutex::new(HashSet::new()),
            checks: Mutex::new(HashMap::new()),
        }
    }

    /// New settings, used from the next sync on; a `max_parallel` raised
    /// starts queued syncs at once.
    pub fn configure(self: &Arc<Self>, settings: Settings) {
        *self.settings.lock() = settings;
        self.pump();
    }

    pub fn settings(&self) -> Settings {
        self.settings.lock().clone()
    }

    /// The parsed mbsyncrc in use.
    pub fn mbsync_config(&self) -> Result<MbsyncConfig> {
        let path = self.settings.lock().mbsync_config.clone();
        self.rc_cache.load(path.as_deref())
    }

    /// Token operations, sharing this manager's lock folder and state
    /// folder (so the status of recent refreshes is one per process).
    pub fn tokens(&self) -> Result<Arc<Tokens>> {
        let dir = match self.settings.lock().state_dir.clone() {
            Some(d) => d,
            None => crate::oauth::account::state_dir()?,
        };
        let mut slot = self.tokens.lock();
        if let Some((path, t)) = slot.as_ref() {
            if *path == dir {
                return Ok(t.clone());
            }
        }
        let t = Arc::new(Tokens::new(self.locks.clone(), dir.clone()));
        *slot = Some((dir, t.clone()));
        Ok(t)
    }

    /// The settings of OAuth account `name`.
    pub fn oauth_account(&self, name: &str) -> Result<AccountSettings> {
        self.settings
            .lock()
            .oauth
            .get(name)
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Config,
                    format!("no OAuth account {name:?}: configure accounts.{name}.oauth"),
                )
            })
    }

    /// The history store for the configured state directory, if any.
    pub fn history(&self) -> Result<Option<Arc<History>>> {
        let Some(dir) = self.settings.lock().state_dir.clone() else {
            return Ok(None);
        };
        let mut slot = self.history.lock();
        if let Some((path, h)) = slot.as_ref() {
            if *path == dir {
                return Ok(Some(h.clone()));
            }
        }
        let h = Arc::new(History::open(&dir, self.locks.clone())?);
        *slot = Some((dir, h.clone()));
        Ok(Some(h))
    }

    /// Requests a sync and returns its id: a new sync, or one that covers
    /// the request and whose mbsync has not started yet (see
    /// [`Entry::joinable`]).
    pub fn start(self: &Arc<Self>, opts: StartOptions) -> Result<u64> {
        let settings = self.settings();
        let cfg = self.mbsync_config()?;
        let targets = targets::resolve(
            &cfg,
            &settings.accounts,
            opts.kind,
            &opts.account,
            &opts.folders,
        )?;
        // A name spelled alike by every mbsync is judged now; another one
        // too once this mbsync's version is known, else by the attempt.
        let utf8 = names::known_utf8(&settings.mbsync_cmd.to_string_lossy());
        targets::check_patterns(
            &cfg,
            &settings.accounts,
            opts.kind,
            &opts.account,
            &targets,
            utf8,
        )?;
        let channels = targets::channels_of_targets(&cfg, &targets);
        let mut entries = self.entries.lock();
        if let Some(e) = entries.iter_mut().find(|e| e.joinable(&opts)) {
            e.join(&opts);
            return Ok(e.info.id);
        }
        let id = (self.next_id)();
        entries.push(Entry::new(id, opts, targets, channels, cfg.path.clone()));
        drop(entries);
        self.pump();
        Ok(id)
    }

    /// Starts queued syncs while slots are free, oldest first, never two of
    /// one account.
    ///
    /// A new request that starts here at once is not announced as queued,
    /// and its `sync_started` goes out once mbsync runs (`on_update`), not
    /// from here: this often runs on the editor's thread, which would
    /// otherwise handle those events at once, on the CPU the sync's task
    /// waits for. Requests left waiting are announced before the lock is
    /// released, so `sync_queued` always precedes their start.
    fn pump(self: &Arc<Self>) {
        let settings = self.settings();
        let mut entries = self.entries.lock();
        self.start_free(&settings, &mut entries);
        for e in entries.iter_mut() {
            if e.info.status == Status::Queued && !e.announced {
                e.announced = true;
                (self.emit)(e.info.id, "sync_queued", json!(e.info));
            }
        }
    }

    /// Starts what the free slots allow (see `pump`).
    fn start_free(self: &Arc<Self>, settings: &Settings, entries: &mut [Entry]) {
        loop {
            let running: Vec<&Entry> = entries
                .iter()
                .filter(|e| e.info.status.occupying())
                .collect();
            // A sync waiting for another process's lock does no work: it
            // keeps its channels but not a slot, so that a long sync in
            // another Neovim does not hold up the other accounts here. Once
            // it has the lock it runs at once, above the limit if need be.
            let working = running.iter().filter(|e| e.info.waiting_for.is_none());
            if working.count() >= settings.max_parallel.max(1) {
                return;
            }
            let busy: HashSet<String> = running
                .iter()
                .flat_map(|e| e.info.channels.iter().cloned())
                .collect();
            let Some(e) = entries.iter_mut().find(|e| {
                e.info.status == Status::Queued && !e.info.channels.iter().any(|c| busy.contains(c))
            }) else {
                return;
            };
            e.info.status = Status::Running;
            e.info.next_retry = None;
            e.info.progress = None;
            e.estimate = PercentEstimate::for_channels(e.info.channels.len());
            e.info.message = format!("syncing {}", e.info.account);
            e.announced = true;
            e.started_sent = false;
            e.began.store(false, Ordering::SeqCst);
            e.launched = Instant::now();
            *e.patience.lock() = e.opts.wait_lock;
            e.early_counts = None;
            let spec = RunSpec {
                program: settings.mbsync_cmd.clone(),
                // The file we parsed is the file mbsync reads.
                config: Some(e.config.clone()),
                targets: e.targets.clone(),
                extra_args: settings.extra_args.clone(),
                idle_timeout: settings.idle_timeout,
                list: false,
            };
            let id = e.info.id;
            let account = e.info.account.clone();
            let job = Job {
                id,
                opts: e.opts.clone(),
                spec,
                channels: e.info.channels.clone(),
                cancel_rx: e.cancel.subscribe(),
                cancel_flag: e.cancel_flag.clone(),
                began: e.began.clone(),
                patience: e.patience.clone(),
                throttle: settings
                    .accounts
                    .get(&e.info.account)
                    .and_then(|a| a.throttle)
                    .map(|t| t.kbps),
                ending: Arc::new(Mutex::new(None)),
            };
            let ending = job.ending.clone();
            let me = self.clone();
            self.rt.spawn(async move {
                // The editor thread answers promptly while this runs (and
                // has its own slice back by the time it hears the end).
                let busy = crate::sched::busy();
                // A panic inside the attempt must not leave the sync
                // "running" forever: it ends as an error instead.
                let attempt = tokio::spawn(me.clone().attempt(job));
                let result = match attempt.await {
                    Ok(a) => a,
                    Err(e) => Attempt::NotRun(Error::new(
                        ErrorKind::Unknown,
                        format!("internal error in the sync task: {e}"),
                    )),
                };
                drop(busy);
                // Nor may a panic while ending it (a bug, or the event sink
                // failing): its callbacks would never run. Ending it may
                // wait on the disk (the folder counts: milliseconds for
                // 10,000 messages, more on a slow or network file system),
                // so this worker's other tasks (timers, other syncs) move
                // to another worker meanwhile; the engine's runtimes are
                // all multi-threaded, which that needs.
                let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    tokio::task::block_in_place(|| me.finish(id, &account, result))
                }));
                if ended.is_err() {
                    me.abandon(id);
                }
                drop(ending.lock().take());
            });
        }
    }

    async fn attempt(self: Arc<Self>, job: Job) -> Attempt {
        let Job {
            id,
            opts,
            mut spec,
            channels,
            cancel_rx,
            cancel_flag,
            began,
            patience,
            throttle,
            ending,
        } = job;
        // Folder names are Unicode up to here; mbsync 1.4 wants a box
        // beyond ASCII as the server spells it, and matches its Patterns
        // against that spelling (which `start` could not judge unasked).
        let mut mailbox = opts.folders.first().cloned();
        if spec.targets.iter().any(|t| names::depends_on_version(t)) {
            let utf8 = names::takes_utf8(&spec.program.to_string_lossy()).await;
            let accounts = self.settings().accounts;
            let left_out = self.rc_cache.load(spec.config.as_deref()).and_then(|cfg| {
                let (kind, account) = (opts.kind, &opts.account);
                targets::check_patterns(&cfg, &accounts, kind, account, &spec.targets, Some(utf8))
            });
            if let Err(e) = left_out {
                return Attempt::NotRun(e);
            }
            spec.targets = spec
                .targets
                .iter()
                .map(|t| names::target(t, utf8))
                .collect();
            mailbox = mailbox.map(|m| names::spelled(&m, utf8));
        }
        // `sync_started` goes out when mbsync starts (the runner's
        // `Update::Started`). A step that can take a while before that
        // (deriving a throttled config, refreshing a token, a repair's
        // backup, and a wait for another process's lock once it begins)
        // announces it first, so that the editor shows the sync meanwhile.
        let oauth = self.settings.lock().oauth.get(&opts.account).cloned();
        let slow = throttle.is_some() || opts.kind == SyncType::Repair || oauth.is_some();
        if slow {
            self.on_update(id, Update::Started);
        }
        // Kept until the attempt ends: the derived mbsyncrc of a throttled
        // account is removed when this drops.
        let _derived = match self.throttled(throttle, &channels, id).await {
            Ok(derived) => derived,
            Err(e) => return Attempt::NotRun(e),
        };
        // A split sync's box list is cached under the user's mbsyncrc: the
        // derived copy of a throttled account has a new name every sync,
        // which listed the boxes again every time (a login more, on the
        // slow links throttling is for) and grew the cache by one entry.
        let cache_rc = spec.config.clone();
        if let Some(d) = &_derived {
            spec.config = Some(d.0.clone());
        }
        if opts.kind == SyncType::Repair {
            began.store(true, Ordering::SeqCst);
            let (Some(channel), Some(mailbox)) = (channels.first(), mailbox.as_ref()) else {
                return Attempt::NotRun(Error::invalid("a repair needs a channel and a folder"));
            };
            let throttled = _derived.as_ref().map(|d| d.0.as_path());
            return match self
                .repair_steps(
                    RepairOf {
                        channel,
                        mailbox,
                        throttled,
                    },
                    opts.wait_lock,
                    cancel_rx,
                    cancel_flag,
                    &ending,
                )
                .await
            {
                Ok(RepairEnd::Repaired(report)) => Attempt::Repaired(report),
                Ok(RepairEnd::Unneeded(outcome)) => Attempt::Ran(Box::new(outcome)),
                Err(e) => Attempt::NotRun(e),
            };
        }
        let names: Vec<String> = channels.iter().map(|c| channel_lock_name(c)).collect();
        let purpose = format!("{} sync of {}", opts.kind.as_str(), opts.account);
        // Sorted names: every process takes them in the same order, so two
        // overlapping syncs can never hold one each and wait for the other.
        // A try is a few non-blocking calls on a small local file, done here
        // (no thread hop before mbsync runs); the pauses of a wait are timers.
        let mut guards = Vec::with_capacity(names.len());
        for name in &names {
            let mut got = self
                .locks
                .acquire_async(name, Duration::ZERO, &purpose, Some(&cancel_flag))
                .await;
            // The patience, not this attempt's copy of the options: a
            // request that joined the sync since it started may have asked
            // for a wait.
            let held_by = match &got {
                Err(e) if e.kind == ErrorKind::Locked && !patience.lock().is_zero() => {
                    Some(e.message.clone())
                }
                _ => None,
            };
            let waited = held_by.is_some();
            if let Some(holder) = held_by {
                // Shown as waiting, not as running, for as long as it waits
                // (a request that joins it meanwhile may make it wait longer).
                self.on_update(id, Update::Started);
                self.set_waiting(id, Some(holder));
                got = self
                    .locks
                    .acquire_async_within(name, || *patience.lock(), &purpose, Some(&cancel_flag))
                    .await;
                self.set_waiting(id, None);
            }
            match got {
                Ok(guard) => guards.push(guard),
                // Cancelled before its first try: the plain "sync
                // cancelled" (an empty line), not a wait that never was.
                Err(e) if e.kind == ErrorKind::Cancelled && !waited => {
                    return Attempt::NotRun(Error::new(ErrorKind::Cancelled, String::new()))
                }
                Err(e) if e.kind == ErrorKind::Locked => {
                    return Attempt::NotRun(Error::new(
                        ErrorKind::Locked,
                        format!(
                            "{} is being synced by another process: {}",
                            opts.account, e.message
                        ),
                    ))
                }
                Err(e) => return Attempt::NotRun(e),
            }
        }
        // An OAuth account's token is made fresh first, so that mbsync's
        // PassCmd finds a valid one (and a revoked grant is reported as
        // such instead of as a failed login).
        // A refresh can take a while (a script, a provider that is slow to
        // answer): cancel ends the wait.
        if let Some(acct) = oauth {
            let mut cancelled = cancel_rx.clone();
            let fresh = tokio::select! {
                fresh = async {
                    match self.tokens() {
                        Ok(tokens) => tokens.valid_token(&acct).await.map(|_| ()),
                        Err(e) => Err(e),
                    }
                } => fresh,
                _ = cancelled.wait_for(|c| *c) => Err(Error::new(
                    ErrorKind::Cancelled,
                    format!("refreshing the OAuth2 token of {} was cancelled", opts.account),
                )),
            };
            if let Err(e) = fresh {
                return Attempt::NotRun(e);
            }
        }
        // From here on mbsync may read any folder: a request now needs a
        // sync of its own.
        began.store(true, Ordering::SeqCst);
        *ending.lock() = Some(crate::runtime::must_finish());
        // Flushes throttled progress that arrived inside the last interval.
        let ticker = {
            let me = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
                loop {
                    tick.tick().await;
                    me.flush(id, false);
                }
            })
        };
        let _stop_ticker = AbortOnDrop(ticker);
        // The counts at the end of a sync re-read only folders that changed.
        // The first sync of an account in this process would read its whole
        // Maildir there (7 ms per 10,000 messages, measured), before its
        // completion event: read it now instead, while mbsync waits on the
        // server, on a thread of its own at idle priority, so that it only
        // takes CPU time that mbsync, the server and the editor leave.
        if self.counted.lock().insert(opts.account.clone()) {
            let me = self.clone();
            let account = opts.account.clone();
            let _ = std::thread::Builder::new()
                .name("himalaya-sync-count".into())
                .spawn(move || {
                    crate::sched::idle_priority();
                    me.folder_counts(&account)
                });
        }
        let program = spec.program.to_string_lossy().into_owned();
        let max = self.settings().max_connections;
        let split = max > 1
            && opts.kind == SyncType::Full
            && channels.len() == 1
            && spec.targets == channels;
        let outcome = if split {
            self.run_split(id, spec, cache_rc, &channels[0], max, cancel_rx)
                .await
        } else {
            let me = self.clone();
            let account = opts.account.clone();
            runner::run(spec, cancel_rx, move |u| match u {
                Update::Exited => me.count_early(id, &account),
                u => me.on_update(id, u),
            })
            .await
        };
        drop(guards);
        let outcome = self.token_cut(&opts.account, &program, outcome).await;
        Attempt::Ran(Box::new(outcome))
    }

    /// An OAuth2 login that failed with an mbsync older than 1.4 is told as
    /// what it is (see [`PASSCMD_CUT`]): a config error, neither refreshed
    /// nor retried, since no token gets through.
    async fn token_cut(&self, account: &str, program: &str, mut outcome: Outcome) -> Outcome {
        let Some(err) = outcome.error.as_mut() else {
            return outcome;
        };
        if err.kind == ErrorKind::Auth
            && self.settings().oauth.contains_key(account)
            && names::version(program).await.is_some_and(|v| v < (1, 4))
        {
            *err = Classified {
                kind: ErrorKind::Config,
                line: format!("{PASSCMD_CUT} ({}: {})", program, err.line),
            };
        }
        outcome
    }

    /// For an account throttled to `kbps`, the mbsyncrc copy that sends
    /// `channels` through the relay (see [`throttle`]), removed when the
    /// returned guard drops; `None` for an account that is not throttled.
    async fn throttled(
        &self,
        kbps: Option<u32>,
        channels: &[String],
        id: u64,
    ) -> Result<Option<throttle::Cleanup>> {
        let Some(kbps) = kbps else {
            return Ok(None);
        };
        let settings = self.settings();
        let cfg = self.mbsync_config()?;
        let relay = settings.relay_cmd.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "cannot throttle: the himalaya-sync program (the relay) was not found; \
                 :checkhealth himalaya.sync says where it was looked for",
            )
        })?;
        let dir = settings.state_dir.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "cannot throttle: no state folder for the derived mbsyncrc",
            )
        })?;
        let channels = channels.to_vec();
        let path = tokio::task::spawn_blocking(move || {
            crate::lock::ensure_private_dir(&dir, "state directory")?;
            throttle::derived_config(&cfg, &channels, kbps, &relay, &dir, id)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Unknown, format!("throttle task failed: {e}")))??;
        Ok(Some(throttle::Cleanup(path)))
    }

    /// A full sync of one channel as up to `max` mbsync processes on
    /// disjoint sets of its boxes, reported as one sync: progress counters
    /// are summed, the first error wins.
    ///
    /// Listing the boxes (`mbsync -l`) costs a whole login, which behind a
    /// slow link is most of what splitting saves. So the list from the last
    /// sync of the channel is used to start at once, while a fresh listing
    /// runs beside the parts; when it differs, boxes that appeared get a part
    /// of their own, and parts that failed on a box that vanished (deleted on
    /// the server, config changed) run again without it. The list is kept
    /// under `cache_rc` (the user's mbsyncrc) and the channel.
    async fn run_split(
        self: &Arc<Self>,
        id: u64,
        spec: RunSpec,
        cache_rc: Option<PathBuf>,
        channel: &str,
        max: usize,
        cancel_rx: watch::Receiver<bool>,
    ) -> Outcome {
        let key = (cache_rc, channel.to_string());
        let cached = self.box_cache.lock().get(&key).cloned();
        let listing = {
            let (spec, channel, rx) = (spec.clone(), channel.to_string(), cancel_rx.clone());
            tokio::spawn(async move { runner::list_boxes(&spec, &channel, rx).await })
        };
        let listed = |joined: std::result::Result<_, tokio::task::JoinError>| match joined {
            Ok(Ok(b)) => Ok(splittable(b)),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(Classified {
                kind: ErrorKind::Unknown,
                line: format!("internal error while listing boxes: {e}"),
            }),
        };
        // Listed before the parts start (no cached list) or beside them.
        enum Fresh {
            Listed(Vec<String>),
            Pending(tokio::task::JoinHandle<std::result::Result<Vec<String>, Classified>>),
        }
        let (first, fresh) = match cached {
            Some(boxes) => (boxes, Fresh::Pending(listing)),
            None => {
                // The listing is a whole login: announce the sync first.
                self.on_update(id, Update::Started);
                match listed(listing.await) {
                    Ok(Some(b)) => (b.clone(), Fresh::Listed(b)),
                    Ok(None) => return self.run_single(id, spec, cancel_rx).await,
                    Err(e) => return failed_outcome(e),
                }
            }
        };
        let mut parts = deal(first, max);
        let progress = Arc::new(Mutex::new(Vec::new()));
        let mut outcomes = self
            .run_parts(id, &spec, channel, &parts, &progress, &cancel_rx)
            .await;
        let fresh = match fresh {
            Fresh::Listed(b) => b,
            Fresh::Pending(listing) => match listed(listing.await) {
                Ok(Some(b)) => b,
                // One box or none left (or a name mbsync cannot take in a
                // selection): the next sync lists again and runs unsplit.
                Ok(None) => {
                    self.box_cache.lock().remove(&key);
                    return merge(outcomes);
                }
                // The parts synced what they synced; only the check for
                // boxes added or removed meanwhile failed. The next sync
                // lists first.
                Err(e) => {
                    crate::log::write(
                        "warn",
                        &format!(
                            "sync #{id}: listing the boxes of {channel} failed: {}",
                            e.line
                        ),
                    );
                    self.box_cache.lock().remove(&key);
                    return merge(outcomes);
                }
            },
        };
        let known: HashSet<&String> = parts.iter().flatten().collect();
        let now: HashSet<&String> = fresh.iter().collect();
        let mut again: Vec<Vec<String>> = Vec::new();
        let mut kept = Vec::new();
        for (part, outcome) in parts.iter().zip(outcomes.drain(..)) {
            let gone = part.iter().any(|b| !now.contains(b));
            if outcome.error.is_some() && gone {
                let rest: Vec<String> = part.iter().filter(|b| now.contains(b)).cloned().collect();
                if !rest.is_empty() {
                    again.push(rest);
                }
            } else {
                kept.push(outcome);
            }
        }
        let added: Vec<String> = fresh
            .iter()
            .filter(|b| !known.contains(b))
            .cloned()
            .collect();
        if !added.is_empty() {
            again.push(added);
        }
        self.box_cache.lock().insert(key, fresh.clone());
        if !again.is_empty() && !*cancel_rx.borrow() {
            parts = again;
            kept.extend(
                self.run_parts(id, &spec, channel, &parts, &progress, &cancel_rx)
                    .await,
            );
        }
        merge(kept)
    }

    /// One plain mbsync run for the whole spec.
    async fn run_single(
        self: &Arc<Self>,
        id: u64,
        spec: RunSpec,
        cancel_rx: watch::Receiver<bool>,
    ) -> Outcome {
        let me = self.clone();
        runner::run(spec, cancel_rx, move |u| me.on_update(id, u)).await
    }

    /// Runs one mbsync per part at once and returns their outcomes in the
    /// order of `parts`. Progress of every part ever started in this sync
    /// lives in `progress`, so the total shown never goes backwards.
    async fn run_parts(
        self: &Arc<Self>,
        id: u64,
        spec: &RunSpec,
        channel: &str,
        parts: &[Vec<String>],
        progress: &Arc<Mutex<Vec<Progress>>>,
        cancel_rx: &watch::Receiver<bool>,
    ) -> Vec<Outcome> {
        let mut runs = tokio::task::JoinSet::new();
        for (n, part) in parts.iter().enumerate() {
            let slot = {
                let mut all = progress.lock();
                all.push(Progress::default());
                all.len() - 1
            };
            let spec = RunSpec {
                targets: vec![format!("{channel}:{}", part.join(","))],
                ..spec.clone()
            };
            let (me, progress, rx) = (self.clone(), progress.clone(), cancel_rx.clone());
            runs.spawn(async move {
                let out = runner::run(spec, rx, move |u| match u {
                    Update::Progress(p) => {
                        let total = {
                            let mut all = progress.lock();
                            all[slot] = p;
                            all.iter().fold(Progress::default(), |mut sum, p| {
                                sum.add(p);
                                sum
                            })
                        };
                        me.on_update(id, Update::Progress(total));
                    }
                    other => me.on_update(id, other),
                })
                .await;
                (n, out)
            });
        }
        let mut outcomes: Vec<Option<Outcome>> = parts.iter().map(|_| None).collect();
        while let Some(joined) = runs.join_next().await {
            match joined {
                Ok((n, o)) => outcomes[n] = Some(o),
                Err(e) => {
                    // The part's slot stays empty and is reported below.
                    crate::log::write("error", &format!("parallel mbsync task failed: {e}"));
                }
            }
        }
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    failed_outcome(Classified {
                        kind: ErrorKind::Unknown,
                        line: "internal error in a parallel mbsync".to_string(),
                    })
                })
            })
            .collect()
    }

    /// Repairs one box (see [`repair`]) under its channel lock: move the
    /// local folder aside, sync it fresh, restore what the server lacks,
    /// sync again to upload it.
    async fn repair_steps(
        self: &Arc<Self>,
        of: RepairOf<'_>,
        wait: Duration,
        cancel_rx: watch::Receiver<bool>,
        cancel_flag: Arc<AtomicBool>,
        ending: &Mutex<Option<crate::runtime::MustFinish>>,
    ) -> Result<RepairEnd> {
        let RepairOf {
            channel,
            mailbox,
            throttled,
        } = of;
        let settings = self.settings();
        let cfg = self.mbsync_config()?;
        let state = settings.state_dir.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "a repair needs a state folder for its backup",
            )
        })?;
        let stamp = format!("{}", now() as u64);
        let plan = repair::plan(&cfg, channel, mailbox, &state.join("repair"), &stamp)?;
        let purpose = format!("repair of {channel}:{mailbox}");
        // A sync that just failed on this box may still be releasing it.
        let wait = wait.max(Duration::from_secs(30));
        let guard = self
            .locks
            .acquire_async(
                &channel_lock_name(channel),
                wait,
                &purpose,
                Some(&cancel_flag),
            )
            .await?;
        // Only now, as for a sync (see `Job::ending`): not while it waits.
        *ending.lock() = Some(crate::runtime::must_finish());
        let spec = RunSpec {
            program: settings.mbsync_cmd.clone(),
            // A throttled account's mbsyncrc sends it through the relay: a
            // repair fetches the whole folder, the largest transfer of all.
            config: Some(throttled.map_or_else(|| cfg.path.clone(), Path::to_path_buf)),
            // mbsync refuses a box named for a channel without Patterns,
            // which syncs its one box anyway.
            targets: vec![match cfg.channel(channel) {
                Some(c) if c.patterns.is_empty() => channel.to_string(),
                _ => format!("{channel}:{mailbox}"),
            }],
            extra_args: settings.extra_args.clone(),
            idle_timeout: settings.idle_timeout,
            list: false,
        };
        // A repair fetches the folder afresh, which undoes local changes not
        // synced yet (flags set, messages deleted). So the box is synced as
        // it is first: if mbsync takes it, nothing needed repairing, and
        // those changes reached the server.
        let first = runner::run(spec.clone(), cancel_rx.clone(), |_| {}).await;
        let reason = match first.error.clone() {
            None => return Ok(RepairEnd::Unneeded(first)),
            Some(c) if c.kind == ErrorKind::Uidvalidity => repair::reason(&c.line),
            Some(c) => {
                return Err(Error::new(
                    c.kind,
                    format!(
                        "repair of {channel}:{mailbox} not started: {}",
                        summary(c.kind, &c.line)
                    ),
                ))
            }
        };
        crate::log::write(
            "warn",
            &format!(
                "repairing {channel}:{mailbox}: moving {} to {}",
                plan.local.display(),
                plan.backup.display()
            ),
        );
        let p = plan.clone();
        let backed_up = tokio::task::spawn_blocking(move || repair::move_aside(&p))
            .await
            .map_err(|e| Error::new(ErrorKind::Unknown, format!("repair task failed: {e}")))??;
        let kept = |step: &str, c: crate::mbsync::errors::Classified| {
            Error::new(
                c.kind,
                format!(
                    "repair of {channel}:{mailbox} failed at {step}: {}; the old copy is kept in {}",
                    summary(c.kind, &c.line),
                    plan.backup.display()
                ),
            )
        };
        let fresh = runner::run(spec.clone(), cancel_rx.clone(), |_| {}).await;
        let fetched = fresh.last_progress.as_ref().map_or(0, |p| p.near.new.done);
        if let Some(c) = fresh.error {
            // Put the box back as it was: the next sync meets the changed
            // UIDVALIDITY again and repairs it then, with nothing left for
            // the user to restore by hand.
            let p = plan.clone();
            let back = tokio::task::spawn_blocking(move || repair::put_back(&p)).await;
            return Err(match back {
                Ok(Ok(partial)) => {
                    crate::log::write(
                        "warn",
                        &format!(
                            "repair of {channel}:{mailbox}: the fresh sync failed; the folder is \
                             back as it was, what the fresh sync wrote is in {}",
                            partial.display()
                        ),
                    );
                    Error::new(
                        c.kind,
                        format!(
                            "repair of {channel}:{mailbox} failed at the fresh sync: {}; the folder \
                             is back as it was and is repaired again at the next sync",
                            summary(c.kind, &c.line)
                        ),
                    )
                }
                _ => kept("the fresh sync", c),
            });
        }
        let p = plan.clone();
        let restored = tokio::task::spawn_blocking(move || repair::restore_missing(&p))
            .await
            .map_err(|e| Error::new(ErrorKind::Unknown, format!("repair task failed: {e}")))??;
        // A channel that does not upload (`Sync Pull`) leaves them here:
        // what mbsync counted as sent to the far side says which it was.
        let mut uploaded = 0;
        if restored > 0 {
            let upload = runner::run(spec, cancel_rx, |_| {}).await;
            if let Some(c) = upload.error {
                return Err(kept("the upload of restored messages", c));
            }
            uploaded = upload.last_progress.as_ref().map_or(0, |p| p.far.new.done);
        }
        drop(guard);
        let report = repair::Report {
            channel: channel.to_string(),
            mailbox: mailbox.to_string(),
            reason,
            backup: plan.backup.clone(),
            fetched,
            restored,
            uploaded,
            backed_up,
        };
        crate::log::write(
            "warn",
            &format!(
                "repaired {channel}:{mailbox}: {}; backup kept in {}",
                repair::restored_text(&report),
                plan.backup.display()
            ),
        );
        Ok(RepairEnd::Repaired(report))
    }

    /// Marks sync `id` as waiting for the lock another process holds
    /// (`Some(holder)`), or as running again (`None`), and tells the editor.
    fn set_waiting(self: &Arc<Self>, id: u64, holder: Option<String>) {
        let waits = holder.is_some();
        let mut entries = self.entries.lock();
        let Some(e) = entries.iter_mut().find(|e| e.info.id == id) else {
            return;
        };
        if waits {
            e.wait_began.get_or_insert_with(Instant::now);
        } else if let Some(began) = e.wait_began.take() {
            e.waited += began.elapsed();
        }
        if !e.info.status.active() {
            return;
        }
        e.info.message = match &holder {
            // This process's own lock (a script's `acquire_lock`) is no
            // other process's sync.
            Some(h) if h.contains(crate::lock::HELD_BY_THIS_PROCESS) => {
                format!("waiting for the lock of {}: {h}", e.info.account)
            }
            Some(h) => format!(
                "waiting for another process to finish syncing {}: {h}",
                e.info.account
            ),
            None => format!("syncing {}", e.info.account),
        };
        e.info.waiting_for = holder;
        (self.emit)(id, "sync_waiting", json!(e.info));
        drop(entries);
        if waits {
            // Its slot is free while it waits (see `start_free`).
            self.pump();
        }
    }

    fn on_update(&self, id: u64, update: Update) {
        if let Update::Exited = update {
            // Nothing to show (`attempt` may start the count on it).
            return;
        }
        {
            let mut entries = self.entries.lock();
            let Some(e) = entries.iter_mut().find(|e| e.info.id == id) else {
                return;
            };
            if let Update::Started = update {
                // Once per attempt, however many mbsync processes it runs.
                if !e.started_sent && e.info.status == Status::Running {
                    e.started_sent = true;
                    crate::log::write(
                        "info",
                        &format!(
                            "sync #{} {} {} started (attempt {}): mbsync {}",
                            e.info.id,
                            e.info.kind.as_str(),
                            e.info.account,
                            e.info.attempt,
                            e.info.channel
                        ),
                    );
                    (self.emit)(id, "sync_started", json!(e.info));
                }
                return;
            }
            let prev = e.info.progress.take();
            let (mut counters, mut percent, mut current_box) = match prev {
                Some(p) => (p.counters, p.percent, p.current_box),
                None => (Progress::default(), None, None),
            };
            match update {
                Update::Progress(p) => {
                    percent = e.estimate.update(&p);
                    counters = p;
                }
                Update::Box(b) => current_box = Some(b),
                Update::Started | Update::Exited => {}
            }
            e.info.progress = Some(ProgressInfo {
                counters,
                percent,
                current_box,
            });
            e.dirty = true;
        }
        self.flush(id, false);
    }

    /// Sends the latest progress if due (or always when `force`).
    ///
    /// Events are emitted while `entries` is held (emitting never blocks),
    /// so no progress event can overtake the `sync_done` of its sync.
    fn flush(&self, id: u64, force: bool) {
        let mut entries = self.entries.lock();
        let Some(e) = entries.iter_mut().find(|e| e.info.id == id) else {
            return;
        };
        let due = e.last_sent.is_none_or(|t| t.elapsed() >= PROGRESS_INTERVAL);
        if !e.dirty || !(due || force) || !e.info.status.active() {
            return;
        }
        e.dirty = false;
        e.last_sent = Some(Instant::now());
        (self.emit)(id, "sync_progress", json!(e.info));
    }

    fn finish(self: &Arc<Self>, id: u64, account: &str, attempt: Attempt) {
        // A sync that succeeded sends its latest progress (at 100 %) together
        // with its end (see `finalize`): one wakeup of the editor instead of
        // two back to back. Any other ending first sends what was held back.
        let succeeded = match &attempt {
            Attempt::Ran(o) => o.error.is_none(),
            Attempt::NotRun(_) => false,
            Attempt::Repaired(_) => true,
        };
        if !succeeded {
            self.flush(id, true);
        }
        // Counted before `entries` is locked: the editor's thread takes that
        // lock for every status and list, and counting a folder that changed
        // reads all its names (milliseconds for 10,000 messages).
        let cancelled = match &attempt {
            Attempt::Ran(o) => o.error.as_ref().map(|c| c.kind),
            Attempt::NotRun(e) => Some(e.kind),
            Attempt::Repaired(_) => None,
        } == Some(ErrorKind::Cancelled);
        // Nor at exit: nobody would see them, and the exit waits for this.
        let counts = if cancelled || crate::runtime::is_stopped() {
            None
        } else {
            self.early_counts(id)
                .unwrap_or_else(|| self.counts_after_sync(account))
        };
        let settings = self.settings();
        let policy = settings.retry.clone();
        let (error, last, ran) = match attempt {
            Attempt::Ran(o) => (
                o.error.map(|c| {
                    // Only the mbsync config tells this timeout from a
                    // server that stopped answering.
                    let c = (c.kind == ErrorKind::Timeout)
                        .then(|| self.without_tls(id, &c))
                        .flatten()
                        .unwrap_or(c);
                    ErrorInfo {
                        kind: c.kind,
                        message: summary(c.kind, &c.line),
                        line: c.line,
                    }
                }),
                o.last_progress,
                true,
            ),
            Attempt::NotRun(e) => (
                Some(ErrorInfo {
                    kind: e.kind,
                    message: e.message.clone(),
                    line: e.message,
                }),
                None,
                false,
            ),
            Attempt::Repaired(report) => {
                let mut entries = self.entries.lock();
                if let Some(e) = entries.iter_mut().find(|e| e.info.id == id) {
                    e.info.repair = Some(report);
                    let item = self.finalize(e, None, None, counts);
                    drop(entries);
                    self.record_history(item);
                }
                self.pump();
                return;
            }
        };
        // Read before `entries` is locked; it names the box of a UIDVALIDITY
        // error as the channel does (see `repair::channel_box`).
        let cfg = error
            .as_ref()
            .filter(|err| err.kind == ErrorKind::Uidvalidity)
            .and_then(|_| self.mbsync_config().ok());
        let mut entries = self.entries.lock();
        let Some(e) = entries.iter_mut().find(|e| e.info.id == id) else {
            return;
        };
        let damaged = error
            .as_ref()
            .filter(|err| err.kind == ErrorKind::Uidvalidity)
            .and_then(|err| {
                let (channel, mailbox) = repair::channel_box(cfg.as_ref(), &err.line)?;
                let why = repair::why(&channel, &mailbox, &err.line);
                Some((channel, mailbox, why))
            });
        let mut error = error;
        if let Some((channel, mailbox, why)) = damaged {
            e.info.damaged = Some(mailbox.clone());
            e.info.damaged_channel = Some(channel.clone());
            e.info.damaged_why = Some(why.clone());
            // Each box is repaired automatically once per sync: one that
            // mbsync refuses again after that is the user's to look at.
            let repaired = e
                .auto_repairs
                .iter()
                .any(|(c, m, _)| *c == channel && *m == mailbox);
            if settings.uidvalidity != UidvalidityPolicy::Repair || repaired {
                let again = if repaired {
                    " again after its automatic repair"
                } else {
                    ""
                };
                if let Some(err) = error.as_mut() {
                    err.message = format!(
                        "{why}{again}; repair it without loss with :HimalayaSync repair {channel} \
                         {mailbox}"
                    );
                }
            }
            if settings.uidvalidity == UidvalidityPolicy::Repair
                && !repaired
                && !e.cancel_flag.load(Ordering::SeqCst)
            {
                e.auto_repairs
                    .push((channel.clone(), mailbox.clone(), None));
                e.info.status = Status::Repairing;
                e.info.message = format!("{why}; repairing it without loss");
                e.info.error = error.clone();
                (self.emit)(id, "sync_repair", json!(e.info));
                let cancel_rx = e.cancel.subscribe();
                let flag = e.cancel_flag.clone();
                let me = self.clone();
                let account = account.to_string();
                drop(entries);
                self.rt.spawn(async move {
                    // As in `pump`: a panic in the repair, or while ending
                    // it, must not leave the sync "repairing" for good,
                    // holding its channels from every later sync.
                    let ending = Arc::new(Mutex::new(None));
                    let steps = {
                        let (me, ending, account) = (me.clone(), ending.clone(), account.clone());
                        tokio::spawn(async move {
                            // Throttled as the sync was (see `attempt`);
                            // the derived mbsyncrc goes when this ends.
                            let kbps = me
                                .settings()
                                .accounts
                                .get(&account)
                                .and_then(|a| a.throttle);
                            let derived = me
                                .throttled(kbps.map(|t| t.kbps), std::slice::from_ref(&channel), id)
                                .await?;
                            let throttled = derived.as_ref().map(|d| d.0.as_path());
                            me.repair_steps(
                                RepairOf {
                                    channel: &channel,
                                    mailbox: &mailbox,
                                    throttled,
                                },
                                Duration::ZERO,
                                cancel_rx,
                                flag,
                                &ending,
                            )
                            .await
                        })
                    };
                    let repaired = match steps.await {
                        Ok(end) => end.map(|end| match end {
                            RepairEnd::Repaired(report) => Some(report),
                            // The sync runs again in full anyway.
                            RepairEnd::Unneeded(_) => None,
                        }),
                        Err(e) => Err(Error::new(
                            ErrorKind::Unknown,
                            format!("internal error in the repair task: {e}"),
                        )),
                    };
                    let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        me.after_auto_repair(id, &account, repaired)
                    }));
                    if ended.is_err() {
                        me.abandon(id);
                    }
                    drop(ending);
                });
                return;
            }
        }
        if ran
            && error
                .as_ref()
                .is_some_and(|err| err.kind == ErrorKind::Auth)
            && settings.auth_refresh.contains(&e.info.account)
            && !e.auth_refreshed
            && !e.cancel_flag.load(Ordering::SeqCst)
        {
            // The editor refreshes the credentials and answers with
            // `auth_refreshed`; the sync then runs once more.
            e.auth_refreshed = true;
            e.info.attempt += 1;
            e.info.status = Status::Retrying;
            e.info.message = format!(
                "authentication failed; refreshing the credentials of {}",
                e.info.account
            );
            e.info.error = error;
            (self.emit)(id, "sync_auth", json!(e.info));
            let (me, attempt) = (self.clone(), e.info.attempt);
            self.rt.spawn(async move {
                tokio::time::sleep(settings.auth_refresh_limit).await;
                me.auth_refresh_overdue(id, attempt);
            });
            return;
        }
        if ran && e.auth_refreshed {
            if let Some(err) = error.as_mut().filter(|err| err.kind == ErrorKind::Auth) {
                err.message = format!(
                    "authentication failed again after refreshing the credentials of {}: \
                     re-authorization needed ({})",
                    e.info.account, err.message
                );
            }
        }
        let transient = matches!(
            error.as_ref().map(|e| e.kind),
            Some(ErrorKind::Network | ErrorKind::Timeout | ErrorKind::Locked)
        );
        // Our own account lock being taken is reported at once (the caller
        // chose how long to wait); mbsync finding its channel locked by a
        // foreign mbsync is worth a retry. Before mbsync ran, only the
        // network failing (refreshing a token after a resume, say) is; a
        // repair that did not finish is not run again unasked.
        let network = matches!(
            error.as_ref().map(|e| e.kind),
            Some(ErrorKind::Network | ErrorKind::Timeout)
        );
        let retry = (if ran {
            transient
        } else {
            network && e.opts.kind != SyncType::Repair
        }) && e.info.attempt <= policy.max_attempts
            && !e.cancel_flag.load(Ordering::SeqCst);
        if retry {
            let err = error.unwrap_or_else(|| ErrorInfo {
                kind: ErrorKind::Unknown,
                message: String::new(),
                line: String::new(),
            });
            self.retry_later(e, err, &policy);
            drop(entries);
            self.pump();
            return;
        }
        let item = self.finalize(e, error, last, counts);
        Self::prune(&mut entries);
        drop(entries);
        self.record_history(item);
        self.pump();
    }

    /// `finish` panicked (a bug, or the event sink failing) part way: ends
    /// sync `id` as an internal error unless it already ended, even one
    /// left waiting to retry (its timer or its credentials request may not
    /// have gone out), and lets the queue go on either way.
    fn abandon(self: &Arc<Self>, id: u64) {
        let mut entries = self.entries.lock();
        if let Some(e) = entries.iter_mut().find(|e| {
            e.info.id == id
                && matches!(
                    e.info.status,
                    Status::Running | Status::Repairing | Status::Retrying
                )
        }) {
            let message = "internal error while ending the sync; please report it".to_string();
            let error = Some(ErrorInfo {
                kind: ErrorKind::Unknown,
                line: message.clone(),
                message,
            });
            let item = self.finalize(e, error, None, None);
            Self::prune(&mut entries);
            drop(entries);
            self.record_history(item);
        } else {
            drop(entries);
        }
        self.pump();
    }

    /// Sync `e` failed with `err` and runs again after the policy's backoff
    /// (or at once when cancelled meanwhile, to end as such: see
    /// [`Manager::requeue`]).
    fn retry_later(self: &Arc<Self>, e: &mut Entry, err: ErrorInfo, policy: &RetryPolicy) {
        let id = e.info.id;
        let delay = policy.delay(e.info.attempt, jitter_unit(id ^ e.info.attempt as u64));
        e.info.status = Status::Retrying;
        e.info.next_retry = Some(now() + delay.as_secs_f64());
        e.info.message = format!(
            "{}; retrying in {:.0} s (attempt {} of {})",
            err.message,
            delay.as_secs_f64().ceil(),
            e.info.attempt + 1,
            policy.max_attempts + 1
        );
        e.info.error = Some(err);
        e.info.attempt += 1;
        crate::log::write("warn", &format!("sync #{id} {}", e.info.message));
        (self.emit)(id, "sync_retry", json!(e.info));
        let mut cancel_rx = e.cancel.subscribe();
        let me = self.clone();
        self.rt.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => me.requeue(id),
                _ = cancel_rx.wait_for(|c| *c) => me.requeue(id),
            }
        });
    }

    /// An automatic repair ended: sync again (with the repair recorded, if
    /// one was needed after all), or end with the repair's error, which
    /// says where the backup is.
    fn after_auto_repair(
        self: &Arc<Self>,
        id: u64,
        account: &str,
        repaired: Result<Option<repair::Report>>,
    ) {
        // Counted before locking `entries` (see `finish`).
        let counts = match &repaired {
            Err(e) if e.kind != ErrorKind::Cancelled => self.counts_after_sync(account),
            _ => None,
        };
        let mut entries = self.entries.lock();
        let Some(e) = entries.iter_mut().find(|e| e.info.id == id) else {
            return;
        };
        match repaired {
            Ok(report) => {
                e.info.message = match &report {
                    Some(r) => format!(
                        "repaired {}:{} ({} messages restored); syncing again",
                        r.channel, r.mailbox, r.restored
                    ),
                    // Another process repaired it meanwhile, or mbsync's
                    // complaint did not come back: the sync just runs again.
                    None => "nothing needed repairing after all; syncing again".to_string(),
                };
                if let Some(last) = e.auto_repairs.last_mut() {
                    last.2.clone_from(&report);
                }
                if let Some(r) = &report {
                    crate::log::write("warn", &format!("sync #{id}: {}", repaired_first(r)));
                }
                // It no longer stops the sync, which runs again (and says
                // so again if mbsync still refuses the folder).
                e.info.damaged = None;
                e.info.damaged_channel = None;
                e.info.damaged_why = None;
                // `repair` tells the last repair done: a later one that
                // found its box healthy does not hide it.
                if report.is_some() {
                    e.info.repair = report;
                }
                e.info.status = Status::Queued;
                (self.emit)(id, "sync_queued", json!(e.info));
                drop(entries);
            }
            Err(err) => {
                let error = Some(ErrorInfo {
                    kind: err.kind,
                    message: err.message.clone(),
                    line: err.message,
                });
                let item = self.finalize(e, error, None, counts);
                drop(entries);
                self.record_history(item);
            }
        }
        self.pump();
    }

    /// The editor's answer to `sync_auth`: run again with the refreshed
    /// credentials, or end with the refresh's error. A refresh that failed
    /// because the provider could not be reached (kind `network` or
    /// `timeout`) says nothing about the credentials: the sync is retried
    /// as a network failure is, and, once out of attempts, ends as one.
    pub fn auth_refreshed(self: &Arc<Self>, id: u64, outcome: Result<()>) {
        let mut entries = self.entries.lock();
        let Some(e) = entries.iter_mut().find(|e| e.info.id == id) else {
            return;
        };
        if e.info.status != Status::Retrying || !e.auth_refreshed {
            return;
        }
        let cancelled = e.cancel_flag.load(Ordering::SeqCst);
        match outcome {
            Ok(()) if !cancelled => {
                e.info.status = Status::Queued;
                e.info.message = format!("credentials refreshed; syncing {} again", e.info.account);
                (self.emit)(id, "sync_queued", json!(e.info));
                drop(entries);
            }
            Err(why) if matches!(why.kind, ErrorKind::Network | ErrorKind::Timeout) => {
                let message = format!(
                    "the credentials of {} could not be refreshed: {}",
                    e.info.account, why.message
                );
                let error = ErrorInfo {
                    kind: why.kind,
                    message,
                    line: why.message,
                };
                let policy = self.settings().retry.clone();
                if !cancelled && e.info.attempt <= policy.max_attempts {
                    // The next login that fails asks for a refresh again:
                    // this one never reached the provider.
                    e.auth_refreshed = false;
                    self.retry_later(e, error, &policy);
                    drop(entries);
                } else {
                    let item = self.finalize(e, Some(error), None, None);
                    drop(entries);
                    self.record_history(item);
                }
            }
            refused => {
                let why = refused
                    .err()
                    .map_or_else(|| "cancelled".to_string(), |e| e.message);
                let error = Some(ErrorInfo {
                    kind: ErrorKind::Auth,
                    message: format!(
                        "authentication failed and the credentials of {} could not be refreshed: {why}; \
                         re-authorization needed",
                        e.info.account
                    ),
                    line: why,
                });
                // On the editor's thread: no Maildir walk here, so this
                // ending carries no counts (the failed login changed none).
                let item = self.finalize(e, error, None, None);
                drop(entries);
                self.record_history(item);
            }
        }
        self.pump();
    }

    /// The editor did not answer the `sync_auth` of `attempt` in time: the
    /// sync ends as an auth failure instead of waiting for good.
    fn auth_refresh_overdue(self: &Arc<Self>, id: u64, attempt: u32) {
        let waiting = self.entries.lock().iter().any(|e| {
            e.info.id == id
                && e.info.attempt == attempt
                && e.info.status == Status::Retrying
                && e.auth_refreshed
        });
        if waiting {
            let limit = self.settings().auth_refresh_limit;
            self.auth_refreshed(
                id,
                Err(Error::new(
                    ErrorKind::Auth,
                    format!(
                        "the refresh did not answer within {} s",
                        limit.as_secs_f64()
                    ),
                )),
            );
        }
    }

    /// A retry is due (or cancelled while waiting): back into the queue, or
    /// finished as cancelled.
    fn requeue(self: &Arc<Self>, id: u64) {
        let mut entries = self.entries.lock();
        let Some(e) = entries.iter_mut().find(|e| e.info.id == id) else {
            return;
        };
        if e.info.status != Status::Retrying {
            return;
        }
        if e.cancel_flag.load(Ordering::SeqCst) {
            let cancelled = Some(ErrorInfo {
                kind: ErrorKind::Cancelled,
                message: summary(ErrorKind::Cancelled, ""),
                line: String::new(),
            });
            let item = self.finalize(e, cancelled, None, None);
            drop(entries);
            self.record_history(item);
        } else {
            e.info.status = Status::Queued;
            e.info.message = format!("retrying {}", e.info.account);
            (self.emit)(id, "sync_queued", json!(e.info));
            drop(entries);
        }
        self.pump();
    }

    /// [`without_tls`] for the IMAP accounts of the channels sync `id`
    /// runs (called before `entries` is held, on a timeout only).
    fn without_tls(&self, id: u64, c: &Classified) -> Option<Classified> {
        let cfg = self.mbsync_config().ok()?;
        let targets = self
            .entries
            .lock()
            .iter()
            .find(|e| e.info.id == id)
            .map(|e| e.targets.clone())?;
        let accounts: Vec<&ImapAccount> = targets::channels_of_targets(&cfg, &targets)
            .iter()
            .filter_map(|name| cfg.channel(name))
            .filter_map(|channel| cfg.imap_account_for(channel))
            .collect();
        without_tls(c, &accounts)
    }

    /// Sets the final state of a sync and emits its last events (called with
    /// `entries` held, so `counts` were read before); returns what the
    /// history should record.
    fn finalize(
        &self,
        e: &mut Entry,
        error: Option<ErrorInfo>,
        last: Option<Progress>,
        counts: Option<Vec<FolderCounts>>,
    ) -> HistoryItem {
        if let Some(began) = e.wait_began.take() {
            e.waited += began.elapsed();
        }
        let repairs: Vec<&repair::Report> = e
            .auto_repairs
            .iter()
            .filter_map(|(_, _, r)| r.as_ref())
            .collect();
        let info = &mut e.info;
        // A cancel says which sync, in the result and the history too, and
        // what it was waiting for, if anything ("waiting for lock ... was
        // cancelled" becomes "... cancelled while waiting for lock ...").
        let error = error.map(|mut err| {
            if err.kind == ErrorKind::Cancelled {
                let sync = format!("{} sync of {} cancelled", info.kind.as_str(), info.account);
                err.message = if crate::runtime::is_stopped() {
                    // Whatever it was doing: the log says why it ended.
                    format!("{sync}: Neovim is exiting")
                } else if err.line.is_empty() {
                    format!("{sync} (start it again when needed)")
                } else {
                    match err.message.strip_suffix(" was cancelled") {
                        Some(during) => format!("{sync} while {during}"),
                        None => format!("{sync}: {}", err.message),
                    }
                };
            }
            err
        });
        let end = now();
        info.end_time = Some(end);
        info.next_retry = None;
        let counters = last
            .or_else(|| info.progress.as_ref().map(|p| p.counters.clone()))
            .unwrap_or_default();
        let result = SyncResult {
            success: error.is_none(),
            error: error.as_ref().map(|e| e.message.clone()),
            kind: error.as_ref().map(|e| e.kind),
            duration: end - info.start_time,
            waited: e.waited.as_secs_f64(),
            pulled: counters.near.new.done,
            pushed: counters.far.new.done,
            flags_changed: counters.near.flags.done + counters.far.flags.done,
            trashed: counters.near.trash.done + counters.far.trash.done,
            attempts: info.attempt,
        };
        if result.success {
            if let Some(p) = info.progress.as_mut() {
                // The last progress event of a successful sync says 100 %;
                // it goes out before the status changes, as progress.
                p.percent = Some(100.0);
                (self.emit)(info.id, "sync_progress", json!(info));
            }
        }
        info.status = match &error {
            None => Status::Completed,
            Some(e) if e.kind == ErrorKind::Cancelled => Status::Cancelled,
            Some(_) => Status::Error,
        };
        info.message = match &error {
            None if info.kind == SyncType::Repair => match &info.repair {
                Some(r) => format!(
                    "repaired {} of {}: {} messages fetched afresh, {}; backup kept in {}",
                    r.mailbox,
                    info.account,
                    r.fetched,
                    repair::restored_text(r),
                    r.backup.display()
                ),
                // It ran mbsync only (see `repair_steps`).
                None => format!(
                    "nothing to repair: {} of {} synced normally (its UIDVALIDITY has not \
                     changed)",
                    info.folders.first().map_or("the folder", String::as_str),
                    info.account
                ),
            },
            None => {
                // A wait for another process is said apart: "done in 25 s"
                // for a sync that ran 5 s would make it look slow. (Its
                // lock, not another sync: a script may have held it.)
                let waited = if result.waited >= 0.1 {
                    format!(" after waiting {} for its lock", took(result.waited))
                } else {
                    String::new()
                };
                let done = format!(
                    "{} sync of {} done in {}{waited}: {} new, {} uploaded",
                    info.kind.as_str(),
                    info.account,
                    took(result.duration - result.waited),
                    result.pulled,
                    result.pushed
                );
                // Automatic repairs ran first: the user hears of them here
                // too (the command-line tool prints only this message); of
                // a server that renumbered many folders, of the first few,
                // and the log has each (see `after_auto_repair`).
                let named = repairs.iter().take(NAMED_REPAIRS).fold(done, |message, r| {
                    format!("{message}; {}", repaired_first(r))
                });
                match repairs.len().saturating_sub(NAMED_REPAIRS) {
                    0 => named,
                    1 => {
                        format!("{named}; 1 more folder was repaired first (see :HimalayaSync log)")
                    }
                    more => format!(
                        "{named}; {more} more folders were repaired first (see :HimalayaSync log)"
                    ),
                }
            }
            Some(e) => e.message.clone(),
        };
        // A cancel is what someone asked for, not an error.
        let level = match &error {
            Some(e) if e.kind != ErrorKind::Cancelled => "error",
            _ => "info",
        };
        crate::log::write(level, &format!("sync #{} {}", info.id, info.message));
        if let Some(e) = error.as_ref().filter(|e| e.kind != ErrorKind::Cancelled) {
            if !e.line.is_empty() && e.line != e.message {
                crate::log::write(
                    "error",
                    &format!("sync #{} mbsync said: {}", info.id, e.line),
                );
            }
        }
        let item = HistoryItem {
            keep: Some(crate::runtime::must_finish()),
            held: self.hold_history(Record {
                account: info.account.clone(),
                kind: info.kind.as_str().to_string(),
                end,
                duration: result.duration,
                error: error.as_ref().map(|e| (e.kind, e.message.clone())),
            }),
        };
        info.counts = counts;
        // A later success clears the error of earlier attempts.
        info.error = error;
        info.result = Some(result);
        e.dirty = false;
        (self.emit)(info.id, "sync_done", json!(info));
        item
    }

    fn prune(entries: &mut Vec<Entry>) {
        while entries.iter().filter(|e| !e.info.status.active()).count() > KEEP_FINISHED {
            match entries.iter().position(|e| !e.info.status.active()) {
                Some(pos) => {
                    entries.remove(pos);
                }
                None => break,
            }
        }
    }

    /// Holds a finished sync's entry in the history, in memory (see
    /// [`History::hold`]): done before its end is announced, so that the
    /// history read on hearing of it has the sync. The entry belongs to the
    /// state folder configured now: should `state_dir` change before it is
    /// saved, it is still saved in this one.
    fn hold_history(&self, record: Record) -> Option<(Arc<History>, Held)> {
        match self.history() {
            Ok(Some(history)) => {
                let held = history.hold(record);
                Some((history, held))
            }
            Ok(None) => None,
            Err(e) => {
                tell_history_problem(&self.emit, &self.history_problem, Some(e));
                None
            }
        }
    }

    fn record_history(&self, mut item: HistoryItem) {
        let (Some((history, held)), keep) = (item.held.take(), item.keep.take()) else {
            return;
        };
        // File I/O and the history lock stay off the caller's thread (which
        // may be Neovim's main loop when a queued sync is cancelled).
        let emit = self.emit.clone();
        let problem = self.history_problem.clone();
        self.rt.spawn_blocking(move || {
            // Once the entry is in its pending file, Neovim may quit: the
            // merge can wait for a lock another process holds, and the
            // next sync of any process merges the file anyway.
            let saved = history.record_held(held, move || drop(keep));
            if let Ok(Some(notice)) = &saved {
                emit(0, "warning", json!({ "message": notice }));
            }
            tell_history_problem(&emit, &problem, saved.err());
        });
    }

    /// Cancels one sync or check, or every active one when `id` is None;
    /// returns how many were asked to stop (one asked already is not
    /// counted again). Queued syncs end at once; running ones when mbsync
    /// has stopped; waiting retries and checks at once.
    pub fn cancel(self: &Arc<Self>, id: Option<u64>) -> usize {
        let mut n = 0;
        for (check, stop) in self.checks.lock().iter() {
            if id.is_none_or(|i| i == *check) && !*stop.borrow() {
                n += 1;
                let _ = stop.send(true);
            }
        }
        let mut entries = self.entries.lock();
        let mut done = Vec::new();
        for e in entries.iter_mut() {
            if !e.info.status.active()
                || id.is_some_and(|i| i != e.info.id)
                || e.cancel_flag.load(Ordering::SeqCst)
            {
                continue;
            }
            n += 1;
            e.cancel_flag.store(true, Ordering::SeqCst);
            let _ = e.cancel.send(true);
            // Nothing else will end a sync that waits in the queue or for
            // the editor's credential refresh.
            if e.info.status == Status::Queued
                || (e.info.status == Status::Retrying && e.auth_refreshed)
            {
                let cancelled = Some(ErrorInfo {
                    kind: ErrorKind::Cancelled,
                    message: summary(ErrorKind::Cancelled, ""),
                    line: String::new(),
                });
                done.push(self.finalize(e, cancelled, None, None));
            }
        }
        drop(entries);
        for item in done {
            self.record_history(item);
        }
        n
    }
}

/// Stops a helper task however its owner ends (return or panic).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How many automatic repairs a sync's final message names; the log has
/// every one.
const NAMED_REPAIRS: usize = 3;

/// One automatic repair, for the sync's final message and the log.
fn repaired_first(r: &repair::Report) -> String {
    format!(
        "{} was repaired first ({}): {} messages fetched afresh, {}, backup kept in {}",
        r.mailbox,
        r.reason,
        r.fetched,
        repair::restored_text(r),
        r.backup.display()
    )
}

/// Tells the user that the history is not saved (a `warning` event), once
/// for each new reason; `None` (an entry was saved) forgets the reason, so
/// that a problem that comes back is told again.
fn tell_history_problem(emit: &Emit, last: &Mutex<Option<String>>, problem: Option<Error>) {
    let problem = problem.map(|e| e.message);
    let mut last = last.lock();
    if let Some(message) = problem.as_ref().filter(|p| last.as_ref() != Some(*p)) {
        emit(
            0,
            "warning",
            json!({ "message": format!("sync history not saved: {message}") }),
        );
    }
    *last = problem;
}

/// What [`Manager::record_history`] writes, detached from the entry.
struct HistoryItem {
    /// Taken before the sync's end is announced, so that a process that
    /// exits as soon as it hears of it (the command-line tool, a Neovim
    /// that quits in `on_complete`) still waits at shutdown until the
    /// entry is saved (not until it is merged).
    keep: Option<crate::runtime::MustFinish>,
    /// The entry, held in the history it goes into; none without a state
    /// directory, or when the history could not be opened (told then).
    held: Option<(Arc<History>, Held)>,
}

impl Drop for HistoryItem {
    /// An item dropped before [`Manager::record_history`] took it (ending
    /// the sync panicked after the entry was held) lets go of its entry:
    /// it would otherwise be in this process's history, and never saved.
    fn drop(&mut self) {
        if let Some((history, held)) = self.held.take() {
            history.forget(held);
        }
    }
}

/// A box list worth splitting: two boxes or more, and no name with a comma
/// (a comma would split the name in an mbsync `channel:box,box` target).
fn splittable(boxes: Vec<String>) -> Option<Vec<String>> {
    (boxes.len() > 1 && boxes.iter().all(|b| !b.contains(','))).then_some(boxes)
}

/// Deals the boxes round-robin into at most `max` parts.
fn deal(boxes: Vec<String>, max: usize) -> Vec<Vec<String>> {
    let k = max.clamp(1, boxes.len().max(1));
    let mut parts = vec![Vec::new(); k];
    for (i, b) in boxes.into_iter().enumerate() {
        parts[i % k].push(b);
    }
    parts
}

/// An outcome for a run that never produced one of its own.
fn failed_outcome(error: Classified) -> Outcome {
    Outcome {
        exit: None,
        error: Some(error),
        last_progress: None,
        tail: Vec::new(),
        duration: Duration::ZERO,
    }
}

/// One outcome for the parts of a split sync: counters summed, the first
/// error (in part order) wins, the longest part's duration.
fn merge(outcomes: Vec<Outcome>) -> Outcome {
    let mut merged = Outcome {
        exit: None,
        error: None,
        last_progress: None,
        tail: Vec::new(),
        duration: Duration::ZERO,
    };
    let mut sum = Progress::default();
    for o in outcomes {
        if let Some(p) = &o.last_progress {
            sum.add(p);
        }
        if merged.error.is_none() {
            merged.error = o.error;
            merged.exit = o.exit;
        }
        merged.tail.extend(o.tail);
        merged.duration = merged.duration.max(o.duration);
    }
    merged.last_progress = Some(sum);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(took(0.0404), "40 ms");
        assert_eq!(took(-1.0), "0 ms");
        assert_eq!(took(3.24), "3.2 s");
        assert_eq!(took(125.4), "2 min 5 s");
        // At the edges of the units.
        assert_eq!(took(0.9996), "1.0 s");
        assert_eq!(took(59.96), "1 min 0 s");
    }

    fn opts(kind: SyncType, account: &str, folders: &[&str]) -> StartOptions {
        StartOptions {
            kind,
            account: account.into(),
            folders: folders.iter().map(|s| s.to_string()).collect(),
            wait_lock: Duration::ZERO,
        }
    }

    fn entry(opts: StartOptions, status: Status) -> Entry {
        let names = vec![opts.account.clone()];
        let mut e = Entry::new(1, opts, names.clone(), names, PathBuf::new());
        e.info.status = status;
        e
    }

    #[test]
    fn a_request_gets_at_least_the_lock_wait_it_asked_for() {
        let patient = StartOptions {
            wait_lock: Duration::from_secs(60),
            ..opts(SyncType::Inbox, "a", &[])
        };
        // Not running yet: it joins, and the sync now waits as long.
        let mut queued = entry(opts(SyncType::Full, "a", &[]), Status::Queued);
        assert!(queued.joinable(&patient));
        queued.join(&patient);
        assert_eq!(queued.opts.wait_lock, Duration::from_secs(60));
        assert_eq!(queued.info.requests, 2);
        // A shorter wait never lowers it.
        queued.join(&opts(SyncType::Inbox, "a", &[]));
        assert_eq!(queued.opts.wait_lock, Duration::from_secs(60));
        // Running (waiting for the lock): it joins too, and the wait grows
        // to what it asked for, counted from now; never shrinks.
        let mut long = entry(patient.clone(), Status::Running);
        long.launched = Instant::now() - Duration::from_secs(30);
        *long.patience.lock() = Duration::from_secs(60);
        let wait = |secs| StartOptions {
            wait_lock: Duration::from_secs(secs),
            ..opts(SyncType::Inbox, "a", &[])
        };
        assert!(long.joinable(&wait(20)));
        long.join(&wait(20));
        assert_eq!(
            *long.patience.lock(),
            Duration::from_secs(60),
            "30 s + 20 s < 60 s"
        );
        assert!(long.joinable(&patient));
        long.join(&patient);
        let grown = *long.patience.lock();
        assert!(
            grown >= Duration::from_secs(90) && grown < Duration::from_secs(91),
            "30 s gone + 60 s asked: {grown:?}"
        );
        assert_eq!(long.info.requests, 3);
        // Once its mbsync began, nothing joins but the same repair.
        long.began.store(true, Ordering::SeqCst);
        assert!(!long.joinable(&opts(SyncType::Inbox, "a", &[])));
        assert!(!long.joinable(&patient));
    }

    #[test]
    fn coverage_rules() {
        let full = opts(SyncType::Full, "a", &[]);
        let inbox = opts(SyncType::Inbox, "a", &[]);
        let work = opts(SyncType::Folders, "a", &["Work", "INBOX"]);
        assert!(full.covers(&inbox));
        assert!(full.covers(&work));
        assert!(full.covers(&full));
        assert!(!inbox.covers(&full));
        assert!(inbox.covers(&inbox));
        assert!(!inbox.covers(&work));
        assert!(work.covers(&opts(SyncType::Folders, "a", &["Work"])));
        assert!(!work.covers(&opts(SyncType::Folders, "a", &["Sent"])));
        assert!(!full.covers(&opts(SyncType::Inbox, "b", &[])));
    }

    #[test]
    fn backoff_survives_numbers_that_are_not() {
        let cap = Duration::from_secs(300);
        for (jitter, factor) in [
            (f64::NAN, 2.0),
            (f64::INFINITY, 2.0),
            (0.2, f64::NAN),
            (0.2, f64::INFINITY),
        ] {
            let p = RetryPolicy {
                jitter,
                factor,
                ..RetryPolicy::default()
            };
            for attempt in [1, 2, 5, u32::MAX] {
                for unit in [0.0, 0.5, f64::NAN] {
                    let d = p.delay(attempt, unit);
                    assert!(d <= cap, "{jitter} {factor} {attempt} {unit}: {d:?}");
                }
            }
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let p = RetryPolicy {
            base: Duration::from_secs(2),
            factor: 3.0,
            cap: Duration::from_secs(60),
            max_attempts: 5,
            jitter: 0.25,
        };
        assert_eq!(p.delay(1, 0.5), Duration::from_secs(2));
        assert_eq!(p.delay(2, 0.5), Duration::from_secs(6));
        assert_eq!(p.delay(3, 0.5), Duration::from_secs(18));
        assert_eq!(p.delay(9, 0.5), Duration::from_secs(60));
        assert_eq!(p.delay(1, 0.0), Duration::from_secs_f64(1.5));
        assert!(p.delay(1, 0.999) <= Duration::from_secs_f64(2.5));
        assert!(p.delay(50, 0.999) <= Duration::from_secs(60));
        for seed in 0..1000 {
            let u = jitter_unit(seed);
            assert!((0.0..1.0).contains(&u));
        }
    }
}
