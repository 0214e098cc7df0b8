# Workload g (scale), sourced by run.sh: pinroute with 1,000 static backends
# and a full request-id table, then workload a's request against the same
# process, so the per-request cost of a big backend table and id table shows
# as g/a. HAProxy runs g_scale_get with 1,000 servers for reference.
#
# Three rows for pinroute:
#   g_scale_learn   GET /bench/learn without a cookie until the table is full:
#                   every answer carries a new X-Skypilot-Request-ID, which
#                   pinroute learns (proxy/src/affinity.rs); new clients, so
#                   the ids spread over the backends
#   g_scale_get     workload a (pinned cookie, GET /api/health, keep-alive)
#   g_scale_lookup  GET /api/get?request_id=<a learned id>, cycling through
#                   $G_LOOKUP_IDS of them; the note counts how many pinroute
#                   routed by id (pinroute_request_id_routed_total)

G_BACKENDS=${BENCH_G_BACKENDS:-1000}
G_IDS_WANTED=1000000
# pinroute's request-id table holds affinity::DEFAULT_CAPACITY ids
# (proxy/src/affinity.rs; state.rs builds it with RequestIdTable::default())
# and no config key changes that. The harness asks `pinroute check` whether
# [server] $ID_CAPACITY_KEY is known; when it is, it sets it to
# $G_IDS_WANTED and teaches that many ids, otherwise as many as the table holds.
ID_CAPACITY_KEY=request_id_capacity
PINROUTE_DEFAULT_ID_CAPACITY=100000
G_LOOKUP_IDS=1000
G_FIRST="" G_LAST="" G_IDS="" G_CAPACITY="" G_SERVER_TOML="" G_IDS_NOTE=""

# The first of COUNT consecutive free ports, below the ephemeral range like
# alloc_port's; sets RANGE_FIRST.
free_port_range() { # COUNT
    local count=$1 used base p ok _
    used=$(ss -Htan | awk '{n = split($4, a, ":"); print a[n]}' | sort -un)
    for _ in $(seq 1 100); do
        base=$((20000 + RANDOM % (12000 - count)))
        awk -v b="$base" -v e="$((base + count))" '$1 != "" && $1 >= b && $1 < e {exit 1}' <<<"$used" || continue
        ok=1
        for p in $USED_PORTS; do ((p >= base && p < base + count)) && ok=0; done
        ((ok)) || continue
        RANGE_FIRST=$base
        return 0
    done
    die "no $count free consecutive ports"
}

# Before the backend starts: the ports of workload g's backends, which are
# listeners of the harness's one backend process (run.sh), so that a and g
# run against the same process and g/a shows only the proxy's own scaling
# (and that process's CPU counts as the backend's, not as noise). Sets
# G_FIRST, G_LAST and G_BACKEND_ARGS.
G_BACKEND_ARGS=()
scale_ports() {
    free_port_range "$G_BACKENDS"
    G_FIRST=$RANGE_FIRST G_LAST=$((RANGE_FIRST + G_BACKENDS - 1))
    G_BACKEND_ARGS=(--listen-range "127.0.0.1:$G_FIRST-$G_LAST" --learn-ids "$G_LEARN_IDS")
}
G_LEARN_IDS=${BENCH_G_IDS:-$G_IDS_WANTED}

# Once: how many ids pinroute can hold, and the ids to look up.
scale_setup() {
    [[ -n $G_CAPACITY ]] && return 0
    local cfg="$TMP/capacity-check.toml"
    pinroute_config "$cfg" 1 2 "" "" "$ID_CAPACITY_KEY = $G_IDS_WANTED"
    if PINROUTE_COOKIE_KEY=$COOKIE_KEY "$PINROUTE" check --config "$cfg" >/dev/null 2>&1; then
        G_CAPACITY=$G_IDS_WANTED
        G_SERVER_TOML="$ID_CAPACITY_KEY = $G_IDS_WANTED"
        G_IDS_NOTE="[server] $ID_CAPACITY_KEY = $G_IDS_WANTED"
    else
        G_CAPACITY=$PINROUTE_DEFAULT_ID_CAPACITY
        G_IDS_NOTE="pinroute has no [server] $ID_CAPACITY_KEY: its table holds $G_CAPACITY ids (affinity::DEFAULT_CAPACITY), so $G_CAPACITY of the $G_IDS_WANTED wanted"
    fi
    G_IDS=$((G_LEARN_IDS < G_CAPACITY ? G_LEARN_IDS : G_CAPACITY))
    for p in $G_FIRST $G_LAST; do
        wait_http "http://127.0.0.1:$p/api/health" 20 || die "backend listener :$p of workload g did not start: $(tail -c 600 "$TMP/backend.log")"
    done
    "$BIN/bench_backend" --print-ids "$G_LOOKUP_IDS" --learn-ids "$G_LEARN_IDS" >"$TMP/scale-ids.txt"
    log "workload g: backend pid $BACKEND_PID also on :$G_FIRST-$G_LAST ($G_BACKENDS listeners, core $LOAD_CORE); $G_IDS ids to teach ($G_IDS_NOTE)"
}

# The counter pinroute bumps for each request it routed by a known id.
ids_routed() {
    curl -s -m 5 "http://127.0.0.1:$C_ADMIN_PORT/metrics" |
        awk '$1 == "pinroute_request_id_routed_total" {print $2; found = 1} END {if (!found) print 0}'
}

IDS_ROUTED_BEFORE=0
lookup_note() { # NOTE_FN of g_scale_lookup: run_measured's locals are in scope
    local sent
    sent=$(cat "$TMP/$CUR-g_scale_lookup".*.out 2>/dev/null | grep -o '^{"requests":[0-9]*' | awk -F: '{t += $2} END {print t + 0}')
    printf 'pinroute routed %s requests by request id (pinroute_request_id_routed_total); wrk completed %s lookups, all attempts (the ones in flight when wrk stops are routed, not completed)' \
        "$(($(ids_routed) - IDS_ROUTED_BEFORE))" "$sent"
}

# Teach pinroute G_IDS ids. wrk cannot stop after N answers (thread:stop()
# ends the thread, not the run), so it runs in 2 s chunks until G_IDS answers
# came back; the backend wraps its ids after G_IDS, so the last chunk's extra
# answers repeat known ids. Prints one wrk-shaped summary: counts summed,
# p50 averaged over the chunks (weighted by requests), p99 the worst chunk's.
learn_until() { # URL
    local lua="$TMP/$CUR-learn.lua" out line total=0 deadline=$((SECONDS + 60 + G_IDS / 500)) k
    local -A sum=()
    local keys="requests duration_us bytes connect_errors read_errors write_errors status_errors timeouts"
    wrk_script "$lua" GET 0
    local p50w=0 p99=0 max=0
    while ((total < G_IDS && SECONDS < deadline)); do
        out=$(timeout 40 "${ON_LOAD_CORE[@]}" wrk -t1 -c"$CONNS" -d2s --timeout 5s -s "$lua" "$1" 2>&1) || true
        line=$(grep '^{"requests"' <<<"$out" | tail -1) || true
        # No summary: pass wrk's output on, run_measured reports it.
        [[ -n $line ]] || { printf '%s\n' "$out"; return 0; }
        for k in $keys; do sum[$k]=$((${sum[$k]:-0} + $(json_num "$k" "$line"))); done
        p50w=$((p50w + $(json_num lat_p50_us "$line") * $(json_num requests "$line")))
        p99=$(($(json_num lat_p99_us "$line") > p99 ? $(json_num lat_p99_us "$line") : p99))
        max=$(($(json_num lat_max_us "$line") > max ? $(json_num lat_max_us "$line") : max))
        total=${sum[requests]}
        (($(json_num requests "$line") > 0)) || break
    done
    line="{"
    for k in $keys; do line+="\"$k\":${sum[$k]},"; done
    printf '%s"lat_p50_us":%d,"lat_p90_us":0,"lat_p99_us":%d,"lat_max_us":%d,"lat_mean_us":0}\n' \
        "$line" "$((p50w / (total > 0 ? total : 1)))" "$p99" "$max"
}

json_num() { # KEY JSON: the integer value of "KEY" (0 when absent)
    local v
    v=$(grep -o "\"$1\":[0-9]*" <<<"$2" | head -1 | cut -d: -f2) || true
    echo "${v:-0}"
}

scale_learn() {
    # One attempt: a second would teach the same ids again.
    local ATTEMPTS=1
    run_measured g_scale_learn "$T_GLEARN" "$G_IDS answers, $CONNS conns, 2 s chunks" requests "" -- \
        learn_until "http://127.0.0.1:$C_PORT/bench/learn"
}

# check_alive would restart the contender with three backends: here a dead
# process ends the workload with an error row instead.
scale_alive() { # WORKLOAD
    alive && return 0
    emit contender="$(json_str "$CUR")" workload="$(json_str "$1")" title='"contender exited"' \
        error="$(json_str "$CUR ($G_BACKENDS backends) exited during $1; log tail: $(tail -c 800 "$C_LOG" 2>/dev/null)")"
    RECORD_EXTRA="" WRK_LUA="" NOTE_FN=""
    stop_contender "$CUR" 2>/dev/null || true
    return 1
}

run_scale() {
    T_G="small GET /api/health, keep-alive, $CONNS conns, pinned cookie, with $G_BACKENDS backends and a full request-id table: workload a at scale (wrk)"
    case "$CUR" in
        pinroute | haproxy) ;;
        direct) skip g_scale_get "$T_G" "one backend: no backend table to scale"; return 0 ;;
        pingora-*) skip g_scale_get "$T_G" "$CUR has one fixed upstream: no backend table, no request ids"; return 0 ;;
        nginx) skip g_scale_get "$T_G" "HAProxy is the reference with $G_BACKENDS servers"; return 0 ;;
        *) return 0 ;;
    esac
    scale_setup
    T_GLEARN="scale: teach $G_IDS request ids: GET /bench/learn, no cookie, $CONNS conns, each answer with a new X-Skypilot-Request-ID (wrk)"
    T_GLOOKUP="scale: GET /api/get?request_id=<one of $G_LOOKUP_IDS learned ids>, $CONNS conns, pinned cookie (wrk)"
    if [[ $CUR == pinroute ]]; then
        local backends
        backends="[$(seq -f '"127.0.0.1:%g"' "$G_FIRST" "$G_LAST" | paste -sd, -)]"
        start_pinroute warn "" "$backends" "$G_SERVER_TOML"
    else
        # shellcheck disable=SC2046 # one port per word
        start_haproxy $(seq "$G_FIRST" "$G_LAST")
    fi || {
        emit contender="$(json_str "$CUR")" workload='"g_scale_get"' title="$(json_str "$T_G")" \
            error="$(json_str "$CUR with $G_BACKENDS backends did not start: $START_ERROR")"
        stop_contender "$CUR" 2>/dev/null || true
        return 0
    }
    local cookie sticky rss0 rss1 learned
    cookie=$(pinned_cookie)
    sticky=$(stickiness "$cookie")
    log "$CUR (scale) up: port $C_PORT, pids $C_PIDS, $G_BACKENDS backends, cookie '$cookie' -> $sticky"
    if [[ $CUR == pinroute ]]; then
        rss0=$(rss_kib)
        WORKLOAD_NOTE="$G_IDS_NOTE"
        scale_learn
        rss1=$(rss_kib)
        learned=$(grep '"g_scale_learn"' "$RAW" | tail -1 | grep -o '"requests":[0-9]*' | cut -d: -f2)
        learned=$(( ${learned:-0} < G_IDS ? ${learned:-0} : G_IDS ))
        learned=$(( learned < G_CAPACITY ? learned : G_CAPACITY ))
        RECORD_EXTRA="ids_learned=$learned ids_wanted=$G_IDS_WANTED"
        WORKLOAD_NOTE="cookie $cookie -> $sticky; $learned ids learned ($G_IDS_NOTE); RSS $((rss0 / 1024)) -> $((rss1 / 1024)) MiB while learning ($(( (rss1 - rss0) * 1024 / (learned > 0 ? learned : 1) )) B per id)"
    else
        skip g_scale_learn "$T_GLEARN" "HAProxy has no request-id table"
        WORKLOAD_NOTE="cookie $cookie -> $sticky; $G_BACKENDS servers, no request ids"
    fi
    scale_alive g_scale_learn || return 0
    warmup "$C_PORT" "Cookie: $cookie"
    run_wrk g_scale_get "$T_G" "$CONNS" "$DUR_A" "$C_PORT" /api/health GET 0 "Cookie: $cookie"
    scale_alive g_scale_get || return 0
    if [[ $CUR == pinroute ]]; then
        IDS_ROUTED_BEFORE=$(ids_routed)
        NOTE_FN=lookup_note
        WRK_LUA="local ids, i = {}, 0
init = function(args) for line in io.lines(\"$TMP/scale-ids.txt\") do ids[#ids + 1] = line end end
request = function() i = i % #ids + 1; return wrk.format(nil, \"/api/get?request_id=\" .. ids[i]) end"
        run_wrk g_scale_lookup "$T_GLOOKUP" "$CONNS" "$DUR" "$C_PORT" /api/get GET 0 "Cookie: $cookie"
        WRK_LUA="" NOTE_FN=""
        scale_alive g_scale_lookup || return 0
    else
        skip g_scale_lookup "$T_GLOOKUP" "HAProxy has no request-id table"
    fi
    RECORD_EXTRA=""
    stop_contender "$CUR"
}
