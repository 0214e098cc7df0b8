//! The `SKYPILOT_ROUTEID` cookie: value = keyed hash of a backend's stable
//! identity, self-authenticating so a forged value is told from a stale one.
//!
//! Value layout (32 hex chars): `tag` (12 bytes) = HMAC(key, "pin" ‖ identity),
//! then `check` (4 bytes) = HMAC(key, "chk" ‖ tag). Every proxy replica with
//! the same key computes the same value, so replicas share no state. A value
//! whose check fails was not made by us (forged, or from another key) and is
//! treated as no cookie; one that passes but names no live backend is stale
//! and is re-pinned deterministically from its value.

use hmac::{Hmac, Mac};
use pinroute_config::{CookieSettings, SameSite};
use sha2::Sha256;

const TAG_LEN: usize = 12;
const CHECK_LEN: usize = 4;
/// Length of a cookie value in hex characters.
pub const VALUE_LEN: usize = 2 * (TAG_LEN + CHECK_LEN);

/// What a received cookie value turns out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieCheck {
    /// Not ours: treat as no cookie.
    Forged,
    /// Made with our key (the backend may be gone).
    Authentic,
}

/// The keyed hash behind cookie values.
#[derive(Clone)]
pub struct PinKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for PinKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinKey(..)")
    }
}

impl PinKey {
    /// A key from secret bytes (any length; the config insists on ≥ 16).
    pub fn new(secret: &[u8]) -> PinKey {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        PinKey { mac }
    }

    /// A random key, for a single proxy without a configured one.
    pub fn random() -> PinKey {
        let secret: [u8; 32] = rand::random();
        PinKey::new(&secret)
    }

    fn digest(&self, domain: &[u8], data: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(domain);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// The cookie value that pins a client to the backend `identity`.
    pub fn pin(&self, identity: &str) -> String {
        let tag = self.digest(b"pin", identity.as_bytes());
        let check = self.digest(b"chk", &tag[..TAG_LEN]);
        let mut out = hex::encode(&tag[..TAG_LEN]);
        out.push_str(&hex::encode(&check[..CHECK_LEN]));
        out
    }

    /// Whether `value` was made with this key.
    pub fn check(&self, value: &str) -> CookieCheck {
        // Only the exact text we issue: `hex` also decodes upper case, and an
        // upper-cased copy would verify yet match no backend's value, so the
        // client would be re-pinned as if its backend were gone.
        if value.len() != VALUE_LEN || !value.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return CookieCheck::Forged;
        }
        let mut bytes = [0u8; TAG_LEN + CHECK_LEN];
        if hex::decode_to_slice(value, &mut bytes).is_err() {
            return CookieCheck::Forged;
        }
        let expected = self.digest(b"chk", &bytes[..TAG_LEN]);
        // Constant-time compare: the check is a MAC.
        let diff = expected[..CHECK_LEN].iter().zip(&bytes[TAG_LEN..]).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            CookieCheck::Authentic
        } else {
            CookieCheck::Forged
        }
    }
}

/// Renders the `Set-Cookie` header value for a route.
pub fn set_cookie_header(settings: &CookieSettings, name: &str, path: &str, value: &str) -> String {
    let max_age = settings.max_age.as_secs().max(1);
    let mut header = format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly");
    if settings.secure {
        header.push_str("; Secure");
    }
    match settings.same_site {
        Some(SameSite::Lax) => header.push_str("; SameSite=Lax"),
        Some(SameSite::Strict) => header.push_str("; SameSite=Strict"),
        Some(SameSite::None) => header.push_str("; SameSite=None"),
        None => {}
    }
    header
}

/// Finds our cookie in the request's `Cookie` headers (first occurrence wins,
/// as browsers send the most specific path first).
pub fn find_cookie<'a>(headers: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<&'a str> {
    for header in headers {
        let Ok(text) = std::str::from_utf8(header) else {
            continue;
        };
        for pair in text.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k.trim() == name {
                    return Some(v.trim().trim_matches('"'));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> CookieSettings {
        CookieSettings {
            name: "SKYPILOT_ROUTEID".into(),
            max_age: Duration::from_secs(3600),
            key: None,
            secure: false,
            same_site: None,
        }
    }

    #[test]
    fn same_key_same_value_on_every_replica() {
        let a = PinKey::new(b"0123456789abcdef");
        let b = PinKey::new(b"0123456789abcdef");
        assert_eq!(a.pin("pod-uid-1"), b.pin("pod-uid-1"));
        assert_ne!(a.pin("pod-uid-1"), a.pin("pod-uid-2"));
        assert_eq!(a.pin("x").len(), VALUE_LEN);
    }

    #[test]
    fn forged_values_fail_the_check() {
        let key = PinKey::new(b"0123456789abcdef");
        let real = key.pin("10.0.0.1:46580");
        assert_eq!(key.check(&real), CookieCheck::Authentic);
        let mut forged = real.clone();
        forged.replace_range(30.., "00");
        if forged == real {
            forged.replace_range(30.., "11");
        }
        assert_eq!(key.check(&forged), CookieCheck::Forged);
        assert_eq!(key.check("short"), CookieCheck::Forged);
        assert_eq!(key.check(&"zz".repeat(16)), CookieCheck::Forged);
        assert_eq!(PinKey::new(b"another key 123456").check(&real), CookieCheck::Forged);
    }

    #[test]
    fn header_has_max_age_and_path() {
        let h = set_cookie_header(&settings(), "SKYPILOT_ROUTEID", "/first-server", "abc");
        assert_eq!(h, "SKYPILOT_ROUTEID=abc; Path=/first-server; Max-Age=3600; HttpOnly");
        let mut s = settings();
        s.secure = true;
        s.same_site = Some(SameSite::Strict);
        assert!(set_cookie_header(&s, "SKYPILOT_ROUTEID", "/", "v").ends_with("; Secure; SameSite=Strict"));
    }

    #[test]
    fn finds_cookie_among_others() {
        let headers: Vec<&[u8]> = vec![b"a=1; SKYPILOT_ROUTEID=\"xyz\"; b=2", b"SKYPILOT_ROUTEID=later"];
        assert_eq!(find_cookie(headers.into_iter(), "SKYPILOT_ROUTEID"), Some("xyz"));
        let none: Vec<&[u8]> = vec![b"other=1"];
        assert_eq!(find_cookie(none.into_iter(), "SKYPILOT_ROUTEID"), None);
    }
}
