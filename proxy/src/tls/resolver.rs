//! Which certificate a handshake gets: in ingress mode the Ingresses'
//! `spec.tls` Secrets by server name (SNI), beside the `[server.tls]` files.
//!
//! Order: the exact name, then a one-label wildcard (`*.example.com`), then
//! the file's certificate, then the first Secret's (a client that sends no
//! SNI, e.g. one connecting by IP, still gets a certificate: ingress-nginx
//! would hand it a self-signed one instead).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert};
use pinroute_discovery::TlsFromSecret;

use super::{certified_key, Pem, ReloadingCert, TlsError};

/// The certificates HTTPS listeners serve; Secrets swapped in as a whole.
pub struct CertResolver {
    file: Option<Arc<ReloadingCert>>,
    secrets: ArcSwap<SecretCerts>,
}

#[derive(Default)]
struct SecretCerts {
    /// Lower-case host names as `spec.tls[].hosts` gives them (wildcards
    /// as `*.example.com`).
    by_name: HashMap<String, Named>,
    /// For names nothing else covers, when there is no file certificate.
    fallback: Option<Named>,
}

#[derive(Clone)]
struct Named {
    /// `namespace/name` of the Secret.
    secret: String,
    key: Arc<CertifiedKey>,
}

impl CertResolver {
    /// Serves `file` (if any) until Secrets arrive, and for names they do not cover.
    pub fn new(file: Option<Arc<ReloadingCert>>) -> Arc<CertResolver> {
        Arc::new(CertResolver { file, secrets: ArcSwap::from_pointee(SecretCerts::default()) })
    }

    /// The `[server.tls]` certificate, for its reloader.
    pub fn file(&self) -> Option<&Arc<ReloadingCert>> {
        self.file.as_ref()
    }

    /// Serves `secrets` from the next handshake on (open connections keep
    /// theirs). A Secret whose PEM is unusable keeps serving what it served
    /// before, and is returned as an error to report; so do names in `keep`
    /// (hosts still routed for a rejected Ingress) that `secrets` dropped.
    pub fn set_secrets(&self, secrets: &[TlsFromSecret], keep: &[String]) -> Vec<TlsError> {
        let old = self.secrets.load();
        let mut next = SecretCerts::default();
        let mut errors = Vec::new();
        // Secrets without hosts first: they are the ones meant for any name.
        let mut ordered: Vec<&TlsFromSecret> = secrets.iter().collect();
        ordered.sort_by_key(|s| !s.hosts.is_empty());
        for secret in ordered {
            let id = format!("{}/{}", secret.namespace, secret.secret);
            let (Some(cert), Some(key)) = (&secret.cert_pem, &secret.key_pem) else {
                // Missing Secret or key: the translation warns about it.
                continue;
            };
            let parsed = certified_key(
                Pem { origin: format!("Secret {id} tls.crt"), bytes: cert },
                Pem { origin: format!("Secret {id} tls.key"), bytes: key },
            );
            let named = match parsed {
                Ok(key) => Named { secret: id, key: Arc::new(key) },
                Err(error) => {
                    errors.push(error);
                    for (name, named) in old.by_name.iter().filter(|(_, n)| n.secret == id) {
                        next.by_name.entry(name.clone()).or_insert_with(|| named.clone());
                    }
                    continue;
                }
            };
            for host in &secret.hosts {
                next.by_name.entry(host.clone()).or_insert_with(|| named.clone());
            }
            next.fallback.get_or_insert(named);
        }
        for name in keep {
            if let (false, Some(named)) = (next.by_name.contains_key(name), old.by_name.get(name)) {
                next.by_name.insert(name.clone(), named.clone());
            }
        }
        if next.fallback.is_none() {
            next.fallback = old.fallback.clone().filter(|_| !errors.is_empty());
        }
        self.secrets.store(Arc::new(next));
        errors
    }

    /// The certificate for a handshake naming `server_name`.
    fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let secrets = self.secrets.load();
        let name = server_name.map(str::to_ascii_lowercase);
        let wildcard = name.as_deref().and_then(|n| n.split_once('.')).map(|(_, parent)| format!("*.{parent}"));
        [name, wildcard]
            .into_iter()
            .flatten()
            .find_map(|n| secrets.by_name.get(&n))
            .map(|named| named.key.clone())
            .or_else(|| self.file.as_ref().map(|file| file.current()))
            .or_else(|| secrets.fallback.as_ref().map(|named| named.key.clone()))
    }
}

/// rustls requires `Debug`; the key material stays out of it.
impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secrets = self.secrets.load();
        let mut names: Vec<&String> = secrets.by_name.keys().collect();
        names.sort();
        f.debug_struct("CertResolver").field("file", &self.file).field("names", &names).finish()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(client_hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::Scratch;

    fn secret(scratch: &Scratch, name: &str, hosts: &[&str]) -> TlsFromSecret {
        let (crt, key) = scratch.pair(name);
        TlsFromSecret {
            namespace: "skypilot".to_string(),
            secret: name.to_string(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            cert_pem: Some(std::fs::read(crt).unwrap()),
            key_pem: Some(std::fs::read(key).unwrap()),
        }
    }

    /// The leaf served for `name`, as DER.
    fn leaf(resolver: &CertResolver, name: Option<&str>) -> Option<Vec<u8>> {
        resolver.pick(name).map(|k| k.cert[0].to_vec())
    }

    fn der_of(scratch: &Scratch, secret: &TlsFromSecret) -> Vec<u8> {
        let path = scratch.path(&format!("{}.crt", secret.secret));
        scratch.der(&path)
    }

    #[test]
    fn names_then_wildcard_then_file_then_first_secret() {
        let scratch = Scratch::new("resolver-order");
        let exact = secret(&scratch, "exact", &["sky.example.com"]);
        let wild = secret(&scratch, "wild", &["*.example.com"]);
        let (exact_der, wild_der) = (der_of(&scratch, &exact), der_of(&scratch, &wild));

        let resolver = CertResolver::new(None);
        assert_eq!(leaf(&resolver, Some("sky.example.com")), None, "nothing to serve yet");
        assert!(resolver.set_secrets(&[exact.clone(), wild.clone()], &[]).is_empty());
        assert_eq!(leaf(&resolver, Some("SKY.Example.com")), Some(exact_der.clone()));
        assert_eq!(leaf(&resolver, Some("other.example.com")), Some(wild_der.clone()));
        assert_eq!(
            leaf(&resolver, Some("a.b.example.com")),
            Some(exact_der.clone()),
            "one label only; then the fallback"
        );
        assert_eq!(leaf(&resolver, None), Some(exact_der.clone()), "no SNI: the first Secret");

        let (crt, key) = scratch.pair("file");
        let with_file = CertResolver::new(Some(ReloadingCert::load(&crt, &key).unwrap()));
        assert!(with_file.set_secrets(&[exact, wild], &[]).is_empty());
        assert_eq!(leaf(&with_file, Some("sky.example.com")), Some(exact_der));
        assert_eq!(leaf(&with_file, Some("elsewhere.org")), Some(scratch.der(&crt)), "the file covers the rest");
        assert_eq!(leaf(&with_file, None), Some(scratch.der(&crt)));
    }

    #[test]
    fn a_broken_secret_keeps_its_previous_certificate_and_is_named() {
        let scratch = Scratch::new("resolver-broken");
        let good = secret(&scratch, "sky-tls", &["sky.example.com"]);
        let good_der = der_of(&scratch, &good);
        let resolver = CertResolver::new(None);
        assert!(resolver.set_secrets(std::slice::from_ref(&good), &[]).is_empty());

        let other = secret(&scratch, "other-tls", &["other.example.com"]);
        let mut broken = good.clone();
        broken.key_pem = other.key_pem.clone();
        let errors = resolver.set_secrets(&[broken, other.clone()], &[]);
        let [error] = errors.as_slice() else { panic!("{errors:?}") };
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
        assert!(error.to_string().contains("Secret skypilot/sky-tls tls.key"), "{error}");
        assert_eq!(leaf(&resolver, Some("sky.example.com")), Some(good_der.clone()));
        assert_eq!(leaf(&resolver, Some("other.example.com")), Some(der_of(&scratch, &other)));

        // Gone from the set: gone from the names, unless still routed.
        assert!(resolver.set_secrets(std::slice::from_ref(&other), &["sky.example.com".to_string()]).is_empty());
        assert_eq!(leaf(&resolver, Some("sky.example.com")), Some(good_der));
        assert!(resolver.set_secrets(std::slice::from_ref(&other), &[]).is_empty());
        assert_eq!(leaf(&resolver, Some("sky.example.com")), Some(der_of(&scratch, &other)), "fallback now");
    }
}
