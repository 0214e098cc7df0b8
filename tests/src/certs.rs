//! Certificates for TLS tests, made with the openssl CLI, and clients that
//! trust only them. A helper that fails panics: it fails the test that called it.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// The SAN of the kit's default leaf: what a test on loopback connects to.
pub const LOCALHOST: &str = "DNS:localhost,IP:127.0.0.1";

/// A test CA and a leaf certificate for `san` (`DNS:a,IP:b`) signed by it,
/// made with the openssl CLI: (ca cert, leaf cert, leaf key).
pub fn make_cert(dir: &Path, name: &str, san: &str) -> (PathBuf, PathBuf, PathBuf) {
    let path = |suffix: &str| dir.join(format!("{name}.{suffix}"));
    let run = |args: &[&str]| {
        let status =
            std::process::Command::new("openssl").args(args).stderr(std::process::Stdio::null()).status().unwrap();
        assert!(status.success(), "openssl {args:?} failed");
    };
    let s = |p: &PathBuf| p.to_string_lossy().into_owned();
    let (ca_key, ca_crt, key, csr, crt, ext) =
        (path("ca.key"), path("ca.crt"), path("key"), path("csr"), path("crt"), path("ext"));
    std::fs::write(&ext, format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n")).unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        &format!("/CN={name}-ca"),
        "-keyout",
        &s(&ca_key),
        "-out",
        &s(&ca_crt),
    ]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", &s(&key), "-out", &s(&csr)]);
    run(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(&ca_crt),
        "-CAkey",
        &s(&ca_key),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &s(&ext),
        "-out",
        &s(&crt),
    ]);
    (ca_crt, crt, key)
}

/// A client that trusts only the certificate (or CA) in the PEM file `cert`.
pub fn tls_client(cert: &Path) -> reqwest::Client {
    tls_client_builder(cert).build().unwrap()
}

/// [`tls_client`], to add to (`.resolve(...)` for a name on loopback).
pub fn tls_client_builder(cert: &Path) -> reqwest::ClientBuilder {
    let pem = std::fs::read(cert).unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
}
