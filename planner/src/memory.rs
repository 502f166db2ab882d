//! Memory limits of SQL statements, through DataFusion's memory pool.
//!
//! The server has one [`GreedyMemoryPool`] of `max_memory` bytes that every
//! session draws on, and each session draws through its own
//! [`SessionPool`] of at most `work_mem` bytes. An operator that keeps data
//! (sort, hash aggregate, hash join, repartition buffers, the ASOF join's
//! build side) reserves it before it allocates; a reservation over the
//! session's `work_mem` or over what is left of the server's `max_memory`
//! fails the statement with SQLSTATE 53200 (out of memory), and the others go
//! on. (A session runs one statement at a time, so the session's limit is
//! the statement's.) Values that single functions build (an array from
//! `range`, a string from `repeat`) are bounded where they are made, see
//! [`crate::bounded`].

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::RuntimeEnv;

/// The server-wide pool of `max_memory` bytes.
pub fn server_pool(max_memory: usize) -> Arc<dyn MemoryPool> {
    Arc::new(GreedyMemoryPool::new(max_memory))
}

/// One session's share of the server's pool (see the module docs).
#[derive(Debug)]
pub struct SessionPool {
    limit: usize,
    used: AtomicUsize,
    server: Arc<dyn MemoryPool>,
}

impl SessionPool {
    pub fn new(limit: usize, server: Arc<dyn MemoryPool>) -> Self {
        SessionPool {
            limit,
            used: AtomicUsize::new(0),
            server,
        }
    }

    /// `base` with this pool in place of its memory pool.
    pub fn runtime(self, base: &RuntimeEnv) -> Arc<RuntimeEnv> {
        Arc::new(RuntimeEnv {
            memory_pool: Arc::new(self),
            disk_manager: base.disk_manager.clone(),
            cache_manager: base.cache_manager.clone(),
            object_store_registry: base.object_store_registry.clone(),
        })
    }
}

impl fmt::Display for SessionPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "session pool ({} of {} bytes reserved)",
            self.used.load(Ordering::Relaxed),
            self.limit
        )
    }
}

impl MemoryPool for SessionPool {
    fn name(&self) -> &str {
        "thyme-session"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.server.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.server.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        self.server.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::Relaxed);
        self.server.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let used = self.used.load(Ordering::Relaxed);
        if used + additional > self.limit {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the statement needs more than work_mem ({} MiB): {} MiB are in use and {} ({}) asks for {} more",
                self.limit >> 20,
                used >> 20,
                reservation.consumer().name(),
                reservation.size(),
                additional
            )));
        }
        self.server.try_grow(reservation, additional).map_err(|_| {
            DataFusionError::ResourcesExhausted(format!(
                "the server's memory for statements (max_memory, {} MiB) is used up by running statements",
                match self.server.memory_limit() {
                    MemoryLimit::Finite(n) => n >> 20,
                    _ => 0,
                }
            ))
        })?;
        self.used.fetch_add(additional, Ordering::Relaxed);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_bounded_by_its_limit_and_by_the_server() {
        let server = server_pool(1000);
        let a: Arc<dyn MemoryPool> = Arc::new(SessionPool::new(600, server.clone()));
        let b: Arc<dyn MemoryPool> = Arc::new(SessionPool::new(600, server.clone()));
        let ra = MemoryConsumer::new("a").register(&a);
        let rb = MemoryConsumer::new("b").register(&b);
        ra.try_grow(500).unwrap();
        let e = ra.try_grow(200).unwrap_err().to_string();
        assert!(e.contains("work_mem"), "{e}");
        let e = rb.try_grow(600).unwrap_err().to_string();
        assert!(e.contains("max_memory"), "{e}");
        rb.try_grow(500).unwrap();
        ra.free();
        rb.try_grow(100).unwrap();
        assert_eq!(server.reserved(), 600);
        assert_eq!(b.reserved(), 600);
    }
}
