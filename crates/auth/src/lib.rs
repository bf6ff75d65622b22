//! Authentication building blocks for `gleitzeit serve`: API keys, the one
//! permission matrix, the auth API's request bodies with their rules, what a
//! role may submit (`policy`), and the user and key operations with their
//! audit log (`admin`, through the store's trait; the server and the local
//! CLI both perform them). The server asks this crate what a key is, what a
//! role may do and whether a request is valid; transport is the server's.

#![forbid(unsafe_code)]

pub mod admin;
pub mod fuzzing;
pub mod keys;
pub mod policy;
pub mod requests;
pub mod roles;

pub use keys::{ApiKey, KeyError};
pub use roles::{Permission, Role};
