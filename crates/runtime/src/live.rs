//! Events that happen while a provider call runs (streamed LLM tokens, Python
//! output lines). They are stored like every other event, so a client that
//! resumes a stream by id misses none, but they are written by one background
//! writer that batches whatever has arrived: a token costs a share of a commit,
//! not a commit of its own, and the call that produced it never waits on the
//! store.

use gleitzeit_core::events::Event;
use gleitzeit_store::{Store, Write};
use std::sync::{Arc, OnceLock};
use tokio::sync::{broadcast, mpsc, oneshot};

/// The most events one commit takes; more wait for the next turn.
const BATCH: usize = 1024;

enum Msg {
    Event(Event),
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
        let _ = self.sender(store, events).send(Msg::Event(event));
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

async fn write_loop(
    mut rx: mpsc::UnboundedReceiver<Msg>,
    store: Arc<dyn Store>,
    events: broadcast::Sender<Event>,
) {
    let mut batch = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event(event) => batch.push(event),
                Msg::Flush(done) => flushes.push(done),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let writes = batch.iter().cloned().map(Write::Event).collect();
            match store.apply(writes).await {
                Ok(seqs) => {
                    for (mut event, seq) in batch.drain(..).zip(seqs) {
                        event.seq = seq;
                        let _ = events.send(event);
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
    }
}
