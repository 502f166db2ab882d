//! The pipeline supervisor ([`PipelineSupervisor`]): one thread per committed pipeline.
//!
//! A supervisor thread watches the committed definitions; for every
//! pipeline of every committed dataset it keeps one runner thread
//! ([`thyme_stream::PipelineRunner`]) that steps as long as its
//! inputs have records and otherwise sleeps briefly (aggregations still
//! advance with the clock, so windows close when no events arrive). A
//! recommitted dataset (new table) gets a new runner; the old one stops. A
//! runner whose step fails is reopened from the store after a pause, which
//! discards whatever it held in memory past its last commit. Backfill shows
//! in the log (records, rate) and in `GET /api/v1/pipelines`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::workers::sleep_unless;

use serde::Serialize;
use thyme_planner::Engine;
use thyme_stream::{PipelineRunner, Progress, PythonRuntime};

/// Every committed pipeline: (runner id, dataset, pipeline).
fn committed(
    engine: &Engine,
) -> Vec<(
    String,
    thyme_model::payload::Dataset,
    thyme_model::payload::Pipeline,
)> {
    let mut out = Vec::new();
    for d in engine.registry().datasets() {
        let spec = d.definition;
        let Some(table) = engine.catalog().get(&thyme_model::snake_case(&spec.name)) else {
            continue;
        };
        for p in &spec.pipelines {
            let id = format!("{}/{}/{}", table.id, spec.name, p.name);
            out.push((id, spec.clone(), p.clone()));
        }
    }
    out
}

/// What `GET /api/v1/pipelines` shows for one runner.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Input records per second over the last report period.
    pub records_per_sec: f64,
    #[serde(flatten)]
    pub progress: Progress,
}

impl Status {
    /// A committed pipeline whose runner has not reported yet.
    fn starting(pipeline: &str, dataset: &str) -> Status {
        Status {
            status: "starting",
            error: None,
            records_per_sec: 0.0,
            progress: Progress {
                pipeline: pipeline.to_string(),
                dataset: dataset.to_string(),
                ..Default::default()
            },
        }
    }

    fn failed(e: &thyme_planner::Error, progress: Progress) -> Status {
        Status {
            status: "error",
            error: Some(e.to_string()),
            records_per_sec: 0.0,
            progress,
        }
    }
}

/// The running pipelines.
pub struct PipelineSupervisor {
    engine: Arc<Engine>,
    python: Option<Arc<dyn PythonRuntime>>,
    status: Mutex<BTreeMap<String, Status>>,
    stop: AtomicBool,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl PipelineSupervisor {
    /// Start the supervisor.
    pub fn start(
        engine: Arc<Engine>,
        python: Option<Arc<dyn PythonRuntime>>,
    ) -> Arc<PipelineSupervisor> {
        let p = Arc::new(PipelineSupervisor {
            engine: engine.clone(),
            python,
            status: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
            supervisor: Mutex::new(None),
        });
        let me = p.clone();
        let h = std::thread::Builder::new()
            .name("pipelines".into())
            .spawn(move || me.supervise(engine))
            .expect("spawn pipeline supervisor");
        *p.supervisor.lock().expect("lock") = Some(h);
        p
    }

    /// Every committed pipeline's status, by `dataset/pipeline`
    /// (`starting` until its runner reports, so a pipeline is listed from
    /// the moment its commit returns).
    pub fn status(&self) -> Vec<Status> {
        let mut all = self.status.lock().expect("lock").clone();
        for (id, spec, p) in committed(&self.engine) {
            all.entry(id)
                .or_insert_with(|| Status::starting(&p.name, &thyme_model::snake_case(&spec.name)));
        }
        all.into_values().collect()
    }

    /// Stop every runner (each finishes its current step) and wait.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.supervisor.lock().expect("lock").take() {
            let _ = h.join();
        }
    }

    fn supervise(self: Arc<Self>, engine: Arc<Engine>) {
        let mut workers = crate::workers::Workers::default();
        while !self.stop.load(Ordering::SeqCst) {
            let wanted: BTreeMap<_, _> = committed(&engine)
                .into_iter()
                .map(|(id, spec, p)| (id, (spec, p)))
                .collect();
            let gone = workers.reconcile(wanted, |id, (spec, p), stop| {
                let (me, e, key) = (self.clone(), engine.clone(), id.to_string());
                std::thread::Builder::new()
                    .name(format!("pipeline {}", p.name))
                    .spawn(move || me.run(e, key, spec, p, stop))
                    .expect("spawn pipeline runner")
            });
            for id in gone {
                self.status.lock().expect("lock").remove(&id);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        workers.stop_all();
    }

    fn set(&self, id: &str, s: Status) {
        self.status.lock().expect("lock").insert(id.to_string(), s);
    }

    fn run(
        &self,
        engine: Arc<Engine>,
        id: String,
        spec: thyme_model::payload::Dataset,
        p: thyme_model::payload::Pipeline,
        stop: Arc<AtomicBool>,
    ) {
        let stopped = || stop.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst);
        while !stopped() {
            let out = engine.catalog().get(&thyme_model::snake_case(&spec.name));
            let opened = out
                .ok_or_else(|| thyme_planner::Error::UnknownTable(spec.name.clone()))
                .and_then(|out| {
                    PipelineRunner::open(engine.registry(), &p, out, self.python.clone())
                });
            let mut runner = match opened {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(pipeline = %p.name, dataset = %spec.name, error = %e, "pipeline cannot start");
                    self.set(
                        &id,
                        Status::failed(
                            &e,
                            Progress {
                                pipeline: p.name.clone(),
                                dataset: thyme_model::snake_case(&spec.name),
                                ..Default::default()
                            },
                        ),
                    );
                    sleep_unless(&stopped, Duration::from_secs(2));
                    continue;
                }
            };
            if let Some(n) = std::env::var("THYME_PIPELINE_CHUNK")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| *n > 0)
            {
                runner.chunk = n;
            }
            if let Err(e) = self.drive(&id, &mut runner, &stopped) {
                tracing::error!(pipeline = %p.name, dataset = %spec.name, error = %e, "pipeline step failed; restarting from the last commit");
                if let Ok(progress) = runner.progress() {
                    self.set(&id, Status::failed(&e, progress));
                }
                sleep_unless(&stopped, Duration::from_secs(1));
            }
        }
    }

    fn drive(
        &self,
        id: &str,
        runner: &mut PipelineRunner,
        stopped: &dyn Fn() -> bool,
    ) -> thyme_planner::Result<()> {
        let mut window_start = Instant::now();
        let mut window_records = 0usize;
        let mut total = 0usize;
        let report = |runner: &PipelineRunner, rate: f64| -> thyme_planner::Result<()> {
            let progress = runner.progress()?;
            self.set(
                id,
                Status {
                    status: "running",
                    error: None,
                    records_per_sec: rate,
                    progress,
                },
            );
            Ok(())
        };
        report(runner, 0.0)?;
        while !stopped() {
            let now = chrono::Utc::now().timestamp_micros();
            let n = runner.step(now)?;
            window_records += n;
            total += n;
            let elapsed = window_start.elapsed();
            if n == 0 || elapsed > Duration::from_secs(1) {
                let rate = window_records as f64 / elapsed.as_secs_f64().max(1e-3);
                report(runner, if n == 0 { 0.0 } else { rate })?;
                if elapsed > Duration::from_secs(5) && window_records > 0 {
                    let p = runner.progress()?;
                    tracing::info!(
                        pipeline = runner.name(),
                        dataset = runner.output().name(),
                        records = total,
                        lag = p.lag,
                        rate = format!("{rate:.0}/s"),
                        "pipeline progress"
                    );
                }
                if elapsed > Duration::from_secs(5) || n == 0 {
                    window_start = Instant::now();
                    window_records = 0;
                }
            }
            if n == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }
}
