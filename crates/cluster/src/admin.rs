//! What operators ask of a cluster: its nodes and its dead letters.

use crate::dispatch::read_nodes;
use crate::keys::{call_field, Keys};
use crate::protocol::{DeadLetter, NodeInfo};
use crate::{connect, ClusterError};
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::time::Duration;

/// A short-lived handle for admin commands.
pub struct Admin {
    conn: ConnectionManager,
    keys: Keys,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("prefix", &self.keys.prefix())
            .finish()
    }
}

impl Admin {
    pub async fn connect(url: &str, prefix: &str) -> Result<Admin, ClusterError> {
        Ok(Admin {
            conn: connect(url, Some(Duration::from_secs(10))).await?,
            keys: Keys::new(prefix),
        })
    }

    pub fn from_connection(conn: ConnectionManager, prefix: &str) -> Admin {
        Admin {
            conn,
            keys: Keys::new(prefix),
        }
    }

    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClusterError> {
        read_nodes(&mut self.conn.clone(), &self.keys).await
    }

    /// A node by full id or unique prefix.
    pub async fn node(&self, id: &str) -> Result<NodeInfo, ClusterError> {
        let nodes = self.nodes().await?;
        if let Some(node) = nodes.iter().find(|n| n.id == id) {
            return Ok(node.clone());
        }
        let mut matching = nodes.into_iter().filter(|n| n.id.starts_with(id));
        match (matching.next(), matching.next()) {
            (Some(node), None) => Ok(node),
            _ => Err(ClusterError::NodeNotFound(id.to_string())),
        }
    }

    /// Dead letters, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, ClusterError> {
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.dead())
            .query_async(&mut self.conn.clone())
            .await?;
        let mut letters: Vec<DeadLetter> = all
            .into_iter()
            .filter_map(|(id, text)| match serde_json::from_str(&text) {
                Ok(letter) => Some(letter),
                Err(e) => {
                    tracing::warn!("unreadable dead letter {id}: {e}");
                    None
                }
            })
            .collect();
        letters.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then(a.id.cmp(&b.id)));
        Ok(letters)
    }

    async fn dead_letter(&self, id: &str) -> Result<DeadLetter, ClusterError> {
        let letters = self.dead_letters().await?;
        if let Some(letter) = letters.iter().find(|l| l.id == id) {
            return Ok(letter.clone());
        }
        let mut matching = letters.into_iter().filter(|l| l.id.starts_with(id));
        match (matching.next(), matching.next()) {
            (Some(letter), None) => Ok(letter),
            _ => Err(ClusterError::DeadLetterNotFound(id.to_string())),
        }
    }

    /// Forgets a dead letter.
    pub async fn drop_letter(&self, id: &str) -> Result<DeadLetter, ClusterError> {
        let letter = self.dead_letter(id).await?;
        let _: () = redis::cmd("HDEL")
            .arg(self.keys.dead())
            .arg(&letter.id)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(letter)
    }

    /// Takes a dead letter off the list and clears what the cluster recorded
    /// for its call, so the task runs again when its workflow is resumed. An
    /// entry that names no task (it was unreadable) cannot be retried.
    pub async fn retry_letter(&self, id: &str) -> Result<DeadLetter, ClusterError> {
        let letter = self.dead_letter(id).await?;
        let (Some(workflow_id), Some(task_id), Some(attempt)) =
            (&letter.workflow_id, &letter.task_id, letter.attempt)
        else {
            return Err(ClusterError::NotRetryable {
                id: letter.id,
                reason: letter.reason,
            });
        };
        let field = call_field(task_id, attempt);
        let _: () = redis::pipe()
            .hdel(self.keys.results(workflow_id), &field)
            .ignore()
            .hdel(self.keys.dispatched(workflow_id), &field)
            .ignore()
            .hdel(self.keys.dead(), &letter.id)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(letter)
    }
}
