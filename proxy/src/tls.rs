//! HTTPS listeners whose certificate is re-read from disk without a restart:
//! a renewed certificate (cert-manager, a rotated Secret) is served from the
//! next handshake on, and open connections keep the one they started with.
//!
//! Owns reading the PEM files and handing rustls the key. It does not decide
//! when to look for changes nor log failures: the caller polls
//! [`ReloadingCert::reload_if_changed`] and reports its errors.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use pingora::listeners::tls::TlsSettings;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{CertificateDer, CryptoProvider, PrivateKeyDer, RusTlsError};

mod resolver;

pub use resolver::CertResolver;

/// Why a certificate/key pair could not be (re)loaded. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is not well-formed PEM.
    #[error("{origin}: {reason}")]
    Pem {
        /// The file, or the Secret and key, the PEM came from.
        origin: String,
        /// What is malformed.
        reason: String,
    },
    /// No `CERTIFICATE` block in the certificate file.
    #[error("{origin}: no certificate (expected a PEM `-----BEGIN CERTIFICATE-----` block)")]
    NoCertificate {
        /// The file, or the Secret and key, the PEM came from.
        origin: String,
    },
    /// No private key block in the key file.
    #[error("{origin}: no private key (expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block)")]
    NoKey {
        /// The file, or the Secret and key, the PEM came from.
        origin: String,
    },
    /// More than one private key: which one the certificate belongs to is a guess.
    #[error("{origin}: {count} private keys; give exactly one")]
    SeveralKeys {
        /// The file, or the Secret and key, the PEM came from.
        origin: String,
        /// How many were found.
        count: usize,
    },
    /// A password-protected key; the proxy has no password to give.
    #[error("{origin}: the private key is encrypted; decrypt it (`openssl pkey -in KEY -out PLAIN`)")]
    EncryptedKey {
        /// The file, or the Secret and key, the PEM came from.
        origin: String,
    },
    /// rustls cannot use the key (unknown algorithm, corrupt DER).
    #[error("{origin}: unusable private key: {reason}")]
    Key {
        /// The file, or the Secret and key, the PEM came from.
        origin: String,
        /// rustls' complaint.
        reason: String,
    },
    /// The first certificate cannot be parsed.
    #[error("{origin}: unusable certificate: {reason}")]
    Certificate {
        /// The file, or the Secret and key, the PEM came from.
        origin: String,
        /// rustls' complaint.
        reason: String,
    },
    /// The key is not the one the (first) certificate was issued for.
    #[error("the private key {key} does not match the certificate {cert}")]
    KeyMismatch {
        /// Where the certificate came from.
        cert: String,
        /// Where the key came from.
        key: String,
    },
    /// pingora's TLS settings could not be created.
    #[error("cannot set up the TLS listener: {0}")]
    Listener(String),
}

/// A certificate and key read from two PEM files, swapped in place when the
/// files change. Handshakes take the current one; none waits for a reload.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// What the files looked like when last read; the lock also keeps two
    /// reloads from interleaving.
    seen: Mutex<(FileStamp, FileStamp)>,
}

/// Modification time and size: a rewritten file changes at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl ReloadingCert {
    /// Reads and checks `cert_file` (the chain, leaf first) and `key_file`.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<ReloadingCert>, TlsError> {
        // Stamped before reading: a write racing the read shows up as a
        // change at the next poll instead of being missed.
        let seen = (stamp(cert_file)?, stamp(key_file)?);
        let key = load_certified_key(cert_file, key_file)?;
        Ok(Arc::new(ReloadingCert {
            cert_path: cert_file.to_owned(),
            key_path: key_file.to_owned(),
            current: ArcSwap::from_pointee(key),
            seen: Mutex::new(seen),
        }))
    }

    /// Re-reads both files if either changed since it was last read; `true`
    /// when a new certificate is now served. On error the old one stays.
    /// A broken pair is reported once, then retried when a file changes
    /// again (e.g. the key written after the certificate).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let now = (stamp(&self.cert_path)?, stamp(&self.key_path)?);
        if now == *seen {
            return Ok(false);
        }
        *seen = now;
        let key = load_certified_key(&self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(key));
        Ok(true)
    }

    /// The certificate and key handed to new handshakes.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// The certificate chain file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The private key file.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }
}

/// rustls requires `Debug`; the key material stays out of it.
impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert").field("cert_path", &self.cert_path).field("key_path", &self.key_path).finish()
    }
}

/// TLS settings for an HTTPS listener serving `certs`, offering HTTP/2 and
/// HTTP/1.1 (WebSocket upgrades need 1.1; clients that want them offer only 1.1).
pub fn listener_settings(certs: Arc<CertResolver>) -> Result<TlsSettings, TlsError> {
    // pingora reads these paths only when no resolver is installed
    // (`TlsSettings::build`), so empty ones are never opened.
    let mut settings = TlsSettings::intermediate("", "").map_err(|e| TlsError::Listener(e.to_string()))?;
    settings.set_cert_resolver(certs);
    settings.enable_h2();
    Ok(settings)
}

fn stamp(path: &Path) -> Result<FileStamp, TlsError> {
    let metadata = std::fs::metadata(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })?;
    Ok(FileStamp { modified: metadata.modified().ok(), len: metadata.len() })
}

fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source });
    let (cert_pem, key_pem) = (read(cert_path)?, read(key_path)?);
    certified_key(
        Pem { origin: cert_path.display().to_string(), bytes: &cert_pem },
        Pem { origin: key_path.display().to_string(), bytes: &key_pem },
    )
}

/// PEM text and where it came from (a file, a Secret's `tls.crt`), for errors.
pub struct Pem<'a> {
    /// Named in every error about it.
    pub origin: String,
    /// The text.
    pub bytes: &'a [u8],
}

/// A certificate chain (leaf first) and its private key, checked to belong
/// together, ready for rustls.
pub fn certified_key(cert: Pem<'_>, key: Pem<'_>) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = parse_pem(&cert)?
        .into_iter()
        .filter(|block| block.label == "CERTIFICATE")
        .map(|block| CertificateDer::from(block.der))
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { origin: cert.origin });
    }
    let private = private_key(&key)?;
    // The same provider `TlsSettings::build` installs, so the key is signed
    // with what the handshake negotiates. Installing twice is a no-op.
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| TlsError::Listener("no rustls crypto provider is installed".to_owned()))?;
    let signing_key = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| TlsError::Key { origin: key.origin.clone(), reason: e.to_string() })?;
    // A key that cannot name its public half cannot be compared; rustls
    // then accepts it too (`CertifiedKey::from_der`).
    let comparable = signing_key.public_key().is_some();
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(RusTlsError::InconsistentKeys(_)) if comparable => {
            Err(TlsError::KeyMismatch { cert: cert.origin, key: key.origin })
        }
        Err(RusTlsError::InconsistentKeys(_)) => Ok(certified),
        Err(e) => Err(TlsError::Certificate { origin: cert.origin, reason: e.to_string() }),
    }
}

fn private_key(pem: &Pem<'_>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let origin = || pem.origin.clone();
    let blocks = parse_pem(pem)?;
    if blocks.iter().any(|b| b.label == "ENCRYPTED PRIVATE KEY" || b.encrypted) {
        return Err(TlsError::EncryptedKey { origin: origin() });
    }
    let mut keys: Vec<_> = blocks
        .into_iter()
        .filter(|b| matches!(b.label.as_str(), "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY"))
        .collect();
    match keys.len() {
        0 => Err(TlsError::NoKey { origin: origin() }),
        1 => {
            let der = keys.remove(0).der;
            // The DER says which of PKCS#8, PKCS#1 and SEC1 it is; trusting it
            // over the label also accepts keys mislabelled by old tools.
            PrivateKeyDer::try_from(der).map_err(|reason| TlsError::Key { origin: origin(), reason: reason.to_owned() })
        }
        count => Err(TlsError::SeveralKeys { origin: origin(), count }),
    }
}

/// One `-----BEGIN label-----` … `-----END label-----` block.
struct PemBlock {
    label: String,
    der: Vec<u8>,
    /// RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`): OpenSSL's legacy
    /// password-protected keys.
    encrypted: bool,
}

/// RFC 7468 PEM, leniently: text around blocks is ignored (OpenSSL writes
/// `Bag Attributes` and `subject=` lines) and so are blocks of other labels
/// (`EC PARAMETERS`). rustls' own parser is not re-exported by pingora.
fn parse_pem(pem: &Pem<'_>) -> Result<Vec<PemBlock>, TlsError> {
    let pem_error = |reason: String| TlsError::Pem { origin: pem.origin.clone(), reason };
    let text = std::str::from_utf8(pem.bytes)
        .map_err(|_| pem_error("not PEM text (a DER file? convert it with `openssl x509 -inform der`)".to_owned()))?;
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        let Some(label) = line.trim().strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let (mut base64, mut encrypted) = (String::new(), false);
        loop {
            let Some((number, line)) = lines.next() else {
                return Err(pem_error(format!("the {label} block has no `{end}` line")));
            };
            let line = line.trim();
            if line == end {
                break;
            }
            if line.starts_with("-----") {
                return Err(pem_error(format!("line {}: expected `{end}`", number + 1)));
            }
            if line.contains(':') {
                encrypted |= line.contains("ENCRYPTED");
                continue;
            }
            base64.push_str(line);
        }
        let der = STANDARD.decode(&base64).map_err(|e| pem_error(format!("the {label} block is not base64: {e}")))?;
        blocks.push(PemBlock { label: label.to_owned(), der, encrypted });
    }
    Ok(blocks)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;
    use std::process::Command;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, UNIX_EPOCH};

    use pingora::tls::{ClientConfig, RootCertStore, ServerName, TlsConnector};

    /// A scratch directory for one test, removed at its end.
    pub(crate) struct Scratch(PathBuf);

    impl Scratch {
        pub(crate) fn new(test: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("pinroute-tls-{}-{test}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        pub(crate) fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        fn openssl(&self, args: &[&str]) {
            let out = Command::new("openssl").args(args).current_dir(&self.0).output().unwrap();
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }

        /// `name.crt` + `name.key`: a self-signed P-256 leaf for localhost
        /// (CA:FALSE, so webpki accepts it as its own trust anchor).
        pub(crate) fn pair(&self, name: &str) -> (PathBuf, PathBuf) {
            let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
            self.openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-days",
                "1",
                "-keyout",
                &key,
                "-out",
                &crt,
            ]);
            (self.path(&crt), self.path(&key))
        }

        /// The DER of a PEM certificate, as OpenSSL (not our parser) reads it.
        pub(crate) fn der(&self, cert: &Path) -> Vec<u8> {
            let out =
                Command::new("openssl").arg("x509").arg("-in").arg(cert).args(["-outform", "der"]).output().unwrap();
            assert!(out.status.success());
            out.stdout
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Writes a new file and renames it over `path`, as Kubernetes' atomic
    /// writer does, with a distinct mtime so coarse clocks cannot hide it.
    fn replace(path: &Path, contents: &[u8]) {
        static TICK: AtomicU64 = AtomicU64::new(0);
        let tmp = path.with_extension("new");
        fs::write(&tmp, contents).unwrap();
        let mtime = UNIX_EPOCH + Duration::from_secs(2_000_000_000 + TICK.fetch_add(1, Ordering::Relaxed));
        fs::File::options().write(true).open(&tmp).unwrap().set_modified(mtime).unwrap();
        fs::rename(&tmp, path).unwrap();
    }

    fn served(cert: &ReloadingCert) -> Vec<u8> {
        cert.current().cert[0].to_vec()
    }

    #[test]
    fn loads_and_hands_out_the_certificate() {
        let scratch = Scratch::new("load");
        let (crt, key) = scratch.pair("one");
        let cert = ReloadingCert::load(&crt, &key).unwrap();
        assert_eq!(served(&cert), scratch.der(&crt));
        assert_eq!(cert.current().cert.len(), 1);
        assert_eq!((cert.cert_path(), cert.key_path()), (crt.as_path(), key.as_path()));
        assert!(!cert.reload_if_changed().unwrap(), "nothing changed");
    }

    #[test]
    fn replaced_files_are_served_after_reload() {
        let scratch = Scratch::new("replace");
        let (crt, key) = scratch.pair("live");
        let (crt2, key2) = scratch.pair("renewed");
        let cert = ReloadingCert::load(&crt, &key).unwrap();
        replace(&crt, &fs::read(&crt2).unwrap());
        replace(&key, &fs::read(&key2).unwrap());
        assert!(cert.reload_if_changed().unwrap());
        assert_eq!(served(&cert), scratch.der(&crt2));
        assert!(!cert.reload_if_changed().unwrap());
    }

    #[test]
    fn broken_file_is_named_and_the_old_certificate_kept() {
        let scratch = Scratch::new("broken");
        let (crt, key) = scratch.pair("live");
        let good = fs::read(&crt).unwrap();
        let cert = ReloadingCert::load(&crt, &key).unwrap();
        let before = served(&cert);

        replace(&crt, b"-----BEGIN CERTIFICATE-----\nnot*base64\n-----END CERTIFICATE-----\n");
        let err = cert.reload_if_changed().unwrap_err();
        assert!(matches!(&err, TlsError::Pem { origin, .. } if *origin == crt.display().to_string()), "{err}");
        assert!(err.to_string().contains(&crt.display().to_string()), "{err}");
        assert_eq!(served(&cert), before);
        assert!(!cert.reload_if_changed().unwrap(), "the same broken file is reported once");

        replace(&crt, &fs::read(&key).unwrap());
        assert!(
            matches!(cert.reload_if_changed(), Err(TlsError::NoCertificate { origin }) if origin == crt.display().to_string())
        );
        replace(&crt, &good[..good.len() / 2]);
        assert!(matches!(cert.reload_if_changed(), Err(TlsError::Pem { .. })));
        fs::remove_file(&crt).unwrap();
        assert!(matches!(cert.reload_if_changed(), Err(TlsError::Read { path, .. }) if path == crt));
        assert_eq!(served(&cert), before);

        replace(&crt, &good);
        assert!(cert.reload_if_changed().unwrap());
        assert_eq!(served(&cert), before);
    }

    #[test]
    fn mismatched_key_is_refused_until_the_pair_is_complete() {
        let scratch = Scratch::new("mismatch");
        let (crt, key) = scratch.pair("live");
        let (crt2, key2) = scratch.pair("renewed");
        let err = ReloadingCert::load(&crt, &key2).unwrap_err();
        assert!(
            matches!(&err, TlsError::KeyMismatch { cert, key } if *cert == crt.display().to_string() && *key == key2.display().to_string()),
            "{err}"
        );
        let message = err.to_string();
        assert!(message.contains("live.crt") && message.contains("renewed.key"), "{message}");

        // A rotation that writes the certificate first: refused, then
        // accepted once the key follows.
        let cert = ReloadingCert::load(&crt, &key).unwrap();
        let before = served(&cert);
        replace(&crt, &fs::read(&crt2).unwrap());
        assert!(matches!(cert.reload_if_changed(), Err(TlsError::KeyMismatch { .. })));
        assert_eq!(served(&cert), before);
        replace(&key, &fs::read(&key2).unwrap());
        assert!(cert.reload_if_changed().unwrap());
        assert_eq!(served(&cert), scratch.der(&crt2));
    }

    #[test]
    fn key_formats_openssl_writes() {
        let scratch = Scratch::new("formats");
        // PKCS#1 RSA and SEC1 EC (after an `EC PARAMETERS` block).
        scratch.openssl(&["genrsa", "-traditional", "-out", "rsa.key", "2048"]);
        scratch.openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-out", "ec.key"]);
        for name in ["rsa", "ec"] {
            let key = format!("{name}.key");
            let crt = format!("{name}.crt");
            scratch.openssl(&["req", "-x509", "-key", &key, "-subj", "/CN=localhost", "-days", "1", "-out", &crt]);
            let text = fs::read_to_string(scratch.path(&key)).unwrap();
            assert!(text.contains(&format!("BEGIN {} PRIVATE KEY", name.to_uppercase())), "{text}");
            ReloadingCert::load(&scratch.path(&crt), &scratch.path(&key)).unwrap();
        }
        let crt = scratch.path("ec.crt");
        scratch.openssl(&["pkey", "-in", "ec.key", "-aes256", "-passout", "pass:x", "-out", "pkcs8-enc.key"]);
        scratch.openssl(&["ec", "-in", "ec.key", "-aes256", "-passout", "pass:x", "-out", "legacy-enc.key"]);
        for encrypted in ["pkcs8-enc.key", "legacy-enc.key"] {
            let err = ReloadingCert::load(&crt, &scratch.path(encrypted)).unwrap_err();
            assert!(matches!(err, TlsError::EncryptedKey { .. }), "{encrypted}: {err}");
        }
        let both = [fs::read(scratch.path("ec.key")).unwrap(), fs::read(scratch.path("rsa.key")).unwrap()].concat();
        fs::write(scratch.path("both.key"), both).unwrap();
        let err = ReloadingCert::load(&crt, &scratch.path("both.key")).unwrap_err();
        assert!(matches!(err, TlsError::SeveralKeys { count: 2, .. }), "{err}");
        let err = ReloadingCert::load(&crt, &crt).unwrap_err();
        assert!(matches!(&err, TlsError::NoKey { origin } if *origin == crt.display().to_string()), "{err}");
        fs::write(scratch.path("ec.der"), scratch.der(&crt)).unwrap();
        let err = ReloadingCert::load(&scratch.path("ec.der"), &scratch.path("ec.key")).unwrap_err();
        assert!(err.to_string().contains("not PEM text"), "{err}");
    }

    /// A TLS client trusting only `anchor`: the served leaf and the
    /// negotiated ALPN protocol.
    async fn handshake(
        addr: std::net::SocketAddr,
        anchor: &[u8],
        alpn: &[&[u8]],
    ) -> std::io::Result<(Vec<u8>, Option<Vec<u8>>)> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(anchor.to_vec())).unwrap();
        let mut config = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let tls = TlsConnector::from(Arc::new(config)).connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
        let session = tls.get_ref().1;
        Ok((session.peer_certificates().unwrap()[0].to_vec(), session.alpn_protocol().map(<[u8]>::to_vec)))
    }

    #[tokio::test]
    async fn listener_serves_the_current_certificate_with_h2_alpn() {
        let scratch = Scratch::new("handshake");
        let (crt, key) = scratch.pair("live");
        let (crt2, key2) = scratch.pair("renewed");
        let (der1, der2) = (scratch.der(&crt), scratch.der(&crt2));
        let cert = ReloadingCert::load(&crt, &key).unwrap();
        let acceptor = listener_settings(CertResolver::new(Some(Arc::clone(&cert)))).unwrap().build().acceptor;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tokio::io::copy(&mut tls, &mut tokio::io::sink()).await;
                    }
                });
            }
        });

        let both: &[&[u8]] = &[b"h2", b"http/1.1"];
        assert_eq!(handshake(addr, &der1, both).await.unwrap(), (der1.clone(), Some(b"h2".to_vec())));
        let websocket = handshake(addr, &der1, &[b"http/1.1"]).await.unwrap();
        assert_eq!(websocket.1.as_deref(), Some(&b"http/1.1"[..]));

        replace(&crt, &fs::read(&crt2).unwrap());
        replace(&key, &fs::read(&key2).unwrap());
        assert!(cert.reload_if_changed().unwrap());
        assert_eq!(handshake(addr, &der2, both).await.unwrap().0, der2, "no restart needed");
        assert!(handshake(addr, &der1, both).await.is_err(), "the old certificate is no longer served");
    }
}
