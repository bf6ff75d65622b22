//! The service of a Gleitzeit server, over its REST API. Answers are read into
//! the types both sides share; one that does not fit is an error naming the
//! endpoint, never an empty result.

use super::{
    Cancelled, EventStream, NewKey, Rejected, Resumed, Runner, ScheduleChange, StatusReport,
    Submitted, TriggerFlags, WorkflowService,
};
use crate::client::Client;
use crate::context::Context;
use gleitzeit_api::auth::{
    AuditEntryView, AuditLog, CreatedKey, KeyList, KeyView, UserList, UserView, WhoAmI,
};
use gleitzeit_api::health::HealthAnswer;
use gleitzeit_api::schedules::{
    BackfillResponse, RunStarted, ScheduleAddResponse, ScheduleList, ScheduleView,
};
use gleitzeit_api::stats::Stats;
use gleitzeit_api::system::{NodeList, NodeView, ProviderList};
use gleitzeit_api::views::WorkflowView;
use gleitzeit_api::workflows::{
    EventHead, EventPage, StateResponse, SubmitResponse, WorkflowList, WorkflowSummaryView,
};
use gleitzeit_api::DiagnosticBody;
use gleitzeit_core::events::Event;
use gleitzeit_core::parse::Diagnostic;
use gleitzeit_core::yaml::Pos;
use gleitzeit_core::{ErrorCode, GzError, WorkflowState};
use gleitzeit_store::WorkflowSummary;
use serde_json::{json, Map, Value};

/// A schedule id (or prefix) as a URL segment: ids are letters, digits and
/// `_`, so anything else names no schedule.
fn path_id(id: &str) -> Result<&str, GzError> {
    if !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(id)
    } else {
        Err(
            GzError::new(ErrorCode::ScheduleNotFound, format!("no schedule `{id}`"))
                .with_hint(ErrorCode::ScheduleNotFound.def().hint),
        )
    }
}

pub struct RemoteService {
    /// `--json`: summaries print as JSON.
    json: bool,
    client: Client,
}

impl RemoteService {
    pub fn new(ctx: &Context, client: Client) -> RemoteService {
        RemoteService {
            json: ctx.global.json,
            client,
        }
    }
}

/// The workflow summary a server lists, as the store's.
fn summary(view: WorkflowSummaryView) -> WorkflowSummary {
    WorkflowSummary {
        id: view.id,
        name: view.name,
        state: view.state,
        created_ms: view.created_ms,
        finished_ms: view.finished_ms,
        total: view.total,
        completed: view.completed,
        failed: view.failed,
    }
}

/// A state the server names, or an error naming the endpoint.
fn state_of(answer: &StateResponse, endpoint: &str) -> Result<WorkflowState, GzError> {
    WorkflowState::parse(&answer.state).ok_or_else(|| {
        GzError::new(
            ErrorCode::ServerUnreachable,
            format!(
                "the server answered {endpoint} with an unknown state `{}`",
                answer.state
            ),
        )
    })
}

/// The problems a server found in a submitted workflow, pointing into the
/// user's file (the server knows it only by the name it was sent under).
fn server_diagnostics(error: &GzError, file: &str) -> Result<Vec<Diagnostic>, GzError> {
    let problems: Vec<DiagnosticBody> =
        serde_json::from_value(error.details["diagnostics"].clone()).map_err(|e| {
            GzError::new(
                ErrorCode::ServerUnreachable,
                format!(
                    "the server sent unreadable diagnostics for {file} to /api/v1/workflows: {e}"
                ),
            )
        })?;
    Ok(problems
        .into_iter()
        .map(|p| Diagnostic {
            code: ErrorCode::parse(&p.code).unwrap_or(error.code),
            message: p.message,
            hint: p.hint,
            file: file.to_string(),
            pos: Pos {
                line: p.line,
                column: p.column,
            },
        })
        .collect())
}

#[async_trait::async_trait]
impl WorkflowService for RemoteService {
    fn location(&self) -> String {
        self.client.base.clone()
    }

    async fn list(
        &self,
        state: Option<WorkflowState>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<WorkflowSummary>, GzError> {
        let mut path = format!(
            "/api/v1/workflows?limit={}&offset={offset}",
            limit.clamp(1, 1000)
        );
        if let Some(state) = state {
            path.push_str(&format!("&state={}", state.as_str()));
        }
        let page: WorkflowList = self.client.get_as(&path).await?;
        Ok(page.workflows.into_iter().map(summary).collect())
    }

    async fn workflow(&self, id: &str) -> Result<WorkflowView, GzError> {
        self.client.get_as(&format!("/api/v1/workflows/{id}")).await
    }

    async fn cancel(&self, id: &str) -> Result<Cancelled, GzError> {
        let endpoint = format!("/api/v1/workflows/{id}/cancel");
        let after: StateResponse = self.client.post_as(&endpoint, &[], None).await?;
        let state = state_of(&after, &endpoint)?;
        Ok(Cancelled {
            workflow_id: after.workflow_id,
            was_terminal: after.was_terminal,
            state,
            cancel_requested: after.cancel_requested,
        })
    }

    async fn resume(&self, id: &str) -> Result<Resumed, GzError> {
        let answer: StateResponse = self
            .client
            .post_as(&format!("/api/v1/workflows/{id}/resume"), &[], None)
            .await?;
        Ok(Resumed {
            workflow_id: answer.workflow_id,
            on_server: Some(self.client.base.clone()),
        })
    }

    async fn list_runs_of(
        &self,
        schedule: &str,
        state: Option<WorkflowState>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<WorkflowSummary>, GzError> {
        let mut path = format!(
            "/api/v1/workflows?limit={}&offset={offset}&schedule={}",
            limit.clamp(1, 1000),
            path_id(schedule)?
        );
        if let Some(state) = state {
            path.push_str(&format!("&state={}", state.as_str()));
        }
        let page: WorkflowList = self.client.get_as(&path).await?;
        Ok(page.workflows.into_iter().map(summary).collect())
    }

    async fn add_schedules(
        &self,
        text: &str,
        file: &str,
        flags: &TriggerFlags,
    ) -> Result<Result<ScheduleAddResponse, Rejected>, GzError> {
        let query: Vec<(&str, String)> = flags.pairs();
        match self
            .client
            .post_as::<ScheduleAddResponse>("/api/v1/schedules", &query, Some(text.to_string()))
            .await
        {
            Ok(added) => Ok(Ok(added)),
            Err(error) if error.details.get("diagnostics").is_some() => {
                Ok(Err(server_diagnostics(&error, file)?))
            }
            Err(error) => Err(error),
        }
    }

    async fn schedules(&self) -> Result<Vec<ScheduleView>, GzError> {
        let list: ScheduleList = self.client.get_as("/api/v1/schedules").await?;
        Ok(list.schedules)
    }

    async fn change_schedule(
        &self,
        id: &str,
        change: ScheduleChange,
    ) -> Result<ScheduleView, GzError> {
        let id = path_id(id)?;
        match change {
            ScheduleChange::Pause => {
                self.client
                    .post_as(&format!("/api/v1/schedules/{id}/pause"), &[], None)
                    .await
            }
            ScheduleChange::Resume => {
                self.client
                    .post_as(&format!("/api/v1/schedules/{id}/resume"), &[], None)
                    .await
            }
            ScheduleChange::Remove => {
                self.client
                    .delete_as(&format!("/api/v1/schedules/{id}"))
                    .await
            }
        }
    }

    async fn run_now(&self, id: &str) -> Result<RunStarted, GzError> {
        let id = path_id(id)?;
        self.client
            .post_as(&format!("/api/v1/schedules/{id}/run-now"), &[], None)
            .await
    }

    async fn backfill(&self, id: &str, from: &str, to: &str) -> Result<BackfillResponse, GzError> {
        let id = path_id(id)?;
        self.client
            .post_json_as(
                &format!("/api/v1/schedules/{id}/backfill"),
                &serde_json::json!({"from": from, "to": to}),
            )
            .await
    }

    async fn submit(
        &self,
        text: &str,
        file: &str,
        overrides: &Map<String, Value>,
    ) -> Result<Result<Submitted, Rejected>, GzError> {
        let query: Vec<(&str, String)> = overrides
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                ("input", format!("{k}={value}"))
            })
            .collect();
        match self
            .client
            .post_as::<SubmitResponse>("/api/v1/workflows", &query, Some(text.to_string()))
            .await
        {
            Ok(SubmitResponse {
                workflow_id,
                name,
                state,
                total_tasks,
                links,
            }) => Ok(Ok(Submitted {
                workflow_id,
                name,
                state,
                total_tasks,
                links: Some(links),
            })),
            Err(error) if error.details.get("diagnostics").is_some() => {
                Ok(Err(server_diagnostics(&error, file)?))
            }
            Err(error) => Err(error),
        }
    }

    async fn start(&self, _submitted: &Submitted) -> Result<Runner, GzError> {
        // A server starts what it accepts.
        Ok(Runner::Server {
            base: self.client.base.clone(),
        })
    }

    async fn run_to_end(&self, id: &str, quiet: bool) -> Result<u8, GzError> {
        self.wait(id, quiet, self.json).await
    }

    async fn history(&self, id: &str) -> Result<Vec<Event>, GzError> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page: EventPage = self
                .client
                .get_as(&format!(
                    "/api/v1/workflows/{id}/events?after={after}&limit=10000"
                ))
                .await?;
            all.extend(page.events);
            if page.next_after == after {
                return Ok(all);
            }
            after = page.next_after;
        }
    }

    async fn latest_event_seq(&self) -> Result<u64, GzError> {
        Ok(self
            .client
            .get_as::<EventHead>("/api/v1/events/head")
            .await?
            .latest_event_seq)
    }

    async fn follow(
        &self,
        workflow_id: Option<String>,
        types: Option<Vec<String>>,
        after: Option<u64>,
    ) -> Result<EventStream, GzError> {
        let mut query = Vec::new();
        if let Some(id) = &workflow_id {
            query.push(format!("workflow_id={id}"));
        }
        if let Some(types) = &types {
            query.push(format!("types={}", types.join(",")));
        }
        Ok(self.client.events(query.join("&"), after))
    }

    async fn stats(&self, range_minutes: u64) -> Result<Stats, GzError> {
        self.client
            .get_as(&format!("/api/v1/stats?range_minutes={range_minutes}"))
            .await
    }

    async fn health(&self) -> Result<HealthAnswer, GzError> {
        self.client.get_as("/api/v1/health").await
    }

    async fn status(&self) -> Result<StatusReport, GzError> {
        let health = self.health().await?;
        let stats = self.stats(60).await?;
        let running = self.list(Some(WorkflowState::Running), 50, 0).await?;
        Ok(StatusReport::Server {
            base: self.client.base.clone(),
            health,
            stats,
            running,
        })
    }

    async fn providers(&self) -> Result<ProviderList, GzError> {
        self.client.get_as("/api/v1/providers?check=true").await
    }

    async fn nodes(&self) -> Result<Vec<NodeView>, GzError> {
        Ok(self.client.get_as::<NodeList>("/api/v1/nodes").await?.nodes)
    }

    async fn whoami(&self) -> Result<Option<WhoAmI>, GzError> {
        Ok(Some(self.client.get_as("/api/v1/auth/whoami").await?))
    }

    async fn users(&self) -> Result<Vec<UserView>, GzError> {
        Ok(self
            .client
            .get_as::<UserList>("/api/v1/auth/users")
            .await?
            .users)
    }

    async fn create_user(
        &self,
        name: &str,
        email: Option<String>,
        role: &str,
    ) -> Result<UserView, GzError> {
        self.client
            .post_json_as(
                "/api/v1/auth/users",
                &json!({"name": name, "email": email, "role": role}),
            )
            .await
    }

    async fn disable_user(&self, name: &str) -> Result<UserView, GzError> {
        self.client
            .post_as(&format!("/api/v1/auth/users/{name}/disable"), &[], None)
            .await
    }

    async fn keys(&self, user: Option<&str>) -> Result<Vec<KeyView>, GzError> {
        let path = match user {
            Some(u) => format!("/api/v1/auth/keys?user={u}"),
            None => "/api/v1/auth/keys".into(),
        };
        Ok(self.client.get_as::<KeyList>(&path).await?.keys)
    }

    async fn create_key(&self, key: NewKey) -> Result<CreatedKey, GzError> {
        let user = match key.user {
            Some(u) => u,
            None => {
                self.client
                    .get_as::<WhoAmI>("/api/v1/auth/whoami")
                    .await?
                    .user
            }
        };
        self.client
            .post_json_as(
                "/api/v1/auth/keys",
                &json!({"user": user, "name": key.label, "role": key.role, "expires_days": key.expires_days}),
            )
            .await
    }

    async fn revoke_key(&self, id: &str) -> Result<(), GzError> {
        self.client
            .post(&format!("/api/v1/auth/keys/{id}/revoke"), &[], None)
            .await
            .map(|_| ())
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntryView>, GzError> {
        Ok(self
            .client
            .get_as::<AuditLog>(&format!("/api/v1/auth/audit?limit={limit}"))
            .await?
            .entries)
    }

    async fn open(&self) -> Result<(), GzError> {
        Ok(())
    }

    async fn finish(&self) {}
}
