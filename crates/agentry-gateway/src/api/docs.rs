//! The API's documentation, served: the OpenAPI document as JSON and the
//! Swagger UI page with its vendored assets (no CDN, so `/docs` works
//! offline).
//!
//! Apart from `system.rs` because the document lists the handlers it
//! describes: a handler that served the document would sit in a module the
//! document imports, and the two would import each other. These routes
//! are not in the document.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::PathParam;
use crate::problem::ApiError;

/// `GET /openapi.json`: the document as `openapi.rs` renders it, once per
/// process.
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_json(),
    )
        .into_response()
}

const DOCS_HTML: &str = include_str!("../../assets/docs.html");
const SWAGGER_JS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_CSS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui.css");
const FAVICON: &[u8] = include_bytes!("../../assets/swagger-ui/favicon-32x32.png");

/// `GET /docs`: the Swagger UI page over `/openapi.json`, sent with
/// `no-cache` so a browser revalidates it after an upgrade.
pub async fn docs() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DOCS_HTML,
    )
        .into_response()
}

/// `GET /docs/{file}`: one of the page's three vendored files, cached for a
/// day; any other name is a 404 problem.
pub async fn docs_asset(PathParam(file): PathParam) -> Result<Response, ApiError> {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        "swagger-ui-bundle.js" => (SWAGGER_JS, "text/javascript; charset=utf-8"),
        "swagger-ui.css" => (SWAGGER_CSS, "text/css; charset=utf-8"),
        "favicon-32x32.png" => (FAVICON, "image/png"),
        _ => return Err(ApiError::NotFound("no such docs asset".to_string())),
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response())
}
