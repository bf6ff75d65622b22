//! `/api/v1/auth/…`: the caller, users, keys and the audit log. Request
//! bodies live with their validation rules in `gleitzeit-auth`.

use gleitzeit_store::{AuditEntry, KeyRecord, UserRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use gleitzeit_auth::requests::{NewKey, NewUser};

/// `GET /api/v1/auth/whoami`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub user: String,
    /// ADMIN, OPERATOR, USER or SERVICE
    pub role: String,
    /// The key's public id; null when the server runs without auth.
    pub key_id: Option<String>,
    pub auth_required: bool,
}

/// A user of the server.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub name: String,
    pub email: Option<String>,
    /// ADMIN, OPERATOR, USER or SERVICE
    pub role: String,
    pub disabled: bool,
    pub created_ms: i64,
}

impl From<&UserRecord> for UserView {
    fn from(user: &UserRecord) -> UserView {
        UserView {
            name: user.name.clone(),
            email: user.email.clone(),
            role: user.role.clone(),
            disabled: user.disabled,
            created_ms: user.created_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
}

/// A key as lists show it: never its text or hash.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub user: String,
    /// A role narrower than the user's, if the key was made with one.
    pub role: Option<String>,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

impl From<&KeyRecord> for KeyView {
    fn from(key: &KeyRecord) -> KeyView {
        KeyView {
            id: key.id.clone(),
            name: key.name.clone(),
            user: key.user.clone(),
            role: key.role.clone(),
            created_ms: key.created_ms,
            expires_ms: key.expires_ms,
            revoked_ms: key.revoked_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyQuery {
    /// Only this user's keys.
    pub user: Option<String>,
}

/// `POST /api/v1/auth/keys`: the key, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// The key itself: shown this once, stored only as a hash.
    pub key: String,
    pub record: KeyView,
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    pub seq: u64,
    pub at_ms: i64,
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    /// The client's address, when known.
    pub client: Option<String>,
}

impl From<&AuditEntry> for AuditEntryView {
    fn from(entry: &AuditEntry) -> AuditEntryView {
        AuditEntryView {
            seq: entry.seq,
            at_ms: entry.at_ms,
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            target: entry.target.clone(),
            outcome: entry.outcome.clone(),
            client: entry.client.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditLog {
    pub entries: Vec<AuditEntryView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub after: Option<u64>,
    pub limit: Option<usize>,
}
