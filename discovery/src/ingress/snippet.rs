//! nginx snippets are never executed. The one pattern the SkyPilot chart
//! renders (service-account tokens skip the OAuth2 sub-request) is recognised
//! by its meaning and mapped onto `oauth2.token_bypass_prefix`; any other
//! snippet refuses the Ingress.
//!
//! The chart's text (skypilot-org/skypilot, `charts/skypilot/templates/ingress.yaml`,
//! when `ingress.oauth2-proxy.enabled` and not `auth.oauth.enabled`):
//!
//! ```text
//! nginx.ingress.kubernetes.io/auth-snippet: |
//!   if ($http_authorization ~ "^Bearer sky_.+") {
//!     # Set x_skypilot_auth_mode variable to make sure the request is validated on the API server side.
//!     set $x_skypilot_auth_mode "token";
//!     return 200;
//!   }
//! nginx.ingress.kubernetes.io/configuration-snippet: |
//!   # Set X-Skypilot-Auth-Mode header to the value from the auth request.
//!   proxy_set_header X-Skypilot-Auth-Mode $x_skypilot_auth_mode;
//! ```
//!
//! Matching is on nginx tokens (comments dropped, quotes optional, any
//! whitespace), so re-indented or re-quoted copies still match, while anything
//! that adds, removes or widens a directive does not.

/// The `Authorization` prefix that skips the sub-request. pinroute's gate
/// compares a plain prefix: `Bearer sky_` with nothing after it also skips
/// (the chart's `.+` would not), and the API server then refuses the empty token.
pub(super) const TOKEN_BYPASS_PREFIX: &str = "Bearer sky_";

/// The variable the chart's two snippets share.
const AUTH_MODE_VARIABLE: &str = "$x_skypilot_auth_mode";

/// Whether `text` is the chart's token-bypass `auth-snippet`.
pub(super) fn is_token_bypass(text: &str) -> bool {
    let tokens = tokens(text);
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    match tokens.as_slice() {
        ["if", "(", "$http_authorization", op, regex, ")", "{", "set", var, mode, ";", "return", code, ";", "}"] => {
            matches!(*op, "~" | "~*")
                && matches!(*regex, "^Bearer sky_.+" | "^Bearer sky_.*" | "^Bearer sky_")
                && *var == AUTH_MODE_VARIABLE
                && *mode == "token"
                && matches!(*code, "200" | "204")
        }
        _ => false,
    }
}

/// Whether `text` is the chart's `configuration-snippet` that forwards the
/// auth mode set by [`is_token_bypass`] (pinroute sets that header itself).
pub(super) fn is_auth_mode_header(text: &str) -> bool {
    let tokens = tokens(text);
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    match tokens.as_slice() {
        ["proxy_set_header", header, value, ";"] => {
            header.eq_ignore_ascii_case("X-Skypilot-Auth-Mode") && *value == AUTH_MODE_VARIABLE
        }
        _ => false,
    }
}

/// nginx configuration tokens: `# comments` dropped, `{ } ( ) ;` on their
/// own, quoted strings as one token without their quotes.
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars();
    let flush = |current: &mut String, out: &mut Vec<String>| {
        if !current.is_empty() {
            out.push(std::mem::take(current));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '#' if current.is_empty() => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' | '\'' if current.is_empty() => {
                let mut quoted = String::new();
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    quoted.push(q);
                }
                // Quoted, `{`, `}` and `;` are words to nginx, not structure:
                // keep the quotes so they never match the structural token.
                if matches!(quoted.as_str(), "{" | "}" | ";") {
                    quoted = format!("{c}{quoted}{c}");
                }
                out.push(quoted);
            }
            '{' | '}' | '(' | ')' | ';' => {
                flush(&mut current, &mut out);
                out.push(c.to_string());
            }
            c if c.is_whitespace() => flush(&mut current, &mut out),
            c => current.push(c),
        }
    }
    flush(&mut current, &mut out);
    out
}

/// The SkyPilot chart's `auth-snippet`, verbatim: the pattern
/// `is_token_bypass` recognises (public for tests and documentation).
pub const CHART_AUTH_SNIPPET: &str = r#"if ($http_authorization ~ "^Bearer sky_.+") {
  # Set x_skypilot_auth_mode variable to make sure the request is validated on the API server side.
  set $x_skypilot_auth_mode "token";
  return 200;
}
"#;
/// The SkyPilot chart's `configuration-snippet`, verbatim.
pub const CHART_CONFIGURATION_SNIPPET: &str = r#"# Set X-Skypilot-Auth-Mode header to the value from the auth request.
proxy_set_header X-Skypilot-Auth-Mode $x_skypilot_auth_mode;
"#;

#[cfg(test)]
mod tests {
    use super::{is_auth_mode_header, is_token_bypass, tokens, CHART_AUTH_SNIPPET, CHART_CONFIGURATION_SNIPPET};

    #[test]
    fn tokens_drop_comments_and_quotes() {
        assert_eq!(tokens("set $a \"b c\"; # x\nreturn 200;"), ["set", "$a", "b c", ";", "return", "200", ";"]);
    }

    #[test]
    fn chart_snippets_match() {
        assert!(is_token_bypass(CHART_AUTH_SNIPPET));
        assert!(is_auth_mode_header(CHART_CONFIGURATION_SNIPPET));
    }

    #[test]
    fn layout_and_quoting_do_not_matter() {
        assert!(is_token_bypass(
            "if($http_authorization ~* '^Bearer sky_.+'){set $x_skypilot_auth_mode token;return 200;}"
        ));
        assert!(is_auth_mode_header("  proxy_set_header   x-skypilot-auth-mode   \"$x_skypilot_auth_mode\" ;"));
    }

    #[test]
    fn anything_else_is_not_the_chart() {
        let hostile = [
            // A wider bypass: any bearer token.
            "if ($http_authorization ~ \"^Bearer \") { set $x_skypilot_auth_mode \"token\"; return 200; }",
            // An unconditional allow.
            "return 200;",
            // An extra directive after the block.
            concat!(
                "if ($http_authorization ~ \"^Bearer sky_.+\") { set $x_skypilot_auth_mode \"token\"; return 200; }",
                " proxy_pass http://evil;"
            ),
            // Another header's value.
            "if ($http_cookie ~ \"^Bearer sky_.+\") { set $x_skypilot_auth_mode \"token\"; return 200; }",
            "if ($http_authorization ~ \"^Bearer sky_.+\") { set $x_skypilot_auth_mode \"admin\"; return 200; }",
        ];
        for text in hostile {
            assert!(!is_token_bypass(text), "{text}");
        }
        assert!(!is_auth_mode_header("proxy_set_header X-Skypilot-Auth-Mode token;"));
        assert!(!is_auth_mode_header("proxy_set_header X-Auth-Request-Email admin@example.com;"));
        assert!(!is_auth_mode_header(
            "proxy_set_header X-Skypilot-Auth-Mode $x_skypilot_auth_mode; more_set_headers \"A: b\";"
        ));
    }
}
