//! Properties of configuration loading (issue #14): arbitrary text and
//! structured documents built from the real key names with random or
//! wrong-typed values never panic, and every error names the file and the
//! key (a schema error shows the offending line, which holds the key).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use pinroute_config::{Config, ConfigError};
use proptest::prelude::*;

/// Where the documents claim to come from (its directory does not exist, so
/// file references fail to read instead of reading something real).
const ORIGIN: &str = "/nonexistent-pinroute-properties/config.toml";

/// The tables of the file format and their keys.
const TABLES: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "listen",
            "admin",
            "grace_period",
            "threads",
            "work_stealing",
            "keepalive_timeout",
            "upgrade_sock",
            "pid_file",
            "h2c",
            "request_id_capacity",
        ],
    ),
    ("server.tls", &["listen", "cert_file", "key_file", "redirect_http"]),
    ("cookie", &["name", "max_age", "key_file", "secure", "same_site"]),
    (
        "[route]",
        &[
            "prefix",
            "backends",
            "host",
            "strip_prefix",
            "cookie_name",
            "connect_timeout",
            "read_timeout",
            "write_timeout",
            "max_body",
            "connect_tries",
            "when_all_cordoned",
            "hold_for",
            "hold_max",
            "drain_timeout",
            "replay_on_draining_503",
            "https_redirect",
        ],
    ),
    ("route.kubernetes", &["namespace", "selector", "ready_label", "port"]),
    ("route.health_check", &["enabled", "path", "interval", "timeout"]),
    ("route.auth.basic", &["htpasswd", "htpasswd_file", "realm", "allow_plaintext"]),
    ("route.auth.oauth2", &["auth_url", "signin_url", "response_headers", "token_bypass_prefix", "timeout", "cache"]),
    ("ingress", &["class", "adopt_classes", "adopt_namespaces", "namespace", "ready_label", "status_address"]),
];

/// A TOML value: plausible, wrong-typed or garbage. No host names that
/// would need DNS: only IPs, `localhost` and strings without a port.
fn value() -> impl Strategy<Value = String> {
    let strings = prop::sample::select(vec![
        "\"127.0.0.1:8080\"",
        "\"[::1]:9\"",
        "\"0.0.0.0:0\"",
        "\"off\"",
        "\"localhost:1\"",
        "\"nohost\"",
        "\"127.0.0.1:99999\"",
        "\"\"",
        "\" \"",
        "\"/\"",
        "\"/first-server/\"",
        "\"//x\"",
        "\"/a/../b\"",
        "\"/%2e\"",
        "\"x\"",
        "\"30s\"",
        "\"0s\"",
        "\"500ms\"",
        "\"7d\"",
        "\"forever\"",
        "\"-1s\"",
        "\"1000MiB\"",
        "\"5 parsecs\"",
        "\"lax\"",
        "\"none\"",
        "\"serve_draining\"",
        "\"reject\"",
        "\"app=skypilot-api\"",
        "\"skypilot.co/ready=true\"",
        "\"=\"",
        "\"a,,b\"",
        "\"!x\"",
        "\"http://oauth2:4180/oauth2/auth\"",
        "\"ftp://x\"",
        "\"user:$apr1$x$y\"",
        "\"http\"",
        "\"skypilot\"",
        "\"Bad_NS\"",
        "\"nginx\"",
        "\"203.0.113.10\"",
        "\"é\"",
        "\"a\\u0000b\"",
    ])
    .prop_map(str::to_string);
    let scalars = prop::sample::select(vec![
        "0",
        "1",
        "3",
        "16",
        "17",
        "256",
        "257",
        "-1",
        "65536",
        "9999999999999999999",
        "1.5",
        "nan",
        "true",
        "false",
        "1979-05-27T07:32:00Z",
    ])
    .prop_map(str::to_string);
    let leaf = prop_oneof![4 => strings, 2 => scalars, 1 => "\"[ -~]{0,12}\"".prop_map(|s| s.replace('\\', "/"))];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|kv| {
                format!("{{ {} }}", kv.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", "))
            }),
        ]
    })
}

/// A document: tables from the schema (sometimes misplaced or misspelt),
/// each with keys from its own table (mostly) and random values.
fn document() -> impl Strategy<Value = String> {
    let table =
        (0..TABLES.len(), any::<bool>(), prop::collection::vec((any::<prop::sample::Index>(), 0..10u8, value()), 0..6));
    prop::collection::vec(table, 0..6).prop_map(|tables| {
        let mut text = String::new();
        for (t, misspelt, keys) in tables {
            let (name, own) = TABLES[t];
            let header = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
                Some(array) => format!("[[{array}]]"),
                None if misspelt => format!("[{name}s]"),
                None => format!("[{name}]"),
            };
            text.push_str(&header);
            text.push('\n');
            let mut seen = std::collections::BTreeSet::new();
            for (index, which, value) in keys {
                // Mostly the table's own keys; sometimes another table's.
                let key =
                    if which < 8 { *index.get(own) } else { *index.get(TABLES[usize::from(which) % TABLES.len()].1) };
                if seen.insert(key) {
                    text.push_str(&format!("{key} = {value}\n"));
                }
            }
        }
        text
    })
}

/// Every error starts with the file; an invalid value names a dotted key of
/// the schema; a schema or syntax error points at a line of the document.
fn check_error(text: &str, error: &ConfigError) -> Result<(), TestCaseError> {
    let message = error.to_string();
    prop_assert!(message.starts_with(ORIGIN), "{message}");
    match error {
        ConfigError::Read { .. } => prop_assert!(false, "parse read a file: {message}"),
        ConfigError::Invalid { key, .. } => {
            let known = TABLES.iter().flat_map(|(t, keys)| keys.iter().chain(std::iter::once(t))).any(|k| {
                let k = k.trim_matches(['[', ']']);
                let last = k.rsplit('.').next().unwrap_or(k);
                key.contains(last)
            });
            prop_assert!(known || key == "route", "key {key:?} is not one of the file's keys: {message}");
        }
        ConfigError::Syntax { message: detail, .. } => {
            let line = detail
                .split("line ")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<usize>().ok());
            prop_assert!(line.is_some(), "no line in {message}");
            // The line it points at (a key = value line names the key).
            if let Some(written) = line.and_then(|n| text.lines().nth(n - 1)) {
                if let Some((key, _)) = written.split_once(" = ") {
                    prop_assert!(detail.contains(key), "line {line:?} ({written:?}) not shown: {message}");
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics_and_errors_name_the_file(text in prop_oneof![".{0,200}", "[\\[\\]a-z_=\"{}., \n0-9]{0,200}"]) {
        if let Err(e) = Config::parse(Path::new(ORIGIN), &text, None) {
            check_error(&text, &e)?;
        }
    }

    #[test]
    fn structured_documents_never_panic_and_errors_name_file_and_key(text in document(), env_key in prop::option::of("[a-z0-9]{0,40}")) {
        match Config::parse(Path::new(ORIGIN), &text, env_key) {
            Err(ConfigError::Invalid { key, .. }) if key.starts_with("PINROUTE_COOKIE_KEY") => {}
            Err(e) => check_error(&text, &e)?,
            Ok(config) => {
                prop_assert_eq!(config.origin.as_path(), Path::new(ORIGIN));
                prop_assert!(!config.routes.is_empty() || config.ingress.is_some());
                prop_assert!(config.routes.iter().all(|r| r.prefix.starts_with('/') && !r.prefix.contains("//")));
            }
        }
    }
}
