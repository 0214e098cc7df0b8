#!/usr/bin/env bash
# Interleaved A/B of contenders on workload a (keep-alive GET /api/health,
# wrk -t1 -c64): each round runs every contender in turn, alone on core 0,
# with wrk and the harness backend on core 1, so slow drifts of this busy
# machine hit all contenders alike. One line per contender and round, then
# the min / median / max of each.
#
#   benches/harness/ab.sh ROUNDS SECS CONTENDER...
#
# Contenders: direct haproxy pingora-core-min pingora-proxy-min pinroute
# (core-min / proxy-min are accepted too) and pinroute=PATH for another
# pinroute build, e.g. two builds in one run:
#
#   benches/harness/ab.sh 3 6 haproxy pinroute pinroute=/tmp/pinroute-main
#
# Binaries: pinroute and pingora_*_min from target/dist (build them as
# run.sh does, profile dist), bench_backend from target/release. Override
# with DIST=dir, REL=dir, PINROUTE=path (what plain `pinroute` runs).
# Knobs: AB_CONNS (64), AB_PATH (/api/health), AB_PORT_BASE (default: a
# free one; ports BASE+1..3 backends, BASE+100 proxy, BASE+199 admin).
# Needs haproxy, wrk, curl, taskset. No noise control: see run.sh for that.
set -euo pipefail

[[ $# -ge 3 ]] || { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
ROUNDS=$1 SECS=$2
shift 2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
DIST=${DIST:-$TARGET_DIR/dist}
REL=${REL:-$TARGET_DIR/release}
PINROUTE=${PINROUTE:-$DIST/pinroute}
CONNS=${AB_CONNS:-64}
URL_PATH=${AB_PATH:-/api/health}
BASE=${AB_PORT_BASE:-}
HZ=$(getconf CLK_TCK)

need() { [[ -x $1 ]] || { echo "ab.sh: $1 missing (${2})" >&2; exit 1; }; }
need "$REL/bench_backend" "cargo build --release -p pinroute-benches --bins"
for c in "$@"; do
    case $c in
        direct | haproxy) ;;
        pingora-core-min | core-min) need "$DIST/pingora_core_min" "cargo build --profile dist -p pinroute-benches --bin pingora_core_min" ;;
        pingora-proxy-min | proxy-min) need "$DIST/pingora_proxy_min" "cargo build --profile dist -p pinroute-benches --bin pingora_proxy_min" ;;
        pinroute) need "$PINROUTE" "cargo build --profile dist -p pinroute --bin pinroute, or PINROUTE=path" ;;
        pinroute=*) need "${c#pinroute=}" "pinroute=PATH names a pinroute binary" ;;
        *) echo "ab.sh: unknown contender $c" >&2; exit 2 ;;
    esac
done

D=$(mktemp -d /tmp/pinroute-ab.XXXXXX)
BK="" PID=""
cleanup() {
    [[ -n $PID ]] && kill -9 "$PID" 2>/dev/null || true
    [[ -n $BK ]] && kill "$BK" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A base whose five ports are free: another A/B (or a stray backend) on the
# same ports would be measured instead of ours.
port_free() { ! ss -Htan "( sport = :$1 )" 2>/dev/null | grep -q .; }
if [[ -z $BASE ]]; then
    for _ in $(seq 100); do
        BASE=$((20000 + RANDOM % 11000))
        port_free $((BASE + 1)) && port_free $((BASE + 2)) && port_free $((BASE + 3)) &&
            port_free $((BASE + 100)) && port_free $((BASE + 199)) && break
        BASE=""
    done
    [[ -n $BASE ]] || { echo "ab.sh: no free ports found" >&2; exit 1; }
fi
P1=$((BASE + 1)) P2=$((BASE + 2)) P3=$((BASE + 3)) PROXY_PORT=$((BASE + 100)) ADMIN_PORT=$((BASE + 199))
taskset -c 1 "$REL/bench_backend" --listen "127.0.0.1:$P1" --listen "127.0.0.1:$P2" --listen "127.0.0.1:$P3" \
    >"$D/backend.log" 2>&1 &
BK=$!
for p in $P1 $P2 $P3; do
    for _ in $(seq 50); do curl -s -m 2 -o /dev/null "http://127.0.0.1:$p/api/health" && break; sleep 0.1; done
done
kill -0 "$BK" 2>/dev/null || { echo "ab.sh: bench_backend did not start: $(cat "$D/backend.log")" >&2; exit 1; }
. "$(dirname "${BASH_SOURCE[0]}")/haproxy_cfg.sh"
haproxy_bench_cfg "$D/hap.cfg" $PROXY_PORT "$P1" "$P2" "$P3"

start() { # CONTENDER: sets PID (empty for direct), PORT, COOKIE
    local c=$1
    PID="" PORT=$PROXY_PORT
    case $c in
        direct) PORT=$P1 ;;
        haproxy) taskset -c 0 haproxy -f "$D/hap.cfg" >"$D/c.log" 2>&1 & PID=$! ;;
        pingora-proxy-min | proxy-min) taskset -c 0 "$DIST/pingora_proxy_min" "127.0.0.1:$PORT" "127.0.0.1:$P1" >"$D/c.log" 2>&1 & PID=$! ;;
        pingora-core-min | core-min) taskset -c 0 "$DIST/pingora_core_min" "127.0.0.1:$PORT" "127.0.0.1:$P1" >"$D/c.log" 2>&1 & PID=$! ;;
        pinroute | pinroute=*)
            local bin=$PINROUTE
            [[ $c == pinroute=* ]] && bin=${c#pinroute=}
            RUST_LOG=warn taskset -c 0 "$bin" run --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" \
                --backend "127.0.0.1:$P1" --backend "127.0.0.1:$P2" --backend "127.0.0.1:$P3" >"$D/c.log" 2>&1 &
            PID=$!
            ;;
    esac
    for _ in $(seq 50); do curl -s -m 2 -o /dev/null "http://127.0.0.1:$PORT/api/health" && break; sleep 0.1; done
    if [[ -n $PID ]] && ! kill -0 "$PID" 2>/dev/null; then
        echo "ab.sh: $c exited at start: $(tail -c 400 "$D/c.log")" >&2
        PID=""
    fi
    COOKIE=$(curl -s -m 2 -D - -o /dev/null "http://127.0.0.1:$PORT/api/health" | tr -d '\r' |
        awk -F'[:;] *' 'tolower($1) == "set-cookie" {print $2; exit}')
}

stop() {
    [[ -n $PID ]] || return 0
    kill -9 "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
    sleep 0.5
}

ticks() { [[ -n $PID ]] && sed 's/^.*) //' "/proc/$PID/stat" | awk '{print $12 + $13}' || echo 0; }

: >"$D/lines"
for r in $(seq "$ROUNDS"); do
    for c in "$@"; do
        start "$c"
        t0=$(ticks)
        out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency ${COOKIE:+-H "Cookie: $COOKIE"} \
            "http://127.0.0.1:$PORT$URL_PATH" 2>&1) || true
        t1=$(ticks)
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        reqs=$(awk '/requests in/ {print $1}' <<<"$out")
        cpu=$(awk -v t="$((t1 - t0))" -v hz="$HZ" -v n="${reqs:-0}" 'BEGIN {printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0)}')
        rss=$([[ -n $PID ]] && awk '/^VmRSS/ {print $2}' "/proc/$PID/status" || echo -)
        [[ -n $PID ]] || cpu="-"  # direct: the backend's CPU is wrk's core, not measured here
        line="round $r $c rps=${rps:-error} p50=${p50:--} p99=${p99:--} cpu_us_per_req=$cpu rss_kb=$rss"
        echo "$line"
        echo "$line" >>"$D/lines"
        [[ -n $rps ]] || echo "  wrk: $(tail -3 <<<"$out" | tr '\n' ' ')" >&2
        stop
    done
done

echo
echo "contender              rps min / median / max         CPU µs/request min / median / max"
for c in "$@"; do
    awk -v c="$c" '$3 == c {
        split($4, a, "="); split($7, b, "=")
        if (a[2] != "error") { r[++n] = a[2] + 0; if (b[2] != "-") u[++m] = b[2] + 0 }
    }
    function sort(x, k,   i, j, t) { for (i = 2; i <= k; i++) for (j = i; j > 1 && x[j-1] > x[j]; j--) { t = x[j]; x[j] = x[j-1]; x[j-1] = t } }
    function med(x, k) { return k % 2 ? x[(k + 1) / 2] : (x[k / 2] + x[k / 2 + 1]) / 2 }
    END {
        if (!n) { printf "%-22s no successful round\n", c; exit }
        sort(r, n)
        line = sprintf("%-22s %8.0f / %8.0f / %8.0f", c, r[1], med(r, n), r[n])
        if (m) { sort(u, m); line = line sprintf("      %6.1f / %6.1f / %6.1f", u[1], med(u, m), u[m]) }
        print line
    }' "$D/lines"
done
