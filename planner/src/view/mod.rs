//! Featuresets as SQL views.
//!
//! Every committed featureset is a view named by the snake_case of its
//! class name (`UserFeatures` -> `user_features`), with one column per
//! feature. The view has no rows of its own: a query binds the
//! featureset's input features (the ones no extractor computes) in its
//! `WHERE` clause, `uid = 'a'`, `uid IN ('a', 'b')` or `uid = $1`, and
//! the view evaluates the extractors for those inputs (the cross product
//! when several inputs are bound) at the query time: now, the statement's
//! `AS OF`, `SET thyme.as_of`, or `FOR SYSTEM_TIME AS OF`. Other
//! predicates are applied to the evaluated rows. A query that does not
//! bind every input is refused with a message that names the inputs.

mod exec;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use thyme_features::Features;

use crate::provider::{column_op_literal, session_as_of, split_conjunction};
pub use exec::FeaturesetExec;
use thyme_table::error::Error;

/// Largest number of input rows a view query may bind.
const MAX_ROWS: usize = 100_000;

/// A featureset as a DataFusion table (of type view).
#[derive(Debug, Clone)]
pub struct FeaturesetTable {
    features: Arc<Features>,
    /// Class name.
    name: String,
    sql_name: String,
    /// Input features (unqualified), in declaration order.
    inputs: Vec<String>,
    schema: SchemaRef,
    as_of: Option<i64>,
    /// On the right of an ASOF join: the name of the extra, last column that
    /// holds the time the features are evaluated at.
    asof_time: Option<String>,
}

impl FeaturesetTable {
    /// The view of featureset `name` (class or SQL name), if committed.
    pub fn resolve(features: &Arc<Features>, name: &str) -> Option<FeaturesetTable> {
        let graph = features.graph().ok()?;
        let fs = graph.featureset(name)?;
        let schema = Arc::new(Schema::new(
            fs.features
                .iter()
                .map(|f| {
                    let info = graph
                        .feature(&format!("{}.{}", fs.name, f.name))
                        .expect("feature of the graph");
                    Field::new(&f.name, info.arrow(), true)
                })
                .collect::<Vec<_>>(),
        ));
        Some(FeaturesetTable {
            features: features.clone(),
            name: fs.name.clone(),
            sql_name: thyme_model::snake_case(&fs.name),
            inputs: graph.natural_inputs(fs),
            schema,
            as_of: None,
            asof_time: None,
        })
    }

    /// The view as the right side of an ASOF join whose match condition
    /// reads `column` from it: the features plus a last column `column`,
    /// the time each row is evaluated at (the left row's time).
    pub fn for_asof(mut self, column: &str) -> Result<Self, Error> {
        if self.schema.field_with_name(column).is_ok() {
            return Err(Error::Unsupported(format!(
                "an ASOF match condition on {}.{column}, a feature: a featureset view is joined \
                 at the left row's time through a time column of another name, \
                 e.g. MATCH_CONDITION (l.ts >= f.as_of_ts)",
                self.sql_name
            )));
        }
        let mut fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(
            column,
            arrow::datatypes::DataType::Timestamp(
                arrow::datatypes::TimeUnit::Microsecond,
                Some(thyme_table::types::UTC.into()),
            ),
            true,
        ));
        self.schema = Arc::new(Schema::new(fields));
        self.asof_time = Some(column.to_string());
        Ok(self)
    }

    /// The time column of [`FeaturesetTable::for_asof`].
    pub fn asof_time(&self) -> Option<&str> {
        self.asof_time.as_deref()
    }

    /// Class name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SQL name (snake_case).
    pub fn sql_name(&self) -> &str {
        &self.sql_name
    }

    /// Input features (unqualified), in declaration order.
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    /// The featureset evaluator.
    pub fn features(&self) -> &Arc<Features> {
        &self.features
    }

    /// The same view pinned to a read time (`FOR SYSTEM_TIME AS OF`).
    pub fn with_as_of(mut self, ts: i64) -> Self {
        self.as_of = Some(ts);
        self
    }

    /// `input = v`, `v = input`, `input IN (...)`, or an `OR` of those on
    /// one input: the input and its values.
    fn binding(&self, e: &Expr) -> Option<(String, Vec<ScalarValue>)> {
        let is_input = |name: &str| self.inputs.iter().any(|i| i == name);
        if let Some((col, Operator::Eq, v)) = column_op_literal(e) {
            return is_input(&col).then(|| (col, vec![v]));
        }
        match e {
            // `input = NULL` binds no value (no rows), as in SQL.
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) => match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c))
                    if v.is_null() && is_input(&c.name) =>
                {
                    Some((c.name.clone(), vec![]))
                }
                _ => None,
            },
            Expr::InList(il) if !il.negated => {
                let Expr::Column(c) = il.expr.as_ref() else {
                    return None;
                };
                if !is_input(&c.name) {
                    return None;
                }
                let vals = il
                    .list
                    .iter()
                    .map(|e| match e {
                        Expr::Literal(v, _) => Some(v.clone()),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some((c.name.clone(), vals))
            }
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Or,
                right,
            }) => {
                let (a, mut va) = self.binding(left)?;
                let (b, vb) = self.binding(right)?;
                if a != b {
                    return None;
                }
                va.extend(vb);
                Some((a, va))
            }
            _ => None,
        }
    }

    fn unbound(&self, missing: &[&String]) -> Error {
        let example = self.inputs.first().map(String::as_str).unwrap_or("input");
        Error::UnboundInputs(format!(
            "featureset view {} is computed from its inputs {}: bind {} in WHERE, \
             e.g. WHERE {example} = ... or WHERE {example} IN (...)",
            self.sql_name,
            self.inputs.join(", "),
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" and ")
        ))
    }
}

#[async_trait]
impl TableProvider for FeaturesetTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if self.binding(f).is_some() {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if self.asof_time.is_some() {
            return Err(Error::Internal(format!(
                "featureset view {} with an ASOF time column scanned outside an ASOF join",
                self.sql_name
            ))
            .into());
        }
        let as_of = self.as_of.unwrap_or_else(|| session_as_of(state));
        // Values bound to each input (intersected when bound twice).
        let mut bound: HashMap<String, Vec<ScalarValue>> = HashMap::new();
        for f in filters {
            for conj in split_conjunction(f) {
                let Some((col, mut vals)) = self.binding(conj) else {
                    continue;
                };
                vals.retain(|v| !v.is_null());
                let mut unique = Vec::with_capacity(vals.len());
                for v in vals {
                    if !unique.contains(&v) {
                        unique.push(v);
                    }
                }
                match bound.get_mut(&col) {
                    None => {
                        bound.insert(col, unique);
                    }
                    Some(prev) => prev.retain(|v| unique.contains(v)),
                }
            }
        }
        let missing: Vec<&String> = self
            .inputs
            .iter()
            .filter(|i| !bound.contains_key(*i))
            .collect();
        if !missing.is_empty() {
            return Err(self.unbound(&missing).into());
        }
        let graph = self.features.graph()?;
        let qualified: Vec<String> = self
            .inputs
            .iter()
            .map(|i| format!("{}.{i}", self.name))
            .collect();
        // The cross product of the bound values, one column per input.
        let mut rows = 1usize;
        for i in &self.inputs {
            rows = rows.saturating_mul(bound[i].len());
        }
        if rows > MAX_ROWS {
            return Err(Error::Unsupported(format!(
                "binding {rows} input rows in one query of {} (at most {MAX_ROWS})",
                self.sql_name
            ))
            .into());
        }
        let mut inputs: Vec<ArrayRef> = Vec::with_capacity(self.inputs.len());
        let mut repeat = rows;
        for (i, q) in self.inputs.iter().zip(&qualified) {
            let vals = &bound[i];
            let info = graph.feature(q).expect("input of the graph");
            repeat /= vals.len().max(1);
            let tile = rows / (repeat * vals.len()).max(1);
            let mut cells = Vec::with_capacity(rows);
            for _ in 0..tile {
                for v in vals {
                    for _ in 0..repeat {
                        cells.push(v.clone());
                    }
                }
            }
            let array = if cells.is_empty() {
                arrow::array::new_empty_array(&info.arrow())
            } else {
                let a = ScalarValue::iter_to_array(cells)?;
                let strict = arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                arrow::compute::cast_with_options(&a, &info.arrow(), &strict).map_err(|_| {
                    Error::InvalidValue {
                        column: i.clone(),
                        dtype: info.ty.to_string(),
                        row: 1,
                        value: format!("{:?}", vals),
                    }
                })?
            };
            inputs.push(array);
        }
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let schema = Arc::new(self.schema.project(&projection)?);
        // Only the extractors behind the projected features run; with no
        // column projected (`count(*)`) the rows are the bound inputs.
        let mut outputs: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("{}.{}", self.name, f.name()))
            .collect();
        let columns: Vec<usize> = (0..outputs.len()).collect();
        if outputs.is_empty() {
            outputs = qualified.clone();
        }
        let plan = self.features.plan(&qualified, &outputs)?;
        Ok(Arc::new(FeaturesetExec::new(
            self.features.clone(),
            plan,
            inputs,
            rows,
            as_of,
            columns,
            schema,
        )))
    }
}
