//! Websocket echo round trips: opens N websocket connections to `/ws`
//! through a contender, then on each does M send-and-wait-for-echo round
//! trips; reports round trips per second and latency percentiles.
//!
//! The handshakes are done before the clock starts: this measures frames
//! relayed over an upgraded connection, not connection setup. Prints one JSON
//! object on stdout; the whole run has a deadline.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const USAGE: &str = "usage: ws_echo --url ws://HOST:PORT/ws [--conns 64] [--rounds 1000] \
[--size 32] [--cookie 'NAME=VALUE'] [--timeout SECS]";

struct Args {
    url: String,
    conns: usize,
    rounds: usize,
    size: usize,
    cookie: Option<String>,
    timeout: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { url: String::new(), conns: 64, rounds: 1000, size: 32, cookie: None, timeout: 60 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = || format!("{flag} {v}");
        match flag.as_str() {
            "--url" => args.url = v.clone(),
            "--conns" => args.conns = v.parse().with_context(bad)?,
            "--rounds" => args.rounds = v.parse().with_context(bad)?,
            "--size" => args.size = v.parse().with_context(bad)?,
            "--cookie" => args.cookie = Some(v.clone()).filter(|c| !c.is_empty()),
            "--timeout" => args.timeout = v.parse().with_context(bad)?,
            _ => anyhow::bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    if args.url.is_empty() {
        anyhow::bail!("{USAGE}");
    }
    Ok(args)
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, cookie: Option<&str>) -> anyhow::Result<Socket> {
    let mut request = url.into_client_request().context("websocket url")?;
    if let Some(cookie) = cookie {
        request.headers_mut().insert("cookie", HeaderValue::from_str(cookie).context("cookie header")?);
    }
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(pinroute_benches::ws_config()), false)
        .await
        .context("websocket handshake")?;
    Ok(socket)
}

/// Latencies in microseconds of `rounds` echoes, or the error that ended them.
async fn echo_rounds(
    mut socket: Socket,
    rounds: usize,
    payload: Bytes,
    deadline: tokio::time::Instant,
) -> (Vec<u32>, Option<String>) {
    let mut latencies = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        if tokio::time::Instant::now() >= deadline {
            return (latencies, Some("deadline reached".into()));
        }
        let sent = Instant::now();
        if let Err(e) = socket.send(Message::Binary(payload.clone())).await {
            return (latencies, Some(format!("send: {e}")));
        }
        loop {
            match tokio::time::timeout_at(deadline, socket.next()).await {
                Ok(Some(Ok(Message::Binary(echo)))) if echo.len() == payload.len() => break,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(other))) => return (latencies, Some(format!("unexpected frame {other:?}"))),
                Ok(Some(Err(e))) => return (latencies, Some(format!("read: {e}"))),
                Ok(None) => return (latencies, Some("closed by peer".into())),
                Err(_) => return (latencies, Some("deadline reached".into())),
            }
        }
        latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    let _ = socket.close(None).await;
    (latencies, None)
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let connects = (0..args.conns).map(|_| {
        let (url, cookie) = (args.url.clone(), args.cookie.clone());
        tokio::spawn(async move { connect(&url, cookie.as_deref()).await })
    });
    let mut sockets = Vec::new();
    let (mut errors, mut first_error) = (0usize, None::<String>);
    for handle in connects.collect::<Vec<_>>() {
        match tokio::time::timeout_at(deadline, handle).await {
            Ok(Ok(Ok(socket))) => sockets.push(socket),
            Ok(Ok(Err(e))) => {
                errors += 1;
                first_error.get_or_insert(format!("{e:#}"));
            }
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert(format!("connect task: {e}"));
            }
            Err(_) => {
                errors += 1;
                first_error.get_or_insert("connect deadline reached".into());
            }
        }
    }
    let connected = sockets.len();
    let payload = Bytes::from(vec![b'x'; args.size]);
    let started = Instant::now();
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|socket| tokio::spawn(echo_rounds(socket, args.rounds, payload.clone(), deadline)))
        .collect();
    let mut latencies = Vec::with_capacity(args.conns * args.rounds);
    for task in tasks {
        match task.await {
            Ok((lat, err)) => {
                latencies.extend(lat);
                if let Some(e) = err {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(format!("echo task: {e}"));
            }
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let mean = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().map(|&l| f64::from(l)).sum::<f64>() / latencies.len() as f64
    };
    println!(
        "{{\"conns\":{},\"connected\":{connected},\"rounds\":{},\"requests\":{},\"duration_us\":{},\
\"errors\":{errors},\"first_error\":{},\"lat_p50_us\":{},\"lat_p90_us\":{},\"lat_p99_us\":{},\
\"lat_max_us\":{},\"lat_mean_us\":{mean:.1}}}",
        args.conns,
        args.rounds,
        latencies.len(),
        elapsed.as_micros(),
        serde_json::Value::String(first_error.unwrap_or_default()),
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0),
    );
    Ok(())
}
