//! Properties of request-path normalisation and prefix matching (issue #14):
//! the result is idempotent, holds no dot segment and no `//`; a path that
//! matches a route's prefix lies under it even for a backend that decodes
//! every escape and resolves dots itself; encoded `/` and `\` and control
//! characters, raw or percent-encoded, are always refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use pinroute::normalize::{normalize_path, strip_prefix, PathError};
use pinroute::route::match_route;
use pinroute_config::Config;
use proptest::prelude::*;

/// Pieces a hostile or sloppy client puts in a path.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("/".to_string()),
        4 => prop::sample::select(vec!["first-server", "second-server", "api", "a", "b", "health", "x.y", "~u"])
            .prop_map(str::to_string),
        3 => prop::sample::select(vec![".", "..", "%2e", "%2E", ".%2e", "%2E.", "%2e%2E", "..."]).prop_map(str::to_string),
        2 => prop::sample::select(vec!["%41", "%7e", "%2D", "%5f", "%61pi", "%66irst-server"]).prop_map(str::to_string),
        2 => prop::sample::select(vec!["%20", "%25", "%252e", "%3F", "%23", "%C3%A9", "%c3%a9", "é", "%40", ";", "=", ":"])
            .prop_map(str::to_string),
        1 => "[a-z0-9._~-]{1,6}",
        1 => any::<char>().prop_map(|c| c.to_string()),
    ]
}

fn hostile_path() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..14).prop_map(|pieces| format!("/{}", pieces.concat()))
}

/// What a lenient backend makes of a path: every escape decoded once, then
/// empty and dot segments resolved. `None` when the bytes are not UTF-8.
fn lenient(path: &str) -> Option<String> {
    let bytes: Vec<u8> = percent_decode(path);
    let decoded = String::from_utf8(bytes).ok()?;
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    Some(format!("/{}", out.join("/")))
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').skip(1)
}

fn lies_under(path: &str, prefix: &str) -> bool {
    prefix == "/" || path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// A table of routes with plain ASCII prefixes (what a config can hold).
fn prefixes() -> impl Strategy<Value = Vec<String>> {
    let segment = prop::sample::select(vec!["first-server", "second-server", "api", "a", "b", "x.y", "~u"]);
    let prefix = prop::collection::vec(segment, 1..3).prop_map(|s| format!("/{}", s.join("/")));
    (any::<bool>(), prop::collection::btree_set(prefix, 1..5)).prop_map(|(root, set)| {
        let mut all: Vec<String> = set.into_iter().collect();
        if root {
            all.push("/".to_string());
        }
        all
    })
}

fn config(prefixes: &[String], strip: bool) -> Config {
    let mut text = String::new();
    for (i, p) in prefixes.iter().enumerate() {
        text.push_str(&format!(
            "[[route]]\nprefix = {p:?}\nbackends = [\"127.0.0.1:{}\"]\nstrip_prefix = {strip}\n",
            1000 + i
        ));
    }
    Config::parse(Path::new("properties.toml"), &text, None).unwrap()
}

/// A control character (C0, DEL or C1) and how it is written in the path.
fn control_written() -> impl Strategy<Value = String> {
    let control = prop_oneof![0u32..0x20, Just(0x7f), 0x80u32..0xa0].prop_map(|c| char::from_u32(c).unwrap());
    (control, 0..3u8, any::<bool>()).prop_map(|(c, how, lower)| {
        let mut utf8 = [0u8; 4];
        let bytes = c.encode_utf8(&mut utf8).as_bytes();
        match how {
            0 => c.to_string(),
            _ => bytes.iter().map(|b| if lower { format!("%{b:02x}") } else { format!("%{b:02X}") }).collect(),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn normal_form_is_idempotent_without_dots_or_double_slashes(raw in prop_oneof![hostile_path(), any::<String>()]) {
        if let Ok(path) = normalize_path(&raw) {
            prop_assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
            prop_assert_eq!(normalize_path(&path), Ok(path.clone()), "not idempotent for {:?}", raw);
            prop_assert!(!path.contains("//"), "{raw:?} -> {path:?}");
            prop_assert!(segments(&path).all(|s| s != "." && s != ".."), "{raw:?} -> {path:?}");
            // Nothing left encoded turns into a dot segment or a separator
            // for a backend that decodes once more.
            let decoded = lenient(&path);
            prop_assert!(decoded.as_deref().is_none_or(|d| !d.contains('\\')), "{raw:?} -> {path:?}");
            let once = String::from_utf8_lossy(&percent_decode(&path)).into_owned();
            prop_assert!(!once.contains("//") && segments(&once).all(|s| s != "." && s != ".."), "{raw:?} -> {path:?} -> {once:?}");
            prop_assert!(!path.chars().any(|c| c.is_control() || c == '?' || c == '#'), "{raw:?} -> {path:?}");
        }
    }

    #[test]
    fn encoded_slash_backslash_and_controls_are_always_refused(
        before in hostile_path(),
        after in prop::collection::vec(piece(), 0..4).prop_map(|p| p.concat()),
        bad in prop_oneof![
            prop::sample::select(vec!["%2F", "%2f", "\\", "%5C", "%5c"]).prop_map(str::to_string),
            control_written(),
        ],
    ) {
        let raw = format!("{before}{bad}{after}");
        let result = normalize_path(&raw);
        prop_assert!(result.is_err(), "{:?} was accepted as {:?}", raw, result);
    }

    #[test]
    fn a_matched_path_lies_under_its_prefix_for_any_backend(
        prefixes in prefixes(),
        raw in hostile_path(),
        strip in any::<bool>(),
    ) {
        let config = config(&prefixes, strip);
        let Ok(path) = normalize_path(&raw) else { return Ok(()) };
        let Some(route) = match_route(&config, None, &path) else {
            prop_assert!(!prefixes.contains(&"/".to_string()), "{path:?} matched nothing although / is a route");
            return Ok(());
        };
        let prefix = &config.routes[route].prefix;
        prop_assert!(lies_under(&path, prefix), "{raw:?} -> {path:?} matched {prefix:?}");
        // A backend that decodes everything and resolves dots itself sees a
        // path of the same route: no input reaches another route's backend
        // or skips its auth.
        if let Some(seen) = lenient(&path) {
            let theirs = prefixes.iter().filter(|p| lies_under(&seen, p)).max_by_key(|p| p.len());
            prop_assert_eq!(theirs, Some(prefix), "{:?} -> {:?} -> {:?}", raw, path, seen);
        }
        // With the prefix stripped the backend still sees an absolute path
        // that cannot climb out of its root.
        let forwarded = if strip { strip_prefix(&path, prefix) } else { path.clone() };
        prop_assert!(forwarded.starts_with('/'), "{path:?} -> {forwarded:?}");
        if let Some(seen) = lenient(&forwarded) {
            let normal = normalize_path(&forwarded);
            prop_assert_eq!(normal.as_deref(), Ok(forwarded.as_str()), "forwarded path not normal");
            prop_assert!(seen.split('/').all(|s| s != ".."), "{forwarded:?} -> {seen:?}");
        }
    }
}

/// The minimal input the control-character property found: U+0085 (NEL,
/// a C1 control) percent-encoded as UTF-8 was forwarded as is.
#[test]
fn percent_encoded_c1_control_is_refused() {
    assert_eq!(normalize_path("/a%C2%85b"), Err(PathError::ControlCharacter));
    assert_eq!(normalize_path("/%c2%80"), Err(PathError::ControlCharacter));
    assert_eq!(normalize_path("/%C2%9F/x"), Err(PathError::ControlCharacter));
    // The neighbours are ordinary text.
    assert_eq!(normalize_path("/%C2%A0"), Ok("/%C2%A0".to_string()));
    assert_eq!(normalize_path("/%C3%85"), Ok("/%C3%85".to_string()));
}
