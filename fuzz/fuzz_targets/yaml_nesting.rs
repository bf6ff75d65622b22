#![no_main]
//! Fuzz target `yaml_nesting`: deep nesting and alias expansion; the body is
//! shared with the stable replay test (crates/core/tests/fuzz_replay.rs).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gleitzeit_core::fuzzing::yaml_nesting(data);
});
