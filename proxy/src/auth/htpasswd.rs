//! Basic auth against Apache htpasswd content, as the SkyPilot Helm chart's
//! `ingress.authCredentials` holds it (`htpasswd -nb user pass`, one or more
//! `user:hash` lines).
//!
//! Pure: no I/O and no clock of its own (callers pass `now`), so the proxy's
//! request filter is a thin adapter. It must not know routes or pingora.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine as _};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Realm of the `WWW-Authenticate` challenge when the config names none.
pub const DEFAULT_REALM: &str = "SkyPilot API Server";
/// How long a verified `Authorization` value is trusted without re-hashing.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// How many verified `Authorization` values are remembered at most.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// Apache htpasswd's own `-C` ceiling. Every request with a new header pays
/// one hash, so a cost-31 line would turn each login into a day-long stall.
const MAX_BCRYPT_COST: u32 = 17;

/// Some clients omit base64 padding; refusing them would only lock them out.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why htpasswd content was refused. Names the 1-based line, never the hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HtpasswdError {
    /// A line without `:` between user and hash.
    #[error("htpasswd line {line}: expected `user:hash`, found no ':'")]
    MissingColon {
        /// 1-based line number.
        line: usize,
    },
    /// A line starting with `:`.
    #[error("htpasswd line {line}: the user name before ':' is empty")]
    EmptyUser {
        /// 1-based line number.
        line: usize,
    },
    /// A hash pinroute cannot verify, or a malformed one.
    #[error("htpasswd line {line} (user {user:?}): {reason}")]
    UnsupportedHash {
        /// 1-based line number.
        line: usize,
        /// The user of that line.
        user: String,
        /// What is wrong with the hash, without the hash.
        reason: &'static str,
    },
    /// A password without a hash prefix while plaintext is not allowed.
    #[error(
        "htpasswd line {line} (user {user:?}): no $2y$, $2b$, $2a$, $apr1$, $1$ or {{SHA}} \
         prefix, so this is a plaintext password (or crypt(3), which is not supported); \
         hash it with `htpasswd -nbB user pass` or allow plaintext"
    )]
    PlaintextNotAllowed {
        /// 1-based line number.
        line: usize,
        /// The user of that line.
        user: String,
    },
    /// The same user on two lines; Apache would silently take the first.
    #[error("htpasswd line {line}: user {user:?} is already defined on line {first}")]
    DuplicateUser {
        /// 1-based line number of the repeat.
        line: usize,
        /// The repeated user.
        user: String,
        /// 1-based line number of the first definition.
        first: usize,
    },
    /// Nothing but blank lines and comments: nobody could ever log in.
    #[error("htpasswd content has no `user:hash` line")]
    NoUsers,
}

/// One stored credential, decoded at parse time so a malformed line fails
/// the config load instead of every request.
#[derive(Clone)]
enum StoredHash {
    Bcrypt {
        cost: u32,
        salt: [u8; 16],
        digest: Vec<u8>,
    },
    Md5Crypt {
        magic: &'static str,
        salt: Vec<u8>,
        encoded: Vec<u8>,
    },
    Sha1([u8; 20]),
    /// SHA-256 of the password: the compare then neither leaks the length
    /// nor keeps the password itself in memory.
    Plain([u8; 32]),
}

impl StoredHash {
    fn parse(field: &str, allow_plaintext: bool) -> Result<Self, ParseFailure> {
        use ParseFailure::{Plaintext, Unsupported};
        if field.is_empty() {
            return Err(Unsupported("the hash after ':' is empty"));
        }
        if let Some(rest) = ["$2y$", "$2b$", "$2a$"].iter().find_map(|p| field.strip_prefix(p)) {
            return parse_bcrypt(rest).ok_or(Unsupported("malformed bcrypt hash"));
        }
        for magic in ["$apr1$", "$1$"] {
            if let Some(rest) = field.strip_prefix(magic) {
                return parse_md5_crypt(magic, rest).ok_or(Unsupported("malformed MD5 hash"));
            }
        }
        if let Some(b64) = field.strip_prefix("{SHA}") {
            let bytes = STANDARD.decode(b64).ok().and_then(|d| d.try_into().ok());
            return bytes.map(Self::Sha1).ok_or(Unsupported("malformed {SHA} hash"));
        }
        // A scheme we do not know must never fall through to plaintext, or
        // the hash string itself would become the password.
        if field.starts_with('$') || field.starts_with('{') {
            return Err(Unsupported("unsupported hash scheme (supported: $2y$, $2b$, $2a$, $apr1$, $1$, {SHA})"));
        }
        if !allow_plaintext {
            return Err(Plaintext);
        }
        Ok(Self::Plain(Sha256::digest(field.as_bytes()).into()))
    }

    fn matches(&self, password: &str) -> bool {
        let password = password.as_bytes();
        match self {
            Self::Bcrypt { cost, salt, digest } => bcrypt::hash_with_salt(password, *cost, *salt)
                .ok()
                .and_then(|parts| {
                    let full = parts.format_for_version(bcrypt::Version::TwoB);
                    let encoded = full.get(full.len().checked_sub(31)?..)?;
                    bcrypt::BASE_64.decode(encoded).ok()
                })
                .is_some_and(|computed| bool::from(computed.ct_eq(digest))),
            Self::Md5Crypt { magic, salt, encoded } => bool::from(md5_crypt(password, magic, salt).ct_eq(encoded)),
            Self::Sha1(digest) => bool::from(Sha1::digest(password).as_slice().ct_eq(digest)),
            Self::Plain(digest) => bool::from(Sha256::digest(password).as_slice().ct_eq(digest)),
        }
    }

    /// Relative cost, to pick the dummy that unknown users are checked against.
    fn weight(&self) -> u32 {
        match self {
            Self::Bcrypt { cost, .. } => 100 + cost,
            Self::Md5Crypt { .. } => 2,
            Self::Sha1(_) => 1,
            Self::Plain(_) => 0,
        }
    }

    /// Same kind and cost, a digest no password produces in practice; the
    /// result is thrown away anyway.
    fn dummy(&self) -> Self {
        match self {
            Self::Bcrypt { cost, .. } => Self::Bcrypt { cost: *cost, salt: [0x5a; 16], digest: vec![0; 23] },
            Self::Md5Crypt { magic, .. } => {
                Self::Md5Crypt { magic, salt: b"dummysal".to_vec(), encoded: vec![b'.'; 22] }
            }
            Self::Sha1(_) => Self::Sha1([0; 20]),
            Self::Plain(_) => Self::Plain([0; 32]),
        }
    }
}

enum ParseFailure {
    Unsupported(&'static str),
    Plaintext,
}

/// `NN$` + 22 salt chars + 31 digest chars, in bcrypt's own base64.
fn parse_bcrypt(rest: &str) -> Option<StoredHash> {
    let (cost, encoded) = rest.split_once('$')?;
    let cost: u32 = cost.parse().ok().filter(|c| cost.len() == 2 && (4..=MAX_BCRYPT_COST).contains(c))?;
    if encoded.len() != 53 || !encoded.is_ascii() {
        return None;
    }
    let salt = bcrypt::BASE_64.decode(&encoded[..22]).ok()?.try_into().ok()?;
    let digest = bcrypt::BASE_64.decode(&encoded[22..]).ok().filter(|d| d.len() == 23)?;
    Some(StoredHash::Bcrypt { cost, salt, digest })
}

/// `salt$digest`: at most 8 salt bytes (the algorithm reads no more) and 22
/// digest characters.
fn parse_md5_crypt(magic: &'static str, rest: &str) -> Option<StoredHash> {
    let (salt, encoded) = rest.split_once('$')?;
    let well_formed = salt.len() <= 8 && encoded.len() == 22 && encoded.bytes().all(|b| CRYPT_ALPHABET.contains(&b));
    well_formed.then(|| StoredHash::Md5Crypt {
        magic,
        salt: salt.as_bytes().to_vec(),
        encoded: encoded.as_bytes().to_vec(),
    })
}

const CRYPT_ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Poul-Henning Kamp's MD5-crypt (FreeBSD `$1$`), which Apache adopted under
/// the magic `$apr1$`; the magic is the only difference. No maintained crate
/// implements apr1, so this follows apr_md5.c. Returns the 22-char digest.
fn md5_crypt(password: &[u8], magic: &str, salt: &[u8]) -> Vec<u8> {
    let salt = &salt[..salt.len().min(8)];
    let alternate = Md5::new().chain_update(password).chain_update(salt).chain_update(password).finalize();
    let mut ctx = Md5::new().chain_update(password).chain_update(magic).chain_update(salt);
    for chunk in password.chunks(16) {
        ctx.update(&alternate[..chunk.len()]);
    }
    // apr_md5.c's quirk: per bit of the length, a zero byte (from a buffer
    // it had just cleared) when set, the password's first byte when clear.
    let mut bits = password.len();
    while bits != 0 {
        ctx.update(if bits & 1 == 1 { &[0u8][..] } else { &password[..1] });
        bits >>= 1;
    }
    let mut digest = ctx.finalize();
    // 1000 rounds, which is what made it "slow" in 1994.
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round & 1 == 1 {
            ctx.update(password)
        } else {
            ctx.update(digest.as_slice())
        }
        if round % 3 != 0 {
            ctx.update(salt)
        }
        if round % 7 != 0 {
            ctx.update(password)
        }
        if round & 1 == 1 {
            ctx.update(digest.as_slice())
        } else {
            ctx.update(password)
        }
        digest = ctx.finalize();
    }
    let mut out = Vec::with_capacity(22);
    let mut push = |value: u32, chars: usize| {
        for i in 0..chars {
            out.push(CRYPT_ALPHABET[((value >> (6 * i)) & 0x3f) as usize]);
        }
    };
    for [a, b, c] in [[0, 6, 12], [1, 7, 13], [2, 8, 14], [3, 9, 15], [4, 10, 5]] {
        push(u32::from(digest[a]) << 16 | u32::from(digest[b]) << 8 | u32::from(digest[c]), 4);
    }
    push(u32::from(digest[11]), 2);
    out
}

/// Users and their password hashes, parsed from htpasswd content.
///
/// Hash kinds: bcrypt (`$2y$`, `$2b$`, `$2a$`, cost 4..=17), Apache MD5
/// (`$apr1$`, the `htpasswd` default), MD5-crypt (`$1$`), `{SHA}`, and
/// plaintext when allowed. crypt(3) DES lines (`htpasswd -d`) carry no
/// prefix and are therefore refused, or taken as plaintext when allowed.
#[derive(Clone)]
pub struct Htpasswd {
    users: HashMap<String, StoredHash>,
    /// Checked for unknown users so that a miss costs what a hit costs.
    dummy: StoredHash,
}

impl Htpasswd {
    /// Parses `user:hash` lines. Blank lines and `#` comments are skipped;
    /// lines are trimmed (CRLF included) as Apache trims them, and as in
    /// Apache the hash ends at the next `:` (so `user:hash:comment` works).
    pub fn parse(text: &str, allow_plaintext: bool) -> Result<Self, HtpasswdError> {
        let mut users = HashMap::new();
        let mut first_lines: HashMap<&str, usize> = HashMap::new();
        let mut dummy: Option<StoredHash> = None;
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, rest) = line.split_once(':').ok_or(HtpasswdError::MissingColon { line: line_no })?;
            if user.is_empty() {
                return Err(HtpasswdError::EmptyUser { line: line_no });
            }
            if let Some(&first) = first_lines.get(user) {
                let user = user.to_owned();
                return Err(HtpasswdError::DuplicateUser { line: line_no, user, first });
            }
            let field = rest.split(':').next().unwrap_or_default();
            let stored = StoredHash::parse(field, allow_plaintext).map_err(|failure| {
                let (line, user) = (line_no, user.to_owned());
                match failure {
                    ParseFailure::Unsupported(reason) => HtpasswdError::UnsupportedHash { line, user, reason },
                    ParseFailure::Plaintext => HtpasswdError::PlaintextNotAllowed { line, user },
                }
            })?;
            if dummy.as_ref().is_none_or(|d| stored.weight() > d.weight()) {
                dummy = Some(stored.dummy());
            }
            first_lines.insert(user, line_no);
            users.insert(user.to_owned(), stored);
        }
        let dummy = dummy.ok_or(HtpasswdError::NoUsers)?;
        Ok(Self { users, dummy })
    }

    /// Whether `password` is `user`'s. An unknown user is checked against a
    /// dummy of the file's most expensive hash kind, so timing does not tell
    /// which users exist (exactly so when all lines share one kind, as
    /// `htpasswd` writes them).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(stored) => stored.matches(password),
            None => {
                std::hint::black_box(self.dummy.matches(password));
                false
            }
        }
    }

    /// The user names, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }
}

/// Lists users only: hashes must not reach logs.
impl fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Htpasswd").field("users", &self.users.keys()).finish_non_exhaustive()
    }
}

/// Splits `Authorization: Basic base64(user:password)` into user and
/// password. The scheme is case-insensitive, spaces and tabs around the parts
/// are tolerated, the password may contain `:`. Anything else is `None`.
pub fn parse_basic_header(value: &[u8]) -> Option<(String, String)> {
    let is_space = |c: char| c == ' ' || c == '\t';
    let value = std::str::from_utf8(value).ok()?.trim_matches(is_space);
    let (scheme, token) = value.split_once(is_space)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = LENIENT_BASE64.decode(token.trim_matches(is_space)).ok()?;
    let (user, password) =
        String::from_utf8(decoded).ok()?.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned()))?;
    Some((user, password))
}

/// Remembers recently verified `Authorization` values, because bcrypt costs
/// milliseconds and a CLI sends the same header on every request.
///
/// Keys are SHA-256 over a per-process random salt and the whole header, so
/// neither passwords nor reversible tokens are kept. Only successes are
/// stored. Build a new cache with each new [`Htpasswd`]: a removed user stays
/// valid in the old cache until its entries expire.
pub struct VerifiedCache {
    salt: [u8; 32],
    ttl: Duration,
    capacity: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    entries: HashMap<[u8; 32], CacheEntry>,
    /// Insertion order. With one TTL for all, the front is also the first
    /// to expire, so eviction is "expired first, then oldest" by popping it.
    order: VecDeque<([u8; 32], u64, Instant)>,
    next_generation: u64,
}

struct CacheEntry {
    user: Arc<str>,
    expires: Instant,
    /// Tells a live entry from an older `order` record of the same key.
    generation: u64,
}

impl VerifiedCache {
    /// A cache trusting a verification for `ttl`, holding at most
    /// `capacity` headers (0 disables caching).
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        let salt = rand::random();
        Self { salt, ttl, capacity, inner: Mutex::new(CacheInner::default()) }
    }

    fn key(&self, header: &[u8]) -> [u8; 32] {
        Sha256::new().chain_update(self.salt).chain_update(header).finalize().into()
    }

    /// A panic elsewhere while holding the lock leaves the maps consistent
    /// (each step is a single insert or remove), so poisoning is ignored.
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The user a still-fresh verification of `header` established.
    pub fn get(&self, header: &[u8], now: Instant) -> Option<Arc<str>> {
        let key = self.key(header);
        let mut inner = self.lock();
        let entry = inner.entries.get(&key)?;
        if now < entry.expires {
            return Some(Arc::clone(&entry.user));
        }
        inner.entries.remove(&key);
        None
    }

    /// Records that `header` verified as `user` at `now`.
    pub fn insert(&self, header: &[u8], user: &str, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        let key = self.key(header);
        let expires = now + self.ttl;
        let mut inner = self.lock();
        // Two requests that missed together both insert; the first one
        // stands, so a key never has two live records crowding the bound.
        if inner.entries.get(&key).is_some_and(|e| now < e.expires) {
            return;
        }
        let generation = inner.next_generation;
        inner.next_generation += 1;
        inner.entries.insert(key, CacheEntry { user: Arc::from(user), expires, generation });
        inner.order.push_back((key, generation, expires));
        while let Some(&(old_key, old_generation, old_expires)) = inner.order.front() {
            if inner.order.len() <= self.capacity && now < old_expires {
                break;
            }
            inner.order.pop_front();
            if inner.entries.get(&old_key).is_some_and(|e| e.generation == old_generation) {
                inner.entries.remove(&old_key);
            }
        }
    }

    /// How many headers are remembered (expired ones may still count).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for VerifiedCache {
    fn default() -> Self {
        Self::new(DEFAULT_CACHE_TTL, DEFAULT_CACHE_CAPACITY)
    }
}

/// Basic auth for one route: credentials, their verification cache and the
/// realm named in challenges.
pub struct BasicAuth {
    htpasswd: Htpasswd,
    cache: VerifiedCache,
    /// The whole `WWW-Authenticate` value, escaped once here.
    challenge: Arc<str>,
}

impl BasicAuth {
    /// Basic auth with [`DEFAULT_REALM`] and a default [`VerifiedCache`].
    pub fn new(htpasswd: Htpasswd) -> Self {
        Self { htpasswd, cache: VerifiedCache::default(), challenge: challenge_value(DEFAULT_REALM) }
    }

    /// Names `realm` in challenges instead of [`DEFAULT_REALM`].
    pub fn with_realm(mut self, realm: &str) -> Self {
        self.challenge = challenge_value(realm);
        self
    }

    /// Uses `cache` (e.g. another TTL or capacity) instead of the default.
    pub fn with_cache(mut self, cache: VerifiedCache) -> Self {
        self.cache = cache;
        self
    }

    /// The user that `authorization` (the raw header value, if any)
    /// authenticates, or the challenge to answer with a 401.
    pub fn check(&self, authorization: Option<&[u8]>, now: Instant) -> Result<Arc<str>, Challenge> {
        let challenge = |reason| Challenge { value: Arc::clone(&self.challenge), reason };
        let header = authorization.ok_or_else(|| challenge(ChallengeReason::Missing))?;
        if let Some(user) = self.cache.get(header, now) {
            return Ok(user);
        }
        let (user, password) = parse_basic_header(header).ok_or_else(|| challenge(ChallengeReason::Malformed))?;
        if !self.htpasswd.verify(&user, &password) {
            return Err(challenge(ChallengeReason::Rejected));
        }
        self.cache.insert(header, &user, now);
        Ok(Arc::from(user))
    }
}

/// `Basic realm="..."` with `"` and `\` escaped as quoted-pairs; control
/// characters are dropped because CR/LF would split the header.
fn challenge_value(realm: &str) -> Arc<str> {
    let mut value = String::from("Basic realm=\"");
    for c in realm.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            value.push('\\');
        }
        value.push(c);
    }
    value.push('"');
    Arc::from(value)
}

/// Why a request got a 401 (for logs and metrics; the client sees none of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeReason {
    /// No `Authorization` header.
    Missing,
    /// Not `Basic` with base64 of UTF-8 `user:password`.
    Malformed,
    /// Unknown user or wrong password.
    Rejected,
}

/// A refused request: what to send back in `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    value: Arc<str>,
    reason: ChallengeReason,
}

impl Challenge {
    /// The `WWW-Authenticate` header value, e.g. `Basic realm="SkyPilot API Server"`.
    pub fn www_authenticate(&self) -> &str {
        &self.value
    }

    /// Why the request was refused.
    pub fn reason(&self) -> ChallengeReason {
        self.reason
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by Apache's own tool (apache2-utils 2.4.71, Debian 12):
    /// `htpasswd -nbm u <password>`; each also checked with passlib 1.7.4's
    /// `apr_md5_crypt.verify`. The last one is `openssl passwd -apr1`.
    const APR1_VECTORS: &[(&str, &str)] = &[
        ("secret", "$apr1$crrw5U.r$FGo0KfhZk0htYPbIHBPyS."),
        ("", "$apr1$tw92sAtO$QCvlGjQxiWyv4u0a3VqAL1"),
        ("a:b:c", "$apr1$M4mRehTu$9Vu1BpkD87NcFujfyggEq1"),
        ("correct horse battery staple, 33b", "$apr1$EpS48Fc5$fdwBPbLqv2V8YEtocwX1R."),
        ("pässwörd", "$apr1$Py5/jiNg$qAD8nmfWnId7necCqISHN1"),
        ("secret", "$apr1$rX5q.n9T$yShSY/AP/6sFEmNzBflVC1"),
    ];

    /// `openssl passwd -1 -salt ...`, checked with passlib's `md5_crypt`.
    const MD5_CRYPT_VECTORS: &[(&str, &str)] =
        &[("secret", "$1$saltsalt$9xy1btjgzLYfb7hivXtC//"), ("", "$1$ab$rn6aQS/o7141mj179E/zA.")];

    /// `htpasswd -nbB -C 5 bob hunter2` (Apache 2.4.71): a genuine `$2y$`.
    const APACHE_BCRYPT: &str = "$2y$05$fX7S8bUsD8fTdQOPO2BgWu.QdiiDsZ77uZihVou3p6CZ1MjHyuFx.";

    fn single(hash: &str) -> Htpasswd {
        Htpasswd::parse(&format!("u:{hash}\n"), false).unwrap()
    }

    #[test]
    fn apr1_vectors_from_apache_htpasswd_verify() {
        for (password, hash) in APR1_VECTORS {
            let file = single(hash);
            assert!(file.verify("u", password), "{hash} should accept {password:?}");
            assert!(!file.verify("u", &format!("{password}x")), "{hash} accepted a wrong password");
        }
    }

    #[test]
    fn md5_crypt_vectors_from_openssl_verify() {
        for (password, hash) in MD5_CRYPT_VECTORS {
            assert!(single(hash).verify("u", password));
            assert!(!single(hash).verify("u", "wrong"));
        }
        // The magic is part of the hash input: the same salt and digest
        // under the other magic must not verify.
        assert!(!single("$apr1$saltsalt$9xy1btjgzLYfb7hivXtC//").verify("u", "secret"));
    }

    #[test]
    fn bcrypt_2y_from_apache_htpasswd_verifies() {
        let file = single(APACHE_BCRYPT);
        assert!(file.verify("u", "hunter2"));
        assert!(!file.verify("u", "hunter3"));
    }

    #[test]
    fn bcrypt_2a_and_2b_prefixes_verify() {
        for prefix in ["$2a$", "$2b$"] {
            let hash = APACHE_BCRYPT.replacen("$2y$", prefix, 1);
            assert!(single(&hash).verify("u", "hunter2"), "{prefix}");
            assert!(!single(&hash).verify("u", "hunter"), "{prefix}");
        }
    }

    #[test]
    fn bcrypt_made_by_the_crate_verifies() {
        let hash = bcrypt::hash("s3cret:with:colons", 4).unwrap();
        let file = Htpasswd::parse(&format!("alice:{hash}"), false).unwrap();
        assert!(file.verify("alice", "s3cret:with:colons"));
        assert!(!file.verify("alice", "s3cret"));
    }

    #[test]
    fn sha_vector_verifies() {
        // `htpasswd -nbs carol sha-pass`.
        let file = Htpasswd::parse("carol:{SHA}xO2etOilyqtV8o1RvvnmkeBx7QI=", false).unwrap();
        assert!(file.verify("carol", "sha-pass"));
        assert!(!file.verify("carol", "sha-pas"));
    }

    #[test]
    fn plaintext_only_when_allowed() {
        let err = Htpasswd::parse("dave:plain", false).unwrap_err();
        assert_eq!(err, HtpasswdError::PlaintextNotAllowed { line: 1, user: "dave".into() });
        let file = Htpasswd::parse("dave:plain", true).unwrap();
        assert!(file.verify("dave", "plain"));
        assert!(!file.verify("dave", "plai"));
        assert!(!file.verify("dave", ""));
    }

    #[test]
    fn unknown_schemes_never_become_plaintext() {
        for hash in ["$6$salt$abc", "$2x$05$abc", "{SSHA}abc", ""] {
            let err = Htpasswd::parse(&format!("u:{hash}"), true).unwrap_err();
            assert!(matches!(err, HtpasswdError::UnsupportedHash { line: 1, .. }), "{hash}: {err}");
        }
    }

    #[test]
    fn comments_blank_lines_crlf_and_extra_fields_are_tolerated() {
        let text = format!(
            "# made by htpasswd\r\n\r\n  bob:{APACHE_BCRYPT}\r\ncarol:{{SHA}}xO2etOilyqtV8o1RvvnmkeBx7QI=:a comment\r\n"
        );
        let file = Htpasswd::parse(&text, false).unwrap();
        assert!(file.verify("bob", "hunter2"));
        assert!(file.verify("carol", "sha-pass"));
        let mut users: Vec<_> = file.users().collect();
        users.sort_unstable();
        assert_eq!(users, ["bob", "carol"]);
    }

    #[test]
    fn parse_errors_name_the_line_and_never_the_hash() {
        let ok = APR1_VECTORS[0].1;
        let cases = [
            (format!("a:{ok}\nnocolon"), HtpasswdError::MissingColon { line: 2 }),
            (format!("# c\n:{ok}"), HtpasswdError::EmptyUser { line: 2 }),
            (format!("a:{ok}\n\nb:{ok}\na:{ok}"), HtpasswdError::DuplicateUser { line: 4, user: "a".into(), first: 1 }),
            ("# only a comment\n\n".to_owned(), HtpasswdError::NoUsers),
        ];
        for (text, expected) in cases {
            assert_eq!(Htpasswd::parse(&text, false).unwrap_err(), expected);
        }
        let secret_ish = ["$apr1$crrw5U.r$FGo0KfhZk0htYPbIHBPyS", "{SHA}xO2etOilyqtV8o1Rvvnmk", "plain-secret"];
        for hash in secret_ish {
            let err = Htpasswd::parse(&format!("a:{ok}\nb:{hash}"), false).unwrap_err();
            let message = err.to_string();
            assert!(message.contains("line 2"), "{message}");
            assert!(!message.contains(hash) && !message.contains("crrw5U"), "{message}");
        }
    }

    #[test]
    fn malformed_and_too_costly_bcrypt_is_refused() {
        let cases = [
            APACHE_BCRYPT.replacen("$05$", "$18$", 1),
            APACHE_BCRYPT.replacen("$05$", "$03$", 1),
            APACHE_BCRYPT.replacen("$05$", "$5$", 1),
            APACHE_BCRYPT[..APACHE_BCRYPT.len() - 1].to_owned(),
            APACHE_BCRYPT.replacen('f', "!", 1),
        ];
        for hash in cases {
            let err = Htpasswd::parse(&format!("u:{hash}"), false).unwrap_err();
            assert!(matches!(err, HtpasswdError::UnsupportedHash { line: 1, .. }), "{hash}");
        }
    }

    #[test]
    fn unknown_user_is_false_for_every_dummy_kind() {
        let lines = ["u:plain", "u:{SHA}xO2etOilyqtV8o1RvvnmkeBx7QI=", APR1_VECTORS[0].1, APACHE_BCRYPT];
        for line in lines {
            let text = if line.starts_with('u') { line.to_owned() } else { format!("u:{line}") };
            let file = Htpasswd::parse(&text, true).unwrap();
            assert!(!file.verify("nobody", "plain"));
            assert!(!file.verify("", ""));
        }
    }

    #[test]
    fn dummy_follows_the_most_expensive_kind() {
        let text = format!("a:{}\nb:{APACHE_BCRYPT}\nc:plain", APR1_VECTORS[0].1);
        let file = Htpasswd::parse(&text, true).unwrap();
        assert!(matches!(file.dummy, StoredHash::Bcrypt { cost: 5, .. }));
        assert!(!format!("{file:?}").contains("$apr1$"));
    }

    #[test]
    fn basic_header_edge_cases() {
        let b64 = |s: &str| STANDARD.encode(s);
        let header = |s: String| parse_basic_header(s.as_bytes());
        let pair = |u: &str, p: &str| Some((u.to_owned(), p.to_owned()));
        assert_eq!(header(format!("Basic {}", b64("u:p"))), pair("u", "p"));
        assert_eq!(header(format!("bAsIc {}", b64("u:p"))), pair("u", "p"));
        assert_eq!(header(format!("  Basic \t  {}  ", b64("u:p"))), pair("u", "p"));
        assert_eq!(header(format!("Basic {}", b64("u:p:q:"))), pair("u", "p:q:"));
        assert_eq!(header(format!("Basic {}", b64("u:"))), pair("u", ""));
        assert_eq!(header(format!("Basic {}", b64("ü:pä"))), pair("ü", "pä"));
        let unpadded = b64("ab:c").trim_end_matches('=').to_owned();
        assert_eq!(header(format!("Basic {unpadded}")), pair("ab", "c"));
        assert_eq!(header(format!("Bearer {}", b64("u:p"))), None);
        assert_eq!(header(format!("Basic{}", b64("u:p"))), None);
        assert_eq!(header(format!("Basic {}", b64("no-colon"))), None);
        assert_eq!(header("Basic !!!notbase64".to_owned()), None);
        assert_eq!(header("Basic ".to_owned()), None);
        assert_eq!(header(String::new()), None);
        let not_utf8 = format!("Basic {}", STANDARD.encode([b'u', b':', 0xff, 0xfe]));
        assert_eq!(parse_basic_header(not_utf8.as_bytes()), None);
        assert_eq!(parse_basic_header(b"Basic \xff"), None);
    }

    #[test]
    fn cache_hit_miss_and_expiry() {
        let cache = VerifiedCache::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        assert_eq!(cache.get(b"Basic abc", t0), None);
        cache.insert(b"Basic abc", "alice", t0);
        assert_eq!(cache.get(b"Basic abc", t0 + Duration::from_secs(59)).as_deref(), Some("alice"));
        assert_eq!(cache.get(b"Basic abd", t0), None);
        assert_eq!(cache.get(b"Basic abc", t0 + Duration::from_secs(60)), None);
        assert!(cache.is_empty(), "an expired hit is dropped");
    }

    #[test]
    fn cache_is_bounded_and_evicts_expired_then_oldest() {
        let cache = VerifiedCache::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        for i in 0..3 {
            cache.insert(format!("h{i}").as_bytes(), "u", t0 + Duration::from_secs(i));
        }
        cache.insert(b"h3", "u", t0 + Duration::from_secs(3));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(b"h0", t0 + Duration::from_secs(3)), None, "oldest evicted");
        assert!(cache.get(b"h1", t0 + Duration::from_secs(3)).is_some());
        // At t0+11.5 h0..h1 have expired; the insert drops them, not h2/h3.
        cache.insert(b"h4", "u", t0 + Duration::from_millis(11_500));
        assert_eq!(cache.len(), 3);
        assert!(cache.get(b"h3", t0 + Duration::from_millis(11_500)).is_some());
        // Racing re-inserts of a live key neither grow the cache nor evict others.
        for i in 0..100 {
            cache.insert(b"h4", "u", t0 + Duration::from_millis(11_500 + i));
        }
        assert_eq!(cache.lock().order.len(), 3);
        let later = t0 + Duration::from_secs(12);
        assert!(cache.get(b"h3", later).is_some() && cache.get(b"h4", later).is_some());
        assert_eq!(cache.get(b"h2", later), None, "expired at t0+12");
    }

    #[test]
    fn cache_of_capacity_zero_stores_nothing() {
        let cache = VerifiedCache::new(Duration::from_secs(60), 0);
        cache.insert(b"h", "u", Instant::now());
        assert!(cache.is_empty());
    }

    #[test]
    fn basic_auth_checks_caches_and_challenges() {
        let file = Htpasswd::parse(&format!("bob:{APACHE_BCRYPT}"), false).unwrap();
        let auth = BasicAuth::new(file);
        let now = Instant::now();
        let good = format!("Basic {}", STANDARD.encode("bob:hunter2"));
        let bad = format!("Basic {}", STANDARD.encode("bob:nope"));
        assert_eq!(auth.check(Some(good.as_bytes()), now).as_deref(), Ok("bob"));
        assert_eq!(auth.cache.len(), 1, "success is cached");
        assert_eq!(auth.check(Some(good.as_bytes()), now).as_deref(), Ok("bob"));
        let refused = auth.check(Some(bad.as_bytes()), now).unwrap_err();
        assert_eq!(refused.reason(), ChallengeReason::Rejected);
        assert_eq!(auth.cache.len(), 1, "failures are not cached");
        assert_eq!(refused.www_authenticate(), "Basic realm=\"SkyPilot API Server\"");
        assert_eq!(auth.check(None, now).unwrap_err().reason(), ChallengeReason::Missing);
        let malformed = auth.check(Some(b"Basic %%%"), now).unwrap_err();
        assert_eq!(malformed.reason(), ChallengeReason::Malformed);
        let unknown = format!("Basic {}", STANDARD.encode("eve:hunter2"));
        assert!(auth.check(Some(unknown.as_bytes()), now).is_err());
    }

    #[test]
    fn realm_is_escaped() {
        let file = Htpasswd::parse("u:p", true).unwrap();
        let auth = BasicAuth::new(file).with_realm("say \"hi\" \\ o/\r\nX-Evil: 1");
        let challenge = auth.check(None, Instant::now()).unwrap_err();
        assert_eq!(challenge.www_authenticate(), r#"Basic realm="say \"hi\" \\ o/X-Evil: 1""#);
    }
}
