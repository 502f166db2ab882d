//! [`PooledDb`]: a RocksDB handle that owns a small pool of its own
//! point-read iterators.
//!
//! A RocksDB iterator borrows the `DB` it reads. Pooling iterators inside
//! the store that owns the `DB` makes the borrow self-referential, which
//! Rust cannot express, so the pool keeps them with a `'static` lifetime.
//! This type is the one place that does so, and its API keeps the
//! invariant that makes that sound: **no pooled iterator outlives, or is
//! used concurrently with a mutable use of, the `DB`.**
//! - [`Drop`] empties the pool before the `DB` is dropped (whatever the
//!   field order);
//! - the `DB` is reachable only as `&DB` ([`Deref`]); a `&mut DB` is only
//!   handed out by [`PooledDb::db_mut`], which empties the pool first;
//! - an iterator leaves the pool only for the duration of a
//!   [`PooledDb::with_cursor`] call, as a reference whose lifetime is that
//!   of the `&self` borrow.
//!
//! RocksDB iterators point at the database's heap state, not at the `DB`
//! value itself, so moving a `PooledDb` does not invalidate them.

use std::ops::Deref;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rocksdb::{DBRawIterator, DB};

use crate::error::Result;

/// A `DB` plus idle iterators over it, with when each was last used.
pub(crate) struct PooledDb {
    db: DB,
    cursors: Mutex<Vec<(DBRawIterator<'static>, Instant)>>,
    max_pooled: usize,
}

impl PooledDb {
    pub(crate) fn new(db: DB, max_pooled: usize) -> PooledDb {
        PooledDb {
            db,
            cursors: Mutex::new(Vec::new()),
            max_pooled,
        }
    }

    /// The `DB` for changes that need `&mut` (after emptying the pool).
    #[allow(dead_code)]
    pub(crate) fn db_mut(&mut self) -> &mut DB {
        self.pool_mut().clear();
        &mut self.db
    }

    fn pool_mut(&mut self) -> &mut Vec<(DBRawIterator<'static>, Instant)> {
        self.cursors
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Run `f` with an iterator that sees every write committed before this
    /// call: a pooled one (refreshed) or a new one from `open`. The iterator
    /// goes back to the pool unless `f` failed or the pool is full.
    pub(crate) fn with_cursor<R>(
        &self,
        open: impl FnOnce(&DB) -> DBRawIterator<'_>,
        f: impl FnOnce(&mut DBRawIterator<'_>) -> Result<R>,
    ) -> Result<R> {
        let pooled = self
            .cursors
            .lock()
            .expect("not poisoned")
            .pop()
            .and_then(|(mut it, _)| it.refresh().is_ok().then_some(it));
        let mut it = match pooled {
            Some(it) => it,
            None => {
                let it = open(&self.db);
                // SAFETY: `it` borrows `self.db`. It is kept only in
                // `self.cursors`, which this type empties before the `DB`
                // is dropped (`Drop`) or borrowed mutably (`db_mut`); while
                // in use it is lent for the `&self` borrow only (see the
                // module docs).
                unsafe { std::mem::transmute::<DBRawIterator<'_>, DBRawIterator<'static>>(it) }
            }
        };
        let out = f(&mut it)?;
        let mut pool = self.cursors.lock().expect("not poisoned");
        if pool.len() < self.max_pooled {
            pool.push((it, Instant::now()));
        }
        Ok(out)
    }

    /// Drop the iterators idle for longer than `idle` (without waiting for
    /// readers that hold the pool's lock).
    pub(crate) fn drop_idle(&self, idle: Duration) {
        if let Ok(mut pool) = self.cursors.try_lock() {
            pool.retain(|(_, used)| used.elapsed() < idle);
        }
    }

    /// Drop every pooled iterator (before a flush, so none pins memtables).
    pub(crate) fn clear(&self) {
        self.cursors.lock().expect("not poisoned").clear();
    }

    /// How many iterators are pooled.
    #[cfg(test)]
    pub(crate) fn pooled(&self) -> usize {
        self.cursors.lock().expect("not poisoned").len()
    }
}

impl Deref for PooledDb {
    type Target = DB;

    fn deref(&self) -> &DB {
        &self.db
    }
}

impl Drop for PooledDb {
    fn drop(&mut self) {
        // Before `db` goes: the iterators borrow it.
        self.pool_mut().clear();
    }
}
