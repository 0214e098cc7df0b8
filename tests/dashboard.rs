//! The operator dashboard, black-box: the real page in headless Chromium
//! over a real proxy and real backends (drain from the page, watch a stream
//! hold the backend, see "empty" when it ends), plus plain-HTTP checks of
//! its security headers, its write protection and ingress mode.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use pinroute_tests::browser::{Browser, Locator};
use pinroute_tests::client::{backend_state, routeid, served_by};
use pinroute_tests::cluster::{FakeCluster, NS};
use pinroute_tests::fake_kube::Kind;
use pinroute_tests::{http_client, wait_until, BackendProcess, ProxyProcess};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_pinroute");
const WAIT: Duration = Duration::from_secs(15);

struct Setup {
    proxy: ProxyProcess,
    backends: Vec<BackendProcess>,
}

impl Setup {
    /// Two demo backends behind one static route; `server_extra` under `[server]`.
    async fn start(server_extra: &str) -> Setup {
        let backends: Vec<BackendProcess> = ["dash-a", "dash-b"]
            .iter()
            .map(|n| BackendProcess::spawn(Path::new(BIN), n, "127.0.0.1:0", false).unwrap())
            .collect();
        let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
        let body = format!("[[route]]\nprefix = \"/\"\nbackends = [{}]\n", list.join(", "));
        let proxy = ProxyProcess::start(Path::new(BIN), server_extra, &body).await.unwrap();
        Setup { proxy, backends }
    }

    /// The static id (`host:port`) of the backend named `name`.
    fn id_of(&self, name: &str) -> String {
        self.backends.iter().find(|b| b.name == name).unwrap().addr.to_string()
    }

    fn any_id(&self) -> String {
        self.backends[0].addr.to_string()
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut req = http_client().post(self.proxy.admin_url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn state(&self, id: &str) -> String {
        backend_state(self.proxy.admin, id).await.unwrap_or_default()
    }
}

async fn dashboard_json(p: &ProxyProcess) -> serde_json::Value {
    http_client().get(p.admin_url("/dashboard.json")).send().await.unwrap().json().await.unwrap()
}

/// The row of backend `id` on the page (ids here are `host:port` or `ns/name`).
fn cell(id: &str, col: &str) -> String {
    format!("tr[data-backend=\"{id}\"] td[data-col=\"{col}\"]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_drains_a_backend_and_shows_its_stream_until_empty() {
    let s = Setup::start("").await;
    let browser = Browser::start().await.expect("headless Chromium");

    // A client pinned to one backend, holding a long-lived stream there.
    let first = pinroute_tests::client::get(s.proxy.addr, "/api/health", None).await.unwrap();
    let (cookie, home) = (routeid(&first).unwrap(), served_by(&first));
    let id = s.id_of(&home);
    let stream = pinroute_tests::client::get(s.proxy.addr, "/api/stream?lines=600&interval_ms=100", Some(&cookie))
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    browser.client.goto(&s.proxy.admin_url("/dashboard")).await.unwrap();
    let ready = browser.wait_text(&cell(&id, "state"), WAIT, |t| t == "ready").await;
    assert!(ready.is_ok(), "{ready:?}; log:\n{}", s.proxy.log());
    browser.wait_text(&cell(&id, "streams"), WAIT, |t| t == "1").await.expect("the open stream is counted");

    // The page's own Drain button: a real browser POST, with its header.
    let button = browser.client.find(Locator::Css(&format!("{} button", cell(&id, "actions")))).await.unwrap();
    assert_eq!(button.text().await.unwrap(), "Drain");
    button.click().await.unwrap();
    browser.wait_text(&cell(&id, "state"), WAIT, |t| t.starts_with("draining")).await.expect("state turns draining");
    assert_eq!(s.state(&id).await, "draining", "the page's POST drained it in the proxy too");
    let holding = browser.wait_text(&cell(&id, "progress"), WAIT, |t| t.starts_with("holds")).await.unwrap();
    assert!(holding.contains("1 stream(s)"), "{holding}");
    browser.wait_text(&cell(&id, "in_flight"), WAIT, |t| t == "1").await.unwrap();
    let event = browser.wait_text("#events li[data-kind=\"operator_drain\"]", WAIT, |t| t.contains(&id)).await;
    assert!(event.is_ok(), "{event:?}");

    // drain-wait agrees: still busy.
    let busy = http_client()
        .get(s.proxy.admin_url(&format!("/admin/drain-wait?backend={id}&timeout=100ms")))
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 408);

    // The client goes away: the stream ends, the backend is empty.
    drop(stream);
    let empty = browser.wait_text(&cell(&id, "progress"), WAIT, |t| t == "empty, safe to delete").await;
    assert!(empty.is_ok(), "{empty:?}");
    assert_eq!(browser.text(&cell(&id, "streams")).await.as_deref(), Some("0"));
    let done = http_client()
        .get(s.proxy.admin_url(&format!("/admin/drain-wait?backend={id}&timeout=1s")))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200, "drain-wait says empty when the page does");

    // Undrain from the page.
    let button = browser.client.find(Locator::Css(&format!("{} button", cell(&id, "actions")))).await.unwrap();
    assert_eq!(button.text().await.unwrap(), "Undrain");
    button.click().await.unwrap();
    browser.wait_text(&cell(&id, "state"), WAIT, |t| t == "ready").await.expect("undrained");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_and_json_carry_security_headers() {
    let s = Setup::start("").await;
    for path in ["/", "/dashboard"] {
        let r = http_client().get(s.proxy.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
        for directive in ["script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
            assert!(csp.contains(directive), "{path}: {directive} missing from {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        let html = r.text().await.unwrap();
        assert!(html.contains("<script src=\"/dashboard.js\""), "script served as a file");
        assert_eq!(html.matches("<script").count(), 1, "no inline script: {html}");
        assert!(!html.contains("http://") && !html.contains("https://"), "nothing loaded from outside");
    }
    let js = http_client().get(s.proxy.admin_url("/dashboard.js")).send().await.unwrap();
    assert!(js.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    let js = js.text().await.unwrap();
    assert!(!js.contains("innerHTML"), "the script builds its DOM with textContent only");

    let r = http_client().get(s.proxy.admin_url("/dashboard.json")).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let view: serde_json::Value = r.json().await.unwrap();
    assert_eq!(view["read_only"], false);
    let backends = view["routes"][0]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    assert_eq!(backends[0]["state"], "ready");
    assert_eq!(backends[0]["requests"].as_array().unwrap().len(), view["spark_seconds"].as_u64().unwrap() as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_posts_are_refused_and_change_nothing() {
    let s = Setup::start("").await;
    let id = s.any_id();
    let drain = format!("/admin/drain?backend={id}");
    let own = format!("http://{}", s.proxy.admin);
    let client_side = format!("http://{}", s.proxy.addr);
    let refused: [&[(&str, &str)]; 5] = [
        &[("origin", "http://evil.example"), ("x-pinroute-admin", "1")],
        &[("origin", "null")],
        &[("sec-fetch-site", "cross-site")],
        // The proxy's own client listener is another origin on the same site.
        &[("origin", &client_side), ("sec-fetch-site", "same-site"), ("x-pinroute-admin", "1")],
        // Same origin but no custom header: a plain HTML form, not the page's script.
        &[("origin", &own), ("sec-fetch-site", "same-origin")],
    ];
    for headers in refused {
        let (status, body) = s.post(&drain, headers).await;
        assert_eq!(status, 403, "{headers:?}: {body}");
        assert_eq!(s.state(&id).await, "ready", "a refused POST changed nothing ({headers:?})");
    }
    // The dashboard's own request is accepted...
    let (status, body) = s.post(&drain, &[("origin", &own), ("x-pinroute-admin", "1")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.state(&id).await, "draining");
    // ...and so is the CLI / curl, which sends no Origin.
    let (status, body) = s.post(&format!("/admin/undrain?backend={id}"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.state(&id).await, "ready");
    // A GET never changes anything.
    let r = http_client().get(s.proxy.admin_url(&drain)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(s.state(&id).await, "ready");
}

/// A page that rebinds its own name to 127.0.0.1 is same-origin to the
/// browser: its Origin matches its Host. Only the Host name tells it apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_host_name_is_refused_and_listed_names_work() {
    let s = Setup::start("admin_hosts = [\"pinroute-admin.test\"]").await;
    let id = s.any_id();
    let drain = format!("/admin/drain?backend={id}");
    let port = s.proxy.admin.port();
    let rebound = format!("evil.example:{port}");
    let rebound_origin = format!("http://{rebound}");
    let as_page = |host: &str, origin: &str| {
        [("host", host.to_string()), ("origin", origin.to_string()), ("sec-fetch-site", "same-origin".to_string())]
    };
    let headers = as_page(&rebound, &rebound_origin);
    let mut with_admin: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    with_admin.push(("x-pinroute-admin", "1"));
    let (status, body) = s.post(&drain, &with_admin).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin_hosts"), "the refusal names the fix: {body}");
    assert_eq!(s.state(&id).await, "ready", "the refused POST changed nothing");
    let read = http_client()
        .get(s.proxy.admin_url("/dashboard.json"))
        .header("host", &rebound)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 403, "a rebound page cannot read the backends either");

    // The listed name, as the page itself would send it.
    let listed = format!("pinroute-admin.test:{port}");
    let headers = as_page(&listed, &format!("http://{listed}"));
    let mut with_admin: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    with_admin.push(("x-pinroute-admin", "1"));
    let (status, body) = s.post(&drain, &with_admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.state(&id).await, "draining");
    // curl under any name: no browser headers, no refusal.
    let (status, body) = s.post(&format!("/admin/undrain?backend={id}"), &[("host", &rebound)]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_read_only_refuses_every_post() {
    let s = Setup::start("admin_read_only = true").await;
    let id = s.any_id();
    for path in [format!("/admin/drain?backend={id}"), format!("/admin/undrain?backend={id}")] {
        let (status, body) = s.post(&path, &[]).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("read-only"), "{body}");
    }
    assert_eq!(s.state(&id).await, "ready");
    assert_eq!(dashboard_json(&s.proxy).await["read_only"], true, "the page hides its buttons");
    let wait = http_client()
        .get(s.proxy.admin_url(&format!("/admin/drain-wait?backend={id}&timeout=1s")))
        .send()
        .await
        .unwrap();
    assert_eq!(wait.status(), 200, "reads keep working");
}

/// A pod whose name is HTML (the fake API server does not validate names
/// the way Kubernetes does; an Ingress name or rejection reason carries
/// the same risk) is shown as text in the page and never becomes markup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_in_a_pod_name_is_rendered_as_text() {
    const EVIL: &str = "<img src=x onerror=\"document.title='pwned'\">";
    let mut c = FakeCluster::start(Path::new(BIN)).await.unwrap();
    c.add_api_pod(EVIL, &[]).unwrap();
    c.add_api_pod("api-2", &[]).unwrap();
    let p = c.proxy("", &c.api_route(""), "dashboard-test-key-012345").await.unwrap();
    let id = format!("{NS}/{EVIL}");
    assert!(
        wait_until(WAIT, || async { backend_state(p.admin, &id).await.as_deref() == Some("ready") }).await,
        "pod {id} never listed; log:\n{}",
        p.log()
    );

    let browser = Browser::start().await.expect("headless Chromium");
    browser.client.goto(&p.admin_url("/")).await.unwrap();
    let shown = wait_until(WAIT, || async {
        let cells = browser.client.find_all(Locator::Css("td[data-col=\"id\"]")).await.unwrap_or_default();
        for cell in cells {
            if cell.text().await.unwrap_or_default() == id {
                return true;
            }
        }
        false
    })
    .await;
    assert!(shown, "the name is shown as the text it is: {:?}", browser.client.source().await);
    let images = browser.client.find_all(Locator::Css("img")).await.unwrap();
    assert!(images.is_empty(), "no element was made from the name");
    assert_eq!(browser.client.title().await.unwrap(), "pinroute dashboard", "no script ran");
    // Kubernetes backends are cordoned with kubectl, not from the page.
    for button in browser.client.find_all(Locator::Css("td[data-col=\"actions\"] button")).await.unwrap() {
        assert!(!button.is_displayed().await.unwrap(), "no drain button for pods");
    }
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_mode_routes_and_rejections_are_in_the_json() {
    let mut c = FakeCluster::start(Path::new(BIN)).await.unwrap();
    c.kube.add_object(
        Kind::Service,
        json!({
            "metadata": {"name": "skypilot-api-service", "namespace": NS},
            "spec": {"ports": [{"port": 80, "targetPort": c.port, "protocol": "TCP"}],
                     "selector": {"app": "skypilot-api", "skypilot.co/ready": "true"}},
        }),
    );
    let ingress = |name: &str| {
        json!({
            "metadata": {"name": name, "namespace": NS},
            "spec": {"ingressClassName": "pinroute", "rules": [{"http": {"paths": [{
                "pathType": "Prefix", "path": "/",
                "backend": {"service": {"name": "skypilot-api-service", "port": {"number": 80}}},
            }]}}]},
        })
    };
    c.kube.add_object(Kind::Ingress, ingress("skypilot-ingress"));
    c.add_api_pod("api-1", &[]).unwrap();
    let p = c.proxy("", "[ingress]\nclass = \"pinroute\"\n", "dashboard-test-key-012345").await.unwrap();
    // A second Ingress claiming the same path is rejected, and the page says why.
    c.kube.add_object(Kind::Ingress, ingress("<b>second</b>"));

    let listed = wait_until(WAIT, || async {
        let view = dashboard_json(&p).await;
        let routed = view["routes"].as_array().is_some_and(|routes| {
            routes.iter().any(|r| {
                r["source"] == "kubernetes"
                    && r["backends"].as_array().is_some_and(|b| b.iter().any(|b| b["id"] == "skypilot/api-1"))
            })
        });
        let rejected = view["events"].as_array().is_some_and(|events| {
            events.iter().any(|e| {
                e["kind"] == "ingress_rejected" && e["detail"].as_str().unwrap_or("").contains("<b>second</b>")
            })
        });
        routed && rejected
    })
    .await;
    assert!(listed, "ingress route or rejection missing: {:#}\nlog:\n{}", dashboard_json(&p).await, p.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_request_ids_and_events_move_in_the_json() {
    let s = Setup::start("").await;
    let first = pinroute_tests::client::get(s.proxy.addr, "/api/health", None).await.unwrap();
    let (cookie, home) = (routeid(&first).unwrap(), served_by(&first));
    let id = s.id_of(&home);
    for _ in 0..5 {
        let r = http_client()
            .post(s.proxy.url("/launch"))
            .header("cookie", format!("SKYPILOT_ROUTEID={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("x-skypilot-request-id"));
    }
    let home_row = |view: &serde_json::Value| {
        view["routes"][0]["backends"].as_array().and_then(|b| b.iter().find(|b| b["id"] == id.as_str()).cloned())
    };
    let moved = wait_until(WAIT, || async {
        let view = dashboard_json(&s.proxy).await;
        let Some(row) = home_row(&view) else { return false };
        let sent: u64 = row["requests"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).sum();
        sent == 6 && row["request_ids"] == 5 && row["requests_per_s"].as_f64().unwrap() > 0.0
    })
    .await;
    let view = dashboard_json(&s.proxy).await;
    assert!(moved, "{:#}", home_row(&view).unwrap_or_default());
    let row = home_row(&view).unwrap();
    assert_eq!(row["error_rate"], 0.0);
    assert_eq!(row["drain"]["pinned_clients"], 1);
    let added: Vec<&str> = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "added")
        .filter_map(|e| e["backend"].as_str())
        .collect();
    assert_eq!(added.len(), 2, "both backends were listed: {:#}", view["events"]);
}

/// `pinroute demo --rolling` (its backends on free ports: the fixed
/// 46580-46583 lie in the ephemeral range, where any client socket of the
/// machine can hold one) prints the dashboard's URL first, and after the upgrade its v2
/// servers keep serving: "the proxy keeps running: try the commands above".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_the_dashboard_first_and_v2_keeps_serving_after_the_rollout() {
    use std::io::BufRead;

    let (listen, admin) = (pinroute_tests::free_port(), pinroute_tests::free_port());
    let mut child = std::process::Command::new(BIN)
        .args([
            "demo",
            "--rolling",
            "--listen",
            &format!("127.0.0.1:{listen}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--backend-port",
            "0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _child = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first, format!("pinroute dashboard: http://127.0.0.1:{admin}/"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = vec![first];
    while !seen.last().unwrap().starts_with("rolling upgrade done") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("no summary within 60 s ({e}); output:\n{}", seen.join("\n")),
        }
    }
    assert!(seen.last().unwrap().contains(" 0 failed"), "{}", seen.join("\n"));

    // Well past the backends' shutdown grace: v2 still ready and answering.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let view: serde_json::Value = http_client()
        .get(format!("http://127.0.0.1:{admin}/dashboard.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let states: Vec<(String, String)> = view["routes"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_str().unwrap().to_string(), b["state"].as_str().unwrap().to_string()))
        .collect();
    // "two v1 API servers (127.0.0.1:A, :B) are upgraded to two v2 servers (:C, :D) under load"
    let v2_ports: Vec<String> = seen
        .iter()
        .find_map(|l| l.split_once("two v2 servers (")?.1.split_once(')').map(|(ports, _)| ports.to_string()))
        .expect("the demo names its v2 servers")
        .split(", ")
        .map(|p| p.trim_start_matches(':').to_string())
        .collect();
    assert_eq!(v2_ports.len(), 2, "{}", seen.join("\n"));
    for port in v2_ports {
        let id = format!("127.0.0.1:{port}");
        assert!(states.contains(&(id.clone(), "ready".to_string())), "{id} not ready after the rollout: {states:?}");
    }
    for _ in 0..4 {
        let r = http_client().get(format!("http://127.0.0.1:{listen}/api/health")).send().await.unwrap();
        assert_eq!(r.status(), 200, "the demo proxy still serves after the rollout");
    }
    let kinds: Vec<&str> = view["events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    for kind in ["draining", "gone"] {
        assert!(kinds.contains(&kind), "the rollout's {kind} events are listed: {kinds:?}");
    }
}
