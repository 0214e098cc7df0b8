//! Which admin POSTs may change anything. The admin API has no login: on
//! loopback or behind `kubectl port-forward`, anyone who can reach it may
//! drain. What must not happen is a web page the operator has open in
//! another tab making their browser POST to it (cross-site request forgery).
//!
//! A browser marks its requests (`Origin`, `Sec-Fetch-Site`); the CLI and
//! curl send neither and keep working. A browser request is accepted only
//! when it comes from the admin page's own origin *and* carries
//! [`ADMIN_HEADER`], a custom header that a cross-site page cannot add
//! without a CORS preflight, which this listener never grants.
//!
//! A page can also rebind its own name to 127.0.0.1 (DNS rebinding): its
//! requests are then same-origin to the browser. So a browser request of
//! any kind is answered only when its `Host` is an IP address, `localhost`,
//! or a name in `[server] admin_hosts`; a rebound name is none of these.

use std::net::IpAddr;

/// Sent by the dashboard's script on every POST.
pub const ADMIN_HEADER: &str = "x-pinroute-admin";

/// The request headers the decision needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// `Host` (HTTP/1) or `:authority` (HTTP/2).
    pub host: Option<String>,
    /// `Origin`.
    pub origin: Option<String>,
    /// `Sec-Fetch-Site`.
    pub fetch_site: Option<String>,
    /// Whether [`ADMIN_HEADER`] is `1`.
    pub admin_header: bool,
}

/// Why a write was refused (the 403's detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `[server] admin_read_only = true`.
    ReadOnly,
    /// A browser request from another site or origin.
    CrossSite,
    /// A browser request without the dashboard's header.
    MissingHeader,
    /// A browser request under a host name the admin does not know.
    UnknownHost,
}

impl Refusal {
    /// The explanation sent back.
    pub fn detail(self) -> &'static str {
        match self {
            Refusal::ReadOnly => "the admin listener is read-only ([server] admin_read_only = true)",
            Refusal::CrossSite => {
                "cross-origin admin request refused: POST from the dashboard itself or a non-browser client"
            }
            Refusal::MissingHeader => {
                "browser admin request without X-Pinroute-Admin: 1 refused (the dashboard sends it)"
            }
            Refusal::UnknownHost => {
                "browser request under an unknown host name refused: use an IP address or localhost, \
                 or list the name in [server] admin_hosts"
            }
        }
    }
}

/// Whether a request described by `facts` may be answered at all: a
/// browser's only under a host name the operator chose (see the module doc).
pub fn check_host(facts: &RequestFacts, admin_hosts: &[String]) -> Result<(), Refusal> {
    let from_browser = facts.origin.is_some() || facts.fetch_site.is_some();
    if !from_browser {
        return Ok(());
    }
    let Some(host) = facts.host.as_deref() else { return Err(Refusal::UnknownHost) };
    // `[::1]:9090`, `127.0.0.1:9090`, `name:9090`, or any of them without a port.
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let known = name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || admin_hosts.contains(&name);
    if known {
        Ok(())
    } else {
        Err(Refusal::UnknownHost)
    }
}

/// Whether a POST described by `facts` may change state.
pub fn check_write(facts: &RequestFacts, read_only: bool) -> Result<(), Refusal> {
    if read_only {
        return Err(Refusal::ReadOnly);
    }
    // `none` is a user typing the URL; `same-origin` the page itself. A
    // different port on the same host is `same-site`, and still refused.
    if let Some(site) = &facts.fetch_site {
        if !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none") {
            return Err(Refusal::CrossSite);
        }
    }
    if let Some(origin) = &facts.origin {
        let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        match (authority, &facts.host) {
            (Some(a), Some(host)) if a.eq_ignore_ascii_case(host) => {}
            _ => return Err(Refusal::CrossSite), // includes `Origin: null` (sandboxed, file://)
        }
    }
    let from_browser = facts.origin.is_some() || facts.fetch_site.is_some();
    if from_browser && !facts.admin_header {
        return Err(Refusal::MissingHeader);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(origin: Option<&str>, site: Option<&str>, header: bool) -> RequestFacts {
        RequestFacts {
            host: Some("127.0.0.1:9090".to_string()),
            origin: origin.map(str::to_string),
            fetch_site: site.map(str::to_string),
            admin_header: header,
        }
    }

    #[test]
    fn cli_and_curl_keep_working() {
        assert_eq!(check_write(&facts(None, None, false), false), Ok(()));
    }

    #[test]
    fn the_dashboard_itself_may_write() {
        assert_eq!(check_write(&facts(Some("http://127.0.0.1:9090"), Some("same-origin"), true), false), Ok(()));
    }

    #[test]
    fn other_origins_are_refused_even_with_the_header() {
        for origin in ["http://evil.example", "http://127.0.0.1:8080", "null", "http://127.0.0.1:9090.evil"] {
            assert_eq!(check_write(&facts(Some(origin), None, true), false), Err(Refusal::CrossSite), "{origin}");
        }
        for site in ["cross-site", "same-site"] {
            let f = facts(Some("http://127.0.0.1:9090"), Some(site), true);
            assert_eq!(check_write(&f, false), Err(Refusal::CrossSite), "{site}");
        }
    }

    #[test]
    fn a_same_origin_form_without_the_header_is_refused() {
        let f = facts(Some("http://127.0.0.1:9090"), Some("same-origin"), false);
        assert_eq!(check_write(&f, false), Err(Refusal::MissingHeader));
    }

    #[test]
    fn a_browser_is_answered_only_under_an_address_localhost_or_a_listed_name() {
        let browser = |host: &str| RequestFacts {
            host: Some(host.to_string()),
            fetch_site: Some("same-origin".to_string()),
            ..RequestFacts::default()
        };
        let listed = ["pinroute-admin.internal".to_string()];
        for host in ["127.0.0.1:9090", "[::1]:9090", "localhost:9090", "LOCALHOST", "pinroute-admin.internal:80"] {
            assert_eq!(check_host(&browser(host), &listed), Ok(()), "{host}");
        }
        // A name rebound to 127.0.0.1 by its owner, and names like it.
        for host in ["evil.example:9090", "127.0.0.1.evil.example", "localhost.evil.example", "pinroute-admin"] {
            assert_eq!(check_host(&browser(host), &listed), Err(Refusal::UnknownHost), "{host}");
        }
        let no_host = RequestFacts { host: None, ..browser("") };
        assert_eq!(check_host(&no_host, &listed), Err(Refusal::UnknownHost));
        // curl and the CLI send no browser headers: any name works for them.
        let curl = RequestFacts { host: Some("evil.example".to_string()), ..RequestFacts::default() };
        assert_eq!(check_host(&curl, &[]), Ok(()));
    }

    #[test]
    fn read_only_refuses_everyone() {
        assert_eq!(check_write(&facts(None, None, false), true), Err(Refusal::ReadOnly));
    }
}
