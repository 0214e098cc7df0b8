//! The request head sent upstream: the client's, made a valid HTTP/1.1
//! request for the backend (hop-by-hop headers dropped, framing settled,
//! `Host` from an HTTP/2 `:authority`), with the forwarding headers and
//! what authentication adds.

use std::net::IpAddr;

use http::header::{self, HeaderName};
use http::Version;
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType, Result};

use crate::forwarded::apply_forwarding;

/// What the head depends on besides the client's own head.
#[derive(Debug)]
pub struct HeadFacts<'a> {
    /// The client's address.
    pub client: Option<IpAddr>,
    /// `https` or `http`.
    pub proto: &'static str,
    /// Client headers removed (those the auth service sets).
    pub strip: &'a [HeaderName],
    /// Headers authentication adds.
    pub add: &'a [(HeaderName, http::HeaderValue)],
    /// The request-target when it differs from the client's.
    pub target: Option<&'a str>,
    /// The request has a body.
    pub has_body: bool,
    /// The proxy answered `Expect: 100-continue` itself.
    pub answered_continue: bool,
}

/// Hop-by-hop headers (RFC 9110 7.6.1) that never go upstream as sent.
const HOP_BY_HOP: [&str; 7] =
    ["keep-alive", "proxy-connection", "te", "trailer", "http2-settings", "proxy-authenticate", "proxy-authorization"];

/// Builds the upstream head from the client's.
pub fn upstream_head(client: &RequestHeader, facts: &HeadFacts<'_>) -> Result<Box<RequestHeader>> {
    let mut head = Box::new(client.clone());
    let from_h2 = client.version == Version::HTTP_2;
    head.set_version(Version::HTTP_11);
    let upgrade = is_upgrade(client);
    // Headers the client's Connection header names are hop-by-hop too.
    let nominated: Vec<HeaderName> = client
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| {
            !matches!(name.as_str(), "upgrade" | "host" | "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto")
        })
        .collect();
    for name in &nominated {
        head.remove_header(name);
    }
    if HOP_BY_HOP.iter().any(|name| head.headers.contains_key(*name)) {
        for name in HOP_BY_HOP {
            head.remove_header(name);
        }
    }
    head.remove_header(&header::CONNECTION);
    if upgrade {
        head.insert_header(header::CONNECTION, "upgrade")?;
    } else {
        head.remove_header(&header::UPGRADE);
    }
    if facts.answered_continue {
        head.remove_header(&header::EXPECT);
    }
    // Framing: a body without a length goes chunked; no body, no framing header.
    if facts.has_body && !head.headers.contains_key(header::CONTENT_LENGTH) {
        head.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    } else if head.headers.contains_key(header::TRANSFER_ENCODING) && !facts.has_body {
        head.remove_header(&header::TRANSFER_ENCODING);
    }
    if from_h2 || client.uri.authority().is_some() {
        // HTTP/2 has `:authority` instead of `Host`; HTTP/1.1 servers need `Host`.
        if let Some(authority) = client.uri.authority() {
            head.insert_header(header::HOST, authority.as_str())?;
        }
        let origin_form = facts.target.unwrap_or_else(|| client.uri.path_and_query().map_or("/", |p| p.as_str()));
        head.set_uri(parse_target(origin_form)?);
    } else if let Some(target) = facts.target {
        head.set_uri(parse_target(target)?);
    }
    apply_forwarding(&mut head, facts.client, facts.proto)?;
    for name in facts.strip {
        head.remove_header(name);
    }
    for (name, value) in facts.add {
        head.insert_header(name.clone(), value.clone())?;
    }
    Ok(head)
}

/// Whether the client asks to switch protocols (websocket).
pub fn is_upgrade(client: &RequestHeader) -> bool {
    client.version == Version::HTTP_11 && client.headers.contains_key(header::UPGRADE)
}

fn parse_target(target: &str) -> Result<http::Uri> {
    target.parse().map_err(|e| Error::because(ErrorType::InternalError, "rewriting the request-target", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HeadFacts<'static> {
        HeadFacts {
            client: Some("127.0.0.9".parse().unwrap()),
            proto: "http",
            strip: &[],
            add: &[],
            target: None,
            has_body: false,
            answered_continue: false,
        }
    }

    fn get(head: &RequestHeader, name: &str) -> Option<String> {
        head.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let mut req = RequestHeader::build("GET", b"/api/health", None).unwrap();
        req.insert_header("host", "api").unwrap();
        req.insert_header("connection", "keep-alive, x-secret").unwrap();
        req.insert_header("x-secret", "1").unwrap();
        req.insert_header("keep-alive", "timeout=5").unwrap();
        req.insert_header("te", "trailers").unwrap();
        let head = upstream_head(&req, &facts()).unwrap();
        for name in ["connection", "x-secret", "keep-alive", "te", "transfer-encoding"] {
            assert_eq!(get(&head, name), None, "{name}");
        }
        assert_eq!(get(&head, "host").as_deref(), Some("api"));
        assert_eq!(get(&head, "x-forwarded-for").as_deref(), Some("127.0.0.9"));
    }

    #[test]
    fn upgrades_keep_their_headers_and_bodies_without_length_go_chunked() {
        let mut req = RequestHeader::build("GET", b"/kubernetes-pod-ssh-proxy", None).unwrap();
        req.insert_header("connection", "Upgrade").unwrap();
        req.insert_header("upgrade", "websocket").unwrap();
        let head = upstream_head(&req, &facts()).unwrap();
        assert_eq!(get(&head, "connection").as_deref(), Some("upgrade"));
        assert_eq!(get(&head, "upgrade").as_deref(), Some("websocket"));

        let mut post = RequestHeader::build("POST", b"/launch", None).unwrap();
        post.set_version(Version::HTTP_2);
        post.set_uri("https://sky.example.com/launch?x=1".parse().unwrap());
        let head = upstream_head(&post, &HeadFacts { has_body: true, ..facts() }).unwrap();
        assert_eq!(get(&head, "transfer-encoding").as_deref(), Some("chunked"));
        assert_eq!(get(&head, "host").as_deref(), Some("sky.example.com"));
        assert_eq!(head.uri.to_string(), "/launch?x=1");
        assert_eq!(head.version, Version::HTTP_11);
    }
}
