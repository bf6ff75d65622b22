//! Authentication building blocks for `gleitzeit serve`: API keys, the one
//! permission matrix, and the auth API's request bodies with their rules. No
//! I/O: storing keys and users is the store's job, and the server asks this
//! crate what a key is, what a role may do and whether a request is valid.

#![forbid(unsafe_code)]

pub mod fuzzing;
pub mod keys;
pub mod requests;
pub mod roles;

pub use keys::{ApiKey, KeyError};
pub use roles::{Permission, Role};
