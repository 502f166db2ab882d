//! [`FeaturesetExec`]: evaluate a featureset for bound input rows, as the
//! scan of its SQL view.
//!
//! The input rows (the values the query's `WHERE` bound) and the read time
//! are fixed when the scan is planned; executing runs the resolved
//! extractors once for all rows, off the async runtime (Python extractors
//! and store reads block), and yields one batch with the projected
//! features.

use std::fmt;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Result as DfResult;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};

use thyme_features::{Features, QueryPlan};
use thyme_table::error::Error;

/// Evaluates a featureset for fixed input rows at one read time.
#[derive(Debug)]
pub struct FeaturesetExec {
    features: Arc<Features>,
    plan: QueryPlan,
    inputs: Vec<ArrayRef>,
    rows: usize,
    as_of: i64,
    /// Plan output positions of the projected columns.
    projection: Vec<usize>,
    schema: SchemaRef,
    props: Arc<PlanProperties>,
}

impl FeaturesetExec {
    /// `schema` is the projected view schema; `projection` the positions of
    /// its columns among the plan's outputs.
    pub fn new(
        features: Arc<Features>,
        plan: QueryPlan,
        inputs: Vec<ArrayRef>,
        rows: usize,
        as_of: i64,
        projection: Vec<usize>,
        schema: SchemaRef,
    ) -> Self {
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        FeaturesetExec {
            features,
            plan,
            inputs,
            rows,
            as_of,
            projection,
            schema,
            props,
        }
    }
}

impl DisplayAs for FeaturesetExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "FeaturesetExec: rows={}, as_of={}, extractors=[{}]",
            self.rows,
            self.as_of,
            self.plan.extractor_names().join(", ")
        )
    }
}

impl ExecutionPlan for FeaturesetExec {
    fn name(&self) -> &str {
        "FeaturesetExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "FeaturesetExec has one partition, asked for {partition}"
            )));
        }
        let features = self.features.clone();
        let plan = self.plan.clone();
        let inputs = self.inputs.clone();
        let ts = vec![self.as_of; self.rows];
        let projection = self.projection.clone();
        let schema = self.schema.clone();
        let out_schema = schema.clone();
        let fut = async move {
            let batch = tokio::task::spawn_blocking(move || features.evaluate(&plan, inputs, &ts))
                .await
                .map_err(|e| DataFusionError::External(Box::new(Error::Internal(e.to_string()))))?
                .map_err(DataFusionError::from)?;
            let cols = projection
                .iter()
                .map(|&i| batch.column(i).clone())
                .collect::<Vec<_>>();
            let opts = arrow::record_batch::RecordBatchOptions::new()
                .with_row_count(Some(batch.num_rows()));
            Ok(RecordBatch::try_new_with_options(out_schema, cols, &opts)?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(fut),
        )))
    }
}
