//! Authentication building blocks for `gleitzeit serve`: API keys and the one
//! permission matrix. No I/O: storing keys and users is the store's job, and
//! the server asks this crate what a key is and what a role may do.
//!
//! Not wired into the server yet (issue 6): this is the part that needs no
//! store or HTTP, with its tests.

pub mod keys;
pub mod roles;

pub use keys::{ApiKey, KeyError};
pub use roles::{Permission, Role};
