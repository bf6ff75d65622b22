//! Events announce state changes after they are committed. Names follow the
//! earlier versions (`workflow_started`, `task_completed`, …) so existing clients
//! and scripts keep working.

mod payload;

pub use payload::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Declares the kinds: each one's name constant and its [`EventPayload`]
/// variant, whose snake_case name is the same string.
macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident = $konst:ident $name:literal;)*) => {
        $( $(#[$doc])* pub const $konst: &str = $name; )*

        /// What happened, by kind. On the wire the kind is `type` and the
        /// fields are `data`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
        #[serde(tag = "type", content = "data", rename_all = "snake_case")]
        // Unboxed so every kind matches as `EventPayload::Kind(Kind)`; an
        // event is built once and moved, so the size is not copied around.
        #[allow(clippy::large_enum_variant)]
        pub enum EventPayload {
            $( $variant($variant), )*
            /// See [`UndecodedEvent`]; it has no schema of its own.
            #[serde(untagged, skip_deserializing)]
            Undecoded(UndecodedEvent),
        }

        impl EventPayload {
            /// The kind's name; for an undecoded event, the known kind it
            /// claims to be, else `unknown`.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( EventPayload::$variant(_) => $konst, )*
                    EventPayload::Undecoded(event) => match event.kind.as_str() {
                        $( $name => $konst, )*
                        _ => UNKNOWN,
                    },
                }
            }

            /// The payload of a `kind` event with these fields; an unknown
            /// kind, or fields that do not fit it, give
            /// [`EventPayload::Undecoded`] and the reason.
            pub fn decode(kind: String, data: Value) -> (EventPayload, Option<String>) {
                let decoded = match kind.as_str() {
                    $( $name => $variant::deserialize(&data).map(EventPayload::$variant), )*
                    _ => {
                        let why = format!("unknown event type `{kind}`");
                        return (EventPayload::Undecoded(UndecodedEvent { kind, data }), Some(why));
                    }
                };
                match decoded {
                    Ok(payload) => (payload, None),
                    Err(e) => {
                        let why = format!("`{kind}` event data does not fit: {e}");
                        (EventPayload::Undecoded(UndecodedEvent { kind, data }), Some(why))
                    }
                }
            }
        }
    };
}

kinds! {
    WorkflowStarted = WORKFLOW_STARTED "workflow_started";
    WorkflowProgress = WORKFLOW_PROGRESS "workflow_progress";
    WorkflowCompleted = WORKFLOW_COMPLETED "workflow_completed";
    WorkflowFailed = WORKFLOW_FAILED "workflow_failed";
    WorkflowCancelled = WORKFLOW_CANCELLED "workflow_cancelled";
    TaskStarted = TASK_STARTED "task_started";
    TaskCompleted = TASK_COMPLETED "task_completed";
    TaskFailed = TASK_FAILED "task_failed";
    TaskRetrying = TASK_RETRYING "task_retrying";
    TaskSkipped = TASK_SKIPPED "task_skipped";
    TaskCancelled = TASK_CANCELLED "task_cancelled";
    LlmToken = LLM_TOKEN "llm_token";
    /// How streamed tokens are stored: one event per chunk of one task
    /// attempt's tokens, never sent to clients as such — readers turn it
    /// back into `llm_token` events with [`expand`].
    LlmTokens = LLM_TOKENS "llm_tokens";
    TaskOutput = TASK_OUTPUT "task_output";
    /// An agent task's model turn, committed before its tool calls run.
    AgentTurn = AGENT_TURN "agent_turn";
    ToolCallStarted = TOOL_CALL_STARTED "tool_call_started";
    /// A tool call's result or error, committed before the next step.
    ToolCallCompleted = TOOL_CALL_COMPLETED "tool_call_completed";
    /// Worker nodes (scale-out); their events carry an empty `workflow_id`.
    NodeJoined = NODE_JOINED "node_joined";
    NodeLeft = NODE_LEFT "node_left";
}

/// [`Event::kind`] of an undecoded event whose kind this version does not know.
pub const UNKNOWN: &str = "unknown";

/// The kinds clients can ask for (`llm_tokens` is only stored).
pub const ALL: &[&str] = &[
    WORKFLOW_STARTED,
    WORKFLOW_PROGRESS,
    WORKFLOW_COMPLETED,
    WORKFLOW_FAILED,
    WORKFLOW_CANCELLED,
    TASK_STARTED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_RETRYING,
    TASK_SKIPPED,
    TASK_CANCELLED,
    LLM_TOKEN,
    TASK_OUTPUT,
    AGENT_TURN,
    TOOL_CALL_STARTED,
    TOOL_CALL_COMPLETED,
    NODE_JOINED,
    NODE_LEFT,
];

/// One event. Stores keep it as its kind plus its data
/// ([`Event::stored_data`], [`Event::from_stored`]); reading one that does not
/// decode never fails: it becomes [`EventPayload::Undecoded`], is passed on
/// as it was stored, and [`Event::from_stored`] says why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(from = "WireEvent")]
pub struct Event {
    /// Position in the store's event log; 0 for events that are not stored
    /// (token streams).
    #[serde(default)]
    pub seq: u64,
    pub workflow_id: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    #[serde(flatten)]
    pub payload: EventPayload,
    /// For an `llm_token` expanded from a stored chunk: its place in the
    /// chunk. Not serialized; it only shapes the event's id ([`Event::id`]).
    #[serde(skip)]
    pub part: Option<Part>,
}

/// An event as it is sent and as the Redis store keeps it.
#[derive(Deserialize)]
struct WireEvent {
    #[serde(default)]
    seq: u64,
    #[serde(rename = "type")]
    kind: String,
    workflow_id: String,
    at_ms: i64,
    data: Value,
}

impl From<WireEvent> for Event {
    fn from(wire: WireEvent) -> Event {
        Event::from_stored(wire.seq, wire.kind, wire.workflow_id, wire.at_ms, wire.data).0
    }
}

/// Where a token sits in the chunk stored under its event's `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub index: u32,
    pub last: bool,
}

impl Event {
    pub fn new(payload: EventPayload, workflow_id: impl Into<String>, at_ms: i64) -> Event {
        Event {
            seq: 0,
            workflow_id: workflow_id.into(),
            at_ms,
            payload,
            part: None,
        }
    }

    /// The event a store read back from its kind and data, and why it did not
    /// decode if it did not.
    pub fn from_stored(
        seq: u64,
        kind: String,
        workflow_id: String,
        at_ms: i64,
        data: Value,
    ) -> (Event, Option<String>) {
        let (payload, undecoded) = EventPayload::decode(kind, data);
        let event = Event {
            seq,
            workflow_id,
            at_ms,
            payload,
            part: None,
        };
        (event, undecoded)
    }

    /// The kind's name (`task_completed`, …).
    pub fn kind(&self) -> &'static str {
        self.payload.kind()
    }

    /// The `type` it is sent with: the kind's name, or for an undecoded
    /// event the name it came with (which [`Event::kind`] may not know).
    pub fn type_name(&self) -> &str {
        match &self.payload {
            EventPayload::Undecoded(event) => &event.kind,
            payload => payload.kind(),
        }
    }

    /// The kind and data a store keeps: the `type` and `data` of the JSON.
    pub fn stored_data(&self) -> (String, Value) {
        if let EventPayload::Undecoded(event) = &self.payload {
            return (event.kind.clone(), event.data.clone());
        }
        let mut value = serde_json::to_value(&self.payload).unwrap_or_default();
        let data = value.get_mut("data").map(Value::take).unwrap_or_default();
        (self.type_name().to_string(), data)
    }

    /// The id clients resume from: the sequence number, or for a token that
    /// is not the last of its chunk `SEQ.INDEX`. The last token of a chunk
    /// has the plain `SEQ`, since after it the whole chunk is seen.
    pub fn id(&self) -> String {
        match self.part {
            Some(Part { index, last: false }) => format!("{}.{index}", self.seq),
            _ => self.seq.to_string(),
        }
    }

    /// The stream position right after this event.
    pub fn cursor(&self) -> Cursor {
        match self.part {
            Some(Part { index, last: false }) => Cursor {
                done: self.seq.saturating_sub(1),
                partial: Some(index),
            },
            _ => Cursor {
                done: self.seq,
                partial: None,
            },
        }
    }
}

/// A position in the event stream: every event up to `done` is seen, and of
/// the chunk stored as `done + 1` the tokens up to index `partial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub done: u64,
    pub partial: Option<u32>,
}

impl Cursor {
    pub fn after_seq(seq: u64) -> Cursor {
        Cursor {
            done: seq,
            partial: None,
        }
    }

    /// Parses an event id: `SEQ` or `SEQ.INDEX`.
    pub fn parse(id: &str) -> Option<Cursor> {
        let id = id.trim();
        match id.split_once('.') {
            None => id.parse().ok().map(Cursor::after_seq),
            Some((seq, index)) => {
                let seq: u64 = seq.parse().ok()?;
                Some(Cursor {
                    done: seq.checked_sub(1)?,
                    partial: Some(index.parse().ok()?),
                })
            }
        }
    }

    /// Whether `event` comes after this position (not yet seen).
    pub fn is_before(&self, event: &Event) -> bool {
        if event.seq > self.done + 1 {
            return true;
        }
        if event.seq <= self.done {
            return false;
        }
        match (self.partial, event.part) {
            (None, _) => true,
            (Some(seen), Some(part)) => part.index > seen,
            (Some(_), None) => false,
        }
    }

    /// Whether `event` is exactly the next one (no gap before it).
    pub fn is_next(&self, event: &Event) -> bool {
        if event.seq != self.done + 1 {
            return false;
        }
        match (self.partial, event.part) {
            (None, None) => true,
            (None, Some(part)) => part.index == 0,
            (Some(seen), Some(part)) => part.index == seen + 1,
            (Some(_), None) => false,
        }
    }
}

/// A stored event as clients see it: an `llm_tokens` chunk becomes one
/// `llm_token` per token (same `seq`, with its [`Part`]); a chunk that does
/// not decode becomes nothing, as it cannot be sent as tokens; anything else
/// is itself.
pub fn expand(event: Event) -> Vec<Event> {
    let chunk = match event.payload {
        EventPayload::LlmTokens(chunk) => chunk,
        EventPayload::Undecoded(ref undecoded) if undecoded.kind == LLM_TOKENS => {
            return Vec::new()
        }
        _ => return vec![event],
    };
    let n = chunk.tokens.len();
    chunk
        .tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| Event {
            seq: event.seq,
            workflow_id: event.workflow_id.clone(),
            at_ms: event.at_ms,
            payload: EventPayload::LlmToken(LlmToken {
                task: chunk.task.clone(),
                token,
            }),
            part: Some(Part {
                index: i as u32,
                last: i + 1 == n,
            }),
        })
        .collect()
}

/// [`expand`] over a page of stored events.
pub fn expand_all(events: Vec<Event>) -> Vec<Event> {
    events.into_iter().flat_map(expand).collect()
}

#[cfg(test)]
mod tests;
