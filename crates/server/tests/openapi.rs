//! `docs/openapi.json` is the API's contract as checked in: the dashboard's
//! and the Python client's contract tests read it. It must equal the document
//! the server generates from its types, or those tests would check against
//! a stale contract.
//!
//! After changing a type of `gleitzeit-api` or a handler's annotation,
//! refresh the file and review its diff:
//!
//!     UPDATE_EXPECT=1 cargo test -p gleitzeit-server --test openapi

#[test]
fn the_checked_in_document_is_the_generated_one() {
    let generated = serde_json::to_string_pretty(&gleitzeit_server::openapi())
        .expect("the document serializes");
    expect_test::expect_file!["../../../docs/openapi.json"].assert_eq(&format!("{generated}\n"));
}
