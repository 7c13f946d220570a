# Helpers shared by the benchmark scripts (bench/run.sh, bench/resilience.sh,
# bench/instructions.sh, bench/ab.sh). Sourced, not run.
#
# Expects before sourcing: `set -euo pipefail`; NAME (the log prefix); `run_wrk` also needs
# WRK_ARGS and LOAD_CPUS. Defines ROOT, REL, WORK, PIDS, ENVOY and CARGO_TARGET_DIR (defaults
# below), and installs an EXIT trap that stops every
# process started with `start` and removes $WORK unless KEEP=1 or the script failed.

ENVOY=${ENVOY:-/root/.cache/legate-venv/lib/python3.11/site-packages/envoy/_bin/envoy}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/legate-target}
KEEP=${KEEP:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REL=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d "/tmp/legate-$NAME.XXXXXX")
PIDS=()

log() { printf '[%s %s] %s\n' "$NAME" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 || $rc != 0 ]]; then log "scratch directory kept: $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# task_ticks PID: utime+stime of all its threads (clock ticks; includes softirq work done in its
# context: this kernel has no IRQ time accounting).
task_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# task_user_ticks PID: utime only (stime = task_ticks - this).
task_user_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12}'; }
# to_us VALUE: wrk latency (e.g. 512.00us, 1.23ms, 1.01s) -> microseconds.
to_us() {
    awk -v v="$1" 'BEGIN{ n=v+0; if (v ~ /us$/) m=1; else if (v ~ /ms$/) m=1000;
        else if (v ~ /m$/) m=60e6; else if (v ~ /s$/) m=1e6; else m=1; printf "%.1f", n*m }'
}
median() { sort -g | awk '{a[NR]=$1} END{ if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
# run_wrk OUTFILE SECONDS URL: wrk with the caller's WRK_ARGS (array) on LOAD_CPUS; sets RPS,
# P50 and P99 (us), REQS and ERRS (non-2xx and socket errors).
run_wrk() {
    local out=$1 secs=$2 url=$3
    timeout $((secs + 30)) taskset -c "$LOAD_CPUS" wrk "${WRK_ARGS[@]}" "-d${secs}s" "$url" >"$out" 2>&1 ||
        die "wrk failed: $(tail -5 "$out")"
    RPS=$(awk '/^Requests\/sec:/{print $2}' "$out")
    P50=$(to_us "$(awk '$1=="50%"{print $2}' "$out")")
    P99=$(to_us "$(awk '$1=="99%"{print $2}' "$out")")
    REQS=$(awk '/requests in/{print $1}' "$out")
    ERRS=$(awk '/Non-2xx/{n+=$NF} /Socket errors/{gsub(/,/,""); n+=$4+$6+$8+$10} END{print n+0}' "$out")
}

# need TOOL HINT...: die unless TOOL is on PATH, saying how to install it.
need() {
    local tool=$1; shift
    command -v "$tool" >/dev/null || die "$tool not found ($*)"
}

# wait_for DESC SECONDS CMD...: poll CMD every 100 ms until it succeeds or SECONDS pass.
wait_for() {
    local desc=$1 secs=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${secs}s waiting for $desc"
        sleep 0.1
    done
}
# free_port: a port nothing listens on now (bound, then released).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + RANDOM % 20000))
}
rss_kb() { awk -v k="$2:" '$1==k{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# start NAME CPUSET CMD...: background process with logs in $WORK; pid in $LAST_PID.
start() {
    local name=$1 cpus=$2; shift 2
    taskset -c "$cpus" "$@" </dev/null >"$WORK/$name.out" 2>"$WORK/$name.err" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}
# stop PID: SIGTERM, then SIGKILL after 5 s.
stop() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# build_release: the release binaries the benchmarks run (unless SKIP_BUILD=1).
build_release() {
    cd "$ROOT"
    if [[ $SKIP_BUILD != 1 ]]; then
        log "building release binaries (timeout 40 min)"
        timeout 2400 cargo build --release -p legate-proxy -p legate-control-plane -p legate-test-upstream >&2 ||
            die "cargo build failed"
    fi
    for b in legate-proxy legate-cp legate-upstream; do [[ -x $REL/$b ]] || die "$REL/$b missing"; done
    [[ -x $ENVOY ]] || die "Envoy not found at $ENVOY (set ENVOY=...)"
}

# start_upstream NAME CPUSET ARGS...: a legate-upstream on a free loopback port; sets
# LAST_PID and UPSTREAM (host:port).
start_upstream() {
    local name=$1 cpus=$2; shift 2
    start "$name" "$cpus" "$REL/legate-upstream" --name "$name" --listen 127.0.0.1:0 "$@"
    wait_for "legate-upstream $name to listen" 20 grep -q 'listening on' "$WORK/$name.out"
    UPSTREAM=$(sed -n 's/.*listening on //p' "$WORK/$name.out" | head -1)
}

# start_control_plane LABEL CPUSET SERVICES_YAML NODE: legate-cp serving the file; writes the
# bootstrap `legate-cp bootstrap envoy --node NODE` gives (admin on a free port) to
# $WORK/LABEL.bootstrap.yaml; sets LAST_PID, XDS and BOOTSTRAP (that file).
start_control_plane() {
    local label=$1 cpus=$2 config=$3 node=$4
    local addr=$WORK/$label.addr.json
    rm -f "$addr"
    start "$label" "$cpus" "$REL/legate-cp" serve --config "$config" \
        --xds 127.0.0.1:0 --admin 127.0.0.1:0 --address-file "$addr" -l warn
    wait_for "legate-cp address file" 20 test -s "$addr"
    XDS=$(sed -n 's/.*"xds": *"\([^"]*\)".*/\1/p' "$addr")
    [[ -n $XDS ]] || die "no xds address in $(cat "$addr")"
    BOOTSTRAP=$WORK/$label.bootstrap.yaml
    timeout 30 "$REL/legate-cp" bootstrap envoy --node "$node" --xds "$XDS" --admin 127.0.0.1:0 >"$BOOTSTRAP" ||
        die "legate-cp bootstrap failed"
}

# start_bench_service CPUSET: the one-service set-up of bench/instructions.sh and bench/ab.sh:
# a legate-upstream (`--static-body ok`) and a legate-cp serving service `bench` to ambassador
# `bench` on a free port; sets UPSTREAM, LISTEN (host:port) and BOOTSTRAP.
start_bench_service() {
    local cpus=$1
    start_upstream up "$cpus" --static-body ok
    LISTEN=127.0.0.1:$(free_port)
    cat >"$WORK/services.yaml" <<EOF
services:
  bench:
    endpoints: [$UPSTREAM]
ambassadors:
  bench:
    listen: $LISTEN
    routes: [{ prefix: /, service: bench }]
EOF
    start_control_plane legate-cp "$cpus" "$WORK/services.yaml" bench
}

# start_proxy KIND LABEL CPUSET BOOTSTRAP: Envoy (KIND envoy) or legate-proxy (KIND legate) on
# BOOTSTRAP, with the same flags; waits for its admin address and /ready LIVE; sets LAST_PID and
# ADMIN (host:port).
start_proxy() {
    local kind=$1 label=$2 cpus=$3 bootstrap=$4 bin
    case $kind in
        envoy) bin=$ENVOY ;;
        legate) bin=$REL/legate-proxy ;;
        *) die "unknown proxy $kind" ;;
    esac
    local admin_file=$WORK/$label.admin
    start "$label" "$cpus" "$bin" -c "$bootstrap" --concurrency 1 --disable-hot-restart \
        -l warning --admin-address-path "$admin_file"
    wait_for "$kind admin address" 30 test -s "$admin_file"
    ADMIN=$(cat "$admin_file")
    wait_for "$kind /ready LIVE" 30 sh -c "curl -sf --max-time 2 http://$ADMIN/ready | grep -q LIVE"
}
