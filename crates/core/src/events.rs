//! Events announce state changes after they are committed. Names follow the
//! earlier versions (`workflow_started`, `task_completed`, …) so existing clients
//! and scripts keep working.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const WORKFLOW_STARTED: &str = "workflow_started";
pub const WORKFLOW_PROGRESS: &str = "workflow_progress";
pub const WORKFLOW_COMPLETED: &str = "workflow_completed";
pub const WORKFLOW_FAILED: &str = "workflow_failed";
pub const WORKFLOW_CANCELLED: &str = "workflow_cancelled";
pub const TASK_STARTED: &str = "task_started";
pub const TASK_COMPLETED: &str = "task_completed";
pub const TASK_FAILED: &str = "task_failed";
pub const TASK_RETRYING: &str = "task_retrying";
pub const TASK_SKIPPED: &str = "task_skipped";
pub const TASK_CANCELLED: &str = "task_cancelled";
pub const LLM_TOKEN: &str = "llm_token";
/// How streamed tokens are stored: one event per chunk of one task attempt's
/// tokens (`data.tokens`), never sent to clients as such — readers turn it
/// back into `llm_token` events with [`expand`].
pub const LLM_TOKENS: &str = "llm_tokens";
pub const TASK_OUTPUT: &str = "task_output";
/// Worker nodes (scale-out); their events carry an empty `workflow_id`.
pub const NODE_JOINED: &str = "node_joined";
pub const NODE_LEFT: &str = "node_left";

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
    NODE_JOINED,
    NODE_LEFT,
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the store's event log; 0 for events that are not stored
    /// (token streams).
    #[serde(default)]
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub workflow_id: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub data: Value,
    /// For an `llm_token` expanded from a stored chunk: its place in the
    /// chunk. Not serialized; it only shapes the event's id ([`Event::id`]).
    #[serde(skip)]
    pub part: Option<Part>,
}

/// Where a token sits in the chunk stored under its event's `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub index: u32,
    pub last: bool,
}

impl Event {
    pub fn new(
        kind: impl Into<String>,
        workflow_id: impl Into<String>,
        at_ms: i64,
        data: Value,
    ) -> Event {
        Event {
            seq: 0,
            kind: kind.into(),
            workflow_id: workflow_id.into(),
            at_ms,
            data,
            part: None,
        }
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

/// The `llm_tokens` chunk event for some tokens of one task attempt.
pub fn token_chunk(workflow_id: &str, at_ms: i64, task: &Value, tokens: Vec<String>) -> Event {
    let mut data = task.clone();
    if let Value::Object(map) = &mut data {
        map.insert("tokens".into(), Value::from(tokens));
    }
    Event::new(LLM_TOKENS, workflow_id, at_ms, data)
}

/// A stored event as clients see it: an `llm_tokens` chunk becomes one
/// `llm_token` per token (same `seq`, with its [`Part`]); anything else is
/// itself.
pub fn expand(event: Event) -> Vec<Event> {
    if event.kind != LLM_TOKENS {
        return vec![event];
    }
    let Value::Object(mut data) = event.data else {
        return Vec::new();
    };
    let tokens = match data.remove("tokens") {
        Some(Value::Array(tokens)) => tokens,
        _ => Vec::new(),
    };
    let n = tokens.len();
    tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| {
            let mut data = data.clone();
            data.insert("token".into(), token);
            Event {
                seq: event.seq,
                kind: LLM_TOKEN.to_string(),
                workflow_id: event.workflow_id.clone(),
                at_ms: event.at_ms,
                data: Value::Object(data),
                part: Some(Part {
                    index: i as u32,
                    last: i + 1 == n,
                }),
            }
        })
        .collect()
}

/// [`expand`] over a page of stored events.
pub fn expand_all(events: Vec<Event>) -> Vec<Event> {
    events.into_iter().flat_map(expand).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chunks_expand_to_tokens_with_resumable_ids() {
        let mut chunk = token_chunk(
            "wf",
            5,
            &json!({"task_id": "t", "task_name": "T", "attempt": 1}),
            vec!["a".into(), "b".into(), "c".into()],
        );
        chunk.seq = 7;
        let tokens = expand(chunk);
        let ids: Vec<String> = tokens.iter().map(Event::id).collect();
        assert_eq!(ids, ["7.0", "7.1", "7"]);
        assert_eq!(
            tokens[1].data,
            json!({"task_id": "t", "task_name": "T", "attempt": 1, "token": "b"})
        );
        assert_eq!(tokens[1].kind, LLM_TOKEN);
        // Resuming from each id yields exactly the rest.
        for (i, token) in tokens.iter().enumerate() {
            let cursor = Cursor::parse(&token.id()).unwrap();
            assert_eq!(cursor, token.cursor());
            let rest: Vec<_> = tokens.iter().filter(|t| cursor.is_before(t)).collect();
            assert_eq!(rest.len(), 2 - i);
            if let Some(next) = rest.first() {
                assert!(cursor.is_next(next));
            }
        }
        assert!(Cursor::after_seq(6).is_next(&tokens[0]));
        assert!(!Cursor::after_seq(6).is_next(&tokens[1]));
        assert_eq!(Cursor::parse("0.1"), None);
        assert_eq!(Cursor::parse("x"), None);
        let plain = Event::new(TASK_STARTED, "wf", 0, json!({}));
        assert_eq!(expand(plain.clone()), vec![plain]);
    }
}
