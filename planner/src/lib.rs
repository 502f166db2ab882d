//! Thyme's SQL planner: statements over the Postgres dialect planned and run
//! by DataFusion over the temporal store.
//!
//! - [`sql`]: the dialect, parsing, statement-level `AS OF` and the ASOF
//!   JOIN syntax (token and statement rewrites);
//! - [`session`]: executing statements: the engine and its sessions
//!   (queries, DML, DDL, session variables, COPY);
//! - [`schema`]: the DataFusion catalog (`public`, `history`) and
//!   `FOR SYSTEM_TIME AS OF`;
//! - [`provider`], [`scan`]: datasets as DataFusion tables (current rows and
//!   history, point in time, key seeks) and their scan operator;
//! - [`lookup`]: the point-lookup fast path for prepared key lookups;
//! - [`asof`]: ASOF joins (the logical node, the analyzer rule, the
//!   strategy, `AsOfHashJoinExec`, `AsOfJoinExec`, `AsOfLookupExec`);
//! - [`view`]: featuresets as SQL views (`FeaturesetTable`,
//!   `FeaturesetExec`).
//!
//! Below it: `thyme-table` (datasets, codec, ingestion, store reads),
//! `thyme-features` (extractor planning and evaluation) and
//! `thyme-storage`. Errors are `thyme_table::Error`.

/// The `ScalarUDFImpl` methods a wrapper of another function (`self.inner`,
/// an `Arc<ScalarUDF>`) takes from it unchanged: name, aliases, signature,
/// return type, coercion, documentation (see [`bounded`], [`coalesce`]).
macro_rules! delegate_udf {
    () => {
        fn name(&self) -> &str {
            self.inner.name()
        }

        fn aliases(&self) -> &[String] {
            self.inner.aliases()
        }

        fn signature(&self) -> &datafusion::logical_expr::Signature {
            self.inner.signature()
        }

        fn return_type(
            &self,
            arg_types: &[arrow::datatypes::DataType],
        ) -> datafusion::common::Result<arrow::datatypes::DataType> {
            self.inner.return_type(arg_types)
        }

        fn return_field_from_args(
            &self,
            args: datafusion::logical_expr::ReturnFieldArgs,
        ) -> datafusion::common::Result<arrow::datatypes::FieldRef> {
            self.inner.return_field_from_args(args)
        }

        fn coerce_types(
            &self,
            arg_types: &[arrow::datatypes::DataType],
        ) -> datafusion::common::Result<Vec<arrow::datatypes::DataType>> {
            self.inner.coerce_types(arg_types)
        }

        fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
            self.inner.documentation()
        }
    };
}

pub mod asof;
pub mod bounded;
pub mod checked;
pub mod coalesce;
pub mod lookup;
pub mod memory;
pub mod provider;
pub mod scan;
pub mod schema;
pub mod session;
pub mod sql;
pub mod view;

pub use session::{CopyIn, Engine, Limits, Output, Prepared, Session};

/// A function of no arguments that returns `value` (`version()`,
/// `current_user`).
pub fn text_constant_udf(name: &str, value: String) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::logical_expr::{ColumnarValue, Volatility};
    datafusion::logical_expr::create_udf(
        name,
        vec![],
        arrow::datatypes::DataType::Utf8,
        Volatility::Stable,
        std::sync::Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::Utf8(Some(value.clone())),
            ))
        }),
    )
}
pub use thyme_table::{Error, Result};
