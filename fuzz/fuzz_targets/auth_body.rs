#![no_main]
//! Fuzz target `auth_body`: the auth API's request bodies; the body is shared
//! with the stable replay test (crates/auth/tests/fuzz_replay.rs).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gleitzeit_auth::fuzzing::auth_body(data);
});
