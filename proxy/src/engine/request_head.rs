//! The request head sent upstream, written straight from the client's head
//! into wire bytes (no copy of the head is built): HTTP/1.1, hop-by-hop
//! headers dropped, framing settled, `Host` from an HTTP/2 `:authority`,
//! the forwarding headers set and client-supplied identity headers
//! stripped, plus what authentication adds.

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName};
use http::Version;
use pingora::http::RequestHeader;

use crate::forwarded::IDENTITY_HEADERS;

/// What the head depends on besides the client's own head.
#[derive(Debug)]
pub struct HeadFacts<'a> {
    /// The client's address, as text.
    pub client: Option<&'a [u8]>,
    /// `https` or `http`.
    pub proto: &'static str,
    /// Client headers removed (those the auth service sets).
    pub strip: &'a [HeaderName],
    /// Headers authentication adds.
    pub add: &'a [(HeaderName, http::HeaderValue)],
    /// The request-target when it differs from the client's.
    pub target: Option<&'a str>,
    /// The body is sent chunked (it has no declared length).
    pub chunked: bool,
    /// The proxy answered `Expect: 100-continue` itself.
    pub answered_continue: bool,
}

/// The head cannot be sent (a target with bytes HTTP/1.1 forbids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTarget;

/// Headers never forwarded as the client sent them: hop-by-hop ones (RFC
/// 9110 7.6.1) and the ones the proxy sets itself.
fn replaced(name: &HeaderName, upgrade: bool) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "http2-settings"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "x-forwarded-for"
            | "x-real-ip"
            | "x-forwarded-proto"
            | "x-forwarded-host"
    ) || (name == header::UPGRADE && !upgrade)
        || IDENTITY_HEADERS.contains(&name.as_str())
}

/// Writes the upstream head for `client` into `out`.
pub fn write_upstream_head(client: &RequestHeader, facts: &HeadFacts<'_>, out: &mut BytesMut) -> Result<(), BadTarget> {
    let upgrade = is_upgrade(client);
    let authority = client.uri.authority().map(|a| a.as_str());
    let target = match facts.target {
        Some(target) => target.as_bytes(),
        // HTTP/2 and absolute-form targets go out in origin-form.
        None if authority.is_some() => client.uri.path_and_query().map_or(&b"/"[..], |p| p.as_str().as_bytes()),
        None => client.raw_path(),
    };
    if target.is_empty() || target.iter().any(|b| matches!(b, 0x00 | b'\n' | b'\r' | b' ')) {
        return Err(BadTarget);
    }
    out.put_slice(client.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target);
    out.put_slice(b" HTTP/1.1\r\n");

    // Headers the client's Connection header names are hop-by-hop too.
    let has_connection = client.headers.contains_key(header::CONNECTION);
    let mut host = None;
    for (name, value) in &client.headers {
        if replaced(name, upgrade)
            || (facts.answered_continue && name == header::EXPECT)
            || facts.strip.contains(name)
            || (has_connection
                && name != header::UPGRADE
                && connection_lists(&client.headers, name.as_str().as_bytes()))
        {
            continue;
        }
        if name == header::HOST {
            if authority.is_some() {
                continue;
            }
            host = Some(value.as_bytes());
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(authority) = authority {
        // HTTP/2 has `:authority` instead of `Host`; HTTP/1.1 servers need `Host`.
        field(out, b"host", authority.as_bytes());
        host = Some(authority.as_bytes());
    }
    if upgrade {
        out.put_slice(b"connection: upgrade\r\n");
    }
    if facts.chunked {
        out.put_slice(b"transfer-encoding: chunked\r\n");
    }
    if let Some(ip) = facts.client {
        out.put_slice(b"x-forwarded-for: ");
        for existing in
            client.headers.get_all("x-forwarded-for").iter().filter(|v| !v.as_bytes().trim_ascii().is_empty())
        {
            out.put_slice(existing.as_bytes());
            out.put_slice(b", ");
        }
        out.put_slice(ip);
        out.put_slice(b"\r\n");
        field(out, b"x-real-ip", ip);
    }
    field(out, b"x-forwarded-proto", facts.proto.as_bytes());
    if let Some(host) = host {
        field(out, b"x-forwarded-host", host);
    }
    for (name, value) in facts.add {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.put_slice(b"\r\n");
    Ok(())
}

/// Writes one header field line.
pub fn field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Whether the `Connection` fields of `headers` list `token` (RFC 9110
/// 7.6.1: a comma-separated, case-insensitive list, possibly over several
/// fields).
pub fn connection_lists(headers: &HeaderMap, token: &[u8]) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token)))
}

/// Whether the client asks to switch protocols (websocket).
pub fn is_upgrade(client: &RequestHeader) -> bool {
    client.version == Version::HTTP_11 && client.headers.contains_key(header::UPGRADE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HeadFacts<'static> {
        HeadFacts {
            client: Some(b"127.0.0.9"),
            proto: "http",
            strip: &[],
            add: &[],
            target: None,
            chunked: false,
            answered_continue: false,
        }
    }

    fn wire(req: &RequestHeader, facts: &HeadFacts<'_>) -> String {
        let mut out = BytesMut::new();
        write_upstream_head(req, facts, &mut out).unwrap();
        String::from_utf8(out.to_vec()).unwrap()
    }

    fn fields(wire: &str) -> Vec<(String, String)> {
        wire.split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn get(wire: &str, name: &str) -> Option<String> {
        fields(wire).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    #[test]
    fn sets_forwarding_and_strips_identity_and_hop_by_hop() {
        let mut req = RequestHeader::build("GET", b"/api/health?x=1", None).unwrap();
        req.insert_header("host", "api.example.com").unwrap();
        req.insert_header("x-forwarded-for", "10.1.1.1").unwrap();
        req.insert_header("x-auth-request-email", "admin@evil").unwrap();
        req.insert_header("X-Skypilot-Auth-Mode", "token").unwrap();
        req.insert_header("connection", "keep-alive, x-secret").unwrap();
        req.insert_header("x-secret", "1").unwrap();
        req.insert_header("keep-alive", "timeout=5").unwrap();
        req.insert_header("te", "trailers").unwrap();
        let wire = wire(&req, &facts());
        assert!(wire.starts_with("GET /api/health?x=1 HTTP/1.1\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\n"));
        assert_eq!(get(&wire, "x-forwarded-for").as_deref(), Some("10.1.1.1, 127.0.0.9"));
        assert_eq!(get(&wire, "x-real-ip").as_deref(), Some("127.0.0.9"));
        assert_eq!(get(&wire, "x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(get(&wire, "x-forwarded-host").as_deref(), Some("api.example.com"));
        assert_eq!(get(&wire, "host").as_deref(), Some("api.example.com"));
        for name in ["x-auth-request-email", "x-skypilot-auth-mode", "connection", "x-secret", "keep-alive", "te"] {
            assert_eq!(get(&wire, name), None, "{name}");
        }
    }

    #[test]
    fn upgrades_keep_their_headers_and_http2_gets_host_and_chunked_framing() {
        let mut req = RequestHeader::build("GET", b"/kubernetes-pod-ssh-proxy", None).unwrap();
        req.insert_header("connection", "Upgrade").unwrap();
        req.insert_header("upgrade", "websocket").unwrap();
        let wire = wire(&req, &facts());
        assert_eq!(get(&wire, "connection").as_deref(), Some("upgrade"));
        assert_eq!(get(&wire, "upgrade").as_deref(), Some("websocket"));

        let mut post = RequestHeader::build("POST", b"/launch", None).unwrap();
        post.set_version(Version::HTTP_2);
        post.set_uri("https://sky.example.com/launch?x=1".parse().unwrap());
        let wire = super::tests::wire(&post, &HeadFacts { chunked: true, ..facts() });
        assert!(wire.starts_with("POST /launch?x=1 HTTP/1.1\r\n"), "{wire}");
        assert_eq!(get(&wire, "transfer-encoding").as_deref(), Some("chunked"));
        assert_eq!(get(&wire, "host").as_deref(), Some("sky.example.com"));
        assert_eq!(get(&wire, "x-forwarded-host").as_deref(), Some("sky.example.com"));
    }

    #[test]
    fn auth_headers_replace_what_the_client_sent_and_targets_are_rewritten() {
        let mut req = RequestHeader::build("GET", b"/team-a/api/health", None).unwrap();
        req.insert_header("x-auth-request-user", "mallory").unwrap();
        let strip = [HeaderName::from_static("x-forwarded-user")];
        let add = [(HeaderName::from_static("x-auth-request-email"), http::HeaderValue::from_static("a@b"))];
        let wire = wire(&req, &HeadFacts { strip: &strip, add: &add, target: Some("/api/health"), ..facts() });
        assert!(wire.starts_with("GET /api/health HTTP/1.1\r\n"), "{wire}");
        assert_eq!(get(&wire, "x-auth-request-email").as_deref(), Some("a@b"));
        assert_eq!(get(&wire, "x-auth-request-user"), None);
        let mut out = BytesMut::new();
        let evil = HeadFacts { target: Some("/a b"), ..facts() };
        assert_eq!(write_upstream_head(&req, &evil, &mut out), Err(BadTarget));
    }
}
