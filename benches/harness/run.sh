#!/usr/bin/env bash
# Side-by-side load harness: pinroute vs pingora's own floor vs HAProxy vs
# nginx vs direct, all in front of the same backend on 127.0.0.1. See
# benches/harness/README.md.
#
#   benches/harness/run.sh [--quick] [--auth|--no-auth] [--perf] [--contenders LIST]
#                          [--workloads LIST] [--no-build] [--keep-tmp]
#
# Results: benches/results/latest.{txt,json} (quick.{txt,json} with --quick).
set -euo pipefail

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'

  --quick            short smoke run (seconds per workload), writes quick.{txt,json}
  --auth / --no-auth workload f against pinroute: force it (an error if pinroute
                     rejects [route.auth.basic]) or skip it; default: run it when
                     `pinroute check` accepts the snippet. PINROUTE_BENCH_AUTH=1/0
  --perf             perf-record pinroute during an extra run of workload a and
                     write the top symbols to results/<mode>-perf-pinroute.txt
  --contenders LIST  comma list of direct,pingora-core-min,pingora-proxy-min,
                     pinroute,pinroute-info-log,haproxy,nginx (default: all)
  --workloads LIST   comma list of a,a1,a1s,a2,b,c,d,e,f,g (default: all)
  --no-build         use the binaries already in the target dir
  --keep-tmp         keep the temp dir (configs, logs, raw outputs)
EOF
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RESULTS="$ROOT/benches/results"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/release"
# pinroute as shipped: the `dist` profile (fat LTO, one codegen unit; Cargo.toml).
DIST_BIN="${DIST_BIN:-$TARGET_DIR/dist}"

QUICK=0 PERF=0 BUILD=1 KEEP_TMP=0
AUTH="${PINROUTE_BENCH_AUTH:-auto}"
# pinroute and haproxy next to each other: their a runs are seconds apart.
ALL_CONTENDERS="direct pingora-core-min pingora-proxy-min pinroute haproxy pinroute-info-log nginx"
CONTENDERS=${ALL_CONTENDERS// /,}
WORKLOADS="a,a1,a1s,a2,b,c,d,e,f,g"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --auth) AUTH=1 ;;
        --no-auth) AUTH=0 ;;
        --perf) PERF=1 ;;
        --no-build) BUILD=0 ;;
        --keep-tmp) KEEP_TMP=1 ;;
        --contenders) CONTENDERS="${2:?--contenders needs a list}"; shift ;;
        --workloads) WORKLOADS="${2:?--workloads needs a list}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
for c in ${CONTENDERS//,/ }; do
    [[ " $ALL_CONTENDERS " == *" $c "* ]] || { echo "unknown contender: $c" >&2; usage >&2; exit 2; }
done
for w in ${WORKLOADS//,/ }; do
    [[ ",a,a1,a1s,a2,b,c,d,e,f,g," == *",$w,"* ]] || { echo "unknown workload: $w" >&2; usage >&2; exit 2; }
done

# ---- workload sizes -------------------------------------------------------
# Durations are per round. ROUNDS > 1 interleaves: every contender runs
# its workloads, then all do it again (in reverse order on even rounds),
# so a drift of this shared machine (another tenant busy for a minute)
# falls on all of them alike; the report shows each figure's median over
# the rounds. d and f run once, in the last round (memory, and costs far
# from the goals' margins). g runs in every round, so g/a is a median of
# rounds against a median of the same rounds (one g sample against a's median was 0.83x in one run and 1.04x in
# the one before, while an interleaved A/B put it at 1.01x).
if [[ $QUICK == 1 ]]; then
    MODE=quick DUR_A=4 DUR=3 WARMUP=0 WS_ROUNDS=1000 ATTEMPTS=${BENCH_ATTEMPTS:-1} ROUNDS=${BENCH_ROUNDS:-1}
else
    MODE=full DUR_A=10 DUR=5 WARMUP=3 WS_ROUNDS=5000 ATTEMPTS=${BENCH_ATTEMPTS:-3} ROUNDS=${BENCH_ROUNDS:-3}
fi
ROUND=1
CONNS=64            # a, a2, b, f: concurrent connections
UPLOAD_CONNS=16     # c: concurrent 1 MiB uploads
UPLOAD_BYTES=1048576
STREAMS=2000        # d: idle long-lived streams
WS_CONNS=64         # e: websocket connections
PROXY_CORE=0        # every contender runs here, one worker
LOAD_CORE=1         # load generators and the backend run here
# Other work on this machine (builds, tests) skews every number: before each
# workload wait (bounded) until the machine is idle, and run the harness's
# processes at a higher priority than such background work when root.
QUIET_PCT=${BENCH_QUIET_PCT:-12}        # machine busy % (both cores) counted as idle
QUIET_MAX=${BENCH_QUIET_MAX:-$([[ $QUICK == 1 ]] && echo 15 || echo 120)}  # s to wait per workload
QUIET_BUDGET=${BENCH_QUIET_BUDGET:-$([[ $QUICK == 1 ]] && echo 60 || echo 1200)}  # s to wait in all
NICE=${BENCH_NICE:--10}
NOISY_PCT=5  # a workload during which other processes used more CPU (% of a core) is repeated
COOKIE_NAME=SKYPILOT_ROUTEID
COOKIE_KEY="pinroute-bench-cookie-key-0123456789"
# user "bench", password "bench", bcrypt cost 5 (as the chart's htpasswd).
HTPASSWD_LINE='bench:$2y$05$P4FQ88.sx7XW.mAS5cokJucNJvNwvqf4xzdl..Urx0NBCclMloqoW'
AUTH_HEADER="Basic YmVuY2g6YmVuY2g="

log() { printf '[harness %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
wants() { [[ ",$CONTENDERS," == *",$1,"* ]]; }
wants_workload() { [[ ",$WORKLOADS," == *",$1,"* ]]; }

# ---- tools ----------------------------------------------------------------
install_missing() {
    local missing=() pair cmd pkg
    for pair in haproxy:haproxy nginx:nginx wrk:wrk curl:curl taskset:util-linux ss:iproute2; do
        cmd=${pair%%:*} pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [[ $PERF == 1 ]] && ! command -v perf >/dev/null 2>&1; then
        missing+=(linux-perf)
    fi
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) == 0 ]] || die "missing ${missing[*]}: install them (apt-get install -y ${missing[*]}) or run as root"
    log "installing ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
}
install_missing

# pingora's floor is built like pinroute (profile dist), so the comparison
# measures code, not build settings.
FLOORS=(pingora_core_min pingora_proxy_min)
if [[ $BUILD == 1 ]]; then
    log "building (pinroute and pingora's floor: profile dist, as shipped; waits if another build holds the cargo lock)"
    (cd "$ROOT" && cargo build --profile dist -p pinroute --bin pinroute)
    (cd "$ROOT" && cargo build --profile dist -p pinroute-benches --bin pingora_proxy_min --bin pingora_core_min)
    (cd "$ROOT" && cargo build --release -p pinroute-benches --bins)
fi
[[ -x "$DIST_BIN/pinroute" ]] || die "$DIST_BIN/pinroute missing: build without --no-build"
for b in bench_backend idle_streams ws_echo bench_report; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b missing: build without --no-build"
done
for b in "${FLOORS[@]}"; do
    if wants "${b//_/-}"; then
        [[ -x "$DIST_BIN/$b" ]] || die "$DIST_BIN/$b missing: build without --no-build, or leave ${b//_/-} out of --contenders"
    fi
done

# ---- processes, temp dir, cleanup ------------------------------------------
TMP=$(mktemp -d /tmp/pinroute-bench.XXXXXX)
RAW="$TMP/raw.jsonl"
: >"$RAW"
PIDS=()

# Other sessions may rebuild target/ while this runs: measure one snapshot,
# and describe the tree it was built from as it is now.
PINROUTE="$TMP/pinroute"
cp "$DIST_BIN/pinroute" "$PINROUTE"
for b in "${FLOORS[@]}"; do
    if wants "${b//_/-}"; then cp "$DIST_BIN/$b" "$TMP/$b"; fi
done
PINROUTE_BUILT=$(date -u -r "$DIST_BIN/pinroute" +%Y-%m-%dT%H:%M:%SZ)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null | grep -v '^??' || true) ]]; then
    COMMIT+=" (uncommitted changes in the tree)"
fi

stop_pids() {
    local pid deadline
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    deadline=$((SECONDS + 6))
    for pid in "$@"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

cleanup() {
    local rc=$?
    trap - EXIT
    if [[ ${#PIDS[@]} -gt 0 ]]; then
        stop_pids "${PIDS[@]}"
    fi
    if [[ $KEEP_TMP == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

if [[ $(id -u) == 0 && $NICE != 0 ]]; then
    ON_PROXY_CORE=(nice -n "$NICE" taskset -c "$PROXY_CORE")
    ON_LOAD_CORE=(nice -n "$NICE" taskset -c "$LOAD_CORE")
else
    NICE=0
    ON_PROXY_CORE=(taskset -c "$PROXY_CORE")
    ON_LOAD_CORE=(taskset -c "$LOAD_CORE")
fi

# 2,000 streams hold 4,000+ descriptors in a proxy.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
FD_LIMIT=$(ulimit -n)
((FD_LIMIT >= 8192)) || die "file descriptor limit $FD_LIMIT is too low for $STREAMS streams"

USED_PORTS=" "
alloc_port() {
    local p _
    for _ in $(seq 1 500); do
        # Below the ephemeral range, so no outgoing connection holds it.
        p=$((20000 + RANDOM % 12000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if ! ss -Htan "( sport = :$p )" 2>/dev/null | grep -q .; then
            USED_PORTS+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}

wait_http() { # URL SECONDS [CODES]: until it answers one of CODES (a regex, default 200)
    local deadline=$((SECONDS + $2)) codes=${3:-200}
    while ((SECONDS < deadline)); do
        [[ $(curl -s -o /dev/null -m 1 -w '%{http_code}' "$1" || true) =~ ^($codes)$ ]] && return 0
        sleep 0.1
    done
    return 1
}

json_str() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/ | }
    s=$(printf '%s' "$s" | tr -d '\000-\037')
    printf '"%s"' "$s"
}

emit() { # KEY=JSON ... : one raw record
    local line="{" sep="" kv
    for kv in "$@"; do
        line+="$sep\"${kv%%=*}\":${kv#*=}"
        sep=","
    done
    printf '%s}\n' "$line" >>"$RAW"
}

# ---- the backend ------------------------------------------------------------
# Workload g: scale_ports, scale_setup, run_scale.
# shellcheck source=benches/harness/scale.sh
source "$HERE/scale.sh"
alloc_port P1; alloc_port P2; alloc_port P3
wants_workload g && scale_ports
"${ON_LOAD_CORE[@]}" "$BIN/bench_backend" --listen "127.0.0.1:$P1" --listen "127.0.0.1:$P2" \
    --listen "127.0.0.1:$P3" "${G_BACKEND_ARGS[@]}" --max-secs 7200 >"$TMP/backend.log" 2>&1 &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
for p in $P1 $P2 $P3; do
    wait_http "http://127.0.0.1:$p/api/health" 10 || die "backend on :$p did not start: $(cat "$TMP/backend.log")"
done
log "backend pid $BACKEND_PID on :$P1 :$P2 :$P3 (core $LOAD_CORE)"

# ---- contenders -------------------------------------------------------------
# Each start_* sets C_PORT (client port), C_AUTH_PORT (basic-auth listener, or
# empty), C_PIDS (processes whose RSS/CPU are measured), C_LOG.

# EXTRA_TOML goes after the route; BACKENDS (a TOML list, default the three
# backends) and SERVER_TOML (more [server] keys) are for the scale workload.
pinroute_config() { # FILE PORT ADMIN EXTRA_TOML [BACKENDS [SERVER_TOML]]
    local backends=${5:-"[\"127.0.0.1:$P1\", \"127.0.0.1:$P2\", \"127.0.0.1:$P3\"]"}
    cat >"$1" <<EOF
[server]
listen = ["127.0.0.1:$2"]
admin = "127.0.0.1:$3"
threads = 1
grace_period = "1s"
upgrade_sock = "$TMP/pinroute-$2.sock"
pid_file = "$TMP/pinroute-$2.pid"
${6:-}

[cookie]
name = "$COOKIE_NAME"
max_age = "7d"

[[route]]
prefix = "/"
backends = $backends

[route.health_check]
enabled = true
path = "/api/health"
interval = "5s"
timeout = "2s"
$4
EOF
}

C_ADMIN_PORT="" # pinroute's admin listener (metrics)
start_pinroute() { # RUST_LOG [EXTRA_TOML [BACKENDS [SERVER_TOML]]]
    local level=$1 extra=${2:-} admin cfg
    alloc_port C_PORT; alloc_port admin
    C_ADMIN_PORT=$admin
    cfg="$TMP/pinroute-$C_PORT.toml"
    C_LOG="$TMP/pinroute-$C_PORT.log"
    pinroute_config "$cfg" "$C_PORT" "$admin" "$extra" "${3:-}" "${4:-}"
    if ! PINROUTE_COOKIE_KEY=$COOKIE_KEY "$PINROUTE" check --config "$cfg" >"$C_LOG" 2>&1; then
        START_ERROR="pinroute check rejected the config: $(tail -c 600 "$C_LOG")"
        return 1
    fi
    env RUST_LOG="$level" PINROUTE_COOKIE_KEY="$COOKIE_KEY" \
        "${ON_PROXY_CORE[@]}" "$PINROUTE" run --config "$cfg" >"$C_LOG" 2>&1 &
    C_PIDS=$!
    PIDS+=("$C_PIDS")
    C_AUTH_PORT=""
    # With auth configured, 401 means up too.
    wait_http "http://127.0.0.1:$C_PORT/api/health" 20 "200|401" || {
        START_ERROR="pinroute did not answer on :$C_PORT: $(tail -c 600 "$C_LOG")"
        return 1
    }
}

haproxy_servers() { # PORT...: one `server` line per backend, cookie bN
    local i=0 p
    for p in "$@"; do
        i=$((i + 1))
        printf '    server b%d 127.0.0.1:%d cookie b%d check inter 5s\n' "$i" "$p" "$i"
    done
}

start_haproxy() { # [PORT...] (default: the three backends)
    local cfg servers ports=("$@")
    ((${#ports[@]} > 0)) || ports=("$P1" "$P2" "$P3")
    servers=$(haproxy_servers "${ports[@]}")
    alloc_port C_PORT; alloc_port C_AUTH_PORT
    cfg="$TMP/haproxy-$C_PORT.cfg"
    C_LOG="$TMP/haproxy-$C_PORT.log"
    cat >"$cfg" <<EOF
global
    nbthread 1
    maxconn 8000

userlist bench_users
    user bench password ${HTPASSWD_LINE#bench:}

defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse safe
    maxconn 8000
    timeout connect 3s
    timeout client 3600s
    timeout server 3600s
    timeout tunnel 3600s
    timeout http-request 60s
    timeout http-keep-alive 60s

frontend fe
    bind 127.0.0.1:$C_PORT
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend api

frontend fe_auth
    bind 127.0.0.1:$C_AUTH_PORT
    http-request auth realm "SkyPilot API Server" unless { http_auth(bench_users) }
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend api

backend api
    balance roundrobin
    cookie $COOKIE_NAME insert indirect nocache httponly attr "Max-Age=604800"
    option httpchk
    http-check send meth GET uri /api/health
$servers
EOF
    haproxy -c -q -f "$cfg" >"$C_LOG" 2>&1 || { START_ERROR="haproxy -c: $(cat "$C_LOG")"; return 1; }
    "${ON_PROXY_CORE[@]}" haproxy -f "$cfg" -db >"$C_LOG" 2>&1 &
    C_PIDS=$!
    PIDS+=("$C_PIDS")
    wait_http "http://127.0.0.1:$C_PORT/api/health" 20 || {
        START_ERROR="haproxy did not answer: $(tail -c 600 "$C_LOG")"
        return 1
    }
}

start_nginx() {
    local dir="$TMP/nginx" master worker
    mkdir -p "$dir/tmp"
    alloc_port C_PORT; alloc_port C_AUTH_PORT
    C_LOG="$dir/error.log"
    printf '%s\n' "$HTPASSWD_LINE" >"$dir/htpasswd"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
$( [[ $(id -u) == 0 ]] && echo "user root root;  # the worker reads files in this private temp dir" || true )
worker_processes 1;
worker_rlimit_nofile $FD_LIMIT;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8000; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    client_max_body_size 1000m;
    keepalive_timeout 65s;
    # The default (1,000) would reconnect wrk every 1,000 requests; the other
    # contenders have no such limit.
    keepalive_requests 1000000;
    map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
    # Open-source nginx cannot insert a cookie: hash on the client's cookie.
    upstream api {
        hash \$cookie_$COOKIE_NAME consistent;
        server 127.0.0.1:$P1;
        server 127.0.0.1:$P2;
        server 127.0.0.1:$P3;
        keepalive 128;
        keepalive_requests 1000000;
    }
    proxy_http_version 1.1;
    proxy_set_header Host \$http_host;
    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    proxy_set_header X-Real-IP \$remote_addr;
    proxy_set_header X-Forwarded-Proto \$scheme;
    proxy_set_header X-Forwarded-Host \$http_host;
    proxy_set_header Upgrade \$http_upgrade;
    proxy_set_header Connection \$connection_upgrade;
    proxy_read_timeout 3600s;
    proxy_send_timeout 3600s;
    # Stream uploads like the other contenders instead of spooling to disk.
    proxy_request_buffering off;
    server {
        listen 127.0.0.1:$C_PORT;
        location / { proxy_pass http://api; }
        location /api/stream { proxy_buffering off; proxy_pass http://api; }
    }
    server {
        listen 127.0.0.1:$C_AUTH_PORT;
        auth_basic "SkyPilot API Server";
        auth_basic_user_file $dir/htpasswd;
        location / { proxy_pass http://api; }
    }
}
EOF
    nginx -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/t.log" 2>&1 ||
        { START_ERROR="nginx -t: $(cat "$dir/t.log")"; return 1; }
    "${ON_PROXY_CORE[@]}" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
    master=$!
    PIDS+=("$master")
    wait_http "http://127.0.0.1:$C_PORT/api/health" 20 || {
        START_ERROR="nginx did not answer: $(tail -c 600 "$C_LOG")"
        return 1
    }
    worker=$(pgrep -P "$master" | tr '\n' ' ')
    C_PIDS="$master $worker"
}

start_direct() {
    C_PORT=$P1
    C_AUTH_PORT=""
    C_PIDS=$BACKEND_PID
    C_LOG="$TMP/backend.log"
}

# pingora's floor: the program (benches/src/bin/pingora_*_min.rs) proxies to
# backend 1 only, like direct's target.
start_floor() { # BINARY
    alloc_port C_PORT
    C_AUTH_PORT=""
    C_LOG="$TMP/$1-$C_PORT.log"
    "${ON_PROXY_CORE[@]}" "$TMP/$1" "127.0.0.1:$C_PORT" "127.0.0.1:$P1" >"$C_LOG" 2>&1 &
    C_PIDS=$!
    PIDS+=("$C_PIDS")
    wait_http "http://127.0.0.1:$C_PORT/api/health" 20 || {
        START_ERROR="$1 did not answer on :$C_PORT: $(tail -c 600 "$C_LOG")"
        return 1
    }
}

start_contender() { # NAME
    START_ERROR=""
    case "$1" in
        direct) start_direct ;;
        pingora-core-min) start_floor pingora_core_min ;;
        pingora-proxy-min) start_floor pingora_proxy_min ;;
        pinroute) start_pinroute warn ;;
        pinroute-info-log) start_pinroute info ;;
        haproxy) start_haproxy ;;
        nginx) start_nginx ;;
    esac
}

stop_contender() { # NAME
    [[ $1 == direct ]] && return 0
    local pid
    # nginx: TERM to the master ends its worker too.
    pid=${C_PIDS%% *}
    stop_pids "$pid"
    forget_pid "$pid"
}

alive() {
    local p
    for p in $C_PIDS; do kill -0 "$p" 2>/dev/null || return 1; done
}

cpu_ticks() { # the contender's
    # shellcheck disable=SC2086 # nginx: master and worker
    pid_ticks $C_PIDS
}

rss_kib() {
    local p t=0 v
    for p in $C_PIDS; do
        v=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null) || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

machine_busy_ticks() { # busy and total ticks of all cores
    awk '$1 == "cpu" {busy = $2 + $3 + $4 + $7 + $8; print busy, busy + $5 + $6 + $9}' /proc/stat
}

# Machine busy % over one second (our processes are idle between workloads).
busy_pct() {
    local b0 t0 b1 t1
    read -r b0 t0 < <(machine_busy_ticks)
    sleep 1
    read -r b1 t1 < <(machine_busy_ticks)
    echo $(((b1 - b0) * 100 / ((t1 - t0) > 0 ? (t1 - t0) : 1)))
}

busiest() { # the three busiest processes over half a second
    top -bn2 -d 0.5 -w 200 2>/dev/null | awk '/^ *PID/ {n++; next} n == 2 && $9 + 0 > 0 {printf "%s %s%%, ", $12, $9; if (++k == 3) exit}'
}

QUIET_SEEN=0 # machine busy % when the last workload started
QUIET_SPENT=0
wait_quiet() {
    local deadline=$((SECONDS + QUIET_MAX)) pct told=0 start=$SECONDS
    ((QUIET_SPENT < QUIET_BUDGET)) || deadline=$SECONDS
    while true; do
        pct=$(busy_pct)
        if ((pct <= QUIET_PCT)); then
            break
        fi
        if ((SECONDS >= deadline)); then
            log "machine ${pct}% busy; measuring anyway (flagged in the report; quiet-wait budget used: $((QUIET_SPENT + SECONDS - start))s of ${QUIET_BUDGET}s)"
            break
        fi
        if ((told == 0)); then
            log "machine ${pct}% busy with other work ($(busiest)); waiting up to $((deadline - SECONDS))s"
            told=1
        fi
        sleep 2
    done
    QUIET_SEEN=$pct
    QUIET_SPENT=$((QUIET_SPENT + SECONDS - start))
}

pid_ticks() { # PID...: utime + stime, all threads
    local p t=0 v
    for p in "$@"; do
        v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

# CPU of every finished child of this shell (the load generators); sets
# CHILD_TICKS. `times` must run in this shell, not in a $(...) subshell.
children_ticks() {
    times >"$TMP/times"
    CHILD_TICKS=$(awk -v hz="$(getconf CLK_TCK)" 'NR == 2 {
        t = 0
        for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += a[1] * 60 + a[2] }
        printf "%d\n", t * hz }' "$TMP/times")
}

# Noise: CPU used on the machine, both cores, by anything but the contender,
# the backend and the harness's own clients during the workload.
NOISE_T0=0 NOISE_M0=0 NOISE_OWN0=0 NOISE_FIELDS=""
own_ticks() { # sets OWN_TICKS
    children_ticks
    OWN_TICKS=$(($(pid_ticks $C_PIDS) + CHILD_TICKS))
    [[ $CUR == direct ]] || OWN_TICKS=$((OWN_TICKS + $(pid_ticks "$BACKEND_PID")))
}
noise_start() {
    NOISE_T0=$(date +%s%N)
    read -r NOISE_M0 _ < <(machine_busy_ticks)
    own_ticks
    NOISE_OWN0=$OWN_TICKS
}
noise_end() { # sets NOISE_FIELDS: quiet_busy_pct=N foreign_cpu_pct=N
    local t1 m1 wall_ticks foreign
    t1=$(date +%s%N)
    read -r m1 _ < <(machine_busy_ticks)
    own_ticks
    wall_ticks=$(((t1 - NOISE_T0) * $(getconf CLK_TCK) / 1000000000))
    ((wall_ticks > 0)) || wall_ticks=1
    foreign=$(((m1 - NOISE_M0) - (OWN_TICKS - NOISE_OWN0)))
    ((foreign > 0)) || foreign=0
    NOISE_FIELDS="quiet_busy_pct=$QUIET_SEEN foreign_cpu_pct=$((foreign * 100 / wall_ticks))"
}

# The cookie a pinned client sends: the one the contender sets, else a fixed
# value (nginx sets none; its hash only needs some value).
pinned_cookie() {
    local v
    v=$(curl -s -m 2 -D - -o /dev/null "http://127.0.0.1:$C_PORT/api/health" | tr -d '\r' |
        awk -F'[:;] *' 'tolower($1)=="set-cookie" && $2 ~ /^'"$COOKIE_NAME"'=/ {print $2; exit}') || true
    echo "${v:-$COOKIE_NAME=bench-client}"
}

# Which backends answer 10 requests with COOKIE: "b2 x10" when sticky.
stickiness() {
    local out=""
    for _ in $(seq 1 10); do
        out+=$(curl -s -m 2 -H "Cookie: $1" "http://127.0.0.1:$C_PORT/api/health" |
            sed -n 's/.*"backend":"\([^"]*\)".*/\1/p')$'\n'
    done
    printf '%s' "$out" | sort | uniq -c | awk '{printf "%s%s x%s", (NR>1?", ":""), $2, $1}'
}

# ---- workloads --------------------------------------------------------------
WRK_DONE='
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("{\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,\"connect_errors\":%d,\"read_errors\":%d,\"write_errors\":%d,\"status_errors\":%d,\"timeouts\":%d,\"lat_p50_us\":%d,\"lat_p90_us\":%d,\"lat_p99_us\":%d,\"lat_max_us\":%d,\"lat_mean_us\":%.1f}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end'

wrk_script() { # FILE METHOD BODY_BYTES HEADER...
    local file=$1 method=$2 body=$3 h
    shift 3
    {
        printf 'wrk.method = "%s"\n' "$method"
        ((body > 0)) && printf 'wrk.body = string.rep("x", %d)\nwrk.headers["Content-Type"] = "application/octet-stream"\n' "$body"
        for h in "$@"; do
            printf 'wrk.headers["%s"] = "%s"\n' "${h%%: *}" "${h#*: }"
        done
        printf '%s\n' "$WRK_DONE"
    } >"$file"
}

CUR=""           # contender being measured
WORKLOAD_NOTE="" # extra note for the next record
NOTE_FN=""       # function whose output is added to the note after the run
RECORD_EXTRA=""  # more KEY=JSON fields for the records of run_measured (g: ids)

# Sum of the error counters in a result (wrk's, or the Rust clients' "errors").
result_errors() {
    printf '%s' "$1" | grep -o '"\(connect_errors\|read_errors\|write_errors\|status_errors\|timeouts\|errors\)":[0-9]*' |
        awk -F: '{t += $2} END {print t + 0}'
}

# run_measured WORKLOAD TITLE DESCRIPTION MARKER EXTRA -- COMMAND...
# Runs the load generator COMMAND (its result is the stdout line starting
# with {"MARKER") up to ATTEMPTS times while other processes made the numbers
# noisy, and records the least noisy attempt. An attempt without a result or
# with errors in it is recorded at once: retries must never hide a failure.
# EXTRA: more KEY=JSON fields (word-split), or empty.
run_measured() {
    local workload=$1 title=$2 desc=$3 marker=$4 extra=$5
    shift 6
    local attempt out t0 t1 rss result foreign best_foreign=-1 tried="" best=() fields
    for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
        wait_quiet
        log "$CUR: $workload ($desc)$( ((attempt > 1)) && echo ", attempt $attempt of $ATTEMPTS")"
        noise_start
        t0=$(cpu_ticks)
        out=$("$@" 2>&1) || true
        t1=$(cpu_ticks)
        rss=$(rss_kib)
        noise_end
        printf '%s\n' "$out" >"$TMP/$CUR-$workload.$attempt.out"
        result=$(printf '%s\n' "$out" | grep "^{\"$marker\"" | tail -1) || true
        if [[ -z $result ]]; then
            emit contender="$(json_str "$CUR")" workload="$(json_str "$workload")" title="$(json_str "$title")" \
                error="$(json_str "$workload produced no result: $(printf '%s' "$out" | tail -5)")"
            WORKLOAD_NOTE=""
            return 0
        fi
        foreign=${NOISE_FIELDS##*foreign_cpu_pct=}
        tried+="${tried:+, }$foreign%"
        # shellcheck disable=SC2206 # NOISE_FIELDS is two KEY=N words
        fields=(rss_kib="$rss" cpu_ticks=$((t1 - t0)) clk_tck="$(getconf CLK_TCK)" $NOISE_FIELDS result="$result")
        if ((best_foreign < 0 || foreign < best_foreign)); then
            best=("${fields[@]}")
            best_foreign=$foreign
        fi
        if (($(result_errors "$result") > 0)); then
            best=("${fields[@]}")
            break
        fi
        ((foreign <= NOISY_PCT)) && break
        ((attempt < ATTEMPTS)) && log "$CUR: $workload was noisy (other processes used $foreign% of a core); measuring again"
    done
    [[ -n $NOTE_FN ]] && WORKLOAD_NOTE+="${WORKLOAD_NOTE:+; }$($NOTE_FN)"
    # shellcheck disable=SC2086 # EXTRA and RECORD_EXTRA are KEY=JSON words
    emit contender="$(json_str "$CUR")" workload="$(json_str "$workload")" title="$(json_str "$title")" \
        "${best[@]}" $extra $RECORD_EXTRA round="$ROUND" attempts="$((attempt > ATTEMPTS ? ATTEMPTS : attempt))" \
        attempts_foreign="$(json_str "$tried")" note="$(json_str "$WORKLOAD_NOTE")"
    WORKLOAD_NOTE=""
}

# Where run_wrk runs wrk (a1s: on the contender's core), and Lua added to
# its script (g: a request() that cycles through request ids).
WRK_ON=("${ON_LOAD_CORE[@]}")
WRK_LUA=""
run_wrk() { # WORKLOAD TITLE CONNS SECONDS PORT PATH METHOD BODY_BYTES HEADER...
    local workload=$1 title=$2 conns=$3 secs=$4 port=$5 path=$6 method=$7 body=$8
    shift 8
    local lua="$TMP/$CUR-$workload.lua"
    wrk_script "$lua" "$method" "$body" "$@"
    [[ -z $WRK_LUA ]] || printf '%s\n' "$WRK_LUA" >>"$lua"
    run_measured "$workload" "$title" "$secs s, $conns conns" requests "body_bytes=$body" -- \
        timeout $((secs + 30)) "${WRK_ON[@]}" wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s \
        -s "$lua" "http://127.0.0.1:$port$path"
}

# a1s: the backend joins the contender on its core, and wrk runs there too,
# so no request crosses cores; back to the load core afterwards.
same_core() { # on|off
    local core=$([[ $1 == on ]] && echo "$PROXY_CORE" || echo "$LOAD_CORE")
    taskset -a -p -c "$core" "$BACKEND_PID" >/dev/null
    if [[ $1 == on ]]; then
        WRK_ON=("${ON_PROXY_CORE[@]}")
    else
        WRK_ON=("${ON_LOAD_CORE[@]}")
    fi
}

warmup() { # PORT HEADER...
    ((WARMUP > 0)) || return 0
    local port=$1 lua="$TMP/warmup.lua"
    shift
    wrk_script "$lua" GET 0 "$@"
    timeout $((WARMUP + 20)) "${ON_LOAD_CORE[@]}" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s "$lua" \
        "http://127.0.0.1:$port/api/health" >/dev/null 2>&1 || true
}

run_idle_streams() { # COOKIE
    local title="$STREAMS concurrent idle /api/stream connections: RSS growth per open stream" out result t0 t1 rss
    wait_quiet
    log "$CUR: d_idle_streams ($STREAMS streams)"
    noise_start
    t0=$(cpu_ticks)
    # shellcheck disable=SC2046 # one --pid per measured process
    out=$(timeout 150 "${ON_LOAD_CORE[@]}" "$BIN/idle_streams" --target "127.0.0.1:$C_PORT" \
        $(printf -- '--pid %s ' $C_PIDS) --streams "$STREAMS" --hold 120 --beat 5 --cookie "$1" \
        --timeout 90 --settle 2 2>&1) || true
    t1=$(cpu_ticks)
    rss=$(rss_kib)
    noise_end
    result=$(printf '%s\n' "$out" | grep '^{"streams_requested"' | tail -1) || true
    if [[ -z $result ]]; then
        emit contender="$(json_str "$CUR")" workload='"d_idle_streams"' title="$(json_str "$title")" \
            error="$(json_str "idle_streams produced no result: $(printf '%s' "$out" | tail -5)")"
    else
        emit contender="$(json_str "$CUR")" workload='"d_idle_streams"' title="$(json_str "$title")" \
            rss_kib="$rss" $NOISE_FIELDS note="$(json_str "$WORKLOAD_NOTE")" result="$result"
    fi
    WORKLOAD_NOTE=""
    # The proxies close their upstream streams; the backend notices at the
    # next heartbeat.
    sleep 6
}

T_E="websocket echo: $WS_CONNS connections x $WS_ROUNDS round trips (32-byte frames)"
run_ws_echo() { # COOKIE
    run_measured e_ws_echo "$T_E" \
        "$WS_CONNS x $WS_ROUNDS" conns "" -- \
        timeout 120 "${ON_LOAD_CORE[@]}" "$BIN/ws_echo" --url "ws://127.0.0.1:$C_PORT/ws" \
        --conns "$WS_CONNS" --rounds "$WS_ROUNDS" --size 32 --cookie "$1" --timeout 90
}

last_round() { ((ROUND == ROUNDS)); }

skip() { # WORKLOAD TITLE REASON
    emit contender="$(json_str "$CUR")" workload="$(json_str "$1")" title="$(json_str "$2")" skipped="$(json_str "$3")"
}

# A contender that died is reported, then restarted for the next workload.
check_alive() { # WORKLOAD
    alive && return 0
    local tail_log
    tail_log=$(tail -c 800 "$C_LOG" 2>/dev/null || true)
    log "$CUR died during $1: $tail_log"
    emit contender="$(json_str "$CUR")" workload="$(json_str "$1")" title='"contender exited"' \
        error="$(json_str "$CUR exited during $1; log tail: $tail_log")"
    stop_contender "$CUR" || true
    start_contender "$CUR" || die "could not restart $CUR: $START_ERROR"
}

T_A="small GET /api/health, keep-alive, $CONNS conns, pinned cookie (wrk)"
T_A1="small GET /api/health, keep-alive, 1 connection, pinned cookie: unloaded latency (wrk)"
T_A1S="the same, 1 connection, with the contender, the backend and wrk all on core $PROXY_CORE: no cross-core wake-ups (wrk)"
T_A2="small GET /api/health, keep-alive, $CONNS conns, no cookie: every request is a new client (wrk)"
T_B="small GET, a new connection per request (Connection: close), $CONNS conns (wrk)"
T_C="1 MiB POST /upload, $UPLOAD_CONNS conns (wrk)"
T_F="small GET with basic auth (bcrypt cost 5), $CONNS conns, pinned cookie (wrk)"

# Starts contender NAME for a pass (the error is recorded under WORKLOAD)
# and sets COOKIE, the cookie a pinned client of it sends, and STICKY, where
# that cookie went.
start_measured() { # NAME WORKLOAD TITLE
    CUR=$1
    start_contender "$CUR" || {
        log "$CUR failed to start: $START_ERROR"
        emit contender="$(json_str "$CUR")" workload="$(json_str "$2")" title="$(json_str "$3")" \
            error="$(json_str "$CUR did not start: $START_ERROR")"
        stop_contender "$CUR" 2>/dev/null || true
        return 1
    }
    COOKIE=$(pinned_cookie)
    STICKY=$(stickiness "$COOKIE")
    log "$CUR up: port $C_PORT, pids $C_PIDS, cookie '$COOKIE' -> $STICKY"
}

# The first pass of a round: workload a of every contender back to back, and
# g beside its contender's a (before it in forward rounds, after it in
# reverse ones), so that the figures the goals compare (a of pinroute and of
# HAProxy, which are next to each other in the order; g of pinroute and a of
# pinroute) are measured seconds apart, not minutes: one round's pinroute/HAProxy
# ratio on a swung 0.72-1.21 over a run while whole workload lists ran between them.
measure_a() { # NAME FORWARD(1|0)
    [[ $2 == 1 ]] && wants_workload g && { CUR=$1; run_scale; }
    if wants_workload a && start_measured "$1" a_get "$T_A"; then
        warmup "$C_PORT" "Cookie: $COOKIE"
        WORKLOAD_NOTE="cookie $COOKIE -> $STICKY"
        [[ $CUR == pinroute-info-log ]] && NOTE_FN=info_log_note
        run_wrk a_get "$T_A" "$CONNS" "$DUR_A" "$C_PORT" /api/health GET 0 "Cookie: $COOKIE"
        NOTE_FN=""
        check_alive a_get
        [[ $PERF == 1 && $CUR == pinroute && $ROUND == 1 ]] && perf_pinroute "$COOKIE"
        stop_contender "$CUR"
    fi
    [[ $2 == 0 ]] && wants_workload g && { CUR=$1; run_scale; }
    return 0
}

# The second pass: every other workload of contender NAME.
measure_rest() { # NAME
    # Only workload a: this contender is there to price the access log.
    [[ $1 == pinroute-info-log ]] && return 0
    local w any=0
    for w in a1 a1s a2 b c e; do wants_workload "$w" && any=1; done
    last_round && { wants_workload d || wants_workload f; } && any=1
    ((any == 1)) || return 0
    start_measured "$1" a1_get_1conn "$T_A1" || return 0
    local cookie=$COOKIE

    if wants_workload a1; then
        run_wrk a1_get_1conn "$T_A1" 1 "$DUR" "$C_PORT" /api/health GET 0 "Cookie: $cookie"
        check_alive a1_get_1conn
    fi

    if wants_workload a1s; then
        same_core on
        run_wrk a1s_get_1conn_same_core "$T_A1S" 1 "$DUR" "$C_PORT" /api/health GET 0 "Cookie: $cookie"
        same_core off
        check_alive a1s_get_1conn_same_core
    fi

    if wants_workload a2; then
        [[ $CUR == nginx ]] &&
            WORKLOAD_NOTE="nginx: every cookieless request hashes the empty cookie, so all go to one backend"
        [[ $CUR == pingora-* ]] &&
            WORKLOAD_NOTE="$CUR: one fixed upstream and no cookie: no backend pick, no Set-Cookie (the floor of a2 is a's)"
        run_wrk a2_get_new_client "$T_A2" "$CONNS" "$DUR" "$C_PORT" /api/health GET 0
        check_alive a2_get_new_client
    fi

    if wants_workload b; then
        run_wrk b_conn_close "$T_B" "$CONNS" "$DUR" "$C_PORT" /api/health GET 0 "Cookie: $cookie" "Connection: close"
        check_alive b_conn_close
    fi

    if wants_workload c; then
        run_wrk c_upload "$T_C" "$UPLOAD_CONNS" "$DUR" "$C_PORT" /upload POST "$UPLOAD_BYTES" "Cookie: $cookie"
        check_alive c_upload
    fi

    if wants_workload d && last_round; then
        [[ $CUR == direct ]] && WORKLOAD_NOTE="direct: RSS is the backend's own cost per stream"
        run_idle_streams "$cookie"
        check_alive d_idle_streams
    fi

    if wants_workload e; then
        if [[ $CUR == pingora-core-min ]]; then
            skip e_ws_echo "$T_E" "pingora-core-min copies request and response bodies only: no upgrade (websocket) handling"
        else
            run_ws_echo "$cookie"
            check_alive e_ws_echo
        fi
    fi

    wants_workload f && last_round && run_auth "$cookie"
    stop_contender "$CUR"
    return 0
}

info_log_note() {
    printf 'RUST_LOG=info, stderr to a file: %s lines, %s MiB written (warm-up included)' \
        "$(grep -c . "$C_LOG" || true)" "$(du -m "$C_LOG" | cut -f1)"
}

# "401/200": what PORT answers without and with the credentials.
auth_codes() { # PORT
    printf '%s/%s' \
        "$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$1/api/health" || true)" \
        "$(curl -s -o /dev/null -m 5 -w '%{http_code}' -H "Authorization: $AUTH_HEADER" "http://127.0.0.1:$1/api/health" || true)"
}

run_auth_on() { # PORT COOKIE NOTE: measure f unless auth is not enforced
    local codes
    codes=$(auth_codes "$1")
    if [[ $codes != 401/200 ]]; then
        emit contender="$(json_str "$CUR")" workload='"f_get_basic_auth"' title="$(json_str "$T_F")" \
            error="$(json_str "auth not working: without credentials $codes (expected 401/200: 401 without, 200 with); not measured")"
        return 0
    fi
    WORKLOAD_NOTE="$3; answers 401 without credentials, 200 with"
    run_wrk f_get_basic_auth "$T_F" "$CONNS" "$DUR" "$1" /api/health GET 0 \
        "Cookie: $2" "Authorization: $AUTH_HEADER"
}

AUTH_TOML="$(printf '[route.auth.basic]\nhtpasswd = "%s"\n' "$HTPASSWD_LINE")"

auth_config_accepted() { # does this pinroute know [route.auth.basic]?
    local cfg="$TMP/auth-check.toml"
    pinroute_config "$cfg" 1 2 "$AUTH_TOML"
    PINROUTE_COOKIE_KEY=$COOKIE_KEY "$PINROUTE" check --config "$cfg" >/dev/null 2>&1
}

run_auth() { # COOKIE
    case "$CUR" in
        direct) skip f_get_basic_auth "$T_F" "the backend has no auth: nothing to compare" ;;
        pingora-*) skip f_get_basic_auth "$T_F" "$CUR is a framework floor without auth" ;;
        haproxy|nginx) run_auth_on "$C_AUTH_PORT" "$1" "separate listener with auth in the same process" ;;
        pinroute)
            if [[ $AUTH == 0 ]]; then
                skip f_get_basic_auth "$T_F" "turned off (--no-auth / PINROUTE_BENCH_AUTH=0)"
                return 0
            fi
            if [[ $AUTH == auto ]] && ! auth_config_accepted; then
                skip f_get_basic_auth "$T_F" "pinroute has no basic auth yet (pinroute check rejects [route.auth.basic]; --auth forces the run)"
                return 0
            fi
            # A second pinroute with the auth snippet; the first one stays as it is.
            local saved_pids=$C_PIDS saved_port=$C_PORT saved_log=$C_LOG
            if start_pinroute warn "$AUTH_TOML"; then
                run_auth_on "$C_PORT" "$1" "separate pinroute process with [route.auth.basic] (pinroute remembers verified Authorization values; HAProxy and nginx run bcrypt on every request)"
            else
                emit contender='"pinroute"' workload='"f_get_basic_auth"' title="$(json_str "$T_F")" \
                    error="$(json_str "$START_ERROR")"
            fi
            stop_pids "${C_PIDS%% *}"
            forget_pid "${C_PIDS%% *}"
            C_PIDS=$saved_pids C_PORT=$saved_port C_LOG=$saved_log
            ;;
    esac
}

PERF_OUT=""
perf_pinroute() { # COOKIE: an extra, unrecorded run of workload a under perf
    local data="$TMP/perf.data" secs=$((DUR_A > 10 ? 10 : DUR_A))
    PERF_OUT="$RESULTS/$MODE-perf-pinroute.txt"
    log "pinroute: perf record during an extra ${secs}s of workload a (not in the table)"
    local lua="$TMP/perf.lua"
    wrk_script "$lua" GET 0 "Cookie: $1"
    "${ON_LOAD_CORE[@]}" wrk -t1 -c"$CONNS" -d"$((secs + 2))s" -s "$lua" \
        "http://127.0.0.1:$C_PORT/api/health" >"$TMP/perf-wrk.txt" 2>&1 &
    local wrk_pid=$!
    sleep 1
    "${ON_LOAD_CORE[@]}" perf record -q -F 499 --call-graph dwarf,16384 -p "${C_PIDS%% *}" -o "$data" -- sleep "$secs" \
        >"$TMP/perf.log" 2>&1 || true
    wait "$wrk_pid" || true
    {
        echo "perf record -F 499 --call-graph dwarf on pinroute (threads = 1, core $PROXY_CORE) during workload a"
        echo "(GET /api/health, keep-alive, $CONNS conns, pinned cookie), ${secs}s; self time per symbol."
        echo
        perf report -i "$data" --no-children -g none --percent-limit 0.5 --stdio --sort dso,symbol 2>/dev/null |
            grep -v '^#' | grep -v '^$' | sed 's/[ -]*$//' | cut -c1-160 | head -60
        echo
        echo "by shared object:"
        perf report -i "$data" --no-children -g none --stdio --sort dso 2>/dev/null |
            grep -v '^#' | grep -v '^$' | sed 's/[ -]*$//' | head -12
        echo
        echo "inclusive time (with callees) of pinroute's own functions (crate pinroute):"
        perf report -i "$data" --children -g none --stdio --sort symbol 2>/dev/null |
            grep -E '\] .*pinroute(::|_)' | sed 's/[ -]*$//' | cut -c1-200 | head -30
        echo
        echo "inclusive time of the top frames (pingora, tokio), >= 3%:"
        perf report -i "$data" --children -g none --stdio --sort symbol --percent-limit 3 2>/dev/null |
            grep -v '^#' | grep -v '^$' | grep -v '0x0\|\] 0000' | sed 's/[ -]*$//' | cut -c1-200 | head -40
    } >"$PERF_OUT" || true
}

# ---- run --------------------------------------------------------------------
log "mode $MODE; contenders $CONTENDERS; temp dir $TMP"
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    ((ROUNDS == 1)) || log "round $ROUND of $ROUNDS"
    # Even rounds run the contenders in reverse (A B B A): a drift of the
    # machine that lasts the whole run (rounds of one run saw HAProxy alone
    # at 19.5 K and 37.5 K req/s) then falls on early and late contenders
    # alike instead of always favouring whoever runs first.
    order=$ALL_CONTENDERS forward=1
    ((ROUND % 2 == 0)) && order=$(tr ' ' '\n' <<<"$ALL_CONTENDERS" | tac | tr '\n' ' ') forward=0
    for c in $order; do
        wants "$c" && measure_a "$c" "$forward"
    done
    for c in $order; do
        wants "$c" && measure_rest "$c"
    done
done
ROUND=$ROUNDS
stop_pids "$BACKEND_PID"
forget_pid "$BACKEND_PID"

# ---- report -----------------------------------------------------------------
mkdir -p "$RESULTS"
version_of() { "$@" 2>&1 | head -1 || true; }
NOTES=(
    "every contender runs on core $PROXY_CORE with one worker (pinroute threads = 1, HAProxy nbthread 1, nginx worker_processes 1); wrk (-t1), the Rust clients and the backend share core $LOAD_CORE, which bounds 'direct'"
    "RSS and CPU columns are the contender's process(es) (nginx: master + worker; direct: the backend); CPU µs/rq = contender CPU time / requests; CPU% is of one core"
    "pinroute: static backends, cookie on, health checks on (5 s), RUST_LOG=warn (access log off); pinroute-info-log is the same at RUST_LOG=info with stderr to a file"
    "pingora's floor (profile dist, mimalloc, unbuffered client reads, one worker, like pinroute): pingora-proxy-min is the smallest pingora-proxy ProxyHttp, pingora-core-min a pingora-core ServerApp with one upstream connection bound to each client connection; both proxy to backend 1 only, add only X-Forwarded-For, set no cookie and do no health checks (benches/src/bin/pingora_*_min.rs)"
    "a1s: the contender, the backend and wrk all on core $PROXY_CORE (no cross-core wake-ups); 'added over direct' compares with direct in the same placement"
    "g: a second process of the contender with $G_BACKENDS static backends ($G_BACKENDS more listeners of the same bench_backend process as every other workload, core $LOAD_CORE; health checks on as in a); pinroute first learns request ids from X-Skypilot-Request-ID answers (g_scale_learn), then runs workload a (g_scale_get; g/a is against its own a_get row) and id lookups (g_scale_lookup)"
    "HAProxy: cookie $COOKIE_NAME insert indirect nocache, balance roundrobin, http-reuse safe, health checks inter 5s"
    "nginx: open-source nginx has no cookie insertion: hash \$cookie_$COOKIE_NAME consistent; keep-alive upstreams (keepalive 128), no active health checks, proxy_request_buffering off, proxy_buffering off on /api/stream"
    "the proxies (pingora's floor aside) add X-Forwarded-For/-Proto/-Host and X-Real-IP; 'errors' = connect/read/write errors and timeouts (streams: failed or closed early); non2xx = responses >= 400"
    "noise: before each workload the harness waits (at most ${QUIET_MAX}s) until the machine is <= ${QUIET_PCT}% busy; 'foreign' is CPU (% of one core, both cores summed) used during the workload by processes other than the contender, the backend and the harness's clients; harness processes run at nice $NICE; a workload during which other processes used > $NOISY_PCT% of a core is measured again (at most $ATTEMPTS attempts) and the least noisy attempt is kept"
    "latencies are wrk's (request sent to response read, per connection); ws round trips are measured by ws_echo"
)
REPORT_NOTES=()
for n in "${NOTES[@]}"; do REPORT_NOTES+=(--note "$n"); done
OUT_NAME=$([[ $MODE == full ]] && echo latest || echo quick)
"$BIN/bench_report" --raw "$RAW" --out-txt "$RESULTS/$OUT_NAME.txt" --out-json "$RESULTS/$OUT_NAME.json" \
    --meta "mode=$MODE ($ROUNDS interleaved round(s); a: ${DUR_A}s, others: ${DUR}s per round; warm-up ${WARMUP}s)" \
    --meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --meta "commit=$COMMIT" \
    --meta "nproc=$(nproc)" \
    --meta "cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)" \
    --meta "kernel=$(uname -sr)" \
    --meta "memory=$(awk '/^MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)" \
    --meta "haproxy=$(version_of haproxy -v)" \
    --meta "nginx=$(version_of nginx -v)" \
    --meta "wrk=$(version_of wrk -v)" \
    --meta "rustc=$(version_of rustc --version)" \
    --meta "pinroute_binary=profile dist, built $PINROUTE_BUILT ($(version_of "$PINROUTE" --version)), copied at the start of the run" \
    --meta "fd_limit=$FD_LIMIT" \
    "${REPORT_NOTES[@]}"
log "results: $RESULTS/$OUT_NAME.txt, $RESULTS/$OUT_NAME.json${PERF_OUT:+, $PERF_OUT}"
