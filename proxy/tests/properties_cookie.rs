//! Properties of the sticky cookie (issue #14): every value the proxy
//! issues verifies; any changed byte, a truncation or an extension makes it
//! forged, never another backend's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use pinroute::cookie::{CookieCheck, PinKey, VALUE_LEN};
use proptest::prelude::*;

fn key_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 16..64)
}

fn identity() -> impl Strategy<Value = String> {
    prop_oneof!["[a-f0-9-]{36}", "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}:[0-9]{1,5}", any::<String>()]
}

/// One edit of an issued value.
#[derive(Debug, Clone)]
enum Edit {
    /// Replace the byte at (index mod len) with another char.
    Change(usize, char),
    /// Keep only the first (n mod len) bytes.
    Truncate(usize),
    /// Append text.
    Extend(String),
    /// Insert a char at (index mod len + 1).
    Insert(usize, char),
}

fn edit() -> impl Strategy<Value = Edit> {
    let replacement = prop_oneof![
        3 => prop::sample::select("0123456789abcdefABCDEF".chars().collect::<Vec<_>>()),
        1 => any::<char>(),
    ];
    prop_oneof![
        4 => (any::<usize>(), replacement.clone()).prop_map(|(i, c)| Edit::Change(i, c)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        1 => "[0-9a-fA-F]{1,8}|.{1,4}".prop_map(Edit::Extend),
        1 => (any::<usize>(), replacement).prop_map(|(i, c)| Edit::Insert(i, c)),
    ]
}

/// The edited value, or `None` when the edit changes nothing.
fn apply(value: &str, edit: &Edit) -> Option<String> {
    let chars: Vec<char> = value.chars().collect();
    let out: String = match edit {
        Edit::Change(i, c) => {
            let i = i % chars.len();
            let mut chars = chars.clone();
            chars[i] = *c;
            chars.into_iter().collect()
        }
        Edit::Truncate(n) => chars[..n % chars.len()].iter().collect(),
        Edit::Extend(tail) => format!("{value}{tail}"),
        Edit::Insert(i, c) => {
            let mut chars = chars.clone();
            chars.insert(i % chars.len() + 1, *c);
            chars.into_iter().collect()
        }
    };
    (out != value).then_some(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_issued_value_verifies_on_every_replica(secret in key_bytes(), id in identity()) {
        let value = PinKey::new(&secret).pin(&id);
        prop_assert_eq!(value.len(), VALUE_LEN);
        prop_assert!(value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{}", value);
        prop_assert_eq!(PinKey::new(&secret).check(&value), CookieCheck::Authentic);
        prop_assert_eq!(PinKey::new(&secret).pin(&id), value);
    }

    #[test]
    fn any_edit_of_an_issued_value_is_forged(
        secret in key_bytes(),
        id in identity(),
        others in prop::collection::vec(identity(), 0..6),
        edit in edit(),
    ) {
        let key = PinKey::new(&secret);
        let value = key.pin(&id);
        let Some(edited) = apply(&value, &edit) else { return Ok(()) };
        prop_assert_eq!(key.check(&edited), CookieCheck::Forged, "{} edited by {:?} to {}", value, edit, edited);
        for other in others.iter().filter(|o| **o != id) {
            prop_assert_ne!(&edited, &key.pin(other));
        }
    }

    #[test]
    fn a_value_of_another_key_is_forged(a in key_bytes(), b in key_bytes(), id in identity()) {
        prop_assume!(a != b);
        prop_assert_eq!(PinKey::new(&b).check(&PinKey::new(&a).pin(&id)), CookieCheck::Forged);
    }

    #[test]
    fn arbitrary_text_never_panics_and_is_almost_never_authentic(secret in key_bytes(), text in ".{0,40}|[0-9a-f]{32}") {
        let key = PinKey::new(&secret);
        // A random 32-hex value passes a 32-bit check about once in 4e9.
        prop_assert_eq!(key.check(&text), CookieCheck::Forged, "{}", text);
    }
}

/// The minimal input the edit property found: the same value with one hex
/// digit upper-cased decodes to the same bytes and verified, so the proxy
/// took it for an authentic stale pin (no entry has that exact text) and
/// re-pinned the client to another backend instead of treating it as forged.
#[test]
fn an_upper_cased_value_is_forged() {
    let key = PinKey::new(b"0123456789abcdef");
    let value = key.pin("pod-uid-1");
    let upper = value.to_ascii_uppercase();
    assert_ne!(upper, value, "{value} has a letter");
    assert_eq!(key.check(&value), CookieCheck::Authentic);
    assert_eq!(key.check(&upper), CookieCheck::Forged);
}
