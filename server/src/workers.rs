//! One thread per wanted item, kept in step with what is wanted: the
//! supervisors of pipelines and sources both run their workers this way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Sleep for `d`, or less once `stopped` says so (checked every 50 ms).
pub fn sleep_unless(stopped: &dyn Fn() -> bool, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stopped() {
        std::thread::sleep(
            Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
        );
    }
}

struct Worker {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

/// Running workers by id.
#[derive(Default)]
pub struct Workers(BTreeMap<String, Worker>);

impl Workers {
    /// Stop the workers whose id is no longer in `wanted` (or that ended),
    /// and start one for each wanted id without a worker (`spawn` gets the
    /// id, the item and the worker's stop flag). Returns the ids stopped.
    pub fn reconcile<T>(
        &mut self,
        wanted: BTreeMap<String, T>,
        mut spawn: impl FnMut(&str, T, Arc<AtomicBool>) -> JoinHandle<()>,
    ) -> Vec<String> {
        let mut stopped = Vec::new();
        self.0.retain(|id, w| {
            let keep = wanted.contains_key(id) && !w.handle.is_finished();
            if !keep {
                w.stop.store(true, Ordering::SeqCst);
                stopped.push(id.clone());
            }
            keep
        });
        for (id, item) in wanted {
            if self.0.contains_key(&id) {
                continue;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let handle = spawn(&id, item, stop.clone());
            self.0.insert(id, Worker { stop, handle });
        }
        stopped
    }

    /// Stop every worker and wait for it.
    pub fn stop_all(self) {
        for w in self.0.values() {
            w.stop.store(true, Ordering::SeqCst);
        }
        for (_, w) in self.0 {
            let _ = w.handle.join();
        }
    }
}
