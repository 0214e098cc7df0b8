//! A client for the fake API server, shared by its tests: plain GETs and
//! watch streams (newline-delimited events), every wait bounded by [`WAIT`].

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use bytes::BytesMut;
use futures::StreamExt;
use serde_json::Value;

use crate::fake_kube::FakeKube;

/// Longest wait for one watch event.
pub const WAIT: Duration = Duration::from_secs(5);

/// `http://<fake>{path_and_query}`.
pub fn url(fk: &FakeKube, path_and_query: &str) -> String {
    format!("http://{}{path_and_query}", fk.addr())
}

/// `GET` with a deadline: status code and JSON body.
pub async fn get_json(fk: &FakeKube, path_and_query: &str) -> anyhow::Result<(u16, Value)> {
    let resp = tokio::time::timeout(WAIT, reqwest::get(url(fk, path_and_query))).await??;
    let code = resp.status().as_u16();
    Ok((code, resp.json().await?))
}

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
        let resp = tokio::time::timeout(WAIT, reqwest::get(url(fk, path_and_query))).await??;
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
