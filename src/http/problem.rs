//! Errors at the HTTP edge: one `Problem` type rendered as RFC 9457
//! `application/problem+json`, naming the field and the reason where there
//! is one.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::store::WriteError;

pub type Body = Full<Bytes>;

pub const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

#[derive(Debug)]
pub struct Problem {
    pub status: u16,
    /// The last part of the `type` URI, `urn:shortd:problem:{slug}`.
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// The request field at fault and why.
    pub field: Option<Box<(String, String)>>,
    pub retry_after: Option<u64>,
    pub allow: Option<&'static str>,
    pub www_authenticate: bool,
}

impl Serialize for Problem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", &format_args!("urn:shortd:problem:{}", self.slug))?;
        m.serialize_entry("title", self.title)?;
        m.serialize_entry("status", &self.status)?;
        m.serialize_entry("detail", &self.detail)?;
        if let Some(fr) = &self.field {
            m.serialize_entry("field", &fr.0)?;
            m.serialize_entry("reason", &fr.1)?;
        }
        m.end()
    }
}

impl Problem {
    pub fn new(status: StatusCode, slug: &'static str, title: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status: status.as_u16(),
            slug,
            title,
            detail: detail.into(),
            field: None,
            retry_after: None,
            allow: None,
            www_authenticate: false,
        }
    }

    /// A 400 about one field of the request.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Problem {
        let (field, reason) = (field.into(), reason.into());
        let mut p = Problem::new(StatusCode::BAD_REQUEST, "invalid-request", "Invalid request", format!("{field}: {reason}"));
        p.field = Some(Box::new((field, reason)));
        p
    }

    pub fn with_field(mut self, field: &str, reason: &str) -> Problem {
        self.field = Some(Box::new((field.into(), reason.into())));
        self
    }

    pub fn not_found(what: &str) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", format!("{what} does not exist"))
    }

    pub fn gone(code: &str) -> Problem {
        Problem::new(StatusCode::GONE, "gone", "Gone", format!("link {code} was deleted"))
    }

    pub fn method_not_allowed(allow: &'static str) -> Problem {
        let mut p =
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", format!("allowed methods: {allow}"));
        p.allow = Some(allow);
        p
    }

    pub fn too_large(field: &str, limit: usize) -> Problem {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Payload too large",
            format!("the request body is larger than {limit} bytes"),
        )
        .with_field(field, &format!("larger than {limit} bytes"))
    }

    pub fn too_many_requests(wait: std::time::Duration) -> Problem {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut p =
            Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests", format!("slow down; retry in {secs} s"));
        p.retry_after = Some(secs.max(1));
        p
    }

    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        resp.headers_mut().insert(header::CONTENT_TYPE, PROBLEM_JSON);
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.www_authenticate {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(allow) = self.allow {
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}

impl From<WriteError> for Problem {
    fn from(e: WriteError) -> Problem {
        let detail = e.to_string();
        match e {
            WriteError::Taken => {
                Problem::new(StatusCode::CONFLICT, "alias-taken", "Conflict", detail).with_field("alias", "is already taken")
            }
            WriteError::NotFound => Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail),
            WriteError::Gone => Problem::new(StatusCode::GONE, "gone", "Gone", detail),
            WriteError::IdempotencyMismatch => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-mismatch", "Idempotency-Key reused", detail)
                    .with_field("Idempotency-Key", "was used earlier with a different request body")
            }
            WriteError::Exhausted => Problem::new(StatusCode::INSUFFICIENT_STORAGE, "exhausted", "Code space exhausted", detail),
            WriteError::DiskFull(_) => Problem::new(StatusCode::INSUFFICIENT_STORAGE, "disk-full", "Insufficient storage", detail),
            WriteError::Unavailable(_) => {
                let mut p = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable", detail);
                p.retry_after = Some(5);
                p
            }
        }
    }
}

/// The static body of a redirect-path 404, so a miss allocates nothing.
pub const NOT_FOUND_BODY: &[u8] =
    br#"{"type":"urn:shortd:problem:not-found","title":"Not found","status":404,"detail":"no link has this code"}"#;
/// The static body of a redirect-path 503 (cluster: no holder answered).
pub const UNAVAILABLE_BODY: &[u8] = br#"{"type":"urn:shortd:problem:unavailable","title":"Service unavailable","status":503,"detail":"no node that holds this link answered; retry shortly"}"#;
/// The static body of a redirect-path 410.
pub const GONE_BODY: &[u8] =
    br#"{"type":"urn:shortd:problem:gone","title":"Gone","status":410,"detail":"this link was deleted, disabled, has expired or has used up its clicks"}"#;
