//! MongoDB store: being written (issue 4).
use std::sync::Arc;

use super::Store;

pub async fn connect(_uri: &str, _db: &str) -> anyhow::Result<Arc<dyn Store>> {
    anyhow::bail!("MongoDB store not available in this build")
}
