//! The `auth_body` fuzz target on the stable toolchain: every file of
//! `fuzz/corpus/auth_body`, then random bodies built from the fields the
//! requests know, through the same body `cargo fuzz` runs. Any panic fails.

use gleitzeit_auth::fuzzing::auth_body;
use proptest::prelude::*;
use std::path::PathBuf;

#[test]
fn corpus_replays_without_panics() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/auth_body");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        auth_body(&std::fs::read(entry.path()).unwrap());
        files += 1;
    }
    assert!(files >= 5, "fuzz/corpus/auth_body holds {files} files");
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("name".to_string()),
        Just("email".to_string()),
        Just("role".to_string()),
        Just("user".to_string()),
        Just("expires_days".to_string()),
        "[a-z_]{1,12}",
    ]
}

fn value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::json!("ADMIN")),
        Just(serde_json::json!("user")),
        Just(serde_json::json!("ana@example.org")),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
        ".{0,70}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
    ]
}

proptest! {
    #[test]
    fn random_bodies_are_accepted_or_refused_with_a_code(
        kind in 0u8..2,
        fields in proptest::collection::vec((field(), value()), 0..6),
    ) {
        let object: serde_json::Map<String, serde_json::Value> = fields.into_iter().collect();
        let mut data = vec![kind];
        data.extend(serde_json::to_vec(&object).unwrap());
        auth_body(&data);
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        auth_body(&data);
    }
}
