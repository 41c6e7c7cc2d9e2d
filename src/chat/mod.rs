//! The chat domain: records, input rules, typed answers, and the service every transport calls.
pub mod model;
pub mod responses;
pub mod service;
pub mod validate;

pub use service::ChatService;
