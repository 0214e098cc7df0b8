//! Local replies: JSON bodies shaped like the SkyPilot server's own errors,
//! `{"detail": "..."}`, which the sky CLI prints (and retries on 503).

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// Writes a complete JSON error response.
pub async fn json(session: &mut Session, status: u16, detail: &str, extra: &[(&str, &str)]) -> Result<()> {
    let body = Bytes::from(serde_json::json!({ "detail": detail }).to_string());
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    for (name, value) in extra {
        header.insert_header(name.to_string(), value.to_string())?;
    }
    session.set_keepalive(None);
    session.write_response_header(Box::new(header), false).await?;
    session.write_response_body(Some(body), true).await
}
