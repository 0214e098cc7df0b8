//! The load harness's backend: one small, fast HTTP/1.1 server that every
//! contender (direct, pinroute, HAProxy, nginx) proxies to, so the numbers
//! differ only by the proxy in between.
//!
//! One process serves several listeners (the harness gives three, so sticky
//! routing has a choice; the scale workload a range of 1,000) on a
//! single-threaded runtime: the harness pins it to the load generator's core.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /api/health` | small JSON, `Content-Length` |
//! | `GET /api/get?request_id=ID` | small JSON, like SkyPilot's answer for a finished request |
//! | `GET /api/stream?hold=S&beat=S` | chunked: a `stream-start` line at once, a heartbeat line every `beat` s, ends after `hold` s |
//! | `GET /ws` (upgrade) | websocket echo |
//! | `POST /upload` | reads and discards the body, answers the byte count |
//! | `GET /bench/learn` | small JSON with a new SkyPilot-shaped request id in `X-Skypilot-Request-ID`, as `POST /launch` answers |
//!
//! `/bench/learn` hands out ids number 0, 1, 2, … of a fixed pseudo-random
//! sequence, wrapping after `--learn-ids N`, so a proxy that learns ids from
//! responses holds exactly N after N or more requests; `--print-ids K` prints
//! K of those N ids (evenly spread) for clients that look them up.
//!
//! It knows nothing of pinroute: it must behave the same for every proxy.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Body = UnsyncBoxBody<Bytes, Infallible>;

const USAGE: &str = "usage: bench_backend (--listen ADDR | --listen-range IP:FIRST-LAST)... \
[--max-secs N] [--learn-ids N]\n       bench_backend --print-ids K [--learn-ids N]";

/// Default `--learn-ids`: the scale workload's million request ids.
const DEFAULT_LEARN_IDS: u64 = 1_000_000;

struct Args {
    listen: Vec<SocketAddr>,
    /// The process exits by itself after this long, so a crashed harness
    /// never leaves it running.
    max_secs: u64,
    /// `/bench/learn` wraps after this many distinct ids.
    learn_ids: u64,
    /// Print this many ids and exit instead of serving.
    print_ids: Option<u64>,
}

/// `IP:FIRST-LAST`, both ends included.
fn listen_range(value: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let (ip, ports) = value.rsplit_once(':').context("expected IP:FIRST-LAST")?;
    let (first, last) = ports.split_once('-').context("expected IP:FIRST-LAST")?;
    let ip: IpAddr = ip.parse().context("IP")?;
    let (first, last): (u16, u16) = (first.parse().context("FIRST")?, last.parse().context("LAST")?);
    anyhow::ensure!(first <= last, "FIRST {first} > LAST {last}");
    Ok((first..=last).map(|port| SocketAddr::new(ip, port)).collect())
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { listen: Vec::new(), max_secs: 3600, learn_ids: DEFAULT_LEARN_IDS, print_ids: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--listen" => args.listen.push(value.parse().with_context(|| format!("--listen {value}"))?),
            "--listen-range" => {
                args.listen.extend(listen_range(&value).with_context(|| format!("--listen-range {value}"))?)
            }
            "--max-secs" => args.max_secs = value.parse().with_context(|| format!("--max-secs {value}"))?,
            "--learn-ids" => args.learn_ids = value.parse().with_context(|| format!("--learn-ids {value}"))?,
            "--print-ids" => args.print_ids = Some(value.parse().with_context(|| format!("--print-ids {value}"))?),
            _ => anyhow::bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    anyhow::ensure!(args.learn_ids > 0, "--learn-ids must be at least 1");
    if args.listen.is_empty() && args.print_ids.is_none() {
        anyhow::bail!("{USAGE}");
    }
    Ok(args)
}

/// How many distinct ids `/bench/learn` hands out before wrapping (set once in `main`).
static LEARN_IDS: AtomicU64 = AtomicU64::new(DEFAULT_LEARN_IDS);
/// How many `/bench/learn` answers were given.
static LEARNED: AtomicU64 = AtomicU64::new(0);

/// splitmix64's finaliser: a bijection on u64, so distinct `n` give distinct ids.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Request id number `n`: shaped like SkyPilot's (a UUID4) and spread like
/// random ones, so a proxy's id table sees realistic keys. All 64 bits of
/// `mix(n)` are in it, which keeps the ids distinct.
fn request_id(n: u64) -> String {
    let (a, b) = (mix(n), mix(n ^ 0x5555_5555_5555_5555));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        (a >> 4) & 0xfff,
        8 | (b >> 62),
        (b >> 48) & 0xfff,
        ((a & 0xf) << 44) | (b & 0x0fff_ffff_ffff)
    )
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if let Some(k) = args.print_ids {
        let (k, n) = (k.min(args.learn_ids), args.learn_ids);
        let mut out = String::new();
        for i in 0..k {
            // u128: i * n overflows u64 for large n.
            out.push_str(&request_id((u128::from(i) * u128::from(n) / u128::from(k)) as u64));
            out.push('\n');
        }
        print!("{out}");
        return Ok(());
    }
    LEARN_IDS.store(args.learn_ids, Ordering::Relaxed);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        for (i, addr) in args.listen.iter().enumerate() {
            let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
            tokio::spawn(accept_loop(listener, format!("b{}", i + 1)));
        }
        // The harness waits for this line.
        println!("ready");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(args.max_secs)) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}

async fn accept_loop(listener: TcpListener, name: String) {
    let name: &'static str = Box::leak(name.into_boxed_str());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            // Out of file descriptors or similar: back off, keep serving.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, name));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>, name: &'static str) -> Result<Response<Body>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/api/health") => {
            json(StatusCode::OK, format!(r#"{{"status":"healthy","api_version":"1","backend":"{name}"}}"#))
        }
        (&Method::GET, "/api/get") => {
            json(StatusCode::OK, format!(r#"{{"status":"SUCCEEDED","return_value":"null","backend":"{name}"}}"#))
        }
        (&Method::GET, "/bench/learn") => learn(name),
        (&Method::GET, "/api/stream") => stream(req.uri().query().unwrap_or(""), name),
        (&Method::GET, "/ws") => websocket(req),
        (&Method::POST, "/upload") => upload(req).await,
        _ => json(StatusCode::NOT_FOUND, r#"{"detail":"Not Found"}"#.to_string()),
    };
    Ok(response)
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A new request id in `X-Skypilot-Request-ID`, where SkyPilot's server puts
/// the id of a request it accepted.
fn learn(name: &'static str) -> Response<Body> {
    let n = LEARNED.fetch_add(1, Ordering::Relaxed) % LEARN_IDS.load(Ordering::Relaxed).max(1);
    let id = request_id(n);
    let mut response = json(StatusCode::OK, format!(r#"{{"request_id":"{id}","backend":"{name}"}}"#));
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-skypilot-request-id", value);
    }
    response
}

fn query_secs(query: &str, key: &str, default: u64) -> u64 {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(default)
}

/// A `/api/stream`-shaped response: one line at once (the client counts the
/// stream as open when it sees it), then heartbeats, like SkyPilot's log
/// streams, so the proxies hold a mostly idle connection.
fn stream(query: &str, name: &'static str) -> Response<Body> {
    let hold = Duration::from_secs(query_secs(query, "hold", 60));
    let beat = Duration::from_secs(query_secs(query, "beat", 5).max(1));
    let end = tokio::time::Instant::now() + hold;
    let lines = futures_util::stream::unfold(0u64, move |n| async move {
        if n > 0 {
            let now = tokio::time::Instant::now();
            if now >= end {
                return None;
            }
            tokio::time::sleep(beat.min(end - now)).await;
            if tokio::time::Instant::now() >= end {
                return None;
            }
        }
        let line = if n == 0 {
            Bytes::from(format!("stream-start backend={name}\n"))
        } else {
            Bytes::from(format!("heartbeat {n}\n"))
        };
        Some((Ok::<_, Infallible>(Frame::data(line)), n + 1))
    });
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(lines)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

async fn upload(req: Request<Incoming>) -> Response<Body> {
    let mut body = req.into_body();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    received += data.len() as u64;
                }
            }
            Err(_) => return json(StatusCode::BAD_REQUEST, r#"{"detail":"body read failed"}"#.to_string()),
        }
    }
    json(StatusCode::OK, format!(r#"{{"received":{received}}}"#))
}

fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let is_upgrade =
        req.headers().get(UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return json(StatusCode::BAD_REQUEST, r#"{"detail":"not a websocket"}"#.to_string());
    };
    if !is_upgrade {
        return json(StatusCode::BAD_REQUEST, r#"{"detail":"not a websocket"}"#.to_string());
    }
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(pinroute_benches::ws_config())).await;
        while let Some(Ok(message)) = ws.next().await {
            let reply = match message {
                Message::Text(_) | Message::Binary(_) => message,
                Message::Close(_) => break,
                // tungstenite answers pings itself.
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()).boxed_unsync());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", value);
    }
    response
}
