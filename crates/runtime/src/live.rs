//! Events that happen while a provider call runs (streamed LLM tokens, Python
//! output lines). They are stored like every other event, so a client that
//! resumes a stream by id misses none, but they are written by one background
//! writer that batches whatever has arrived: a token costs a share of a commit,
//! not a commit of its own, and the call that produced it never waits on the
//! store.
//!
//! Tokens are stored compactly: the writer collects each task attempt's
//! tokens and stores them as one `llm_tokens` chunk event (at most
//! [`CHUNK_TOKENS`] tokens, or whatever arrived within [`CHUNK_WAIT`], and
//! always before the task's result or any other event). Once the chunk is
//! committed under its sequence number, every token in it is announced as its
//! own `llm_token` event (same `seq`, with its place in the chunk), so live
//! watchers still see each token, at most [`CHUNK_WAIT`] late, and readers of
//! the store expand chunks back into the same events (`events::expand`).

use gleitzeit_core::events::{self, Event, EventPayload, LlmTokens};
use gleitzeit_store::{Store, Write};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

/// The most events one commit takes; more wait for the next turn.
const BATCH: usize = 1024;
/// The most tokens one stored chunk holds.
pub(crate) const CHUNK_TOKENS: usize = 256;
/// The longest a token waits for its chunk to be stored (and announced).
pub(crate) const CHUNK_WAIT: Duration = Duration::from_millis(100);

enum Msg {
    Event(Box<Event>),
    /// Answered once every event sent before it is stored and announced.
    Flush(oneshot::Sender<()>),
}

#[derive(Clone, Default)]
pub(crate) struct LiveEvents {
    tx: Arc<OnceLock<mpsc::UnboundedSender<Msg>>>,
}

impl LiveEvents {
    fn sender(
        &self,
        store: &Arc<dyn Store>,
        events: &broadcast::Sender<Event>,
    ) -> &mpsc::UnboundedSender<Msg> {
        self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(write_loop(rx, store.clone(), events.clone()));
            tx
        })
    }

    pub(crate) fn send(
        &self,
        store: &Arc<dyn Store>,
        events: &broadcast::Sender<Event>,
        event: Event,
    ) {
        let _ = self.sender(store, events).send(Msg::Event(Box::new(event)));
    }

    /// Waits until every event sent so far is stored and announced, so a task's
    /// tokens always come before its `task_completed`.
    pub(crate) async fn flush(&self, store: &Arc<dyn Store>, events: &broadcast::Sender<Event>) {
        let (done, wait) = oneshot::channel();
        if self.sender(store, events).send(Msg::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// One task attempt's tokens not stored yet.
struct Pending {
    workflow_id: String,
    /// The task attempt and its tokens so far.
    chunk: LlmTokens,
    at_ms: i64,
    since: Instant,
}

/// Token chunks being collected, in the order their first token arrived.
#[derive(Default)]
struct Chunks {
    pending: Vec<Pending>,
}

impl Chunks {
    /// Takes a token event; a full chunk is returned to be stored.
    fn add(&mut self, event: Event) -> Option<Event> {
        let EventPayload::LlmToken(token) = event.payload else {
            return None;
        };
        let at = self
            .pending
            .iter()
            .position(|p| p.workflow_id == event.workflow_id && p.chunk.same_attempt(&token));
        let at = match at {
            Some(at) => at,
            None => {
                self.pending.push(Pending {
                    workflow_id: event.workflow_id,
                    chunk: LlmTokens {
                        task: token.task,
                        tokens: Vec::new(),
                    },
                    at_ms: event.at_ms,
                    since: Instant::now(),
                });
                self.pending.len() - 1
            }
        };
        self.pending[at].chunk.tokens.push(token.token);
        (self.pending[at].chunk.tokens.len() >= CHUNK_TOKENS)
            .then(|| chunk(self.pending.remove(at)))
    }

    /// Every chunk collected so far, to be stored now.
    fn take_all(&mut self) -> Vec<Event> {
        self.pending.drain(..).map(chunk).collect()
    }

    /// When the oldest chunk is due.
    fn deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.since + CHUNK_WAIT).min()
    }
}

fn chunk(pending: Pending) -> Event {
    Event::new(
        EventPayload::LlmTokens(pending.chunk),
        pending.workflow_id,
        pending.at_ms,
    )
}

async fn write_loop(
    mut rx: mpsc::UnboundedReceiver<Msg>,
    store: Arc<dyn Store>,
    events: broadcast::Sender<Event>,
) {
    let mut batch = Vec::new();
    let mut flushes = Vec::new();
    let mut chunks = Chunks::default();
    loop {
        let mut ended = false; // set when the chunk timer, not the channel, woke us
        let first = match chunks.deadline() {
            None => rx.recv().await,
            Some(deadline) => tokio::select! {
                msg = rx.recv() => msg,
                _ = tokio::time::sleep_until(deadline) => {
                    batch.extend(chunks.take_all());
                    // Not the end: only the wait for a message did.
                    ended = true;
                    None
                }
            },
        };
        let closed = first.is_none() && !ended;
        if closed {
            batch.extend(chunks.take_all());
        }
        let mut next = first;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event(event) if matches!(event.payload, EventPayload::LlmToken(_)) => {
                    batch.extend(chunks.add(*event));
                }
                Msg::Event(event) => {
                    // Tokens that came before it are stored before it.
                    batch.extend(chunks.take_all());
                    batch.push(*event);
                }
                Msg::Flush(done) => {
                    batch.extend(chunks.take_all());
                    flushes.push(done);
                }
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let writes = batch.iter().cloned().map(Write::Event).collect();
            fail::fail_point!("live.before_flush");
            match store.apply(writes).await {
                Ok(seqs) => {
                    for (mut event, seq) in batch.drain(..).zip(seqs) {
                        event.seq = seq;
                        for event in events::expand(event) {
                            let _ = events.send(event);
                        }
                    }
                }
                Err(error) => {
                    // The task's result still holds the whole text; only the
                    // live view loses these pieces.
                    tracing::warn!("could not store {} live events: {error}", batch.len());
                    batch.clear();
                }
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        if closed {
            break;
        }
    }
}
