//! One node: how it is built from its configuration and how it runs and drains.
pub mod build;
pub mod in_flight;

pub use build::{AppState, open_store, run};
