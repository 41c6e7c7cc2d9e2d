//! The built web client (`CHAT_WEB_DIR`; `jobsphere-chat serve` defaults it to `web/dist` when
//! that holds a build) served at `/` as static files.
//!
//! Unknown `/api/…` paths keep their JSON 404; any other unknown path gets `index.html`, so the
//! client's own links survive a reload. Without a built client, every unknown path is the JSON
//! 404 as before.

use std::{
    convert::Infallible,
    path::{Path, PathBuf},
};

use axum::{
    Router,
    extract::Request,
    response::{IntoResponse, Response},
};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use crate::{config::Config, error::ApiError, state::AppState};

/// Where the client is: `CHAT_WEB_DIR`, if it holds an `index.html`.
pub fn dir(config: &Config) -> Option<PathBuf> {
    let dir = config.web_dir.clone()?;
    if dir.join("index.html").is_file() {
        Some(dir)
    } else {
        tracing::warn!(dir = %dir.display(), "CHAT_WEB_DIR has no index.html: no web client served");
        None
    }
}

/// Puts the client behind every path no route matched.
pub fn attach(router: Router<AppState>, config: &Config) -> Router<AppState> {
    let Some(dir) = dir(config) else { return router };
    tracing::info!(dir = %dir.display(), "serving the web client at /");
    router.fallback_service(service(&dir))
}

fn service(
    dir: &Path,
) -> impl tower::Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone + Send + Sync + 'static
{
    let files =
        ServeDir::new(dir).append_index_html_on_directories(true).fallback(ServeFile::new(dir.join("index.html")));
    tower::service_fn(move |req: Request| {
        let files = files.clone();
        async move {
            let path = req.uri().path();
            if path == "/api" || path.starts_with("/api/") {
                Ok(ApiError::NotFound("route").into_response())
            } else {
                files.oneshot(req).await.map(IntoResponse::into_response)
            }
        }
    })
}
