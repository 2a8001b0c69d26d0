//! [`Reply`]: what the server answers, built by the vendor modules without
//! knowing axum, and written out with event streams cut into small frames.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

/// A reply body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ReplyBody {
    Json(Value),
    Text { content_type: String, text: String },
    EventStream(String),
}

/// One answer: status, extra headers, body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ReplyBody,
}

/// How event streams are written: in frames of `frame_size` bytes with a
/// yield (a flush) between them, optionally cut off halfway.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Framing {
    pub frame_size: usize,
    pub frame_pause: Duration,
    pub truncate: bool,
}

impl Reply {
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: ReplyBody::Json(body),
        }
    }

    pub(crate) fn text(
        status: u16,
        content_type: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: ReplyBody::Text {
                content_type: content_type.into(),
                text: text.into(),
            },
        }
    }

    pub(crate) fn event_stream(text: String) -> Self {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: ReplyBody::EventStream(text),
        }
    }

    pub(crate) fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub(crate) fn into_response(self, framing: Framing) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (content_type, body) = match self.body {
            ReplyBody::Json(value) => (
                "application/json".to_string(),
                Body::from(value.to_string()),
            ),
            ReplyBody::Text { content_type, text }
                if content_type.starts_with("text/event-stream") =>
            {
                (content_type, framed(text, framing))
            }
            ReplyBody::Text { content_type, text } => (content_type, Body::from(text)),
            ReplyBody::EventStream(text) => {
                ("text/event-stream".to_string(), framed(text, framing))
            }
        };
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&content_type) {
            headers.insert(axum::http::header::CONTENT_TYPE, value);
        }
        if status.is_success() && content_type.starts_with("text/event-stream") {
            headers.insert(
                axum::http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            );
        }
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        }
        response
    }
}

/// The body written frame by frame (cut off halfway when truncating).
fn framed(text: String, framing: Framing) -> Body {
    let mut bytes = Bytes::from(text);
    if framing.truncate {
        bytes.truncate(bytes.len() / 2);
    }
    let size = framing.frame_size.max(1);
    let frames: Vec<Bytes> = (0..bytes.len())
        .step_by(size)
        .map(|start| bytes.slice(start..(start + size).min(bytes.len())))
        .collect();
    let pause = framing.frame_pause;
    let stream = futures::stream::iter(frames).then(move |frame| async move {
        if pause.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(pause).await;
        }
        Ok::<_, std::io::Error>(frame)
    });
    Body::from_stream(stream)
}
