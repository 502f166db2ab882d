//! `/metrics` (control plane) through `prometheus-client`, in the
//! OpenMetrics text format Prometheus scrapes.
//!
//! Counters the server increments as things happen (webhook ingestion,
//! commits) are registered metrics ([`Metrics`]); values the server already
//! keeps (catalog sizes, pipeline progress, extractor call counts) are read
//! at scrape time by a [`Collector`], so they are never copied or stale.
//!
//! Names and values: `thyme_datasets`, `thyme_featuresets` (gauges);
//! `thyme_ingest_rows_total{dataset}`, `thyme_ingest_requests_total`,
//! `thyme_ingest_rejected_total`, `thyme_commits_total`;
//! `thyme_pipeline_late_events_total{dataset,pipeline}`,
//! `thyme_pipeline_rows_written_total{dataset,pipeline}`,
//! `thyme_pipeline_lag_records{dataset,pipeline}` (gauge);
//! `thyme_extractor_calls_total{featureset,extractor}`;
//! `thyme_source_rows_total{dataset,source}`,
//! `thyme_source_skipped_total{dataset,source}`,
//! `thyme_source_up{dataset,source}` (gauge: 0 while the source is in error).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use thyme_planner::Engine;

use crate::sources::SourceSupervisor;
use crate::supervisor::PipelineSupervisor;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatasetLabel {
    dataset: String,
}

/// Counters the control plane increments; see the module docs.
#[derive(Debug, Default)]
pub struct Metrics {
    ingest_rows: Family<DatasetLabel, Counter>,
    ingest_requests: Counter,
    ingest_rejected: Counter,
    commits: Counter,
}

impl Metrics {
    /// Rows a webhook request stored in `dataset`.
    pub fn ingested(&self, dataset: &str, rows: u64) {
        self.ingest_rows
            .get_or_create(&DatasetLabel {
                dataset: dataset.to_string(),
            })
            .inc_by(rows);
    }

    /// A webhook request was stored.
    pub fn request_stored(&self) {
        self.ingest_requests.inc();
    }

    /// A webhook request was refused (nothing stored).
    pub fn request_rejected(&self) {
        self.ingest_rejected.inc();
    }

    /// A commit was applied.
    pub fn committed(&self) {
        self.commits.inc();
    }
}

/// What `/metrics` encodes: the registered counters and the scrape-time
/// collector.
pub struct Exporter {
    registry: Registry,
}

impl Exporter {
    pub fn new(
        metrics: &Metrics,
        engine: Arc<Engine>,
        pipelines: Arc<PipelineSupervisor>,
        sources: Arc<SourceSupervisor>,
    ) -> Exporter {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Snapshot {
            engine,
            pipelines,
            sources,
        }));
        registry.register(
            "thyme_ingest_rows",
            "Rows stored through webhook ingestion, per dataset",
            metrics.ingest_rows.clone(),
        );
        registry.register(
            "thyme_ingest_requests",
            "Webhook ingestion requests stored",
            metrics.ingest_requests.clone(),
        );
        registry.register(
            "thyme_ingest_rejected",
            "Webhook ingestion requests rejected (nothing stored)",
            metrics.ingest_rejected.clone(),
        );
        registry.register(
            "thyme_commits",
            "Commits applied since start",
            metrics.commits.clone(),
        );
        Exporter { registry }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

/// Values read at scrape time.
struct Snapshot {
    engine: Arc<Engine>,
    pipelines: Arc<PipelineSupervisor>,
    sources: Arc<SourceSupervisor>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").finish_non_exhaustive()
    }
}

/// A metric family whose samples are (labels, value) pairs.
fn family<M: EncodeMetric, L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, M)>,
    metric_type: prometheus_client::metrics::MetricType,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, m) in samples {
        m.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        for (name, help, n) in [
            (
                "thyme_datasets",
                "Number of datasets (SQL tables)",
                self.engine.catalog().list().len(),
            ),
            (
                "thyme_featuresets",
                "Number of committed featuresets",
                self.engine.registry().featuresets().len(),
            ),
        ] {
            let g = ConstGauge::new(n as i64);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let status = self.pipelines.status();
        let labels = |s: &crate::supervisor::Status| {
            [
                ("dataset", s.progress.dataset.clone()),
                ("pipeline", s.progress.pipeline.clone()),
            ]
        };
        family(
            &mut encoder,
            "thyme_pipeline_late_events",
            "Events older than their input's watermark (not applied; see thyme_late_events)",
            status
                .iter()
                .map(|s| (labels(s), ConstCounter::new(s.progress.late_events))),
            MetricType::Counter,
        )?;
        family(
            &mut encoder,
            "thyme_pipeline_rows_written",
            "Output rows written by the pipeline",
            status
                .iter()
                .map(|s| (labels(s), ConstCounter::new(s.progress.rows_written))),
            MetricType::Counter,
        )?;
        family(
            &mut encoder,
            "thyme_pipeline_lag_records",
            "Input log records not yet processed",
            status
                .iter()
                .map(|s| (labels(s), ConstGauge::new(s.progress.lag as i64))),
            MetricType::Gauge,
        )?;
        let sources = self.sources.status();
        let source_labels = |s: &crate::sources::SourceStatus| {
            [("dataset", s.dataset.clone()), ("source", s.source.clone())]
        };
        family(
            &mut encoder,
            "thyme_source_rows",
            "Rows a source stored",
            sources
                .iter()
                .map(|s| (source_labels(s), ConstCounter::new(s.rows))),
            MetricType::Counter,
        )?;
        family(
            &mut encoder,
            "thyme_source_skipped",
            "Rows a source skipped (see thyme_rejected_rows)",
            sources
                .iter()
                .map(|s| (source_labels(s), ConstCounter::new(s.skipped))),
            MetricType::Counter,
        )?;
        family(
            &mut encoder,
            "thyme_source_up",
            "1 while a source reads or waits, 0 while it is in error",
            sources.iter().map(|s| {
                (
                    source_labels(s),
                    ConstGauge::new(i64::from(s.status != "error")),
                )
            }),
            MetricType::Gauge,
        )?;
        family(
            &mut encoder,
            "thyme_extractor_calls",
            "Batches each extractor computed",
            self.engine
                .features()
                .extractor_calls()
                .into_iter()
                .map(|((fs, ex), n)| {
                    (
                        [("featureset", fs), ("extractor", ex)],
                        ConstCounter::new(n),
                    )
                }),
            MetricType::Counter,
        )?;
        Ok(())
    }
}
