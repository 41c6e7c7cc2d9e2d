pub mod redis;
pub mod tracker;

pub use tracker::*;
