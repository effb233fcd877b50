//! The FaaS domain as plain serde types: what a function is, how it scales, how it is reached.
//!
//! These types are shared with the browser (the register form and the pages render them), so
//! nothing here may depend on the server-only crates (`sqlx`, `kube`, `axum`).
//!
//! One file per domain; everything is re-exported here, so callers name `model::FunctionSpec`.

mod account;
mod async_call;
mod function;
mod instance;
mod trigger;
mod usage;

pub use account::*;
pub use async_call::*;
pub use function::*;
pub use instance::*;
pub use trigger::*;
pub use usage::*;

use serde::{Deserialize, Serialize};

/// One invalid field of a request: the field's path (`resources.cpu`, `env.MY VAR`) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Dotted path of the field in the JSON body (the form field for the UI).
    pub field: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl FieldError {
    /// A field error with the given path and message.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), message: message.into() }
    }
}
