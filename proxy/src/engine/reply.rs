//! Local replies: JSON bodies shaped like the SkyPilot server's own errors,
//! `{"detail": "..."}`, which the sky CLI prints (and retries on 503).

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::Result;

use super::downstream::Downstream;

/// The text of the JSON 503 the SkyPilot client retries.
pub const UNAVAILABLE: &str = "No API server is available right now; please retry shortly.";

/// The body of a local error reply: `{"detail": "..."}`.
pub fn detail_body(detail: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "detail": detail }).to_string())
}

/// Writes a complete JSON error response. `keep_alive`: the client
/// connection may serve another request afterwards (the request body, if
/// any, was read or will be drained).
pub async fn json(
    down: &mut Downstream<'_>,
    status: u16,
    detail: &str,
    extra: &[(String, String)],
    keep_alive: bool,
) -> Result<()> {
    let body = detail_body(detail);
    let mut header = ResponseHeader::build(status, Some(4 + extra.len()))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    if status == 503 && !extra.iter().any(|(name, _)| name.eq_ignore_ascii_case("retry-after")) {
        header.insert_header(http::header::RETRY_AFTER, "5")?;
    }
    for (name, value) in extra {
        header.append_header(name.clone(), value.as_str())?;
    }
    if !keep_alive {
        down.close_after();
    }
    down.write_head(Box::new(header)).await?;
    down.write_body(body, true).await
}
