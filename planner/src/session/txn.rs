//! Transaction blocks: `BEGIN` .. `COMMIT` / `ROLLBACK`, savepoints.
//!
//! Semantics (see `docs/transactions.md`):
//! - Writes (`INSERT`, `DELETE`, `COPY FROM STDIN`) inside a block are
//!   staged in the session, one write batch per statement, and `COMMIT`
//!   applies them all in one atomic store write; `ROLLBACK` drops them. A
//!   statement that fails writes nothing and aborts the block, as in
//!   Postgres: every later statement is refused (25P02) until `ROLLBACK`
//!   (or `COMMIT`, which then rolls back) or `ROLLBACK TO SAVEPOINT`.
//! - Reads see what was committed when each statement starts (Postgres'
//!   `READ COMMITTED`). A read of a table the block has written is refused
//!   (0A000): the staged rows are not visible to queries, and Thyme does not
//!   pretend otherwise. Reads of other tables are fine.
//! - Definitions (`CREATE TABLE`, `DROP TABLE`, roles and grants) are not
//!   transactional: inside a block they take effect at once, with a
//!   warning, and only while the block has not written (25001 otherwise).
//! - `SET` inside a block is undone by `ROLLBACK`. `REPEATABLE READ` and
//!   `SERIALIZABLE` are refused; `READ ONLY` blocks refuse writes (25006).
//! - Staged writes count against `work_mem`; past it the statement fails.

use std::collections::BTreeMap;

use sqlparser::ast::{TransactionIsolationLevel, TransactionMode};
use thyme_storage::{DatasetId, WriteBatch};

use super::*;

/// An open transaction block.
#[derive(Debug, Default)]
pub(super) struct Txn {
    /// Each write statement's changes, in order.
    writes: Vec<WriteBatch>,
    bytes: usize,
    /// The datasets written, with the id they had (checked at `COMMIT`).
    written: BTreeMap<String, DatasetId>,
    savepoints: Vec<Savepoint>,
    /// An error aborted the block.
    pub(super) aborted: bool,
    read_only: bool,
    /// Session settings at `BEGIN`, restored by `ROLLBACK`.
    saved: (Option<i64>, BTreeMap<String, String>),
}

#[derive(Debug)]
struct Savepoint {
    name: String,
    writes: usize,
    bytes: usize,
    written: BTreeMap<String, DatasetId>,
}

fn savepoint_name(id: &Ident) -> String {
    ident_name(id)
}

impl Session {
    /// Whether a transaction block is open.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Mark the open block (if any) failed: the client saw an error in it
    /// (pgwire's transaction status says so even for errors the session
    /// did not see, such as a statement that did not parse).
    pub fn fail_transaction(&mut self) {
        if let Some(t) = &mut self.txn {
            t.aborted = true;
        }
    }

    /// Warnings for the client from the last statement (sent as notices).
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// Refuse what an aborted block does not run: everything but ending it.
    pub(super) fn check_aborted(&self, stmt: &Statement) -> Result<()> {
        match &self.txn {
            Some(t)
                if t.aborted
                    && !matches!(stmt, Statement::Commit { .. } | Statement::Rollback { .. }) =>
            {
                Err(Error::InFailedTransaction)
            }
            _ => Ok(()),
        }
    }

    /// A definition inside a block: allowed (at once, with a warning)
    /// while the block has not written.
    pub(super) fn check_definition(&mut self, what: &str) -> Result<()> {
        let Some(t) = &self.txn else {
            return Ok(());
        };
        if !t.written.is_empty() {
            return Err(Error::ActiveTransaction(format!(
                "{what} cannot run inside a transaction block that has written rows: \
                 definitions are not transactional in Thyme (COMMIT or ROLLBACK first)"
            )));
        }
        self.notices.push(format!(
            "{what} inside a transaction block takes effect at once; ROLLBACK does not undo it"
        ));
        Ok(())
    }

    /// Refuse a statement that reads a table the block has written (its
    /// staged rows would not be seen). Tables other than plain datasets
    /// (views, featuresets) may read a written one, so they are refused
    /// too while the block has written anything.
    pub(super) fn check_reads(&self, stmt: &Statement) -> Result<()> {
        let Some(t) = &self.txn else {
            return Ok(());
        };
        if t.written.is_empty() {
            return Ok(());
        }
        for name in self.tables_read(stmt)? {
            if t.written.contains_key(&name) || self.engine.catalog.get(&name).is_none() {
                return Err(Error::ReadAfterWrite {
                    table: name,
                    written: t
                        .written
                        .keys()
                        .map(|n| format!("\"{n}\""))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        Ok(())
    }

    /// Write `wb` (changes to `ds`) now, or stage it in the open block.
    pub(super) fn write(&mut self, ds: &Dataset, what: &str, wb: WriteBatch) -> Result<()> {
        let Some(t) = &mut self.txn else {
            if !wb.is_empty() {
                self.engine.store().write(wb)?;
            }
            return Ok(());
        };
        if t.read_only {
            return Err(Error::ReadOnlyTransaction(what.to_string()));
        }
        if wb.is_empty() {
            return Ok(());
        }
        let bytes = t.bytes + wb.bytes() + wb.len() * 48;
        if bytes > self.engine.limits.work_mem {
            return Err(Error::LimitExceeded(format!(
                "the transaction's pending writes passed work_mem ({} MiB): COMMIT in smaller transactions",
                self.engine.limits.work_mem >> 20
            )));
        }
        t.bytes = bytes;
        t.written.insert(ds.name().to_string(), ds.id);
        t.writes.push(wb);
        Ok(())
    }

    /// `BEGIN` / `START TRANSACTION`.
    pub(super) fn begin(&mut self, modes: &[TransactionMode]) -> Result<Output> {
        let mut read_only = false;
        for m in modes {
            match m {
                TransactionMode::AccessMode(sqlparser::ast::TransactionAccessMode::ReadOnly) => {
                    read_only = true
                }
                TransactionMode::AccessMode(_) => {}
                TransactionMode::IsolationLevel(
                    TransactionIsolationLevel::ReadCommitted
                    | TransactionIsolationLevel::ReadUncommitted,
                ) => {}
                TransactionMode::IsolationLevel(level) => {
                    return Err(Error::Unsupported(format!(
                        "ISOLATION LEVEL {level} (Thyme's transactions are READ COMMITTED)"
                    )))
                }
            }
        }
        if self.txn.is_some() {
            self.notices
                .push("there is already a transaction in progress".into());
            return Ok(Output::TransactionStart("BEGIN"));
        }
        self.txn = Some(Txn {
            read_only,
            saved: (self.as_of, self.vars.clone()),
            ..Txn::default()
        });
        Ok(Output::TransactionStart("BEGIN"))
    }

    /// `COMMIT`: apply the staged writes in one batch. An aborted block
    /// rolls back instead (tag `ROLLBACK`, as in Postgres).
    pub(super) fn commit(&mut self) -> Result<Output> {
        let Some(t) = self.txn.take() else {
            self.notices
                .push("there is no transaction in progress".into());
            return Ok(Output::TransactionEnd("COMMIT"));
        };
        if t.aborted {
            (self.as_of, self.vars) = t.saved;
            return Ok(Output::TransactionEnd("ROLLBACK"));
        }
        for (name, id) in &t.written {
            if self.engine.catalog.get(name).map(|d| d.id) != Some(*id) {
                (self.as_of, self.vars) = t.saved;
                return Err(Error::ActiveTransaction(format!(
                    "dataset \"{name}\" was dropped or replaced during the transaction; its writes are rolled back"
                )));
            }
        }
        let mut writes = t.writes.into_iter();
        if let Some(mut all) = writes.next() {
            for wb in writes {
                all.append(wb);
            }
            self.engine.store().write(all)?;
        }
        Ok(Output::TransactionEnd("COMMIT"))
    }

    /// `ROLLBACK`: drop the staged writes and restore the settings.
    pub(super) fn rollback(&mut self) -> Output {
        match self.txn.take() {
            Some(t) => (self.as_of, self.vars) = t.saved,
            None => self
                .notices
                .push("there is no transaction in progress".into()),
        }
        Output::TransactionEnd("ROLLBACK")
    }

    fn open_block(&mut self, what: &str) -> Result<&mut Txn> {
        self.txn.as_mut().ok_or_else(|| {
            Error::NoActiveTransaction(format!("{what} can only be used in transaction blocks"))
        })
    }

    pub(super) fn savepoint(&mut self, name: &Ident) -> Result<Output> {
        let t = self.open_block("SAVEPOINT")?;
        t.savepoints.push(Savepoint {
            name: savepoint_name(name),
            writes: t.writes.len(),
            bytes: t.bytes,
            written: t.written.clone(),
        });
        Ok(Output::Command {
            tag: "SAVEPOINT",
            rows: None,
        })
    }

    fn find_savepoint(t: &Txn, name: &Ident) -> Result<usize> {
        let n = savepoint_name(name);
        t.savepoints
            .iter()
            .rposition(|s| s.name == n)
            .ok_or_else(|| Error::NoActiveTransaction(format!("savepoint \"{n}\" does not exist")))
    }

    /// `ROLLBACK TO SAVEPOINT`: drop what was staged after it; the block
    /// is no longer aborted, and the savepoint stays.
    pub(super) fn rollback_to(&mut self, name: &Ident) -> Result<Output> {
        let t = self.open_block("ROLLBACK TO SAVEPOINT")?;
        let i = Self::find_savepoint(t, name)?;
        t.savepoints.truncate(i + 1);
        let s = &t.savepoints[i];
        t.writes.truncate(s.writes);
        t.bytes = s.bytes;
        t.written = s.written.clone();
        t.aborted = false;
        Ok(Output::Command {
            tag: "ROLLBACK",
            rows: None,
        })
    }

    /// `RELEASE SAVEPOINT`: forget it (and the ones after it).
    pub(super) fn release(&mut self, name: &Ident) -> Result<Output> {
        let t = self.open_block("RELEASE SAVEPOINT")?;
        let i = Self::find_savepoint(t, name)?;
        t.savepoints.truncate(i);
        Ok(Output::Command {
            tag: "RELEASE",
            rows: None,
        })
    }
}
