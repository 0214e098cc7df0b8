#!/usr/bin/env bash
# Cost per keep-alive GET that this noisy VM cannot blur: system calls
# (perf's syscall tracepoints) and user-space instructions (valgrind
# callgrind), of one contender in front of the harness backend, with
# h2load -c16 pinned to one cookie. Counts, not times: two builds compare
# within a percent even while other work runs.
#
#   benches/harness/cost.sh CONTENDER [REQUESTS]     syscalls/request, user/sys CPU
#   CG=1 benches/harness/cost.sh CONTENDER [REQUESTS] instructions/request (callgrind)
#
# CONTENDER: haproxy | pinroute | core-min | pinroute-scale. pinroute-scale is
# workload g's pinroute for counting: a config file with BACKENDS static
# backends (default 1000, all listeners of one bench_backend) and
# IDS learned request ids (default 1000000, taught through /bench/learn
# before counting starts; callgrind's instrumentation is off meanwhile).
# BACKENDS=3 IDS=0 is the same process shaped like workload a, so the two
# compare per-request cost at scale with nothing else changed.
# Binaries: PINROUTE (default
# target/release/pinroute), COREMIN (default target/dist/pingora_core_min).
# KEEP=dir keeps the callgrind profiles (CGOPT="--separate-threads=yes" for
# one per thread). EV="-e syscalls:sys_enter_sendto ..." adds per-call counts.
set -euo pipefail
[[ $# -ge 1 ]] || { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
C=$1 N=${2:-20000}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REL=${CARGO_TARGET_DIR:-$ROOT/target}/release
BIN=${PINROUTE:-$REL/pinroute}
D=$(mktemp -d)
B=$((21000 + RANDOM % 5000))
P1=$((B+1)) P2=$((B+2)) P3=$((B+3)) PP=$((B+100)) AP=$((B+199))
GB=${BACKENDS:-1000} IDS=${IDS:-1000000}
if [[ $C == pinroute-scale ]]; then
  G1=$((30000 + RANDOM % 20000)) G2=$((G1 + GB - 1))
  $REL/bench_backend --listen-range 127.0.0.1:$G1-$G2 --learn-ids $((IDS > 0 ? IDS : 1)) --max-secs 7200 >$D/bk.log 2>&1 &
else
  $REL/bench_backend --listen 127.0.0.1:$P1 --listen 127.0.0.1:$P2 --listen 127.0.0.1:$P3 >$D/bk.log 2>&1 &
fi
BK=$!
trap 'kill -9 $PID $BK 2>/dev/null; wait 2>/dev/null; rm -rf $D' EXIT
sleep 0.3
. "$(dirname "${BASH_SOURCE[0]}")/haproxy_cfg.sh"
haproxy_bench_cfg "$D/hap.cfg" $PP $P1 $P2 $P3
pre=""
[[ ${CG:-0} = 1 ]] && pre="valgrind --tool=callgrind --callgrind-out-file=$D/cg.out --dump-instr=no ${CGOPT:-}"
# pinroute-scale teaches its ids first: not instrumented, not counted.
[[ ${CG:-0} = 1 && $C == pinroute-scale ]] && pre+=" --instr-atstart=no"
case $C in
  haproxy) $pre haproxy -f $D/hap.cfg >$D/c.log 2>&1 & PID=$! ;;
  pinroute) RUST_LOG=warn $pre $BIN run --listen 127.0.0.1:$PP --admin 127.0.0.1:$AP --backend 127.0.0.1:$P1 --backend 127.0.0.1:$P2 --backend 127.0.0.1:$P3 >$D/c.log 2>&1 & PID=$! ;;
  pinroute-scale)
    for _ in $(seq 100); do curl -s -m 1 -o /dev/null http://127.0.0.1:$G2/api/health && break; sleep 0.2; done
    { printf '[server]\nlisten = ["127.0.0.1:%s"]\nadmin = "127.0.0.1:%s"\nthreads = 1\n' $PP $AP
      printf 'upgrade_sock = "%s/u.sock"\npid_file = "%s/p.pid"\n' $D $D
      ((IDS > 0)) && printf 'request_id_capacity = %s\n' $IDS
      printf '[cookie]\nname = "SKYPILOT_ROUTEID"\nmax_age = "7d"\n[[route]]\nprefix = "/"\nbackends = ['
      seq -f '"127.0.0.1:%g"' $G1 $G2 | paste -sd, - | tr -d '\n'
      printf ']\n[route.health_check]\nenabled = true\npath = "/api/health"\ninterval = "5s"\ntimeout = "2s"\n'
    } >$D/scale.toml
    PINROUTE_COOKIE_KEY=cost-sh-cookie-key-0123456789 RUST_LOG=warn $pre $BIN run --config $D/scale.toml >$D/c.log 2>&1 & PID=$! ;;
  core-min) $pre ${COREMIN:-$ROOT/target/dist/pingora_core_min} 127.0.0.1:$PP 127.0.0.1:$P1 >$D/c.log 2>&1 & PID=$! ;;
esac
for _ in $(seq 100); do curl -s -m 2 -o /dev/null http://127.0.0.1:$PP/api/health && break; sleep 0.2; done
if [[ $C == pinroute-scale ]] && ((IDS > 0)); then
  h2load --h1 -c 64 -n $IDS http://127.0.0.1:$PP/bench/learn | grep -E "^requests:" | sed 's/^/taught ids: /'
fi
[[ ${CG:-0} = 1 && $C == pinroute-scale ]] && callgrind_control -i on $PID >/dev/null
COOKIE=$(curl -s -m 5 -D - -o /dev/null http://127.0.0.1:$PP/api/health | tr -d '\r' | awk -F'[:;] *' 'tolower($1)=="set-cookie"{print $2;exit}')
h2load --h1 -c 16 -n 2000 ${COOKIE:+-H "Cookie: $COOKIE"} http://127.0.0.1:$PP/api/health >/dev/null 2>&1
if [[ ${CG:-0} = 1 ]]; then
  callgrind_control -z $PID >/dev/null
  h2load --h1 -c 16 -n $N ${COOKIE:+-H "Cookie: $COOKIE"} http://127.0.0.1:$PP/api/health | grep -E "^requests:" 
  callgrind_control -d $PID >/dev/null; sleep 1
  f=$(ls -t $D/cg.out* | head -1)
  ir=$(grep -E '^(summary|totals):' $f | head -1 | awk '{print $2}')
  echo "$C Ir/request=$((ir / N))"
  [[ -n ${KEEP:-} ]] && { mkdir -p $KEEP; cp $D/cg.out* $KEEP/; }
else
  perf stat -e raw_syscalls:sys_enter -e task-clock ${EV:-} -p $PID -o $D/ps.txt -- sleep 600 & PS=$!
  sleep 0.5
  read u0 s0 < <(sed 's/^.*) //' /proc/$PID/stat | awk '{print $12, $13}')
  h2load --h1 -c 16 -n $N ${COOKIE:+-H "Cookie: $COOKIE"} http://127.0.0.1:$PP/api/health | grep -E "^requests:"
  read u1 s1 < <(sed 's/^.*) //' /proc/$PID/stat | awk '{print $12, $13}')
  echo "$C user_us/req=$(( (u1-u0)*10000*1000/N )) sys_us/req=$(( (s1-s0)*10000*1000/N )) (x1000)"
  pkill -P $PS sleep || kill -INT $PS; wait $PS 2>/dev/null || true
  sc=$(awk '/raw_syscalls/ {gsub(",","",$1); print $1}' $D/ps.txt)
  echo "$C syscalls/request=$(awk -v s=$sc -v n=$N 'BEGIN{printf "%.2f", s/n}')"
  [[ -n ${EV:-} ]] && awk -v n=$N '/syscalls:/ {gsub(",","",$1); printf "  %s %.2f\n", $2, $1/n}' $D/ps.txt
fi
