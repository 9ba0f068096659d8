//! keyward's domain: what a key is, how its secret looks and is hashed, which caller
//! may do what, and how a presented secret is judged. No transport and no SQL here.

#![forbid(unsafe_code)]

pub mod address;
pub mod cases;
pub mod credit;
pub mod crypto;
pub mod edge;
pub mod environment;
pub mod error;
pub mod event;
pub mod hold;
pub mod model;
pub mod page;
pub mod policy;
pub mod rate;
pub mod scope_query;
pub mod secret;
pub mod validate;
pub mod verify;
pub mod webhook;

pub use error::{Error, Violation};
