//! Queries: planning a statement with DataFusion at its query time
//! (statement `AS OF`, `SET thyme.as_of`, or now), the point-lookup fast
//! path, and evaluating `AS OF` expressions.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use sqlparser::ast::{Expr as SqlExpr, Statement};

use crate::asof::AsOfStrategy;
use crate::provider::QueryAsOf;
use crate::schema::{self, StatementParamsOption};
use thyme_table::error::{Error, Result};

use super::*;

impl Session {
    /// Run a point lookup (see [`Prepared::is_point_lookup`]): its row, or
    /// none, as one batch. `None` when `p` is not a point lookup.
    pub fn execute_lookup(
        &self,
        p: &Prepared,
        params: Option<&ParamValues>,
    ) -> Result<Option<RecordBatch>> {
        let Kind::Query {
            lookup: Some(lookup),
            ..
        } = &p.kind
        else {
            return Ok(None);
        };
        self.authorize(p)?;
        let stmt_as_of = match &p.parsed.as_of {
            None => None,
            Some(e) => Some(self.eval_as_of(e, params)?),
        };
        let as_of = stmt_as_of
            .or(self.as_of)
            .unwrap_or_else(|| chrono::Utc::now().timestamp_micros());
        lookup
            .execute(self.engine.store().as_ref(), as_of, params)
            .map(Some)
    }

    pub(super) async fn run_query(
        &self,
        stmt: &Statement,
        cached: Option<&LogicalPlan>,
        as_of: Option<i64>,
        params: Option<ParamValues>,
    ) -> Result<SendableRecordBatchStream> {
        let mut state = self.state.clone();
        state.mark_start_execution();
        if let Some(t) = as_of {
            state.config_mut().set_extension(Arc::new(QueryAsOf(t)));
        }
        if let Some(s) = self
            .vars
            .get(ASOF_STRATEGY_VARIABLE)
            .and_then(|v| AsOfStrategy::parse(v))
        {
            state.config_mut().set_extension(Arc::new(s));
        }
        if params.is_some() {
            state
                .config_mut()
                .options_mut()
                .extensions
                .insert(StatementParamsOption(params.clone()));
        }
        let plan = match cached {
            Some(p) => p.clone(),
            None => plan_statement(&state, stmt.clone()).await?,
        };
        let plan = match params {
            Some(p) => plan.with_param_values(p)?,
            None => plan,
        };
        let df = DataFrame::new(state, plan);
        df.execute_stream().await.map_err(Error::unwrap_datafusion)
    }

    /// Run SQL text to completion and return the rows of its queries (for
    /// callers that are not a wire protocol, e.g. the HTTP APIs).
    pub async fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>> {
        use futures::TryStreamExt;
        let mut out = Vec::new();
        for stmt in self.engine.parse(sql)? {
            let prepared = self.prepare(stmt).await?;
            if let Output::Rows(stream) = self.execute(&prepared, None).await? {
                out.extend(
                    stream
                        .try_collect::<Vec<_>>()
                        .await
                        .map_err(Error::unwrap_datafusion)?,
                );
            }
        }
        Ok(out)
    }

    pub(super) async fn collect_query(
        &self,
        stmt: &Statement,
        as_of: Option<i64>,
        params: Option<ParamValues>,
    ) -> Result<Vec<RecordBatch>> {
        use futures::TryStreamExt;
        let stream = self.run_query(stmt, None, as_of, params).await?;
        stream.try_collect().await.map_err(Error::unwrap_datafusion)
    }

    pub(super) fn eval_as_of(&self, e: &SqlExpr, params: Option<&ParamValues>) -> Result<i64> {
        let expr = self
            .state
            .create_logical_expr_from_sql_expr(
                sqlparser::ast::ExprWithAlias {
                    expr: e.clone(),
                    alias: None,
                },
                &datafusion::common::DFSchema::empty(),
            )
            .map_err(Error::unwrap_datafusion)?;
        schema::eval_timestamp(expr, params)?
            .ok_or_else(|| Error::InvalidDatetime("AS OF parameter was not bound".into()))
    }
}
