//! Quitting waits a little for work that must finish (a token refresh whose
//! answer may carry a rotated refresh token). A file of its own: it shuts
//! the process-wide runtime down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use himalaya_sync::runtime;

#[test]
fn shutdown_waits_for_work_that_must_finish_but_not_for_ever() {
    let handle = runtime::handle().expect("runtime");
    let finished = Arc::new(AtomicBool::new(false));
    let flag = finished.clone();
    let keep = runtime::must_finish();
    handle.spawn(async move {
        let _keep = keep;
        tokio::time::sleep(Duration::from_millis(300)).await;
        flag.store(true, Ordering::SeqCst);
    });
    // Work that may be cut off is, as before.
    let cut = Arc::new(AtomicBool::new(false));
    let cut_flag = cut.clone();
    handle.spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        cut_flag.store(true, Ordering::SeqCst);
    });
    let started = Instant::now();
    runtime::shutdown(Duration::from_millis(50));
    let took = started.elapsed();
    assert!(finished.load(Ordering::SeqCst), "cut off after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(!cut.load(Ordering::SeqCst));
}
