# Sourced by ab.sh and cost.sh: the HAProxy contender of workload a as
# run.sh configures it (cookie insert, http-reuse safe, the forwarding
# headers pinroute sets), minus health checks.
#
#   haproxy_bench_cfg FILE PROXY_PORT BACKEND_PORT...
haproxy_bench_cfg() {
    local file=$1 port=$2 i=0 p
    shift 2
    cat >"$file" <<H
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse safe
    maxconn 8000
    timeout connect 3s
    timeout client 3600s
    timeout server 3600s
    timeout http-keep-alive 60s
frontend fe
    bind 127.0.0.1:$port
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend api
backend api
    balance roundrobin
    cookie SKYPILOT_ROUTEID insert indirect nocache httponly attr "Max-Age=604800"
H
    for p in "$@"; do
        i=$((i + 1))
        echo "    server b$i 127.0.0.1:$p cookie b$i" >>"$file"
    done
}
