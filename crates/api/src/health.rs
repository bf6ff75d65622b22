//! The health verdict: unhealthy when the store cannot be read or the server
//! is stopping, degraded when a provider cannot take work, healthy otherwise.
//! The verdict is computed here from plain facts; whoever holds a runtime
//! gathers them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

/// One provider's answer to a health check.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProviderHealthView {
    pub status: HealthStatus,
    /// Why it is not healthy, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Provider-specific state (LLM endpoints, interpreter version, …).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

/// Whether the store answered, with its counts, or why not.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoreHealth {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflows_by_state: Option<BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Scale-out only: worker nodes by state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeCounts {
    pub active: usize,
    pub lost: usize,
    pub left: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthReport {
    /// healthy, degraded or unhealthy
    pub status: HealthStatus,
    /// Why it is not healthy (empty when healthy).
    pub reasons: Vec<String>,
    pub version: String,
    pub uptime_seconds: u64,
    pub active_workflows: usize,
    pub store: StoreHealth,
    /// Per provider: status, reason and detail (LLM endpoints, interpreter).
    pub providers: BTreeMap<String, ProviderHealthView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeCounts>,
}

/// What a caller without a key learns about health: only the verdict.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthSummary {
    pub status: HealthStatus,
}

/// `GET /api/v1/health`: the whole report for a caller with a valid key,
/// only the verdict for one without. Untagged: the report is read first, and
/// an answer with nothing but `status` is the summary.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum HealthAnswer {
    // Boxed: the report is many times the summary's size.
    Report(Box<HealthReport>),
    Summary(HealthSummary),
}

impl HealthAnswer {
    pub fn status(&self) -> HealthStatus {
        match self {
            HealthAnswer::Report(report) => report.status,
            HealthAnswer::Summary(summary) => summary.status,
        }
    }

    /// The whole report, when the answer has it.
    pub fn report(&self) -> Option<&HealthReport> {
        match self {
            HealthAnswer::Report(report) => Some(report),
            HealthAnswer::Summary(_) => None,
        }
    }
}

impl From<HealthReport> for HealthAnswer {
    fn from(report: HealthReport) -> HealthAnswer {
        HealthAnswer::Report(Box::new(report))
    }
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

impl HealthReport {
    /// The verdict from the store's answer (its counts, or its error), whether
    /// the server is stopping, and the providers' checks (empty when not run).
    pub fn verdict(
        store: Result<gleitzeit_store::StoreStats, String>,
        draining: bool,
        providers: BTreeMap<String, ProviderHealthView>,
        active_workflows: usize,
        uptime: std::time::Duration,
    ) -> HealthReport {
        let mut report = HealthReport {
            status: HealthStatus::Healthy,
            reasons: Vec::new(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: uptime.as_secs(),
            active_workflows,
            store: match store {
                Ok(stats) => StoreHealth {
                    ok: true,
                    workflows_by_state: Some(stats.workflows_by_state.into_iter().collect()),
                    error: None,
                },
                Err(error) => StoreHealth {
                    ok: false,
                    workflows_by_state: None,
                    error: Some(error),
                },
            },
            providers: BTreeMap::new(),
            nodes: None,
        };
        if let Some(error) = &report.store.error {
            report.status = HealthStatus::Unhealthy;
            report.reasons.push(format!("store: {error}"));
        }
        if draining {
            report.status = HealthStatus::Unhealthy;
            report.reasons.push("server is shutting down".into());
        }
        report.add_providers(providers);
        report
    }

    /// A provider that cannot work makes the verdict degraded, not
    /// unhealthy: workflows that do not use it still run.
    pub fn add_providers(&mut self, providers: BTreeMap<String, ProviderHealthView>) {
        for (name, health) in &providers {
            if health.status != HealthStatus::Healthy {
                self.status = self.status.max(HealthStatus::Degraded);
                self.reasons.push(format!(
                    "{name}: {}",
                    health.reason.as_deref().unwrap_or("not healthy")
                ));
            }
        }
        self.providers = providers;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> HealthReport {
        HealthReport::verdict(
            Ok(gleitzeit_store::StoreStats {
                workflows_by_state: vec![("completed".into(), 2)],
                tasks_by_state: Vec::new(),
            }),
            false,
            BTreeMap::from([(
                "llm".to_string(),
                ProviderHealthView {
                    status: HealthStatus::Unhealthy,
                    reason: Some("no endpoint answers".into()),
                    detail: Value::Null,
                },
            )]),
            1,
            std::time::Duration::from_secs(5),
        )
    }

    #[test]
    fn an_answer_reads_back_as_the_kind_it_was() {
        let full = serde_json::to_string(&HealthAnswer::from(report())).unwrap();
        let read: HealthAnswer = serde_json::from_str(&full).unwrap();
        let back = read.report().expect("a full report reads as one");
        assert_eq!(back.status, HealthStatus::Degraded);
        assert_eq!(back.reasons, ["llm: no endpoint answers"]);
        assert_eq!(serde_json::to_string(&read).unwrap(), full);

        // Without a key a server sends only the verdict.
        let read: HealthAnswer = serde_json::from_str(r#"{"status":"unhealthy"}"#).unwrap();
        assert!(read.report().is_none());
        assert_eq!(read.status(), HealthStatus::Unhealthy);
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            r#"{"status":"unhealthy"}"#
        );
    }

    #[test]
    fn an_answer_without_a_verdict_is_refused() {
        assert!(serde_json::from_str::<HealthAnswer>(r#"{"reasons":[]}"#).is_err());
        assert!(serde_json::from_str::<HealthAnswer>(r#"{"status":"fine"}"#).is_err());
    }
}
