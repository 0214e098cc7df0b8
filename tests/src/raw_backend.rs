//! A minimal HTTP/1.1 backend on a raw socket whose connection handling the
//! test chooses: it counts the connections it accepts, names the
//! connection in every response, and can close kept connections the way
//! real servers do (right after a response, or when the next request
//! arrives), so the engine's upstream connection reuse can be observed.
//! A POST carrying `x-post-id` is counted by that id when it runs (its whole
//! request was read and it is answered), so a test can tell a POST that
//! never ran from one that ran twice.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the backend treats a connection after it answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Keeps it open for the next request.
    Keep,
    /// Closes it right after the response, without saying so in the response.
    CloseAfterResponse,
    /// Closes it this long after the response if no request came (a server's idle timeout).
    IdleTimeout(Duration),
    /// Reads the second request of each connection, then closes without
    /// answering: the close raced a request already written.
    DropSecondRequest,
}

/// What the backend saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Requests by `METHOD /path` and body (the body names a POST).
    pub requests: Mutex<HashMap<String, u64>>,
    /// POSTs run, by their `x-post-id`.
    pub posts: Mutex<HashMap<String, u64>>,
}

impl Seen {
    /// How often `METHOD /path` (with `body`, if not empty) was received.
    pub fn count(&self, key: &str) -> u64 {
        self.requests.lock().map(|m| m.get(key).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// How often the POST with `x-post-id: id` ran (0: never).
    pub fn post_runs(&self, id: &str) -> u64 {
        self.posts.lock().map(|m| m.get(id).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// POSTs with an `x-post-id` run so far, repeats included.
    pub fn posts_run(&self) -> u64 {
        self.posts.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
}

/// A running raw backend; stops on drop.
#[derive(Debug)]
pub struct RawBackend {
    /// Its address.
    pub addr: SocketAddr,
    /// Its name, sent as `x-demo-backend`.
    pub name: String,
    /// What it saw.
    pub seen: Arc<Seen>,
    task: JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawBackend {
    /// Starts one on 127.0.0.1 with a free port.
    pub async fn start(name: &str, keep_alive: KeepAlive) -> std::io::Result<RawBackend> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Seen::default());
        let (task_seen, task_name) = (seen.clone(), name.to_string());
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let id = task_seen.connections.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(serve(socket, id, task_name.clone(), keep_alive, task_seen.clone()));
            }
        });
        Ok(RawBackend { addr, name: name.to_string(), seen, task })
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.seen.connections.load(Ordering::SeqCst)
    }
}

/// One parsed request.
struct Request {
    /// `METHOD /path`.
    key: String,
    body: Vec<u8>,
    /// Its `x-post-id` header.
    post_id: Option<String>,
}

async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next()?.split(' ');
    let key = format!("{} {}", start.next()?, start.next()?);
    let headers: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(':')).collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim());
    let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let post_id = header("x-post-id").map(str::to_string);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Some(Request { key, body, post_id })
}

async fn serve(mut socket: TcpStream, id: u64, name: String, keep_alive: KeepAlive, seen: Arc<Seen>) {
    let mut buf = Vec::new();
    let mut served = 0;
    loop {
        let next = match keep_alive {
            KeepAlive::IdleTimeout(idle) if served > 0 => {
                match tokio::time::timeout(idle, read_request(&mut socket, &mut buf)).await {
                    Ok(next) => next,
                    Err(_) => return,
                }
            }
            _ => read_request(&mut socket, &mut buf).await,
        };
        let Some(Request { key, body, post_id }) = next else { return };
        let key = if body.is_empty() { key } else { format!("{key} {}", String::from_utf8_lossy(&body)) };
        if let Ok(mut requests) = seen.requests.lock() {
            *requests.entry(key.clone()).or_default() += 1;
        }
        if keep_alive == KeepAlive::DropSecondRequest && served == 1 {
            return;
        }
        if let Some(id) = post_id.filter(|_| key.starts_with("POST ")) {
            if let Ok(mut posts) = seen.posts.lock() {
                *posts.entry(id).or_default() += 1;
            }
        }
        let reply = format!("{name} {key}");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-demo-backend: {name}\r\nx-connection: {id}\r\n\r\n{reply}",
            reply.len()
        );
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
        served += 1;
        if keep_alive == KeepAlive::CloseAfterResponse {
            return;
        }
    }
}
