//! The query pool: where SQL statements are parsed, planned and executed,
//! away from the threads that serve sockets.
//!
//! The server runs two tokio runtimes. The I/O runtime accepts connections,
//! reads and writes protocol messages, serves HTTP and answers point lookups
//! (one seek: cheaper to run in place than to hand over). Everything else a
//! statement does (tokenizing, parsing, planning, executing, encoding result
//! rows, decoding `COPY` data) runs on the query pool, a runtime of its own
//! with a bounded number of threads and large stacks (deep statements within
//! the depth limit recurse safely there). A heavy statement therefore takes
//! at most the pool's threads, and sockets, other sessions' lookups and HTTP
//! keep answering.
//!
//! Each statement runs under a [`Stop`]: the first of a CancelRequest, the
//! client closing its socket, and `statement_timeout` ends it. Ending means
//! dropping the statement's future and its result stream, which stops
//! DataFusion's operators (they yield to the runtime cooperatively) and frees
//! their memory. A panic inside a statement is caught by the pool and
//! reported as an internal error; the server goes on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use thyme_planner::Error;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

use crate::pg_conn::Probe;

/// Stack size of a query pool thread.
const STACK_BYTES: usize = 256 << 20;

/// Nice value of the pool's threads under [`Priority::Low`] (the I/O
/// threads keep 0).
const POOL_NICE: libc::c_int = 10;

/// How the CPU scheduler treats the query pool's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Priority {
    /// `SCHED_IDLE`: statements run on CPU time nothing else wants; a
    /// socket thread that wakes up takes the core at once.
    Idle,
    /// Nice 10: statements get about a tenth of a core that a busy I/O
    /// thread also wants.
    Low,
    /// As the I/O threads.
    Normal,
}

impl Priority {
    /// Apply to the calling thread.
    fn apply(self) {
        match self {
            Priority::Idle => {
                let param = libc::sched_param { sched_priority: 0 };
                // SAFETY: sets the calling thread's (id 0) policy; `param`
                // outlives the call; no memory effects.
                let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
                if r != 0 {
                    Priority::Low.apply();
                }
            }
            Priority::Low => {
                // SAFETY: setpriority on the calling thread (id 0 is "this
                // thread" for PRIO_PROCESS on Linux) has no memory effects.
                let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, POOL_NICE) };
            }
            Priority::Normal => {}
        }
    }
}

/// How often a running statement checks that its client is still there.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// The query pool (see the module docs).
pub struct QueryPool {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl QueryPool {
    /// A pool of `threads` threads.
    pub fn new(threads: usize, priority: Priority) -> std::io::Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("thyme-query")
            .thread_stack_size(STACK_BYTES)
            // Below the I/O threads in the CPU scheduler's eyes: when a heavy
            // statement keeps every core busy, a socket thread that has a
            // message to answer still gets a core at once.
            .on_thread_start(move || priority.apply())
            .enable_all()
            .build()?;
        Ok(Arc::new(QueryPool {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        }))
    }

    /// Run `work` on the pool under `stop`. Dropping the returned future
    /// (the connection went away) stops the work too.
    pub async fn run<T, F>(&self, stop: Stop, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, Error>> + Send + 'static,
    {
        self.spawn(async move { stop.guard(work).await })
            .join()
            .await
    }

    /// Start `work` on the pool; it stops when the returned task is dropped.
    pub fn spawn<T, F>(&self, work: F) -> Task<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, Error>> + Send + 'static,
    {
        Task(self.handle.spawn(work))
    }
}

impl Drop for QueryPool {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Work running on the pool; dropping it aborts the work.
pub struct Task<T>(JoinHandle<Result<T, Error>>);

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Task<T> {
    /// Wait for the work's result (a panic is an internal error).
    pub async fn join(mut self) -> Result<T, Error> {
        match (&mut self.0).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => {
                let what = e
                    .into_panic()
                    .downcast::<String>()
                    .map(|s| *s)
                    .or_else(|p| p.downcast::<&'static str>().map(|s| s.to_string()))
                    .unwrap_or_else(|_| "a statement panicked".into());
                tracing::error!(
                    panic = %what,
                    backtrace = %std::backtrace::Backtrace::force_capture(),
                    "a statement panicked"
                );
                Err(Error::Internal(format!("statement panicked: {what}")))
            }
            Err(_) => Err(Error::Canceled("server shutdown")),
        }
    }
}

/// What ends a running statement early.
pub struct Stop {
    cancel: Option<tokio::sync::watch::Receiver<u64>>,
    probe: Option<Arc<Probe>>,
    timeout: Option<Duration>,
}

impl Stop {
    /// The stop conditions of a statement starting now on a connection:
    /// its cancel counter (a cancel request moves it), its socket probe,
    /// its `statement_timeout`.
    pub fn new(
        cancel: tokio::sync::watch::Receiver<u64>,
        probe: Option<Arc<Probe>>,
        timeout: Option<Duration>,
    ) -> Stop {
        Stop {
            cancel: Some(cancel),
            probe,
            timeout,
        }
    }

    /// No stop condition (for work that is not a client's statement).
    #[cfg(test)]
    pub fn none() -> Stop {
        Stop {
            cancel: None,
            probe: None,
            timeout: None,
        }
    }

    /// Resolves with the reason once a stop condition holds.
    async fn fired(self) -> Error {
        let cancel = async {
            match self.cancel {
                // Only a cancel request after the statement began counts; a
                // closed connection is noticed by the probe.
                Some(mut rx) => match rx.changed().await {
                    Ok(()) => Error::Canceled("user request"),
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        let gone = async {
            match self.probe {
                Some(p) => loop {
                    tokio::time::sleep(PROBE_EVERY).await;
                    if p.gone() {
                        return Error::Canceled("client disconnect");
                    }
                },
                None => std::future::pending().await,
            }
        };
        let timeout = async {
            match self.timeout {
                Some(t) => {
                    tokio::time::sleep(t).await;
                    Error::StatementTimeout(t.as_millis() as u64)
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            e = cancel => e,
            e = gone => e,
            e = timeout => e,
        }
    }

    /// Run `work` until it ends or a stop condition holds.
    pub async fn guard<T>(self, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        tokio::select! {
            biased;
            r = work => r,
            e = self.fired() => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_stops_a_statement_and_panics_are_errors() {
        let pool = QueryPool::new(1, Priority::Normal).unwrap();
        let io = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        io.block_on(async {
            let stop = Stop {
                timeout: Some(Duration::from_millis(50)),
                ..Stop::none()
            };
            let e = pool
                .run(stop, async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(())
                })
                .await
                .unwrap_err();
            assert!(matches!(e, Error::StatementTimeout(50)), "{e}");
            let e = pool
                .run::<(), _>(Stop::none(), async { panic!("boom") })
                .await
                .unwrap_err();
            assert!(e.to_string().contains("boom"), "{e}");
            let ok = pool.run(Stop::none(), async { Ok(7) }).await.unwrap();
            assert_eq!(ok, 7);
        });
    }
}
