//! The sync manager: one coordinator for every sync this process runs.
//!
//! It resolves a request to mbsync targets, holds the account's named lock
//! for the life of the mbsync process (so two syncs of one account never
//! overlap, whichever Neovim or tool started them), runs mbsync through
//! [`crate::mbsync::runner`], keeps a [`SyncInfo`] per sync and reports
//! `sync_started`, `sync_progress` (at most ten a second per sync, always
//! the latest and the final one) and `sync_done` events.

pub mod targets;

use std::collections::HashMap;
use std::path::PathBuf;
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
use crate::mbsync::config::MbsyncConfig;
use crate::mbsync::errors::summary;
use crate::mbsync::progress::{PercentEstimate, Progress};
use crate::mbsync::runner::{self, Outcome, RunSpec, Update};
pub use targets::{AccountOverrides, SyncType};

/// Progress events are sent at most this often per sync.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// How the manager runs mbsync; set from the Lua configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mbsync_cmd: PathBuf,
    pub mbsync_config: Option<PathBuf>,
    pub idle_timeout: Duration,
    pub extra_args: Vec<String>,
    pub accounts: HashMap<String, AccountOverrides>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mbsync_cmd: "mbsync".into(),
            mbsync_config: None,
            idle_timeout: Duration::from_secs(120),
            extra_args: Vec::new(),
            accounts: HashMap::new(),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Completed,
    Error,
    Cancelled,
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
    /// Seconds.
    pub duration: f64,
    /// Messages copied to the local (near) side.
    pub pulled: u64,
    /// Messages copied to the server (far) side.
    pub pushed: u64,
    pub flags_changed: u64,
    pub trashed: u64,
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
    pub status: Status,
    pub progress: Option<ProgressInfo>,
    /// Unix seconds.
    pub start_time: f64,
    pub end_time: Option<f64>,
    pub message: String,
    pub error: Option<ErrorInfo>,
    pub result: Option<SyncResult>,
}

struct Entry {
    info: SyncInfo,
    cancel: watch::Sender<bool>,
    cancel_flag: Arc<AtomicBool>,
    estimate: PercentEstimate,
    last_sent: Option<Instant>,
    dirty: bool,
}

/// Receives events: `(sync id, event name, data)`.
pub type Emit = Arc<dyn Fn(u64, &str, Value) + Send + Sync>;

/// Finished syncs kept for `snapshot()`.
const KEEP_FINISHED: usize = 20;

pub struct Manager {
    settings: Mutex<Settings>,
    syncs: Mutex<Vec<Entry>>,
    locks: Arc<LockDir>,
    emit: Emit,
    next_id: Box<dyn Fn() -> u64 + Send + Sync>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The lock that serialises syncs of one account across processes.
pub fn account_lock_name(account: &str) -> String {
    format!("sync-{account}")
}

impl Manager {
    pub fn new(
        locks: Arc<LockDir>,
        emit: Emit,
        next_id: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Self {
        Manager {
            settings: Mutex::new(Settings::default()),
            syncs: Mutex::new(Vec::new()),
            locks,
            emit,
            next_id,
        }
    }

    pub fn configure(&self, settings: Settings) {
        *self.settings.lock() = settings;
    }

    pub fn settings(&self) -> Settings {
        self.settings.lock().clone()
    }

    /// The parsed mbsyncrc in use.
    pub fn mbsync_config(&self) -> Result<MbsyncConfig> {
        let path = self.settings.lock().mbsync_config.clone();
        MbsyncConfig::load(path.as_deref())
    }

    /// Starts a sync and returns its id; the work runs on `rt`.
    pub fn start(self: &Arc<Self>, rt: &Handle, opts: StartOptions) -> Result<u64> {
        let settings = self.settings();
        let cfg = self.mbsync_config()?;
        let targets = targets::resolve(
            &cfg,
            &settings.accounts,
            opts.kind,
            &opts.account,
            &opts.folders,
        )?;
        let mut syncs = self.syncs.lock();
        if let Some(e) = syncs
            .iter()
            .find(|e| e.info.account == opts.account && e.info.status == Status::Running)
        {
            return Err(Error::new(
                ErrorKind::Locked,
                format!(
                    "{} is already syncing here ({} sync #{})",
                    opts.account,
                    e.info.kind.as_str(),
                    e.info.id
                ),
            ));
        }
        let id = (self.next_id)();
        let (cancel, cancel_rx) = watch::channel(false);
        let cancel_flag = Arc::new(AtomicBool::new(false));
        let info = SyncInfo {
            id,
            kind: opts.kind,
            account: opts.account.clone(),
            channel: targets.join(" "),
            status: Status::Running,
            progress: None,
            start_time: now(),
            end_time: None,
            message: format!("starting {} sync of {}", opts.kind.as_str(), opts.account),
            error: None,
            result: None,
        };
        (self.emit)(id, "sync_started", json!(info));
        syncs.push(Entry {
            info,
            cancel,
            cancel_flag: cancel_flag.clone(),
            estimate: PercentEstimate::new(),
            last_sent: None,
            dirty: false,
        });
        drop(syncs);

        let spec = RunSpec {
            program: settings.mbsync_cmd.clone(),
            // The file we parsed is the file mbsync reads.
            config: Some(cfg.path.clone()),
            targets,
            extra_args: settings.extra_args.clone(),
            idle_timeout: settings.idle_timeout,
        };
        let me = self.clone();
        rt.spawn(async move {
            let outcome = me.run(id, opts, spec, cancel_rx, cancel_flag).await;
            me.finish(id, outcome);
        });
        Ok(id)
    }

    async fn run(
        self: &Arc<Self>,
        id: u64,
        opts: StartOptions,
        spec: RunSpec,
        cancel_rx: watch::Receiver<bool>,
        cancel_flag: Arc<AtomicBool>,
    ) -> std::result::Result<Outcome, Error> {
        let locks = self.locks.clone();
        let name = account_lock_name(&opts.account);
        let purpose = format!("{} sync of {}", opts.kind.as_str(), opts.account);
        let flag = cancel_flag.clone();
        let guard = tokio::task::spawn_blocking(move || {
            locks.acquire(&name, opts.wait_lock, &purpose, Some(&flag))
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Unknown, format!("lock task failed: {e}")))?
        .map_err(|e| match e.kind {
            ErrorKind::Locked => Error::new(
                ErrorKind::Locked,
                format!(
                    "{} is being synced by another process: {}",
                    opts.account, e.message
                ),
            ),
            _ => e,
        })?;
        self.update(id, |info| {
            info.message = format!("syncing {}", info.account)
        });
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
        let me = self.clone();
        let outcome = runner::run(spec, cancel_rx, move |u| me.on_update(id, u)).await;
        ticker.abort();
        drop(guard);
        Ok(outcome)
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut SyncInfo)) {
        if let Some(e) = self.syncs.lock().iter_mut().find(|e| e.info.id == id) {
            f(&mut e.info);
        }
    }

    fn on_update(&self, id: u64, update: Update) {
        {
            let mut syncs = self.syncs.lock();
            let Some(e) = syncs.iter_mut().find(|e| e.info.id == id) else {
                return;
            };
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
    fn flush(&self, id: u64, force: bool) {
        let data = {
            let mut syncs = self.syncs.lock();
            let Some(e) = syncs.iter_mut().find(|e| e.info.id == id) else {
                return;
            };
            let due = e.last_sent.is_none_or(|t| t.elapsed() >= PROGRESS_INTERVAL);
            if !e.dirty || !(due || force) {
                return;
            }
            e.dirty = false;
            e.last_sent = Some(Instant::now());
            json!(e.info)
        };
        (self.emit)(id, "sync_progress", data);
    }

    fn finish(&self, id: u64, outcome: std::result::Result<Outcome, Error>) {
        self.flush(id, true);
        let data = {
            let mut syncs = self.syncs.lock();
            let Some(e) = syncs.iter_mut().find(|e| e.info.id == id) else {
                return;
            };
            let info = &mut e.info;
            let end = now();
            info.end_time = Some(end);
            let (error, last) = match outcome {
                Ok(o) => (
                    o.error.map(|c| ErrorInfo {
                        kind: c.kind,
                        message: summary(c.kind, &c.line),
                        line: c.line,
                    }),
                    o.last_progress,
                ),
                Err(e) => (
                    Some(ErrorInfo {
                        kind: e.kind,
                        message: e.message.clone(),
                        line: e.message,
                    }),
                    None,
                ),
            };
            let counters = last.unwrap_or_default();
            let result = SyncResult {
                success: error.is_none(),
                error: error.as_ref().map(|e| e.message.clone()),
                kind: error.as_ref().map(|e| e.kind),
                duration: end - info.start_time,
                pulled: counters.near.new.done,
                pushed: counters.far.new.done,
                flags_changed: counters.near.flags.done + counters.far.flags.done,
                trashed: counters.near.trash.done + counters.far.trash.done,
            };
            info.status = match &error {
                None => Status::Completed,
                Some(e) if e.kind == ErrorKind::Cancelled => Status::Cancelled,
                Some(_) => Status::Error,
            };
            if result.success {
                if let Some(p) = info.progress.as_mut() {
                    // The last progress event of a successful sync says 100 %.
                    p.percent = Some(100.0);
                    e.dirty = true;
                }
            }
            info.message = match &error {
                None => format!(
                    "{} sync of {} done in {:.1} s: {} new, {} sent",
                    info.kind.as_str(),
                    info.account,
                    result.duration,
                    result.pulled,
                    result.pushed
                ),
                Some(e) => e.message.clone(),
            };
            info.error = error;
            info.result = Some(result);
            let data = json!(info);
            // Keep only the newest finished syncs.
            let finished = syncs
                .iter()
                .filter(|e| e.info.status != Status::Running)
                .count();
            if finished > KEEP_FINISHED {
                if let Some(pos) = syncs.iter().position(|e| e.info.status != Status::Running) {
                    syncs.remove(pos);
                }
            }
            data
        };
        self.flush(id, true);
        (self.emit)(id, "sync_done", data);
    }

    /// Cancels one sync, or every running sync when `id` is None; returns
    /// how many were asked to stop.
    pub fn cancel(&self, id: Option<u64>) -> usize {
        let syncs = self.syncs.lock();
        let mut n = 0;
        for e in syncs.iter() {
            if e.info.status == Status::Running && id.is_none_or(|i| i == e.info.id) {
                e.cancel_flag.store(true, Ordering::SeqCst);
                let _ = e.cancel.send(true);
                n += 1;
            }
        }
        n
    }

    /// Every sync this process runs or recently ran, oldest first.
    pub fn snapshot(&self) -> Vec<SyncInfo> {
        self.syncs.lock().iter().map(|e| e.info.clone()).collect()
    }

    /// True while any sync runs.
    pub fn busy(&self) -> bool {
        self.syncs
            .lock()
            .iter()
            .any(|e| e.info.status == Status::Running)
    }
}
