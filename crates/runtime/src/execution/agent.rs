//! `llm/agent` tasks: a model that calls tools in a loop until it answers.
//!
//! Each model turn is an `llm/chat` call and each tool call a `function/call`,
//! `mcp/call_tool` or `http/request` call, all through the same path as any
//! task's call (`execute`: this process's providers with the workflow's file
//! grant, or worker nodes), so failover, rate limits and confinement apply to
//! every step. The loop is durable per step: a turn is committed as an
//! `agent_turn` event and each tool's outcome as a `tool_call_completed` event
//! before the next step starts. A run resumed after a crash reads those
//! events back (the attempt is the same) and continues after the last one: a
//! committed turn is not sent to the model again and a committed tool call is
//! not run again; only a step that was in flight is repeated.

use super::start::execute;
use crate::call::TaskCall;
use crate::Runtime;
use futures_util::stream::{FuturesUnordered, StreamExt};
use gleitzeit_core::access::FileAccess;
use gleitzeit_core::agent::{self, AgentSpec, OnToolError, ToolSource};
use gleitzeit_core::events::{
    AgentTurn, Event, EventPayload, ToolCallCompleted, ToolCallRequest, ToolCallStarted,
};
use gleitzeit_core::model::Budget;
use gleitzeit_core::parse::MethodCatalog;
use gleitzeit_core::{ErrorCode, GzError, Requires, TaskSpec};
use gleitzeit_providers::tools::{function_tool, http_tool_schema, ArgumentCheck};
use gleitzeit_store::{now_ms, Write};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the workflow's other LLM calls used of its `budget:` when the agent
/// started; each turn adds its own.
#[derive(Debug, Clone, Copy)]
pub(super) struct BudgetUse {
    pub budget: Budget,
    pub tokens: u64,
    pub cost: f64,
}

/// One attempt of an agent task, ready to run once it is committed Running.
pub(super) struct AgentJob {
    pub workflow_id: String,
    pub spec: TaskSpec,
    pub attempt: u32,
    pub params: Value,
    pub files: FileAccess,
    /// The workflow ran before: this attempt may have committed steps.
    pub resumed: bool,
    pub budget: Option<BudgetUse>,
}

/// A tool as offered to the model.
struct Tool {
    definition: Value,
    check: ArgumentCheck,
    source: ToolSource,
}

/// One tool call and how it ended.
#[derive(Clone)]
struct CallRecord {
    turn: u32,
    request: ToolCallRequest,
    outcome: Result<Value, GzError>,
    duration_ms: u64,
}

impl AgentJob {
    pub(super) async fn run(self, rt: Runtime, token: CancellationToken) -> Result<Value, GzError> {
        let timeout = self
            .spec
            .timeout
            .or_else(|| self.params.get("timeout").and_then(Value::as_f64))
            .filter(|t| t.is_finite() && *t > 0.0);
        match timeout {
            None => self.run_loop(rt, token).await,
            Some(seconds) => {
                let id = self.spec.id.clone();
                tokio::time::timeout(
                    std::time::Duration::from_secs_f64(seconds),
                    self.run_loop(rt, token),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(GzError::new(
                        ErrorCode::TaskTimeout,
                        format!("task `{id}` exceeded its timeout of {seconds:.1} s"),
                    ))
                })
            }
        }
    }

    /// The call of one step (`step` names it within the attempt). Worker
    /// nodes take one call per task id and attempt, so there each step is a
    /// call of its own, `task#step`: a step re-run after a resume finds its
    /// earlier outcome instead of running twice. Here the task's own id is
    /// kept, so streamed tokens show under the task.
    fn call(
        &self,
        rt: &Runtime,
        step: &str,
        method: &str,
        params: Value,
        requires: Requires,
    ) -> TaskCall {
        let task_id = if rt.is_remote() {
            format!("{}#{step}", self.spec.id)
        } else {
            self.spec.id.clone()
        };
        TaskCall {
            workflow_id: self.workflow_id.clone(),
            task_id,
            task_name: self.spec.display_name().to_string(),
            attempt: self.attempt,
            method: method.to_string(),
            params,
            timeout_s: None,
            requires,
            files: self.files.clone(),
        }
    }

    /// Stores one step's event and announces it; tokens streamed before it
    /// are stored first, so the stream reads in order.
    async fn commit(&self, rt: &Runtime, payload: EventPayload) -> Result<(), GzError> {
        self.commit_all(rt, vec![payload]).await
    }

    /// [`commit`](Self::commit) for several events in one write.
    async fn commit_all(&self, rt: &Runtime, payloads: Vec<EventPayload>) -> Result<(), GzError> {
        rt.live.flush(&rt.store, &rt.events).await;
        let at = now_ms();
        let events: Vec<Event> = payloads
            .into_iter()
            .map(|p| Event::new(p, self.workflow_id.clone(), at))
            .collect();
        let seqs = rt
            .store
            .apply(events.iter().cloned().map(Write::Event).collect())
            .await?;
        for (mut event, seq) in events.into_iter().zip(seqs) {
            event.seq = seq;
            let _ = rt.events.send(event);
        }
        Ok(())
    }

    /// The turns and tool outcomes this attempt committed before the process
    /// that ran it stopped.
    async fn journal(
        &self,
        rt: &Runtime,
    ) -> Result<(BTreeMap<u32, AgentTurn>, HashMap<String, ToolCallCompleted>), GzError> {
        let mut turns = BTreeMap::new();
        let mut calls = HashMap::new();
        if !self.resumed {
            return Ok((turns, calls));
        }
        let mut after = 0;
        loop {
            let page = rt
                .store
                .events(Some(&self.workflow_id), after, 1000)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for event in page {
                match event.payload {
                    EventPayload::AgentTurn(t)
                        if t.task_id == self.spec.id && t.attempt == self.attempt =>
                    {
                        turns.insert(t.turn, t);
                    }
                    EventPayload::ToolCallCompleted(c)
                        if c.task_id == self.spec.id && c.attempt == self.attempt =>
                    {
                        calls.insert(c.call_id.clone(), c);
                    }
                    _ => {}
                }
            }
        }
        Ok((turns, calls))
    }

    /// Each tool's definition and argument check; MCP tools' schemas are
    /// asked of their servers.
    async fn tools(
        &self,
        rt: &Runtime,
        agent: &AgentSpec,
        token: &CancellationToken,
    ) -> Result<Vec<(String, Tool)>, GzError> {
        let mut listed: HashMap<String, Vec<Value>> = HashMap::new();
        let mut out = Vec::new();
        for tool in &agent.tools {
            let (description, schema) = match &tool.source {
                ToolSource::Function { function } => function_tool(function).ok_or_else(|| {
                    GzError::new(
                        ErrorCode::AgentToolUnavailable,
                        format!("tool `{}`: no built-in function `{function}`", tool.name),
                    )
                })?,
                ToolSource::Http { url_prefix, method } => (
                    format!("HTTP {method} to {url_prefix}…; answers with the response body."),
                    http_tool_schema(method),
                ),
                ToolSource::Mcp { server, tool: name } => {
                    if !listed.contains_key(server) {
                        let call = self.call(
                            rt,
                            &format!("tools@{server}"),
                            "mcp/list_tools",
                            json!({"server": server}),
                            Requires::default(),
                        );
                        let record = execute(rt, call, token.clone(), None).await?;
                        let tools = record
                            .get("result")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        listed.insert(server.clone(), tools);
                    }
                    let offered = &listed[server];
                    let found = offered
                        .iter()
                        .find(|t| t.get("name").and_then(Value::as_str) == Some(name.as_str()));
                    let Some(found) = found else {
                        let names: Vec<&str> = offered
                            .iter()
                            .filter_map(|t| t.get("name").and_then(Value::as_str))
                            .collect();
                        return Err(GzError::new(
                            ErrorCode::AgentToolUnavailable,
                            format!(
                                "MCP server `{server}` has no tool `{name}` (it has: {})",
                                names.join(", ")
                            ),
                        )
                        .with_hint(ErrorCode::AgentToolUnavailable.def().hint));
                    };
                    (
                        found
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        found
                            .get("input_schema")
                            .cloned()
                            .filter(|s| !s.is_null())
                            .unwrap_or_else(|| json!({"type": "object"})),
                    )
                }
            };
            let check = ArgumentCheck::new(&schema).map_err(|why| {
                GzError::new(
                    ErrorCode::AgentToolUnavailable,
                    format!(
                        "tool `{}`: its schema is not valid JSON Schema: {why}",
                        tool.name
                    ),
                )
            })?;
            let description = tool.description.clone().unwrap_or(description);
            let definition = json!({
                "type": "function",
                "function": {"name": tool.name, "description": description, "parameters": schema},
            });
            out.push((
                tool.name.clone(),
                Tool {
                    definition,
                    check,
                    source: tool.source.clone(),
                },
            ));
        }
        Ok(out)
    }

    async fn run_loop(self, rt: Runtime, token: CancellationToken) -> Result<Value, GzError> {
        let started = Instant::now();
        let agent = agent::read(&self.params, &|name| rt.registry.has_function(name)).map_err(
            |problems| {
                let first = &problems[0];
                let mut error = first.to_error();
                if problems.len() > 1 {
                    error.message = format!("{} (and {} more)", error.message, problems.len() - 1);
                }
                error
            },
        )?;
        let tools = self.tools(&rt, &agent, &token).await?;
        let definitions: Vec<Value> = tools.iter().map(|(_, t)| t.definition.clone()).collect();
        let tools: HashMap<String, Tool> = tools.into_iter().collect();
        let mut transcript = Transcript::new(&self.params)?;
        let (journal, done_calls) = self.journal(&rt).await?;
        let mut turn_options = Map::new();
        for key in agent::TURN_OPTIONS {
            if let Some(value) = self.params.get(*key) {
                turn_options.insert(key.to_string(), value.clone());
            }
        }
        if !definitions.is_empty() {
            turn_options.insert("tools".into(), Value::Array(definitions));
            turn_options.insert(
                "parallel_tool_calls".into(),
                json!(agent.parallel_tool_calls),
            );
        }
        let (task_id, task_name) = (self.spec.id.clone(), self.spec.display_name().to_string());
        for turn in 1..=agent.max_turns {
            let step = match journal.get(&turn) {
                Some(step) => step.clone(),
                None => {
                    if let Some(over) = self.over_budget(&transcript) {
                        return Err(transcript.ended(over));
                    }
                    fail::fail_point!("agent.before_turn");
                    let mut params = turn_options.clone();
                    params.insert("messages".into(), Value::Array(transcript.messages.clone()));
                    let call = self.call(
                        &rt,
                        &format!("turn{turn}"),
                        "llm/chat",
                        Value::Object(params),
                        self.spec.requires.clone(),
                    );
                    let asked = Instant::now();
                    let record = execute(&rt, call, token.clone(), None).await.map_err(|e| {
                        let mut e = e;
                        e.details = super::merge_details(e.details, transcript.details());
                        e
                    })?;
                    let step = transcript.turn_from(
                        turn,
                        &record,
                        &task_id,
                        &task_name,
                        self.attempt,
                        asked.elapsed().as_millis() as u64,
                    );
                    self.commit(&rt, EventPayload::AgentTurn(step.clone()))
                        .await?;
                    // The turn is stored; its tools have not run.
                    fail::fail_point!("agent.after_turn");
                    step
                }
            };
            transcript.add_turn(&step);
            if step.tool_calls.is_empty() {
                return transcript.answer(&agent, turn, started);
            }
            if turn == agent.max_turns {
                break;
            }
            let records = self
                .run_tools(&rt, &agent, &tools, &step, &done_calls, &token)
                .await?;
            for record in records {
                // A refused call (unknown tool, arguments off the schema) is the
                // model's mistake: it always hears about it and may correct it.
                let failed = record
                    .outcome
                    .as_ref()
                    .err()
                    .filter(|e| e.code != ErrorCode::ToolCallRejected)
                    .cloned();
                transcript.add_tool_result(record);
                if let (Some(error), OnToolError::Fail) = (failed, agent.on_tool_error) {
                    let message = format!("tool call failed ({}): {}", error.code, error.message);
                    return Err(transcript.ended(
                        GzError::new(ErrorCode::AgentToolFailed, message)
                            .with_details(json!({"tool_error": error})),
                    ));
                }
            }
        }
        Err(transcript.ended(
            GzError::new(
                ErrorCode::AgentMaxTurns,
                format!(
                    "the agent asked for tools on all {} of its turns (`max_turns`) without answering",
                    agent.max_turns
                ),
            )
            .with_hint(ErrorCode::AgentMaxTurns.def().hint),
        ))
    }

    /// The workflow's budget is used up, counting this agent's turns.
    fn over_budget(&self, transcript: &Transcript) -> Option<GzError> {
        let used = self.budget?;
        let tokens = used.tokens + transcript.prompt_tokens + transcript.completion_tokens;
        let cost = used.cost + transcript.cost.unwrap_or(0.0);
        let message = match (used.budget.tokens, used.budget.cost) {
            (Some(limit), _) if tokens >= limit => {
                format!("token budget of {limit} used up: {tokens} tokens")
            }
            (_, Some(limit)) if cost >= limit => {
                format!("cost budget of ${limit:.2} used up: ${cost:.4}")
            }
            _ => return None,
        };
        Some(
            GzError::new(
                ErrorCode::BudgetExceeded,
                format!(
                    "`{}` stopped before turn {}: {message}",
                    self.spec.id,
                    transcript.turns + 1
                ),
            )
            .with_details(json!({"tokens": tokens, "cost_usd": cost})),
        )
    }

    /// Runs a turn's tool calls (those not committed yet), one after the
    /// other or all at once, committing each outcome as it comes; returns
    /// every call's record in the model's order.
    async fn run_tools(
        &self,
        rt: &Runtime,
        agent: &AgentSpec,
        tools: &HashMap<String, Tool>,
        step: &AgentTurn,
        done: &HashMap<String, ToolCallCompleted>,
        token: &CancellationToken,
    ) -> Result<Vec<CallRecord>, GzError> {
        let mut records: Vec<Option<CallRecord>> = vec![None; step.tool_calls.len()];
        let mut pending = Vec::new();
        for (i, request) in step.tool_calls.iter().enumerate() {
            match done.get(&request.id) {
                Some(c) => {
                    records[i] = Some(CallRecord {
                        turn: step.turn,
                        request: request.clone(),
                        outcome: match &c.error {
                            Some(e) => Err(e.clone()),
                            None => Ok(c.result.clone().unwrap_or(Value::Null)),
                        },
                        duration_ms: c.duration_ms,
                    })
                }
                None => pending.push(i),
            }
        }
        if pending.is_empty() {
            return Ok(records.into_iter().flatten().collect());
        }
        let started = |i: usize| {
            let request: &ToolCallRequest = &step.tool_calls[i];
            EventPayload::ToolCallStarted(ToolCallStarted {
                task_id: self.spec.id.clone(),
                task_name: self.spec.display_name().to_string(),
                attempt: self.attempt,
                turn: step.turn,
                call_id: request.id.clone(),
                name: request.name.clone(),
                arguments: request.arguments.clone(),
            })
        };
        let one = |i: usize| {
            let request = step.tool_calls[i].clone();
            async move {
                let began = Instant::now();
                let outcome = self.invoke(rt, tools, &request, token).await;
                (
                    i,
                    CallRecord {
                        turn: step.turn,
                        request,
                        outcome,
                        duration_ms: began.elapsed().as_millis() as u64,
                    },
                )
            }
        };
        if agent.parallel_tool_calls {
            self.commit_all(rt, pending.iter().map(|&i| started(i)).collect())
                .await?;
            let mut running: FuturesUnordered<_> = pending.iter().map(|&i| one(i)).collect();
            while let Some((i, record)) = running.next().await {
                self.record(rt, &record).await?;
                records[i] = Some(record);
            }
        } else {
            for &i in &pending {
                self.commit(rt, started(i)).await?;
                let (i, record) = one(i).await;
                self.record(rt, &record).await?;
                let stop = record
                    .outcome
                    .as_ref()
                    .is_err_and(|e| e.code != ErrorCode::ToolCallRejected)
                    && agent.on_tool_error == OnToolError::Fail;
                records[i] = Some(record);
                if stop {
                    break;
                }
            }
        }
        Ok(records.into_iter().flatten().collect())
    }

    /// Commits a tool call's outcome. A cancelled call is not an outcome:
    /// the task ends, and a resumed run would run it again.
    async fn record(&self, rt: &Runtime, record: &CallRecord) -> Result<(), GzError> {
        if let Err(e) = &record.outcome {
            if e.code == ErrorCode::TaskCancelled {
                return Err(e.clone());
            }
        }
        let (result, error) = match &record.outcome {
            Ok(value) => (Some(value.clone()), None),
            Err(e) => (None, Some(e.clone())),
        };
        self.commit(
            rt,
            EventPayload::ToolCallCompleted(ToolCallCompleted {
                task_id: self.spec.id.clone(),
                task_name: self.spec.display_name().to_string(),
                attempt: self.attempt,
                turn: record.turn,
                call_id: record.request.id.clone(),
                name: record.request.name.clone(),
                result,
                error,
                duration_ms: record.duration_ms,
            }),
        )
        .await?;
        // Between two tool calls of one turn (or after its last).
        fail::fail_point!("agent.between_tools");
        Ok(())
    }

    /// One tool call: checked against what was offered, then run as the
    /// provider call its kind maps to. Its primary result is the answer.
    async fn invoke(
        &self,
        rt: &Runtime,
        tools: &HashMap<String, Tool>,
        request: &ToolCallRequest,
        token: &CancellationToken,
    ) -> Result<Value, GzError> {
        let Some(tool) = tools.get(&request.name) else {
            let mut names: Vec<&str> = tools.keys().map(String::as_str).collect();
            names.sort();
            return Err(GzError::new(
                ErrorCode::ToolCallRejected,
                format!(
                    "there is no tool `{}`; the tools are: {}",
                    request.name,
                    names.join(", ")
                ),
            ));
        };
        let problems = tool.check.problems(&request.arguments);
        if !problems.is_empty() {
            return Err(GzError::new(
                ErrorCode::ToolCallRejected,
                format!(
                    "the arguments of `{}` do not fit its schema: {}",
                    request.name,
                    problems.join("; ")
                ),
            ));
        }
        let (method, params) = match &tool.source {
            ToolSource::Function { function } => (
                "function/call",
                json!({"function": function, "kwargs": request.arguments}),
            ),
            ToolSource::Mcp { server, tool } => (
                "mcp/call_tool",
                json!({"server": server, "tool": tool, "arguments": request.arguments}),
            ),
            ToolSource::Http { url_prefix, method } => {
                let path = request.arguments["path"].as_str().unwrap_or_default();
                let mut url = agent::http_tool_url(url_prefix, path)
                    .map_err(|why| GzError::new(ErrorCode::ToolCallRejected, why))?;
                if let Some(query) = request.arguments.get("query").and_then(Value::as_object) {
                    let pairs: Vec<String> = query
                        .iter()
                        .map(|(k, v)| {
                            let v = match v {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            format!("{}={}", encode(k), encode(&v))
                        })
                        .collect();
                    if !pairs.is_empty() {
                        let joiner = if url.contains('?') { '&' } else { '?' };
                        url = format!("{url}{joiner}{}", pairs.join("&"));
                    }
                }
                let mut params = json!({"method": method, "url": url});
                if let Some(body) = request.arguments.get("json") {
                    params["json"] = body.clone();
                }
                ("http/request", params)
            }
        };
        let call = self.call(rt, &request.id, method, params, Requires::default());
        let record = execute(rt, call, token.clone(), None).await?;
        Ok(record.get("result").cloned().unwrap_or(record))
    }
}

/// Percent-encodes a query component.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The conversation so far and what it cost.
struct Transcript {
    messages: Vec<Value>,
    calls: Vec<CallRecord>,
    ids: HashSet<String>,
    turns: u32,
    last_response: String,
    prompt_tokens: u64,
    completion_tokens: u64,
    /// Unknown (`None`) once any turn's cost is unknown.
    cost: Option<f64>,
    model: Option<String>,
    endpoint: Option<String>,
    /// Time spent in model calls, summed over turns.
    model_ms: u64,
}

impl Transcript {
    fn new(params: &Value) -> Result<Transcript, GzError> {
        let mut messages: Vec<Value> = match params.get("messages") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(list)) => list.clone(),
            Some(other) => {
                return Err(GzError::new(
                    ErrorCode::InvalidParameters,
                    format!("`messages` must be a list of {{role, content}}, not {other}"),
                ))
            }
        };
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if let Some(system) = params.get("system").filter(|s| !s.is_null()) {
            if !messages.iter().any(|m| m["role"] == "system") {
                messages.insert(0, json!({"role": "system", "content": text(system)}));
            }
        }
        if let Some(prompt) = params.get("prompt").filter(|s| !s.is_null()) {
            messages.push(json!({"role": "user", "content": text(prompt)}));
        }
        Ok(Transcript {
            messages,
            calls: Vec::new(),
            ids: HashSet::new(),
            turns: 0,
            last_response: String::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            cost: Some(0.0),
            model: None,
            endpoint: None,
            model_ms: 0,
        })
    }

    /// A model's reply as the turn it is; call ids are made unique in the
    /// transcript (servers that number calls per reply repeat them).
    fn turn_from(
        &self,
        turn: u32,
        record: &Value,
        task_id: &str,
        task_name: &str,
        attempt: u32,
        duration_ms: u64,
    ) -> AgentTurn {
        let mut seen = self.ids.clone();
        let tool_calls = record
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(n, call)| {
                let mut id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if id.is_empty() || seen.contains(&id) {
                    id = format!("call_{turn}_{n}");
                }
                seen.insert(id.clone());
                ToolCallRequest {
                    id,
                    name: call["name"].as_str().unwrap_or_default().to_string(),
                    arguments: call.get("arguments").cloned().unwrap_or_else(|| json!({})),
                }
            })
            .collect();
        let text = |key: &str| record.get(key).and_then(Value::as_str).map(str::to_string);
        AgentTurn {
            task_id: task_id.to_string(),
            task_name: task_name.to_string(),
            attempt,
            turn,
            response: text("response").unwrap_or_default(),
            tool_calls,
            usage: record.get("usage").cloned(),
            cost_usd: record.get("cost_usd").and_then(Value::as_f64),
            model: text("model"),
            endpoint: text("endpoint"),
            duration_ms,
        }
    }

    fn add_turn(&mut self, step: &AgentTurn) {
        self.turns = step.turn;
        self.last_response = step.response.clone();
        let count = |key: &str| {
            step.usage
                .as_ref()
                .and_then(|u| u.get(key))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        self.prompt_tokens += count("prompt_tokens");
        self.completion_tokens += count("completion_tokens");
        self.cost = match (self.cost, step.cost_usd) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.model = step.model.clone().or(self.model.take());
        self.endpoint = step.endpoint.clone().or(self.endpoint.take());
        self.model_ms += step.duration_ms;
        let mut message = json!({"role": "assistant", "content": step.response});
        if !step.tool_calls.is_empty() {
            message["tool_calls"] = json!(step.tool_calls);
            for call in &step.tool_calls {
                self.ids.insert(call.id.clone());
            }
        }
        self.messages.push(message);
    }

    fn add_tool_result(&mut self, record: CallRecord) {
        let content = match &record.outcome {
            Ok(Value::String(s)) => s.clone(),
            Ok(other) => other.to_string(),
            Err(e) => json!({"error": format!("{}: {}", e.code, e.message)}).to_string(),
        };
        self.messages.push(json!({
            "role": "tool",
            "tool_call_id": record.request.id,
            "tool_name": record.request.name,
            "content": content,
        }));
        self.calls.push(record);
    }

    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }

    fn tool_calls(&self) -> Value {
        Value::Array(
            self.calls
                .iter()
                .map(|c| {
                    let mut entry = json!({
                        "id": c.request.id,
                        "name": c.request.name,
                        "arguments": c.request.arguments,
                        "turn": c.turn,
                        "duration_ms": c.duration_ms,
                    });
                    match &c.outcome {
                        Ok(result) => entry["result"] = result.clone(),
                        Err(error) => entry["error"] = json!(error),
                    }
                    entry
                })
                .collect(),
        )
    }

    /// What an error that ends the loop carries: the transcript so far.
    fn details(&self) -> Value {
        json!({
            "turns": self.turns,
            "tool_calls": self.tool_calls(),
            "messages": self.messages,
            "usage": self.usage(),
            "cost_usd": self.cost,
        })
    }

    fn ended(&self, error: GzError) -> GzError {
        let details = self.details();
        let mut error = error.retryable(false);
        error.details = super::merge_details(error.details, details);
        error
    }

    fn answer(&self, agent: &AgentSpec, turn: u32, started: Instant) -> Result<Value, GzError> {
        let parsed = match &agent.format {
            None => None,
            Some(format) => Some(
                gleitzeit_providers::llm::structured_answer(
                    agent::METHOD,
                    &self.last_response,
                    format,
                )
                .map_err(|e| {
                    let mut e = e;
                    e.details = super::merge_details(e.details, self.details());
                    e
                })?,
            ),
        };
        let failed = self.calls.iter().filter(|c| c.outcome.is_err()).count();
        let mut record = json!({
            "response": self.last_response,
            "turns": turn,
            "tool_calls": self.tool_calls(),
            "failed_tool_calls": failed,
            "messages": self.messages,
            "usage": self.usage(),
            "cost_usd": self.cost,
            "model": self.model,
            "endpoint": self.endpoint,
            "duration_ms": started.elapsed().as_millis() as u64,
            "model_ms": self.model_ms,
        });
        if let Some(parsed) = parsed {
            record["parsed"] = parsed;
        }
        Ok(record)
    }
}
