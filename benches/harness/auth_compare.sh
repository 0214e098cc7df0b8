#!/usr/bin/env bash
# Requests/s of pinroute with no auth, basic auth (bcrypt, verification
# cached) and OAuth2 auth-request (decision cached), interleaved so machine
# noise hits all three alike. Loopback only; about a minute.
#   benches/harness/auth_compare.sh [seconds-per-run]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-4}
bin=target/release/pinroute
command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
[ -x "$bin" ] || cargo build --release -p pinroute
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

"$bin" demo-backend --listen 127.0.0.1:27401 --name a >/dev/null 2>&1 & pids+=($!)
# A minimal oauth2-proxy stand-in: 202 for every request carrying a cookie.
python3 - <<'PY' >/dev/null 2>&1 & pids+=($!)
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(202 if self.headers.get("Cookie") else 401)
        self.send_header("X-Auth-Request-Email", "alice@example.com")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", 27402), H).serve_forever()
PY
bcrypt='alice:$2y$05$fX7S8bUsD8fTdQOPO2BgWu.QdiiDsZ77uZihVou3p6CZ1MjHyuFx.'   # bob's hash, reused for user alice (pass hunter2)
route='[[route]]
prefix = "/"
backends = ["127.0.0.1:27401"]
[route.health_check]
enabled = false'
write() { printf '[server]\nlisten = ["127.0.0.1:%s"]\nadmin = "off"\nupgrade_sock = "%s/%s.sock"\npid_file = "%s/%s.pid"\n%s\n%s\n' "$2" "$tmp" "$1" "$tmp" "$1" "$route" "$3" > "$tmp/$1.toml"; }
write none 27410 ''
write basic 27411 "[route.auth.basic]
htpasswd = '$bcrypt'"
write oauth2 27412 '[route.auth.oauth2]
auth_url = "http://127.0.0.1:27402/oauth2/auth"
response_headers = ["X-Auth-Request-Email"]
cache = "60s"'
for c in none basic oauth2; do
  PINROUTE_COOKIE_KEY=auth-bench-key-0123456789 RUST_LOG=warn taskset -c 0 "$bin" run --config "$tmp/$c.toml" >/dev/null 2>&1 & pids+=($!)
done
sleep 2
auth=$(printf 'alice:hunter2' | base64)
declare -A total=()
for round in 1 2 3; do
  for c in none basic oauth2; do
    case $c in none) port=27410; h="X-None: 1";; basic) port=27411; h="Authorization: Basic $auth";; oauth2) port=27412; h="Cookie: _oauth2_proxy=good";; esac
    rps=$(taskset -c 1 wrk -t1 -c32 -d"${secs}s" -H "$h" "http://127.0.0.1:$port/api/health" | awk '/Requests\/sec/ {print $2}')
    echo "round $round $c: $rps req/s"
    total[$c]=$(echo "${total[$c]:-0} + $rps" | bc)
  done
done
for c in basic oauth2; do
  echo "$c/none: $(echo "scale=3; ${total[$c]} / ${total[none]}" | bc)x"
done
