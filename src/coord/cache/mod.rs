pub mod local;
pub mod redis;
