//! Every Redis key the cluster uses, in one place. All start with the store's
//! prefix, so a test (or a second cluster) on another prefix never collides.

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The queue for one protocol and one placement constraint set.
    pub fn queue(&self, protocol: &str, route: &str) -> String {
        if route.is_empty() {
            format!("{}:q:{protocol}", self.prefix)
        } else {
            format!("{}:q:{protocol}:{route}", self.prefix)
        }
    }

    /// Queue stream → what it holds (`QueueMeta` JSON), so workers find queues.
    pub fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    /// `task#attempt` → where that call was enqueued.
    pub fn dispatched(&self, workflow_id: &str) -> String {
        format!("{}:disp:{workflow_id}", self.prefix)
    }

    /// `task#attempt` → outcome JSON: the record the scheduler reads.
    pub fn results(&self, workflow_id: &str) -> String {
        format!("{}:res:{workflow_id}", self.prefix)
    }

    /// Notifications of recorded outcomes (lossy is fine: `results` is the truth).
    pub fn done(&self) -> String {
        format!("{}:done", self.prefix)
    }

    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Node id → `active`, `lost` or `left`.
    pub fn node_state(&self) -> String {
        format!("{}:node_state", self.prefix)
    }

    pub fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    /// The nodes that held one entry and stopped (died) while holding it,
    /// in order. `history(stream, "")` is the prefix the reclaim script adds
    /// entry ids to.
    pub fn history(&self, stream: &str, entry_id: &str) -> String {
        format!("{stream}:hist:{entry_id}")
    }

    pub fn cancel_channel(&self) -> String {
        format!("{}:cancel", self.prefix)
    }

    /// One rate-limit window of one scope (`endpoint:NAME`, `model:NAME`):
    /// a sorted set of admitted calls by time. `window(..) + ":t"` holds each
    /// call's tokens and their sum.
    pub fn rate_window(&self, scope: &str, span_ms: u128) -> String {
        format!("{}:rl:{scope}:{span_ms}", self.prefix)
    }

    /// Ticket numbers for admitted calls.
    pub fn rate_tickets(&self) -> String {
        format!("{}:rl:seq", self.prefix)
    }

    /// Cluster-wide facts: the queue protocol version.
    pub fn cluster(&self) -> String {
        format!("{}:cluster", self.prefix)
    }
}

/// The field a call's records are kept under within its workflow.
pub fn call_field(task_id: &str, attempt: u32) -> String {
    format!("{task_id}#{attempt}")
}
