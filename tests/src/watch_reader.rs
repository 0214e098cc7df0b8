//! A client for the fake API server's watch streams, shared by its tests:
//! reads newline-delimited watch events, every read bounded by [`WAIT`].

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use bytes::BytesMut;
use futures::StreamExt;
use serde_json::Value;

use crate::fake_kube::FakeKube;

/// Longest wait for one watch event.
pub const WAIT: Duration = Duration::from_secs(5);

/// `metadata.resourceVersion` of an object or list, as a number.
pub fn rv_of(v: &Value) -> anyhow::Result<u64> {
    let rv = v["metadata"]["resourceVersion"].as_str().context("no resourceVersion")?;
    Ok(rv.parse()?)
}

/// Reads a watch response line by line, every read bounded by [`WAIT`].
pub struct WatchReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: BytesMut,
}

impl WatchReader {
    /// Opens a watch on the fake at `path_and_query` (status 200, JSON).
    pub async fn open(fk: &FakeKube, path_and_query: &str) -> anyhow::Result<WatchReader> {
        let resp = tokio::time::timeout(WAIT, reqwest::get(format!("http://{}{path_and_query}", fk.addr()))).await??;
        ensure!(resp.status() == 200, "watch status {}", resp.status());
        let ct = resp.headers().get("content-type").map(|v| v.as_bytes().to_vec());
        ensure!(ct.as_deref() == Some(&b"application/json"[..]), "content-type {ct:?}");
        Ok(WatchReader { body: resp.bytes_stream().boxed(), buf: BytesMut::new() })
    }

    /// The next event; `Ok(None)` when the stream ended (cleanly or not).
    pub async fn next(&mut self) -> anyhow::Result<Option<Value>> {
        tokio::time::timeout(WAIT, self.next_unbounded()).await.context("no watch event in time")?
    }

    /// The next event, waiting as long as it takes.
    pub async fn next_unbounded(&mut self) -> anyhow::Result<Option<Value>> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(i + 1);
                return Ok(Some(serde_json::from_slice(&line)?));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(_)) | None => return Ok(None),
            }
        }
    }

    /// The next event, which must be of `kind`; returns its object.
    pub async fn expect(&mut self, kind: &str) -> anyhow::Result<Value> {
        let Some(ev) = self.next().await? else { bail!("stream ended, wanted {kind}") };
        ensure!(ev["type"] == kind, "wanted {kind}, got {ev}");
        Ok(ev["object"].clone())
    }

    /// Asserts nothing arrives for a short while.
    pub async fn expect_quiet(&mut self) -> anyhow::Result<()> {
        match tokio::time::timeout(Duration::from_millis(300), self.next_unbounded()).await {
            Err(_) => Ok(()),
            Ok(ev) => bail!("expected no event, got {:?}", ev?),
        }
    }
}
