//! What the auth API accepts in its request bodies, and the rules each field
//! must meet. Here rather than in the server so the rules have one home (the
//! CLI applies them too) and the bodies can be fuzzed without a server.

use crate::Role;
use gleitzeit_core::{ErrorCode, GzError};
use serde::Deserialize;

/// `POST /api/v1/auth/users`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub email: Option<String>,
    /// ADMIN, OPERATOR, USER or SERVICE
    pub role: String,
}

/// `POST /api/v1/auth/keys`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub user: String,
    pub name: Option<String>,
    /// Narrower than the user's role, if given.
    pub role: Option<String>,
    /// Days until it expires; never when absent.
    pub expires_days: Option<u32>,
}

impl NewUser {
    /// The user's role, once every field is valid.
    pub fn validate(&self) -> Result<Role, GzError> {
        valid_name(&self.name)?;
        if let Some(email) = &self.email {
            valid_email(email)?;
        }
        parse_role(&self.role)
    }
}

impl NewKey {
    /// The key's own role (if it narrows its user's), once every field is valid.
    pub fn validate(&self) -> Result<Option<Role>, GzError> {
        valid_name(&self.user)?;
        if let Some(name) = &self.name {
            valid_label(name)?;
        }
        if self.expires_days == Some(0) {
            return Err(GzError::new(
                ErrorCode::InvalidArgument,
                "`expires_days: 0` would make a key that never works",
            )
            .with_hint("Give at least 1 day, or leave it out for a key that does not expire."));
        }
        self.role.as_deref().map(parse_role).transpose()
    }
}

/// A body as one of the request types, or GZ6006 (malformed request).
pub fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, GzError> {
    serde_json::from_slice(body).map_err(|e| {
        GzError::new(ErrorCode::MalformedRequest, format!("bad JSON body: {e}"))
            .with_hint("Send a JSON object with the fields the API reference lists.")
    })
}

/// User names appear in keys' records, audit lines and URLs.
pub fn valid_name(name: &str) -> Result<(), GzError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(GzError::new(
            ErrorCode::InvalidArgument,
            format!("`{name}` is not a valid user name"),
        )
        .with_hint("Use 1–64 letters, digits, `_`, `-`, `.` or `@`."))
    }
}

pub fn parse_role(text: &str) -> Result<Role, GzError> {
    Role::parse(text).ok_or_else(|| {
        GzError::new(ErrorCode::InvalidArgument, format!("unknown role `{text}`"))
            .with_hint("Roles: ADMIN, OPERATOR, USER, SERVICE.")
    })
}

fn valid_email(email: &str) -> Result<(), GzError> {
    let ok = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(GzError::new(
            ErrorCode::InvalidArgument,
            format!("`{email}` is not an email address"),
        )
        .with_hint("Give it as name@example.org, or leave it out."))
    }
}

/// Key names are labels for people: any text, but one short line.
fn valid_label(name: &str) -> Result<(), GzError> {
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(GzError::new(
            ErrorCode::InvalidArgument,
            "a key name must be 1–100 characters on one line",
        )
        .with_hint("Name keys after what uses them, e.g. \"CI pipeline\"."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked_field_by_field() {
        let user: NewUser =
            parse_body(br#"{"name": "ana", "email": "ana@example.org", "role": "operator"}"#)
                .unwrap();
        assert_eq!(user.validate().unwrap(), Role::Operator);
        for (body, code, words) in [
            (
                &br#"{"name": "ana", "role": "USER", "admin": true}"#[..],
                ErrorCode::MalformedRequest,
                "unknown field `admin`",
            ),
            (
                br#"{"name": "ana"}"#,
                ErrorCode::MalformedRequest,
                "missing field `role`",
            ),
            (br#"[1, 2]"#, ErrorCode::MalformedRequest, "bad JSON body"),
            (
                br#"{"name": "a b", "role": "USER"}"#,
                ErrorCode::InvalidArgument,
                "not a valid user name",
            ),
            (
                br#"{"name": "ana", "role": "ROOT"}"#,
                ErrorCode::InvalidArgument,
                "unknown role `ROOT`",
            ),
            (
                br#"{"name": "ana", "role": "USER", "email": "nobody"}"#,
                ErrorCode::InvalidArgument,
                "not an email address",
            ),
        ] {
            let err = parse_body::<NewUser>(body)
                .and_then(|u| u.validate().map(drop))
                .unwrap_err();
            assert_eq!(err.code, code, "{}", err.message);
            assert!(err.message.contains(words), "{}", err.message);
            assert!(err.hint.is_some(), "{}", err.message);
        }
    }

    #[test]
    fn key_bodies_refuse_typos_and_keys_that_never_work() {
        let key: NewKey = parse_body(br#"{"user": "ana", "expires_days": 30}"#).unwrap();
        assert_eq!(key.validate().unwrap(), None);
        // A misspelt expiry must not make a key that never expires.
        let err = parse_body::<NewKey>(br#"{"user": "ana", "expire_days": 30}"#).unwrap_err();
        assert!(
            err.message.contains("unknown field `expire_days`"),
            "{}",
            err.message
        );
        for body in [
            &br#"{"user": "ana", "expires_days": 0}"#[..],
            br#"{"user": "ana", "name": "two\nlines"}"#,
            br#"{"user": "ana", "role": "nobody"}"#,
        ] {
            let err = parse_body::<NewKey>(body)
                .and_then(|k| k.validate())
                .unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{}", err.message);
        }
        let err = parse_body::<NewKey>(br#"{"user": "ana", "expires_days": -1}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedRequest);
    }
}
