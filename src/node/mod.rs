//! One node, step by step: [`build`] turns the configuration into backends, state and router
//! (choosing in-process or Redis once), [`serve`] runs it until the shutdown signal, [`drain`]
//! owns the SIGTERM sequence, [`background`] the periodic upkeep.

pub mod background;
pub mod build;
pub mod drain;
pub mod serve;

pub use build::{Node, build, open_store};
pub use serve::run;
