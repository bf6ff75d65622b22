//! Prometheus metrics. Counts by state come from the store at scrape time (the
//! truth, also for work other processes did); durations are observed from the
//! event stream as tasks finish.

use gleitzeit_core::events::{Event, EventPayload};
use gleitzeit_store::StoreStats;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::broadcast;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    method: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: String,
}

fn duration_histogram() -> Histogram {
    // 1 ms … ~9 min
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Arc<Registry>,
    workflows: Family<StateLabel, Gauge>,
    tasks: Family<StateLabel, Gauge>,
    queue_depth: Gauge,
    active_runs: Gauge,
    task_duration: Family<TaskLabels, Histogram>,
    provider_latency: Family<ProviderLabel, Histogram>,
    first_token: Family<ProviderLabel, Histogram>,
    llm_tokens: Family<KindLabel, Counter>,
    events: Family<TypeLabel, Counter>,
    schedule_ticks: Family<OutcomeLabel, Counter>,
    /// Serialises renders, which bring the tick counters up to the ticker's.
    render_lock: Arc<std::sync::Mutex<()>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gleitzeit");
        let workflows = Family::<StateLabel, Gauge>::default();
        let tasks = Family::<StateLabel, Gauge>::default();
        let queue_depth = Gauge::default();
        let active_runs = Gauge::default();
        let task_duration = Family::<TaskLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let provider_latency = Family::<ProviderLabel, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let first_token = Family::<ProviderLabel, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let llm_tokens = Family::<KindLabel, Counter>::default();
        let llm_cost = Family::<ModelLabel, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        let events = Family::<TypeLabel, Counter>::default();
        registry.register(
            "workflows",
            "Workflows in the store, by state",
            workflows.clone(),
        );
        registry.register("tasks", "Tasks in the store, by state", tasks.clone());
        registry.register(
            "queue_depth",
            "Tasks waiting to run (pending or waiting to retry)",
            queue_depth.clone(),
        );
        registry.register(
            "active_runs",
            "Workflows this server is executing now",
            active_runs.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "Duration of finished task attempts",
            task_duration.clone(),
        );
        registry.register(
            "provider_latency_seconds",
            "Time a provider took to answer a call, by provider",
            provider_latency.clone(),
        );
        registry.register(
            "llm_first_token_seconds",
            "Time to the first streamed token of an LLM call",
            first_token.clone(),
        );
        registry.register(
            "llm_tokens",
            "LLM tokens used, by kind (prompt, completion)",
            llm_tokens.clone(),
        );
        registry.register(
            "llm_cost_usd",
            "Cost of LLM calls in USD, by model (calls without a known price are not counted)",
            // Registered for its place in dashboards; see `observe`.
            llm_cost,
        );
        registry.register("events", "Events announced, by type", events.clone());
        let schedule_ticks = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "schedule_ticks",
            "Schedule ticks handled by this server: fired (run started), skipped (overlap, or missed while down), failed (run could not start)",
            schedule_ticks.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            workflows,
            tasks,
            queue_depth,
            active_runs,
            task_duration,
            provider_latency,
            first_token,
            llm_tokens,
            events,
            schedule_ticks,
            render_lock: Arc::default(),
        }
    }

    /// Observes events as they are announced, for as long as the runtime lives.
    pub fn follow(&self, mut rx: broadcast::Receiver<Event>) {
        let metrics = self.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(event) => metrics.observe(&event),
                    // Counters may miss a few events under overload; the
                    // state gauges come from the store and stay exact.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    fn observe(&self, event: &Event) {
        self.events
            .get_or_create(&TypeLabel {
                r#type: event.kind().to_string(),
            })
            .inc();
        // What a finished task reports: method, outcome, its own and its
        // provider's duration, and for LLM calls the first token and usage.
        let (method, outcome, duration_ms, provider_ms, first_token_ms, usage) =
            match &event.payload {
                EventPayload::TaskCompleted(done) => (
                    &done.task.method,
                    "completed",
                    Some(done.duration_ms as f64),
                    done.provider_ms.as_ref().and_then(Value::as_f64),
                    done.first_token_ms.as_ref().and_then(Value::as_f64),
                    done.usage.as_ref(),
                ),
                EventPayload::TaskFailed(failed) => (
                    &failed.task.method,
                    "failed",
                    failed.duration_ms.map(|ms| ms as f64),
                    None,
                    None,
                    None,
                ),
                _ => return,
            };
        let provider = method.split('/').next().unwrap_or("").to_string();
        if let Some(ms) = duration_ms {
            self.task_duration
                .get_or_create(&TaskLabels {
                    method: method.to_string(),
                    outcome: outcome.to_string(),
                })
                .observe(ms / 1000.0);
        }
        if let Some(ms) = provider_ms.or(duration_ms) {
            self.provider_latency
                .get_or_create(&ProviderLabel {
                    provider: provider.clone(),
                })
                .observe(ms / 1000.0);
        }
        if let Some(ms) = first_token_ms {
            self.first_token
                .get_or_create(&ProviderLabel { provider })
                .observe(ms / 1000.0);
        }
        // `llm_cost_usd` stays at zero: no event carries a cost (the result
        // record's `cost_usd` is not copied into `task_completed`).
        if let Some(usage) = usage {
            for kind in ["prompt", "completion"] {
                if let Some(n) = usage.get(format!("{kind}_tokens")).and_then(Value::as_u64) {
                    self.llm_tokens
                        .get_or_create(&KindLabel {
                            kind: kind.to_string(),
                        })
                        .inc_by(n);
                }
            }
        }
    }

    /// The exposition text, with store counts as of now.
    pub fn render(&self, stats: &StoreStats, active_runs: usize, ticks: (u64, u64, u64)) -> String {
        let _one_at_a_time = self.render_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (fired, skipped, failed) = ticks;
        for (outcome, total) in [("fired", fired), ("skipped", skipped), ("failed", failed)] {
            let counter = self.schedule_ticks.get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        for (state, n) in &stats.workflows_by_state {
            self.workflows
                .get_or_create(&StateLabel {
                    state: state.clone(),
                })
                .set(*n as i64);
        }
        let mut waiting = 0;
        for (state, n) in &stats.tasks_by_state {
            self.tasks
                .get_or_create(&StateLabel {
                    state: state.clone(),
                })
                .set(*n as i64);
            if state == "pending" || state == "retrying" {
                waiting += *n as i64;
            }
        }
        self.queue_depth.set(waiting);
        self.active_runs.set(active_runs as i64);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
