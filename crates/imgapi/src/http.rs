//! Plain HTTP for compute nodes: `GET /images/:uuid/file` streams an image's file
//! (`curl -o file http://imgapi:8081/images/$uuid/file`), `GET /images/:uuid` gives the
//! manifest as IMGAPI's JSON, `GET /ping` answers when IMGAPI is up. Errors are
//! Triton's REST body `{"code": "...", "message": "..."}`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::io::ReaderStream;

use crate::app::Imgapi;
use crate::error::Error;
use crate::server::FILE_CHUNK_BYTES;
use triton_common::status::ToStatus;

/// The HTTP listener with the gRPC server's allow list (`[grpc] allow_from`): anyone
/// else's connection is reset at accept.
pub struct Admitted {
    pub inner: tokio::net::TcpListener,
    pub config: triton_common::grpc::ServerConfig,
}

impl axum::serve::Listener for Admitted {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            if triton_common::grpc::admit(&self.config, &stream, "HTTP") {
                return (stream, addr);
            }
            let _ = stream.set_zero_linger();
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

pub fn router(app: Arc<Imgapi>) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/images/{uuid}", get(get_image))
        .route("/images/{uuid}/file", get(get_image_file))
        .with_state(app)
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn error(e: Error) -> Response {
    if e.http_status() >= 500 {
        tracing::warn!(error = %e.message(), "HTTP request failed");
    }
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(
        status,
        &serde_json::json!({"code": e.name(), "message": e.message()}),
    )
}

async fn ping(State(app): State<Arc<Imgapi>>) -> Response {
    match app.ping().await {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({"ping": "pong"})),
        Err(e) => error(e),
    }
}

async fn get_image(State(app): State<Arc<Imgapi>>, Path(uuid): Path<String>) -> Response {
    match app.get_image(&uuid).await {
        Ok(m) => json(StatusCode::OK, &m.to_api_json()),
        Err(e) => error(e),
    }
}

async fn get_image_file(State(app): State<Arc<Imgapi>>, Path(uuid): Path<String>) -> Response {
    let (manifest, file) = match app.open_file(&uuid).await {
        Ok(found) => found,
        Err(e) => return error(e),
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return error(Error::io("cannot stat the image file")(e)),
    };
    let sha1 = manifest
        .files
        .first()
        .map(|f| f.sha1.clone())
        .unwrap_or_default();
    let body = Body::from_stream(ReaderStream::with_capacity(file, FILE_CHUNK_BYTES));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    if let Ok(v) = header::HeaderValue::from_str(&sha1) {
        headers.insert("x-image-sha1", v);
    }
    response
}
