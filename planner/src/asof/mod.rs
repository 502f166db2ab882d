//! ASOF joins: training sets in one SQL statement.
//!
//! Two spellings, both left-preserving with `LEFT`:
//! - `l ASOF [LEFT] JOIN r MATCH_CONDITION (l.ts >= r.ts) [ON l.k = r.k]`
//!   (Snowflake's form, which sqlparser parses), and
//! - `l ASOF [LEFT] JOIN r ON l.k = r.k AND l.ts >= r.ts` (DuckDB's form: the
//!   one inequality in `ON` is the match condition),
//!
//! with `>=`, `>`, `<=` or `<`. Each left row meets the right row with the
//! same key values whose time is nearest on the allowed side of its own.
//! NULL keys and times never match.
//!
//! How it is planned:
//! 1. the parser (`crate::sql::asof`) turns `ASOF LEFT JOIN` into `ASOF
//!    JOIN` with the match condition wrapped in `__thyme_left(...)`, and
//!    gives the DuckDB form a `MATCH_CONDITION (TRUE)`, so sqlparser parses
//!    every form;
//! 2. it then turns each ASOF join into an ordinary (inner or
//!    left) join whose `ON` carries a marker call `__thyme_asof_ge(l.ts,
//!    r.ts)` for the match condition, so DataFusion's SQL planner resolves
//!    names and types as for any join;
//! 3. the analyzer rule [`AsOfRule`] replaces every join with a marker by an
//!    [`AsOfJoinNode`] (key equalities + the match condition). A keyed
//!    dataset on the right is read through its history (every version, with
//!    deletes), so the joined row is the dataset's row *as of the left
//!    row's time*; for a pipeline's aggregated dataset that is the window
//!    aggregate at that time;
//! 4. [`AsOfPlanner`] plans the node as an [`AsOfLookupExec`] that reads
//!    the right side at each left row's time (a featureset view, evaluated;
//!    or a keyed dataset by seeks when the left side is small next to its
//!    history), else as an [`AsOfHashJoinExec`] (the right side indexed in
//!    memory, the left side unsorted) when the right side fits the memory
//!    pool, else as an [`AsOfJoinExec`] (both sides sorted and merged; the
//!    sorts can spill).
//!
//! A session needs the rule, the query planner, the marker UDFs and the
//! relation planner [`crate::schema::AsOfRelationPlanner`] (which removes
//! the mark step 2 puts on the joined relation).

pub mod exec;
pub mod hash_exec;
pub mod lookup_exec;
mod node;
mod planner;
mod rule;
mod strategy;

pub use crate::sql::asof::AsOfOp;
pub use exec::{AsOfJoinExec, AsOfJoinSpec, AsOfKind};
pub use hash_exec::AsOfHashJoinExec;
pub use lookup_exec::{AsOfLookupExec, AsOfSource, DatasetSource, FeaturesetSource};
pub use node::{AsOfJoinNode, RightSource};
pub use planner::{AsOfPlanner, ThymeQueryPlanner};
pub use rule::AsOfRule;
pub use strategy::{AsOfStrategy, SEEK_RATIO};
