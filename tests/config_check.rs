//! Black-box tests of `pinroute check --config <file>` on key combinations
//! that used to pass the check and then silently do nothing (issue #13):
//! each must fail, naming the file, the key and the fix; the working
//! combination next to it must pass.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pinroute");

/// What `pinroute check` said about one file.
struct Checked {
    ok: bool,
    stdout: String,
    stderr: String,
    file: PathBuf,
}

/// Writes `text` to `<name>.toml` in a fresh directory and runs the real
/// binary's `check` on it, killed if it takes over 20 s.
fn check(name: &str, text: &str) -> Checked {
    let dir = std::env::temp_dir().join(format!("pinroute-config-check-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    let mut child = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&file)
        .env_remove("PINROUTE_COOKIE_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("pinroute check {name} did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    Checked { ok: status.success(), stdout, stderr, file }
}

/// Fails, and the message names the file and every one of `needles`.
fn refused(name: &str, text: &str, needles: &[&str]) {
    let out = check(name, text);
    assert!(!out.ok, "{name}: check passed but must fail; stdout: {}", out.stdout);
    assert!(!out.stdout.contains(": ok"), "{name}: {}", out.stdout);
    let file = out.file.display().to_string();
    assert!(out.stderr.contains(&file), "{name}: the error does not name {file}: {}", out.stderr);
    for needle in needles {
        assert!(out.stderr.contains(needle), "{name}: the error does not say {needle:?}: {}", out.stderr);
    }
}

fn passes(name: &str, text: &str) {
    let out = check(name, text);
    assert!(out.ok && out.stdout.contains(": ok"), "{name}: {}{}", out.stdout, out.stderr);
}

#[test]
fn adopt_classes_without_adopt_namespaces_is_an_error_naming_both_keys() {
    refused(
        "adopt-classes-alone",
        "[ingress]\nclass = \"pinroute\"\nadopt_classes = [\"nginx\"]\n",
        &["key `ingress.adopt_classes`", "ingress.adopt_namespaces", "adopt_namespaces = [\"skypilot\"]"],
    );
    // An empty list is the same as none.
    refused(
        "adopt-classes-empty-namespaces",
        "[ingress]\nadopt_classes = [\"nginx\"]\nadopt_namespaces = []\n",
        &["key `ingress.adopt_classes`", "ingress.adopt_namespaces"],
    );
    passes(
        "adopt-both",
        "[ingress]\nclass = \"pinroute\"\nadopt_classes = [\"nginx\"]\nadopt_namespaces = [\"skypilot\"]\n",
    );
}

#[test]
fn adopt_namespaces_without_adopt_classes_is_an_error_naming_both_keys() {
    refused(
        "adopt-namespaces-alone",
        "[ingress]\nadopt_namespaces = [\"skypilot\"]\n",
        &["key `ingress.adopt_namespaces`", "ingress.adopt_classes", "adopt_classes = [\"nginx\"]"],
    );
}

#[test]
fn adopting_in_a_namespace_that_is_not_watched_is_an_error() {
    refused(
        "adopt-unwatched",
        "[ingress]\nnamespace = \"skypilot\"\nadopt_classes = [\"nginx\"]\nadopt_namespaces = [\"skypilot\", \"other\"]\n",
        &["key `ingress.adopt_namespaces[1]`", "\"other\" is not watched", "ingress.namespace"],
    );
    passes(
        "adopt-watched",
        "[ingress]\nnamespace = \"skypilot\"\nadopt_classes = [\"nginx\"]\nadopt_namespaces = [\"skypilot\"]\n",
    );
}

#[test]
fn a_status_address_the_api_server_would_refuse_is_an_error() {
    for (name, value) in
        [("status-empty", ""), ("status-url", "http://203.0.113.10/"), ("status-port", "203.0.113.10:80")]
    {
        refused(
            name,
            &format!("[ingress]\nstatus_address = {value:?}\n"),
            &["key `ingress.status_address`", "drop the key"],
        );
    }
    passes("status-ip", "[ingress]\nstatus_address = \"203.0.113.10\"\n");
    passes("status-name", "[ingress]\nstatus_address = \"lb.example.com\"\n");
}

#[test]
fn an_empty_class_is_an_error() {
    refused("class-empty", "[ingress]\nclass = \"\"\n", &["key `ingress.class`", "\"pinroute\""]);
}

#[test]
fn tls_without_listeners_is_an_error_in_both_modes() {
    // Ingress mode: certificates may all come from Secrets, but nothing would serve them.
    refused(
        "tls-no-listen-ingress",
        "[server.tls]\nlisten = []\nredirect_http = true\n[ingress]\n",
        &["key `server.tls.listen`", "0.0.0.0:8443"],
    );
    refused(
        "tls-no-listen-file",
        "[server.tls]\nlisten = []\n[[route]]\nbackends = [\"127.0.0.1:1\"]\n",
        &["key `server.tls.listen`"],
    );
    passes(
        "tls-ingress-secrets-only",
        "[server.tls]\nlisten = [\"127.0.0.1:8443\"]\nredirect_http = true\n[ingress]\n",
    );
}

#[test]
fn one_tls_file_in_ingress_mode_names_the_missing_one() {
    // Already refused before #13; kept here beside the other pairs.
    let dir = std::env::temp_dir().join(format!("pinroute-config-check-{}-pem", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("tls.crt");
    std::fs::write(&cert, "not checked by `check`").unwrap();
    refused(
        "tls-cert-only",
        &format!("[server.tls]\ncert_file = {:?}\n[ingress]\n", cert.display().to_string()),
        &["key `server.tls.key_file`", "or neither"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_admin_host_with_a_port_or_scheme_is_an_error_naming_the_entry() {
    let route = "[[route]]\nbackends = [\"127.0.0.1:1\"]\n";
    refused(
        "admin-host-port",
        &format!("[server]\nadmin_hosts = [\"ok.example\", \"http://admin.example:9090\"]\n{route}"),
        &["key `server.admin_hosts[1]`", "no scheme, port or path"],
    );
    passes("admin-host-ok", &format!("[server]\nadmin_hosts = [\"Admin.Example.\"]\n{route}"));
}
