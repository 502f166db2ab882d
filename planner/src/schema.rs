//! DataFusion catalog wiring: the `thyme` database with its `public`
//! (current rows, and featuresets as views) and `history` (every version)
//! schemas, and the relation
//! planner that gives `FOR SYSTEM_TIME AS OF` its meaning.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ParamValues, Result as DfResult, ScalarValue, TableReference};
use datafusion::datasource::{provider_as_source, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder};
use datafusion::physical_expr::create_physical_expr;
use sqlparser::ast::{TableFactor, TableVersion};

use crate::provider::{DatasetTable, View};
use crate::view::FeaturesetTable;
use thyme_features::Features;
use thyme_table::catalog::Catalog;
use thyme_table::error::{Error, Result};
use thyme_table::types::UTC;

/// Name of the schema with current rows.
pub const PUBLIC: &str = "public";
/// Name of the schema with every version.
pub const HISTORY: &str = "history";

pub use thyme_model::snake_case;

/// The datasets as tables of one view.
#[derive(Debug)]
pub struct DatasetSchema {
    catalog: Arc<Catalog>,
    view: View,
    /// Featuresets, shown as views in the current-rows schema.
    features: Option<Arc<Features>>,
}

impl DatasetSchema {
    pub fn new(catalog: Arc<Catalog>, view: View, features: Option<Arc<Features>>) -> Self {
        DatasetSchema {
            catalog,
            view,
            features,
        }
    }

    fn resolve(&self, name: &str) -> Option<Arc<dyn TableProvider>> {
        let ds = self
            .catalog
            .get(name)
            .or_else(|| self.catalog.get(&snake_case(name)));
        match ds {
            Some(ds) => Some(Arc::new(DatasetTable::new(
                ds,
                self.catalog.store().clone(),
                self.view,
            ))),
            None => self
                .features
                .as_ref()
                .and_then(|f| FeaturesetTable::resolve(f, name))
                .map(|t| Arc::new(t) as Arc<dyn TableProvider>),
        }
    }
}

#[async_trait]
impl SchemaProvider for DatasetSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.catalog.list().keys().cloned().collect();
        if let Some(graph) = self.features.as_ref().and_then(|f| f.graph().ok()) {
            for n in graph.sql_names() {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(self.resolve(name))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }
}

/// The `thyme` catalog: `public`, `history`, and schemas registered later
/// (such as `pg_catalog`).
#[derive(Debug)]
pub struct ThymeCatalog {
    fixed: HashMap<String, Arc<dyn SchemaProvider>>,
    extra: RwLock<HashMap<String, Arc<dyn SchemaProvider>>>,
}

impl ThymeCatalog {
    pub fn new(catalog: Arc<Catalog>, features: Arc<Features>) -> Self {
        let mut fixed: HashMap<String, Arc<dyn SchemaProvider>> = HashMap::new();
        fixed.insert(
            PUBLIC.into(),
            Arc::new(DatasetSchema::new(
                catalog.clone(),
                View::Current,
                Some(features),
            )),
        );
        fixed.insert(
            HISTORY.into(),
            Arc::new(DatasetSchema::new(catalog, View::History, None)),
        );
        ThymeCatalog {
            fixed,
            extra: RwLock::new(HashMap::new()),
        }
    }
}

impl CatalogProvider for ThymeCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.fixed.keys().cloned().collect();
        names.extend(self.extra.read().expect("schemas").keys().cloned());
        names.sort();
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.fixed
            .get(name)
            .cloned()
            .or_else(|| self.extra.read().expect("schemas").get(name).cloned())
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        if self.fixed.contains_key(name) {
            return Err(DataFusionError::Plan(format!("schema {name} is reserved")));
        }
        Ok(self
            .extra
            .write()
            .expect("schemas")
            .insert(name.to_string(), schema))
    }
}

/// Evaluate a constant expression (placeholders bound from `params`) to an
/// event time in microseconds.
pub fn eval_timestamp(expr: Expr, params: Option<&ParamValues>) -> Result<Option<i64>> {
    let expr = match params {
        Some(p) => bind_placeholders(expr, p)?,
        None => expr,
    };
    let mut has_placeholder = false;
    expr.apply(|e| {
        if matches!(e, Expr::Placeholder(_)) {
            has_placeholder = true;
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })?;
    if has_placeholder {
        return Ok(None);
    }
    to_timestamp(&eval_const(&expr)?).map(Some)
}

/// Evaluate an expression that references no columns.
pub fn eval_const(expr: &Expr) -> Result<ScalarValue> {
    let schema = Arc::new(Schema::empty());
    let df_schema = DFSchema::try_from(schema.clone())?;
    // Simplify first, as a query's plan would be: `now()` and other
    // functions that are only ever simplified away have no body.
    let context = datafusion::logical_expr::simplify::SimplifyContext::builder()
        .with_current_time()
        .build();
    let expr = &datafusion::optimizer::simplify_expressions::ExprSimplifier::new(context)
        .simplify(expr.clone())
        .map_err(Error::unwrap_datafusion)?;
    let phys = create_physical_expr(
        expr,
        &df_schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )?;
    let batch = RecordBatch::try_new_with_options(
        schema,
        vec![],
        &arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    let value = phys.evaluate(&batch)?.to_array(1)?;
    Ok(ScalarValue::try_from_array(&value, 0)?)
}

/// Interpret a scalar as an event time.
pub fn to_timestamp(v: &ScalarValue) -> Result<i64> {
    if v.is_null() {
        return Err(Error::InvalidDatetime(
            "NULL: AS OF needs a timestamp".into(),
        ));
    }
    let target = DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from(UTC)));
    match v.cast_to(&target) {
        Ok(ScalarValue::TimestampMicrosecond(Some(t), _)) => Ok(t),
        _ => Err(Error::InvalidDatetime(format!("{v}"))),
    }
}

/// Replace placeholders with their bound values.
pub fn bind_placeholders(expr: Expr, params: &ParamValues) -> Result<Expr> {
    Ok(expr
        .transform(|e| {
            if let Expr::Placeholder(p) = &e {
                let v = params.get_placeholders_with_values(&p.id)?;
                return Ok(Transformed::yes(Expr::Literal(v.value, v.metadata)));
            }
            Ok(Transformed::no(e))
        })?
        .data)
}

/// Plans `t FOR SYSTEM_TIME AS OF <expr>` as a scan of `t` pinned to that time.
#[derive(Debug)]
pub struct AsOfRelationPlanner;

impl RelationPlanner for AsOfRelationPlanner {
    fn plan_relation(
        &self,
        relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> DfResult<RelationPlanning> {
        if let TableFactor::Table {
            name,
            alias,
            args: Some(args),
            ..
        } = &relation
        {
            if let Some(column) = crate::sql::asof::right_mark(args) {
                // The right side of an ASOF join: a featureset view gets its
                // time column; anything else is planned as written.
                let table_ref = context.object_name_to_table_reference(name.clone())?;
                let source = context
                    .context_provider()
                    .get_table_source(table_ref.clone())?;
                let provider = datafusion::datasource::source_as_provider(&source)?;
                let any: &dyn Any = provider.as_ref();
                if let Some(v) = any.downcast_ref::<FeaturesetTable>() {
                    let timed = v.clone().for_asof(&column)?;
                    let plan = LogicalPlanBuilder::scan(
                        table_ref,
                        provider_as_source(Arc::new(timed)),
                        None,
                    )?
                    .build()?;
                    return Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
                        plan,
                        alias.clone(),
                    ))));
                }
                let mut plain = relation.clone();
                if let TableFactor::Table { args, .. } = &mut plain {
                    *args = None;
                }
                return Ok(RelationPlanning::Original(Box::new(plain)));
            }
        }
        let TableFactor::Table {
            name,
            alias,
            version: Some(version),
            args: None,
            ..
        } = &relation
        else {
            return Ok(RelationPlanning::Original(Box::new(relation)));
        };
        let TableVersion::ForSystemTimeAsOf(sql_expr) = version else {
            return Err(Error::Unsupported(format!("table version clause {version}")).into());
        };
        let table_ref: TableReference = context.object_name_to_table_reference(name.clone())?;
        let source = context
            .context_provider()
            .get_table_source(table_ref.clone())?;
        let provider = datafusion::datasource::source_as_provider(&source)?;
        let any: &dyn Any = provider.as_ref();
        let dataset = any.downcast_ref::<DatasetTable>();
        let view = any.downcast_ref::<FeaturesetTable>();
        if dataset.is_none() && view.is_none() {
            return Err(Error::Unsupported(format!(
                "FOR SYSTEM_TIME AS OF on {table_ref}, which is not a dataset or featureset"
            ))
            .into());
        }
        let expr = context.sql_to_expr(sql_expr.clone(), &DFSchema::empty())?;
        let params = context
            .context_provider()
            .options()
            .extensions
            .get::<StatementParamsOption>()
            .and_then(|p| p.0.clone());
        // Unbound placeholders happen only while describing a prepared
        // statement; the schema does not depend on the time.
        let ts = eval_timestamp(expr, params.as_ref())?.unwrap_or(i64::MAX);
        let pinned: Arc<dyn TableProvider> = match (dataset, view) {
            (Some(t), _) => Arc::new(t.clone().with_as_of(ts)),
            (None, Some(v)) => Arc::new(v.clone().with_as_of(ts)),
            (None, None) => unreachable!("checked above"),
        };
        let plan =
            LogicalPlanBuilder::scan(table_ref, provider_as_source(pinned), None)?.build()?;
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
            plan,
            alias.clone(),
        ))))
    }
}

/// [`StatementParams`] as a DataFusion config extension (visible to the SQL
/// planner through `ContextProvider::options`).
#[derive(Debug, Clone, Default)]
pub struct StatementParamsOption(pub Option<ParamValues>);

impl datafusion::config::ConfigExtension for StatementParamsOption {
    const PREFIX: &'static str = "thyme_params";
}

impl datafusion::config::ExtensionOptions for StatementParamsOption {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn cloned(&self) -> Box<dyn datafusion::config::ExtensionOptions> {
        Box::new(self.clone())
    }
    fn set(&mut self, key: &str, _value: &str) -> DfResult<()> {
        Err(DataFusionError::Configuration(format!(
            "thyme_params.{key} cannot be set"
        )))
    }
    fn entries(&self) -> Vec<datafusion::config::ConfigEntry> {
        vec![]
    }
}
