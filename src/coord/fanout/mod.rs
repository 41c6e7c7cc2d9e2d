pub mod socketio;

pub use socketio::*;
