//! Idle long-lived streams: opens N `GET /api/stream` connections through a
//! contender, waits until every one has its first line, lets the process
//! settle, and reports the contender's resident memory before and after
//! (`VmRSS` of the given pids, summed) as KiB per open stream.
//!
//! Prints one JSON object on stdout. Every wait has a deadline; the streams
//! are closed when the process ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

const USAGE: &str = "usage: idle_streams --target HOST:PORT --pid PID [--pid PID ...] \
[--streams 2000] [--hold SECS] [--beat SECS] [--cookie 'NAME=VALUE'] \
[--timeout SECS] [--settle SECS] [--concurrency N]";

struct Args {
    target: String,
    pids: Vec<u32>,
    streams: usize,
    hold: u64,
    beat: u64,
    cookie: Option<String>,
    timeout: u64,
    settle: u64,
    concurrency: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        target: String::new(),
        pids: Vec::new(),
        streams: 2000,
        hold: 120,
        beat: 5,
        cookie: None,
        timeout: 60,
        settle: 2,
        concurrency: 128,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = || format!("{flag} {v}");
        match flag.as_str() {
            "--target" => args.target = v.clone(),
            "--pid" => args.pids.push(v.parse().with_context(bad)?),
            "--streams" => args.streams = v.parse().with_context(bad)?,
            "--hold" => args.hold = v.parse().with_context(bad)?,
            "--beat" => args.beat = v.parse().with_context(bad)?,
            "--cookie" => args.cookie = Some(v.clone()).filter(|c| !c.is_empty()),
            "--timeout" => args.timeout = v.parse().with_context(bad)?,
            "--settle" => args.settle = v.parse().with_context(bad)?,
            "--concurrency" => args.concurrency = v.parse().with_context(bad)?,
            _ => anyhow::bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    if args.target.is_empty() || args.pids.is_empty() {
        anyhow::bail!("{USAGE}");
    }
    Ok(args)
}

/// Sum of `VmRSS` (KiB) over `pids`; a vanished pid counts as an error.
fn rss_kib(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status (did the contender exit?)"))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
        total += kib;
    }
    Ok(total)
}

/// Opens one stream and returns it once its first line arrived.
async fn open_stream(target: &str, request: &[u8]) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(target).await.context("connect")?;
    stream.write_all(request).await.context("write request")?;
    let mut seen = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await.context("read")?;
        if n == 0 {
            let head = String::from_utf8_lossy(&seen);
            anyhow::bail!("closed before the first line: {:?}", head.lines().next().unwrap_or(""));
        }
        seen.extend_from_slice(&buf[..n]);
        if seen.len() >= 12 && !seen.starts_with(b"HTTP/1.1 200") {
            let head = String::from_utf8_lossy(&seen);
            anyhow::bail!("status {:?}", head.lines().next().unwrap_or(""));
        }
        if seen.windows(12).any(|w| w == b"stream-start") {
            return Ok(stream);
        }
        if seen.len() > 64 * 1024 {
            anyhow::bail!("no first line within 64 KiB");
        }
    }
}

/// Reads (and drops) heartbeats until the peer closes; counts early ends.
async fn keep_reading(mut stream: TcpStream, closed_early: Arc<AtomicUsize>) {
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                closed_early.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(_) => {}
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let rss_before = rss_kib(&args.pids)?;
    let cookie = args.cookie.as_ref().map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
    let request: Arc<[u8]> = format!(
        "GET /api/stream?hold={}&beat={} HTTP/1.1\r\nHost: {}\r\n{cookie}Accept: */*\r\n\r\n",
        args.hold, args.beat, args.target
    )
    .into_bytes()
    .into();
    let target: Arc<str> = args.target.clone().into();
    // Bounded connects in flight: a burst of 2,000 SYNs would overflow the
    // listen backlogs and measure that instead.
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let closed_early = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::channel::<Result<(), String>>(args.streams.max(1));
    let started = Instant::now();
    for _ in 0..args.streams {
        let (gate, request, target, tx, closed_early) =
            (gate.clone(), request.clone(), target.clone(), tx.clone(), closed_early.clone());
        tokio::spawn(async move {
            let Ok(permit) = gate.acquire_owned().await else {
                return;
            };
            match open_stream(&target, &request).await {
                Ok(stream) => {
                    drop(permit);
                    let _ = tx.send(Ok(())).await;
                    keep_reading(stream, closed_early).await;
                }
                Err(e) => {
                    drop(permit);
                    let _ = tx.send(Err(format!("{e:#}"))).await;
                }
            }
        });
    }
    drop(tx);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let (mut open, mut failed, mut first_error) = (0usize, 0usize, String::new());
    while open + failed < args.streams {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Ok(()))) => open += 1,
            Ok(Some(Err(e))) => {
                failed += 1;
                if first_error.is_empty() {
                    first_error = e;
                }
            }
            Ok(None) => break,
            Err(_) => {
                if first_error.is_empty() {
                    first_error = format!("timed out after {} s", args.timeout);
                }
                break;
            }
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    let pending = args.streams - open - failed;
    // Let allocators and lazily grown buffers reach their resting size.
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let rss_after = rss_kib(&args.pids)?;
    let still_open = open.saturating_sub(closed_early.load(Ordering::Relaxed));
    let per_stream = if still_open > 0 { (rss_after as f64 - rss_before as f64) / still_open as f64 } else { 0.0 };
    println!(
        "{{\"streams_requested\":{},\"streams_open\":{open},\"streams_still_open\":{still_open},\
\"failed\":{failed},\"pending\":{pending},\"first_error\":{},\"open_secs\":{open_secs:.3},\
\"rss_before_kib\":{rss_before},\"rss_after_kib\":{rss_after},\"kib_per_stream\":{per_stream:.2}}}",
        args.streams,
        serde_json::Value::String(first_error)
    );
    Ok(())
}
