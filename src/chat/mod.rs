//! The chat domain: records, input rules, and the service every transport calls.
pub mod model;
pub mod service;
pub mod validate;
