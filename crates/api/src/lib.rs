//! The contract of the HTTP API: every request body, response body, view and
//! error body the server sends or accepts, as types. The server builds its
//! answers from them, the CLI prints them and reads them back from a server,
//! and `docs/openapi.json` (which the dashboard and the Python client are
//! tested against) is generated from their schemas. A field renamed here is
//! renamed everywhere at once, or a test says where it is still read.
//!
//! This crate knows records (core, store) but no runtime, server or
//! provider: views that need such data take it as plain values.

#![forbid(unsafe_code)]

pub mod auth;
pub mod error;
pub mod health;
pub mod schedules;
pub mod stats;
pub mod system;
pub mod views;
pub mod workflows;

pub use error::{error_json, DiagnosticBody, ErrorBody, ErrorView};
