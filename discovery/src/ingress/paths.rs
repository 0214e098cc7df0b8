//! An Ingress path (`path`, `pathType`, `rewrite-target`, `use-regex`) as a
//! pinroute prefix route. pinroute matches whole-segment prefixes only, which
//! is what `Prefix` means; the chart's regex form for a non-root
//! `ingress.path` is exactly "that prefix, stripped", so it maps without a
//! regex engine. Anything else that needs one refuses the Ingress.

/// How one Ingress path is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PathMatch {
    /// Route prefix: starts with `/`, no trailing `/` unless it is `/`.
    pub prefix: String,
    /// Forward `<prefix>/x` as `/x`.
    pub strip: bool,
    /// Accepted, but not served exactly as ingress-nginx would.
    pub warning: Option<String>,
}

/// The regex suffix the SkyPilot chart appends to a non-root `ingress.path`
/// (`charts/skypilot/templates/ingress.yaml`: `path: {{ .Values.ingress.path }}(/|$)(.*)`);
/// with `rewrite-target: /$2` the second group is the rest of the path.
const CHART_REGEX_SUFFIX: &str = "(/|$)(.*)";

/// The chart's `rewrite-target` for a non-root `ingress.path`.
const CHART_REWRITE_TARGET: &str = "/$2";

fn has_regex_syntax(path: &str) -> bool {
    path.contains(['^', '$', '(', ')', '[', ']', '{', '}', '*', '+', '?', '|', '\\'])
}

/// `/a/b/` → `/a/b`, `/` stays `/`. Validation of segments happens in the
/// config crate when the route is built.
fn trim_prefix(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Maps one path. `path` is `None` for an `ImplementationSpecific` path left
/// out (ingress-nginx serves `/` then).
pub(super) fn path_match(
    path: Option<&str>,
    path_type: &str,
    rewrite_target: Option<&str>,
    use_regex: bool,
) -> Result<PathMatch, String> {
    let path = path.filter(|p| !p.is_empty()).unwrap_or("/");
    if !path.starts_with('/') {
        return Err(format!("path {path:?} does not start with '/'"));
    }
    if !matches!(path_type, "Prefix" | "Exact" | "ImplementationSpecific") {
        return Err(format!("pathType {path_type:?} is not Prefix, Exact or ImplementationSpecific"));
    }
    // `<prefix>(/|$)(.*)` with a plain prefix: the chart's form.
    let chart_base =
        path.strip_suffix(CHART_REGEX_SUFFIX).filter(|base| base.starts_with('/') && !has_regex_syntax(base));
    if let Some(target) = rewrite_target {
        return match chart_base {
            Some(base) if target == CHART_REWRITE_TARGET => {
                Ok(PathMatch { prefix: trim_prefix(base), strip: true, warning: None })
            }
            _ => Err(format!(
                "rewrite-target {target:?} with path {path:?} is not supported: pinroute serves the SkyPilot chart's \
                 form, path \"<prefix>(/|$)(.*)\" with rewrite-target \"/$2\" (the prefix, stripped)"
            )),
        };
    }
    if let (Some(base), true) = (chart_base, use_regex) {
        return Ok(PathMatch { prefix: trim_prefix(base), strip: false, warning: None });
    }
    if has_regex_syntax(path) {
        return Err(if use_regex {
            format!(
                "path {path:?} is a regular expression; pinroute matches path prefixes only (the form \
                 \"<prefix>(/|$)(.*)\" is understood)"
            )
        } else {
            format!("path {path:?} looks like a regular expression, but neither use-regex nor rewrite-target is set")
        });
    }
    let warning = (path_type == "Exact").then(|| {
        format!("Exact path {path:?} is served as a prefix: it also matches {:?}", format!("{}/...", trim_prefix(path)))
    });
    Ok(PathMatch { prefix: trim_prefix(path), strip: false, warning })
}

#[cfg(test)]
mod tests {
    use super::{path_match, PathMatch};

    fn ok(prefix: &str, strip: bool) -> PathMatch {
        PathMatch { prefix: prefix.to_string(), strip, warning: None }
    }

    #[test]
    fn prefix_paths_are_prefixes() {
        assert_eq!(path_match(Some("/"), "Prefix", None, false), Ok(ok("/", false)));
        assert_eq!(path_match(Some("/oauth2"), "Prefix", None, false), Ok(ok("/oauth2", false)));
        assert_eq!(path_match(Some("/a/b/"), "ImplementationSpecific", None, false), Ok(ok("/a/b", false)));
        assert_eq!(path_match(None, "ImplementationSpecific", None, false), Ok(ok("/", false)));
    }

    #[test]
    fn chart_regex_with_rewrite_is_a_stripped_prefix() {
        let m = path_match(Some("/second-server(/|$)(.*)"), "ImplementationSpecific", Some("/$2"), false);
        assert_eq!(m, Ok(ok("/second-server", true)));
        let m = path_match(Some("/a/b(/|$)(.*)"), "ImplementationSpecific", Some("/$2"), true);
        assert_eq!(m, Ok(ok("/a/b", true)));
        // use-regex alone: the same prefix, unstripped.
        let m = path_match(Some("/first-server(/|$)(.*)"), "ImplementationSpecific", None, true);
        assert_eq!(m, Ok(ok("/first-server", false)));
    }

    #[test]
    fn exact_is_a_prefix_with_a_warning() {
        let m = path_match(Some("/api/health"), "Exact", None, false).unwrap();
        assert_eq!((m.prefix.as_str(), m.strip), ("/api/health", false));
        assert!(m.warning.unwrap().contains("served as a prefix"));
    }

    #[test]
    fn other_regexes_and_rewrites_are_refused() {
        let cases = [
            (Some("/x(/|$)(.*)"), Some("/api/$2"), false, "rewrite-target"),
            (Some("/x"), Some("/"), false, "rewrite-target"),
            (Some("/x/[0-9]+"), None, true, "regular expression"),
            (Some("/x(/|$)(.*)"), None, false, "neither use-regex"),
            (Some("/(a|b)(/|$)(.*)"), Some("/$2"), false, "rewrite-target"),
        ];
        for (path, rewrite, regex, says) in cases {
            let err = path_match(path, "ImplementationSpecific", rewrite, regex).unwrap_err();
            assert!(err.contains(says), "{path:?}: {err}");
        }
        assert!(path_match(Some("x"), "Prefix", None, false).unwrap_err().contains("start with '/'"));
        assert!(path_match(Some("/"), "Regex", None, false).unwrap_err().contains("pathType"));
    }
}
