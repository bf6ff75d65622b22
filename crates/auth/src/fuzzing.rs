//! The body of the `auth_body` fuzz target (`fuzz/`), here so the stable
//! replay test runs exactly what libFuzzer does. The first byte picks the
//! request (user or key), the rest is its JSON body.

use crate::requests::{parse_body, NewKey, NewUser};
use gleitzeit_core::{ErrorCode, GzError};

/// Any body is either valid or refused with the code of its kind of fault;
/// nothing panics.
pub fn auth_body(data: &[u8]) {
    let Some((kind, body)) = data.split_first() else {
        return;
    };
    let outcome = if kind % 2 == 0 {
        parse_body::<NewUser>(body).and_then(|user| {
            let role = user.validate()?;
            // A valid user's role reads back as what was asked.
            assert_eq!(
                role.as_str(),
                user.role.trim().to_ascii_uppercase(),
                "{user:?}"
            );
            Ok(())
        })
    } else {
        parse_body::<NewKey>(body).and_then(|key| key.validate().map(drop))
    };
    if let Err(error) = outcome {
        check(&error);
    }
}

fn check(error: &GzError) {
    assert!(
        matches!(
            error.code,
            ErrorCode::MalformedRequest | ErrorCode::InvalidArgument
        ),
        "unexpected code {:?}: {}",
        error.code,
        error.message
    );
    assert!(error.hint.is_some(), "no hint: {}", error.message);
}
