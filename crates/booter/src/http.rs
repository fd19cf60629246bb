//! Plain HTTP for iPXE (Triton's booter zone runs nginx on `/tftpboot` for this):
//! `GET /boot/<mac>.ipxe` (the node's script), `GET /os/<platform>/{vmlinuz,initrd}` and
//! the iPXE binaries (the paths of [`crate::files`]), and `GET /ping` for health. A path
//! outside what is served is 403, a missing one 404, a script CNAPI or NAPI cannot give
//! 502 (each with the reason in the body and a log line).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::io::ReaderStream;

use crate::files::{Files, NotServed, Target};
use crate::ipxe::Scripts;

/// What the handlers share.
pub struct Http {
    pub files: Files,
    pub scripts: Arc<Scripts>,
}

pub fn router(http: Arc<Http>) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .fallback(get(serve))
        .with_state(http)
}

async fn ping() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{\"ping\":\"pong\"}",
    )
        .into_response()
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

async fn serve(State(http): State<Arc<Http>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    match http.files.resolve(&path) {
        Ok(Target::Script(mac)) => match http.scripts.script(mac).await {
            Ok(script) => {
                tracing::info!(%mac, "iPXE script served");
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/plain")],
                    script,
                )
                    .into_response()
            }
            Err(e) => {
                tracing::warn!(%mac, reason = %e, "iPXE script not served");
                text(StatusCode::BAD_GATEWAY, format!("{path}: {e}\n"))
            }
        },
        Ok(Target::File(file)) => {
            let opened = match tokio::fs::File::open(&file).await {
                Ok(f) => f,
                Err(e) => return text(StatusCode::NOT_FOUND, format!("{path}: {e}\n")),
            };
            let len = opened.metadata().await.map(|m| m.len()).unwrap_or(0);
            tracing::info!(%path, bytes = len, "HTTP file sent");
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH, len.to_string()),
                ],
                Body::from_stream(ReaderStream::new(opened)),
            )
                .into_response()
        }
        Err(e @ NotServed::Missing(_)) => text(StatusCode::NOT_FOUND, format!("{e}\n")),
        Err(e @ NotServed::Outside(_)) => {
            tracing::info!(%path, "HTTP path outside what is served");
            text(StatusCode::FORBIDDEN, format!("{e}\n"))
        }
    }
}
