//! Request-path normalisation, done once before route matching.
//!
//! Routes are path prefixes, each with its own backends and auth, so the
//! path that is matched must be the path the backend will act on: otherwise
//! `/first-server/../second-server/x` passes `/first-server`'s auth and lands
//! on `/second-server`'s backend once something downstream resolves the dots.
//! The proxy matches *and forwards* the normalised path, so what is
//! authorised is what is served. Anything ambiguous (an encoded `/`, a
//! backslash, a NUL) is refused rather than guessed at.
//!
//! Pure string work: it must not know routes, auth or pingora.

/// Why a path was refused. The message is short and safe to return in a
/// 400 `{"detail": ...}` body: it never echoes the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an origin-form path.
    #[error("the request path must start with '/'")]
    NotAbsolute,
    /// `%` not followed by two hex digits.
    #[error("the request path has an invalid percent-encoding")]
    InvalidEscape,
    /// `%2F`: whether it separates segments depends on who decodes it.
    #[error("an encoded '/' (%2F) is not allowed in the request path")]
    EncodedSlash,
    /// `\` or `%5C`: some servers treat it as `/`.
    #[error("'\\' is not allowed in the request path")]
    Backslash,
    /// A control character, raw or percent-encoded (`%00` included).
    #[error("control characters are not allowed in the request path")]
    ControlCharacter,
    /// `?` or `#`: the caller passed more than the path.
    #[error("the request path must not contain '?' or '#'")]
    QueryOrFragment,
    /// Decoding produced bytes that are not UTF-8.
    #[error("the request path is not valid UTF-8")]
    NotUtf8,
}

/// Normalises the path of a request target (without its query).
///
/// Decodes percent-encoded unreserved characters (so `%2e` is `.`), keeps
/// every other percent-encoding as-is with upper-case hex, refuses `%2F`,
/// `\`, `%5C`, control characters and invalid escapes, collapses repeated
/// slashes, and removes `.` and `..` segments as RFC 3986 §5.2.4 does (`..`
/// at the root stays at the root). A trailing slash is kept, and a final
/// `.` or `..` leaves one, as in the RFC (`/a/b/..` is `/a/`).
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // The common case, already normal: nothing encoded, no dot or empty
    // segment, nothing refused. The slow path would return it unchanged.
    if raw.bytes().all(|b| b.is_ascii() && b != b'%' && check_literal(b).is_ok())
        && !raw.contains("//")
        && !raw.contains("/.")
    {
        return Ok(raw.to_owned());
    }
    normalize_slowly(raw)
}

/// [`normalize_path`] without its shortcut for paths that are already normal.
fn normalize_slowly(raw: &str) -> Result<String, PathError> {
    let decoded = decode_unreserved(raw.as_bytes())?;
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    // Raw non-ASCII passes through, but not C1 controls (U+0080..U+009F).
    if decoded.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    Ok(remove_dot_segments(&decoded))
}

/// Percent-decoding limited to what cannot change meaning: unreserved
/// characters. Everything else that is encoded stays encoded, because the
/// backend must see the same bytes a direct client would have sent.
fn decode_unreserved(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    // The byte of the escape just before, to spot a C1 control (U+0080..
    // U+009F) written as two escapes, `%C2%80`..`%C2%9F`; a backend that
    // decodes the path gets the control character itself.
    let mut escaped_before: Option<u8> = None;
    while let Some(&byte) = raw.get(i) {
        if byte != b'%' {
            check_literal(byte)?;
            out.push(byte);
            escaped_before = None;
            i += 1;
            continue;
        }
        let hex = |at: usize| raw.get(at).and_then(|&b| char::from(b).to_digit(16));
        let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2)) else {
            return Err(PathError::InvalidEscape);
        };
        // Two hex digits fit a byte.
        let value = (high * 16 + low) as u8;
        if escaped_before == Some(0xC2) && (0x80..=0x9F).contains(&value) {
            return Err(PathError::ControlCharacter);
        }
        escaped_before = Some(value);
        match value {
            b'/' => return Err(PathError::EncodedSlash),
            b'\\' => return Err(PathError::Backslash),
            v if v.is_ascii_control() => return Err(PathError::ControlCharacter),
            v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => out.push(v),
            v => out.extend_from_slice(format!("%{v:02X}").as_bytes()),
        }
        i += 3;
    }
    Ok(out)
}

fn check_literal(byte: u8) -> Result<(), PathError> {
    match byte {
        b'\\' => Err(PathError::Backslash),
        b'?' | b'#' => Err(PathError::QueryOrFragment),
        b if b.is_ascii_control() => Err(PathError::ControlCharacter),
        _ => Ok(()),
    }
}

/// RFC 3986 §5.2.4 on an absolute path, with empty segments dropped too
/// (`//x` is `/x`): a backend that collapses slashes must not see a
/// different path than the one matched.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    // Whether the output ends in '/': after a '/', '.' or '..' with nothing
    // following.
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            name => {
                segments.push(name);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    out
}

/// The Helm chart's `rewrite-target: /$2` for `<prefix>(/|$)(.*)`:
/// `/second-server/api/health` → `/api/health`, `/second-server` and
/// `/second-server/` → `/`. A prefix of `/` leaves the path unchanged, and so
/// does a path that does not start with `prefix` at a segment boundary
/// (route matching has already ruled that out).
pub fn strip_prefix(path: &str, prefix: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return path.to_owned();
    }
    match path.strip_prefix(prefix) {
        Some("") => "/".to_owned(),
        Some(rest) if rest.starts_with('/') => rest.to_owned(),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shortcut_agrees_with_the_full_normalisation() {
        let paths = [
            "/",
            "/api/health",
            "/api/v1/status",
            "/dashboard/",
            "/a-b_c~d/e.f",
            "/x/.well-known",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/a/b/..",
            "/%7Euser",
            "/%2e%2e/x",
            "/a\\b",
            "/a?b",
            "/caf\u{e9}",
            "/a/b.",
        ];
        for path in paths {
            assert_eq!(normalize_path(path), normalize_slowly(path), "{path}");
        }
    }

    fn ok(raw: &str) -> String {
        normalize_path(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    #[test]
    fn route_bypass_attempts_resolve_or_are_refused() {
        assert_eq!(ok("/first-server/../second-server/api"), "/second-server/api");
        assert_eq!(ok("//second-server/api"), "/second-server/api");
        assert_eq!(ok("/%2e%2e/second-server"), "/second-server");
        assert_eq!(ok("/first-server/%2e%2e/second-server"), "/second-server");
        assert_eq!(ok("/first-server/.%2E/second-server"), "/second-server");
        assert_eq!(ok("/first-server/%2E./second-server"), "/second-server");
        assert_eq!(ok("/first-server//..//second-server"), "/second-server");
        let refused = normalize_path("/first-server%2Fsecond-server");
        assert_eq!(refused, Err(PathError::EncodedSlash));
        assert_eq!(normalize_path("/first-server%2f..%2fsecond-server"), Err(PathError::EncodedSlash));
    }

    #[test]
    fn dot_segments_follow_rfc_3986() {
        assert_eq!(ok("/a/./b"), "/a/b");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/b/."), "/a/b/");
        assert_eq!(ok("/a/b/../c"), "/a/c");
        assert_eq!(ok("/../../etc"), "/etc");
        assert_eq!(ok("/.."), "/");
        assert_eq!(ok("/."), "/");
        assert_eq!(ok("/a/.../b"), "/a/.../b", "three dots is a name");
        assert_eq!(ok("/a/..b/c."), "/a/..b/c.");
    }

    #[test]
    fn slashes_collapse_and_a_trailing_one_is_kept() {
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("//"), "/");
        assert_eq!(ok("/a//b///c"), "/a/b/c");
        assert_eq!(ok("/a/"), "/a/");
        assert_eq!(ok("/a//"), "/a/");
    }

    #[test]
    fn ordinary_paths_are_unchanged() {
        for path in ["/api/health", "/api/v1/status", "/dashboard/", "/a-b_c~d.e", "/a;b=c/@x:y"] {
            assert_eq!(ok(path), path);
        }
    }

    #[test]
    fn harmless_encodings_are_kept_upper_cased() {
        assert_eq!(ok("/files/my%20file"), "/files/my%20file");
        assert_eq!(ok("/a%3fb%23c"), "/a%3Fb%23c");
        assert_eq!(ok("/100%25"), "/100%25");
        assert_eq!(ok("/%c3%a9t%C3%A9"), "/%C3%A9t%C3%A9");
        assert_eq!(ok("/%252e%252e/x"), "/%252e%252e/x", "decoded once only");
    }

    #[test]
    fn unreserved_encodings_are_decoded() {
        assert_eq!(ok("/%41%7a%30%2D%5F%7E"), "/Az0-_~");
    }

    #[test]
    fn bad_escapes_are_refused() {
        for raw in ["/%zz", "/%4", "/a%", "/%%41", "/%g0/x", "/%+1"] {
            assert_eq!(normalize_path(raw), Err(PathError::InvalidEscape), "{raw}");
        }
    }

    #[test]
    fn nul_controls_and_backslashes_are_refused() {
        assert_eq!(normalize_path("/a%00b"), Err(PathError::ControlCharacter));
        assert_eq!(normalize_path("/a%0d%0aX: y"), Err(PathError::ControlCharacter));
        assert_eq!(normalize_path("/a%7F"), Err(PathError::ControlCharacter));
        assert_eq!(normalize_path("/a\u{0}b"), Err(PathError::ControlCharacter));
        assert_eq!(normalize_path("/a\tb"), Err(PathError::ControlCharacter));
        assert_eq!(normalize_path("/a\u{85}b"), Err(PathError::ControlCharacter));
        assert_eq!(normalize_path("/first-server\\..\\second-server"), Err(PathError::Backslash));
        assert_eq!(normalize_path("/first-server%5c..%5Csecond-server"), Err(PathError::Backslash));
    }

    #[test]
    fn non_paths_are_refused() {
        assert_eq!(normalize_path(""), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("api/health"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("http://host/x"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("/api?x=1"), Err(PathError::QueryOrFragment));
        assert_eq!(normalize_path("/api#frag"), Err(PathError::QueryOrFragment));
    }

    #[test]
    fn raw_non_ascii_passes_through() {
        assert_eq!(ok("/été/./x"), "/été/x");
    }

    #[test]
    fn errors_do_not_echo_the_path() {
        let message = normalize_path("/secret%2Fpath").unwrap_err().to_string();
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn strip_prefix_matches_the_chart_rewrite() {
        assert_eq!(strip_prefix("/second-server/api/health", "/second-server"), "/api/health");
        assert_eq!(strip_prefix("/second-server", "/second-server"), "/");
        assert_eq!(strip_prefix("/second-server/", "/second-server"), "/");
        assert_eq!(strip_prefix("/second-server/api", "/second-server/"), "/api");
        assert_eq!(strip_prefix("/api/health", "/"), "/api/health");
        assert_eq!(strip_prefix("/second-serverx/api", "/second-server"), "/second-serverx/api");
    }
}
