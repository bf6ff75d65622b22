//! The user and key operations that both the API and the local CLI
//! (`gleitzeit auth …` without a server) perform, and the audit log they
//! write to.

use crate::{ApiKey, Role};
use gleitzeit_core::{ErrorCode, GzError};
use gleitzeit_store::{now_ms, AuditEntry, KeyRecord, Store, UserRecord};
use std::net::IpAddr;

async fn find_user(store: &dyn Store, name: &str) -> Result<Option<UserRecord>, GzError> {
    Ok(store.users().await?.into_iter().find(|u| u.name == name))
}

pub use crate::requests::{parse_role, valid_name};

pub async fn create_user(
    store: &dyn Store,
    name: &str,
    email: Option<String>,
    role: Role,
) -> Result<UserRecord, GzError> {
    valid_name(name)?;
    if find_user(store, name).await?.is_some() {
        return Err(GzError::new(
            ErrorCode::InvalidArgument,
            format!("user `{name}` exists already"),
        ));
    }
    let user = UserRecord {
        name: name.to_string(),
        email,
        role: role.as_str().to_string(),
        disabled: false,
        created_ms: now_ms(),
    };
    store.put_user(&user).await?;
    Ok(user)
}

pub async fn disable_user(store: &dyn Store, name: &str) -> Result<UserRecord, GzError> {
    let mut user = find_user(store, name)
        .await?
        .ok_or_else(|| GzError::new(ErrorCode::InvalidArgument, format!("no user `{name}`")))?;
    user.disabled = true;
    store.put_user(&user).await?;
    Ok(user)
}

/// Makes a key for a user; the text is returned once and never stored.
pub async fn create_key(
    store: &dyn Store,
    user: &str,
    name: &str,
    role: Option<Role>,
    expires_days: Option<u32>,
) -> Result<(ApiKey, KeyRecord), GzError> {
    let owner = find_user(store, user)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| {
            GzError::new(
                ErrorCode::InvalidArgument,
                format!("no active user `{user}`"),
            )
            .with_hint("Create it first: gleitzeit auth users create NAME --role ROLE")
        })?;
    if let (Some(role), Some(user_role)) = (role, Role::parse(&owner.role)) {
        // A key can narrow its user's role, never widen it.
        let rank = |r: Role| match r {
            Role::Admin => 3,
            Role::Operator => 2,
            Role::User | Role::Service => 1,
        };
        if rank(role) > rank(user_role) {
            return Err(GzError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "a key of {user} ({}) cannot have role {}",
                    user_role.as_str(),
                    role.as_str()
                ),
            ));
        }
    }
    let key = ApiKey::generate()?;
    let now = now_ms();
    let record = KeyRecord {
        id: key.public_id(),
        name: name.to_string(),
        user: user.to_string(),
        role: role.map(|r| r.as_str().to_string()),
        hash: key.hash(),
        created_ms: now,
        expires_ms: expires_days.map(|d| now + i64::from(d) * 86_400_000),
        revoked_ms: None,
    };
    store.put_key(&record).await?;
    Ok((key, record))
}

pub async fn revoke_key(store: &dyn Store, id: &str) -> Result<KeyRecord, GzError> {
    let mut key = store
        .keys()
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| GzError::new(ErrorCode::InvalidArgument, format!("no key `{id}`")))?;
    if key.revoked_ms.is_none() {
        key.revoked_ms = Some(now_ms());
        store.put_key(&key).await?;
    }
    Ok(key)
}

/// `auth init`: the first ADMIN and their key, only while no user exists.
pub async fn init(store: &dyn Store, name: &str) -> Result<(ApiKey, KeyRecord), GzError> {
    if !store.users().await?.is_empty() {
        return Err(GzError::new(
            ErrorCode::InvalidArgument,
            "authentication is already set up (users exist)",
        )
        .with_hint("An ADMIN makes more keys: gleitzeit auth keys create --user NAME"));
    }
    create_user(store, name, None, Role::Admin).await?;
    let made = create_key(store, name, "initial admin key", None, None).await?;
    audit(store, Some(name), "auth.init", Some(&made.1.id), "ok", None).await;
    Ok(made)
}

pub async fn audit(
    store: &dyn Store,
    actor: Option<&str>,
    action: &str,
    target: Option<&str>,
    outcome: &str,
    client: Option<IpAddr>,
) {
    let entry = AuditEntry {
        seq: 0,
        at_ms: now_ms(),
        actor: actor.map(String::from),
        action: action.into(),
        target: target.map(String::from),
        outcome: outcome.into(),
        client: client.map(|c| c.to_string()),
    };
    if let Err(error) = store.audit(&entry).await {
        tracing::warn!("could not write the audit log: {error}");
    }
}
