#!/usr/bin/env bash
# Legate benchmark: the same load straight to the upstream, through Envoy and through
# legate-proxy (same bootstrap, same flags, same wrk/h2load settings), in one run on one machine;
# and through both proxies to an upstream that requires mTLS (certificates from
# `legate-cp certs init`, delivered over SDS). Prints a markdown report with medians and ratios
# to Envoy. See BENCHMARKS.md.
#
# Usage: bench/run.sh            (from anywhere inside the repository)
# Knobs (environment variables; defaults in brackets):
#   DURATION [10]  seconds per measured run       WARMUP [5]  seconds of each warm-up run
#   REPS [3]       measured runs per target        CONNS [32]  concurrent connections (wrk)
#   H2 [1]         also run h2load over h2c (H2_CONNS [8] connections x H2_STREAMS [4] streams)
#   PIN [1]        on >= 2 cores: proxy under test on core 1; wrk, h2load, upstream, legate-cp
#                  and this script on core 0 (the same placement for all targets)
#   QUIET_MAX [15] before each measured run, wait (up to QUIET_WAIT [300] s) until the machine
#                  is at most this % busy over 2 s (something else compiling skews everything)
#   NOISE_MAX [15] a measured run during which other processes used more than this % of one core
#                  is discarded and redone, at most NOISE_RETRIES [3] times (same rule for all)
#   WAIT_BUDGET [1800] once this many seconds went into waiting for quiet, stop waiting and stop
#                  redoing noisy runs: measure as is (noisy runs are marked in the report)
#   TARGETS ["direct envoy legate envoy-mtls legate-mtls"]  (the -mtls ones: the proxy speaks
#                  mTLS to the upstream; there is no direct mTLS target: wrk has no client
#                  certificates)                   SKIP_BUILD [0]  reuse existing release binaries
#   ENVOY [/root/.cache/legate-venv/.../envoy]     CARGO_TARGET_DIR [/root/.cache/legate-target]
#   KEEP [0]       keep the scratch directory (logs, raw wrk/h2load output, admin /stats dumps)
#   OUT [unset]    also write the final report (markdown) to this file
#   PERF [0]       1: `perf record` legate-proxy during its measured runs (profiles kept in the
#                  scratch directory; perf costs CPU, so use e.g. TARGETS=legate REPS=1, not for
#                  the numbers)
#
# Repetitions are interleaved (the order of TARGETS rotates by one per repetition)
# so that slow drift on a shared machine does not land on one target. Each proxy repetition is a
# fresh process: start, wait for /ready and a proxied 200, warm up, measure, read its peak RSS, stop.
set -euo pipefail
# The whole script is one { ... } group: bash parses it completely before running it, so
# editing this file while a benchmark runs cannot break the running instance.
{

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-5}
REPS=${REPS:-3}
CONNS=${CONNS:-32}
H2=${H2:-1}
H2_CONNS=${H2_CONNS:-8}
H2_STREAMS=${H2_STREAMS:-4}
PIN=${PIN:-1}
QUIET_MAX=${QUIET_MAX:-15}
QUIET_WAIT=${QUIET_WAIT:-300}
WAIT_BUDGET=${WAIT_BUDGET:-1800}
NOISE_MAX=${NOISE_MAX:-15}
NOISE_RETRIES=${NOISE_RETRIES:-3}
WAITED=0
TARGETS=${TARGETS:-"direct envoy legate envoy-mtls legate-mtls"}
PERF=${PERF:-0}
[[ $PERF == 1 ]] && KEEP=1
NAME=bench
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for tool in wrk timeout taskset curl awk sort getconf; do
    need "$tool" "apt-get install -y wrk nghttp2-client curl"
done
if [[ $H2 == 1 ]] && ! command -v h2load >/dev/null; then
    log "h2load not found (apt-get install -y nghttp2-client): skipping h2c"; H2=0
fi
PROTOS=(h1)
[[ $H2 == 1 ]] && PROTOS+=(h2)

# --- CPU placement -----------------------------------------------------------------------------
NCPU=$(nproc)
ALL_CPUS=0-$((NCPU - 1))
if [[ $PIN == 1 && $NCPU -ge 2 ]]; then
    LOAD_CPUS=0; PROXY_CPUS=1
    taskset -cp "$LOAD_CPUS" $$ >/dev/null   # this script and everything it starts: core 0
    PLACEMENT="proxy under test (all its threads) pinned to core 1 with taskset; wrk/h2load, the upstream, legate-cp and this script pinned to core 0 — the same placement for every target (core 1 idles during the direct runs)"
else
    LOAD_CPUS=0-$((NCPU - 1)); PROXY_CPUS=$LOAD_CPUS; PIN=0
    PLACEMENT="no CPU pinning"
fi

# --- helpers -----------------------------------------------------------------------------------
# child_ticks: cutime+cstime of this script (every waited-for descendant: wrk, h2load, curl, ...).
child_ticks() { sed 's/^.*) //' "/proc/$$/stat" | awk '{print $14 + $15}'; }
# cpu_numbers CPUS: the cores of a taskset list ("0", "0-1", "0,2-3"), separated by spaces.
cpu_numbers() {
    local part c out=()
    local -a parts
    IFS=, read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then
            for ((c = ${part%-*}; c <= ${part#*-}; c++)); do out+=("$c"); done
        else
            out+=("$part")
        fi
    done
    echo "${out[*]}"
}
# core_ticks CPUS: "busy total steal" ticks so far of the cores in CPUS (/proc/stat; busy = user,
# nice, system, irq, softirq, steal; steal = the hypervisor ran something else while the core
# wanted to run: host contention that no process in this VM shows).
core_ticks() {
    awk -v cpus="$(cpu_numbers "$1")" 'BEGIN{ n = split(cpus, c, " "); for (i = 1; i <= n; i++) want["cpu" c[i]] = 1 }
        ($1 in want) { b += $2 + $3 + $4 + $7 + $8 + $9; t += $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; st += $9 }
        END{ print b + 0, t + 0, st + 0 }' /proc/stat
}
# ipis CPUS: interprocessor interrupts (rescheduling + function call; a TLB shootdown is one of the
# latter) received so far by the cores in CPUS (a taskset list such as 0 or 0-1). Waking a task on
# another core that is idle or must be preempted costs the waker an IPI, which on this kind of VM
# is expensive (bench/wake-cost.sh; BENCHMARKS.md, "The ceiling").
ipis() {
    awk -v cpus="$(cpu_numbers "$1")" 'BEGIN{ n = split(cpus, c, " "); for (i = 1; i <= n; i++) want[c[i]] = 1 }
        $1 == "RES:" || $1 == "CAL:" { for (k in want) t += $(k + 2) } END{ print t + 0 }' /proc/interrupts
}
CLK_TCK=$(getconf CLK_TCK)
# wait_quiet: until the whole machine is <= QUIET_MAX % busy over 2 s (our processes are idle
# at this point). Sets QUIET to the last busy %.
wait_quiet() {
    local deadline=$((SECONDS + QUIET_WAIT)) b0 t0 b1 t1 _ warned=0 began=$SECONDS
    while :; do
        read -r b0 t0 _ < <(core_ticks "$ALL_CPUS")
        sleep 2
        read -r b1 t1 _ < <(core_ticks "$ALL_CPUS")
        QUIET=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN{printf "%.0f", t ? 100*b/t : 0}')
        if ((QUIET <= QUIET_MAX)); then WAITED=$((WAITED + SECONDS - began)); return 0; fi
        if ((SECONDS >= deadline || WAITED + SECONDS - began >= WAIT_BUDGET)); then
            WAITED=$((WAITED + SECONDS - began))
            log "machine still ${QUIET}% busy (waited ${WAITED}s in total): measuring anyway (flagged)"
            return 0
        fi
        ((warned)) || log "machine ${QUIET}% busy with other work (load $(loadavg)): waiting for it to go quiet"
        warned=1
    done
}

# --- build ---------------------------------------------------------------------------------------
build_release
"$REL/legate-upstream" --help | grep -q -- --static-body || die "legate-upstream has no --static-body"

has() { [[ " $TARGETS " == *" $1 "* ]]; }
MTLS=0
[[ " $TARGETS " == *-mtls* ]] && MTLS=1

# --- upstreams, control planes, bootstraps -----------------------------------------------------
# OURS: the benchmark's own processes besides the target and the load generator (their CPU is
# not counted as noise).
OURS=()
start_upstream bench "$LOAD_CPUS" --static-body ok
UP_PID=$LAST_PID; OURS+=("$LAST_PID"); PLAIN_UPSTREAM=$UPSTREAM
log "upstream $PLAIN_UPSTREAM (pid $UP_PID)"

LISTEN_PORT=$(free_port)
cat >"$WORK/services.yaml" <<EOF
services:
  bench:
    endpoints: [$PLAIN_UPSTREAM]
ambassadors:
  bench:
    listen: 127.0.0.1:$LISTEN_PORT
    routes: [{ prefix: /, service: bench }]
EOF
start_control_plane legate-cp "$LOAD_CPUS" "$WORK/services.yaml" bench
OURS+=("$LAST_PID"); PLAIN_BOOTSTRAP=$BOOTSTRAP
log "legate-cp pid $LAST_PID, xds $XDS; bootstrap $BOOTSTRAP; ambassador 127.0.0.1:$LISTEN_PORT"

if [[ $MTLS == 1 ]]; then
    "$REL/legate-upstream" --help | grep -q -- --client-ca || die "legate-upstream has no --client-ca (TLS)"
    # One CA; the upstream's server certificate (service `bench`) and the proxies' client
    # certificate (service `client`), both from `legate-cp certs init`.
    timeout 60 "$REL/legate-cp" certs init --out "$WORK/certs" --service bench --service client >&2 ||
        die "legate-cp certs init failed"
    start_upstream bench-mtls "$LOAD_CPUS" --static-body ok --tls-cert "$WORK/certs/bench.pem" \
        --tls-key "$WORK/certs/bench.key" --client-ca "$WORK/certs/ca.pem"
    OURS+=("$LAST_PID"); MTLS_UPSTREAM=$UPSTREAM
    MTLS_PORT=$(free_port)
    cat >"$WORK/services-mtls.yaml" <<EOF
services:
  bench:
    endpoints: [$MTLS_UPSTREAM]
    tls:
      ca: certs/ca.pem
      cert: certs/client.pem
      key: certs/client.key
      sni: bench
      verify_san: [spiffe://example.org/ns/default/sa/bench]
ambassadors:
  bench:
    listen: 127.0.0.1:$MTLS_PORT
    routes: [{ prefix: /, service: bench }]
EOF
    start_control_plane legate-cp-mtls "$LOAD_CPUS" "$WORK/services-mtls.yaml" bench
    OURS+=("$LAST_PID"); MTLS_BOOTSTRAP=$BOOTSTRAP
    log "mTLS upstream $MTLS_UPSTREAM; legate-cp xds $XDS; bootstrap $BOOTSTRAP; ambassador 127.0.0.1:$MTLS_PORT"
fi
# ours_ticks: CPU ticks of OURS.
ours_ticks() { local t=0 p; for p in "${OURS[@]}"; do t=$((t + $(task_ticks "$p"))); done; echo "$t"; }

# --- load runs ---------------------------------------------------------------------------------
WRK_ARGS=(-t1 "-c$CONNS" --latency)
H2_ARGS=(-t1 "-c$H2_CONNS" "-m$H2_STREAMS")

# run_h2 OUTFILE SECONDS URL -> same variables (percentiles from h2load's per-request log)
run_h2() {
    local out=$1 secs=$2 url=$3
    timeout $((secs + 30)) taskset -c "$LOAD_CPUS" h2load "${H2_ARGS[@]}" -D "$secs" --log-file="$out.log" "$url" >"$out" 2>&1 ||
        die "h2load failed: $(tail -5 "$out")"
    RPS=$(awk '/^finished in/{gsub(/,/,""); print $4}' "$out")
    REQS=$(awk '/^requests:/{print $8}' "$out")                               # succeeded
    ERRS=$(awk '/^requests:/{print $10 + $12 + $14}' "$out")                  # failed+errored+timeout
    ERRS=$((ERRS + $(awk '/^status codes:/{gsub(/,/,""); print $5+$7+$9}' "$out")))   # 3xx+4xx+5xx
    # log lines: start(us) <TAB> status <TAB> duration(us)
    read -r P50 P99 < <(awk -F'\t' '{print $3}' "$out.log" | sort -n |
        awk '{a[NR]=$1} END{ if (NR==0) {print "nan nan"; exit}
             i=int(NR*0.50+0.5); j=int(NR*0.99+0.5); if(i<1)i=1; if(j<1)j=1; print a[i], a[j] }')
    rm -f "$out.log"
}

# reset_peak PID: sets the process's VmHWM (peak RSS) to its current RSS (`clear_refs` 5,
# Linux >= 4.0), so that VmHWM read after the runs is the exact peak during them. This replaced a
# shell loop that read VmRSS every 100 ms: it forked a `sleep` on the load core ten times a second,
# which lengthened the latency tail it was sitting next to (see BENCHMARKS.md, "The harness").
reset_peak() {
    echo 5 2>/dev/null >"/proc/$1/clear_refs" ||
        die "cannot reset the peak RSS of $1 (/proc/$1/clear_refs: Linux >= 4.0, same user or root)"
}

RESULTS=$WORK/results.tsv   # target proto rep rps p50 p99 reqs errs cpu_us/req other% busy_before% load1 user_us/req sys_us/req ipi_load/req ipi_proxy/req steal% busy_load% busy_proxy%
MEM=$WORK/mem.tsv           # target rep idle peak hwm after (KiB)
: >"$RESULTS"; : >"$MEM"
DISCARDED=$WORK/discarded.tsv; : >"$DISCARDED"

# one_run TARGET PROTO REP URL PID: warm-up, wait for quiet, one measured run; appends to RESULTS.
# A run during which other processes used more than NOISE_MAX % of a core is discarded and redone
# (at most NOISE_RETRIES times; the same rule for every target).
one_run() {
    local target=$1 proto=$2 rep=$3 url=$4 pid=$5 runner=run_wrk attempt
    [[ $proto == h2 ]] && runner=run_h2
    $runner "$WORK/$target.$proto.$rep.warmup" "$WARMUP" "$url"
    ((ERRS == 0)) || die "$target/$proto warm-up: $ERRS errors; see $WORK/$target.$proto.$rep.warmup"
    for attempt in $(seq 0 "$NOISE_RETRIES"); do
        wait_quiet
        local p0 o0 c0 b0 p1 o1 c1 b1 _
        local u0 u1
        u0=$(task_user_ticks "$pid"); p0=$(task_ticks "$pid"); o0=$(ours_ticks); c0=$(child_ticks)
        read -r b0 _ _ < <(core_ticks "$ALL_CPUS")
        local il0 ip0 il1 ip1 lb0 lt0 pb0 pt0 st0 lb1 lt1 pb1 pt1 st1
        il0=$(ipis "$LOAD_CPUS"); ip0=$(ipis "$PROXY_CPUS")
        read -r lb0 lt0 _ < <(core_ticks "$LOAD_CPUS"); read -r pb0 pt0 st0 < <(core_ticks "$PROXY_CPUS")
        if [[ $target != direct ]]; then o0=$((o0 + p0)); fi
        local perf_pid=
        if [[ $PERF == 1 && $target == legate && $attempt == 0 ]]; then
            timeout $((DURATION + 30)) taskset -c "$LOAD_CPUS" perf record -F 999 -p "$pid" \
                -o "$WORK/legate.$proto.$rep.perf.data" -- sleep "$DURATION" >"$WORK/perf.$proto.$rep.log" 2>&1 &
            perf_pid=$!
        fi
        $runner "$WORK/$target.$proto.$rep" "$DURATION" "$url"
        if [[ -n $perf_pid ]]; then
            wait "$perf_pid" || true
            perf report -i "$WORK/legate.$proto.$rep.perf.data" --no-children --sort dso,sym --stdio 2>/dev/null |
                grep -v '^#' | grep '%' | head -60 >"$WORK/legate.$proto.$rep.perf.txt" || true
            log "perf profile: $WORK/legate.$proto.$rep.perf.txt"
        fi
        il1=$(ipis "$LOAD_CPUS"); ip1=$(ipis "$PROXY_CPUS")
        read -r lb1 lt1 _ < <(core_ticks "$LOAD_CPUS"); read -r pb1 pt1 st1 < <(core_ticks "$PROXY_CPUS")
        u1=$(task_user_ticks "$pid"); p1=$(task_ticks "$pid"); o1=$(ours_ticks); c1=$(child_ticks)
        read -r b1 _ _ < <(core_ticks "$ALL_CPUS")
        if [[ $target != direct ]]; then o1=$((o1 + p1)); fi
        ((ERRS == 0)) || die "$target/$proto rep $rep: $ERRS errors; see $WORK/$target.$proto.$rep"
        # CPU of the target process per request; CPU used by anything else (% of one core)
        local cpu foreign cpu_user cpu_sys
        cpu_user=$(awk -v d=$((u1 - u0)) -v hz="$CLK_TCK" -v n="$REQS" 'BEGIN{printf "%.1f", n ? d/hz*1e6/n : 0}')
        cpu_sys=$(awk -v d=$((p1 - p0 - u1 + u0)) -v hz="$CLK_TCK" -v n="$REQS" 'BEGIN{printf "%.1f", n ? d/hz*1e6/n : 0}')
        cpu=$(awk -v d=$((p1 - p0)) -v hz="$CLK_TCK" -v n="$REQS" 'BEGIN{printf "%.1f", n ? d/hz*1e6/n : 0}')
        # (/proc/stat and the per-process counters tick separately: a few ticks either way is
        # jitter, so a slightly negative difference reads as 0.)
        foreign=$(awk -v f=$(((b1 - b0) - (o1 - o0) - (c1 - c0))) -v hz="$CLK_TCK" -v s="$DURATION" 'BEGIN{if (f < 0) f = 0; printf "%.0f", 100*f/hz/s}')
        # IPIs per request received by the load core(s) and by the proxy's core (with PIN=0 both
        # are every core: the same figure twice)
        local ipi_load ipi_proxy
        ipi_load=$(awk -v d=$((il1 - il0)) -v n="$REQS" 'BEGIN{printf "%.3f", n ? d/n : 0}')
        ipi_proxy=$(awk -v d=$((ip1 - ip0)) -v n="$REQS" 'BEGIN{printf "%.3f", n ? d/n : 0}')
        # how busy the load core(s) and the proxy's core(s) were (% of their time; with PIN=0 the
        # same figure twice). A load core near 100 % means the run measured the load side too.
        local busy_load busy_proxy
        busy_load=$(awk -v b=$((lb1 - lb0)) -v t=$((lt1 - lt0)) 'BEGIN{printf "%.0f", t ? 100*b/t : 0}')
        busy_proxy=$(awk -v b=$((pb1 - pb0)) -v t=$((pt1 - pt0)) 'BEGIN{printf "%.0f", t ? 100*b/t : 0}')
        # steal on the proxy's core(s), % of one core over the run
        local steal
        steal=$(awk -v d=$((st1 - st0)) -v hz="$CLK_TCK" -v s="$DURATION" 'BEGIN{printf "%.1f", 100*d/hz/s}')
        local line
        line=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$target" "$proto" "$rep" "$RPS" "$P50" "$P99" \
            "$REQS" "$ERRS" "$cpu" "$foreign" "$QUIET" "$(cut -d' ' -f1 /proc/loadavg)" "$cpu_user" "$cpu_sys" "$ipi_load" "$ipi_proxy" "$steal" "$busy_load" "$busy_proxy")
        log "$target/$proto rep $rep: $RPS req/s, p50 ${P50}us, p99 ${P99}us, ${cpu}us CPU/req (user ${cpu_user}, sys ${cpu_sys}); IPIs/req to load core ${ipi_load}, to proxy core ${ipi_proxy}; steal on proxy core ${steal}%; cores busy: load ${busy_load}%, proxy ${busy_proxy}%; other CPU ${foreign}% of a core, load $(loadavg)"
        if [[ -n $perf_pid ]]; then
            log "  profiled run (perf costs CPU): not counted; redoing"
            echo "$line" >>"$DISCARDED"
            continue
        fi
        if ((foreign > NOISE_MAX && attempt < NOISE_RETRIES && WAITED < WAIT_BUDGET)); then
            log "  discarded: other processes used ${foreign}% of a core (> ${NOISE_MAX}%); redoing"
            echo "$line" >>"$DISCARDED"
            continue
        fi
        echo "$line" >>"$RESULTS"
        return 0
    done
}

run_target() {
    local target=$1 rep=$2 pid url proto
    if [[ $target == direct ]]; then
        for proto in "${PROTOS[@]}"; do one_run direct "$proto" "$rep" "http://$PLAIN_UPSTREAM/" "$UP_PID"; done
        return
    fi
    local bootstrap=$PLAIN_BOOTSTRAP port=$LISTEN_PORT
    [[ $target == *-mtls ]] && { bootstrap=$MTLS_BOOTSTRAP; port=$MTLS_PORT; }
    start_proxy "${target%-mtls}" "$target.$rep" "$PROXY_CPUS" "$bootstrap"
    pid=$LAST_PID
    local admin=$ADMIN
    url="http://127.0.0.1:$port/"
    wait_for "$target to proxy to the upstream" 30 sh -c "test \"\$(curl -s --max-time 2 $url)\" = ok"
    sleep 1
    local idle hwm peak after
    idle=$(rss_kb "$pid" VmRSS)
    # The lifetime peak so far (start-up included), then the peak of the runs alone.
    hwm=$(rss_kb "$pid" VmHWM)
    reset_peak "$pid"
    for proto in "${PROTOS[@]}"; do one_run "$target" "$proto" "$rep" "$url" "$pid"; done
    peak=$(rss_kb "$pid" VmHWM)
    ((peak > hwm)) && hwm=$peak
    sleep 2
    after=$(rss_kb "$pid" VmRSS)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$rep" "$idle" "$peak" "$hwm" "$after" >>"$MEM"
    log "$target rep $rep RSS: idle ${idle} KiB, peak in run ${peak} KiB (VmHWM ${hwm}), after ${after} KiB"
    kill -0 "$pid" 2>/dev/null || die "$target exited during the run; see $WORK/$target.$rep.err"
    curl -s --max-time 5 "http://$admin/stats" >"$WORK/$target.$rep.stats" || true
    stop "$pid"
}

log "machine: $NCPU cores, load $(loadavg); $PLACEMENT"
UPTIME_START=$(uptime)
read -r -a ORDER <<<"$TARGETS"
for rep in $(seq "$REPS"); do
    for i in "${!ORDER[@]}"; do
        run_target "${ORDER[$(((i + rep - 1) % ${#ORDER[@]}))]}" "$rep"
    done
done
UPTIME_END=$(uptime)

# --- report ------------------------------------------------------------------------------------
med() { awk -F'\t' -v t="$1" -v p="$2" -v c="$3" '$1==t && $2==p {print $c}' "$RESULTS" | median; }
medm() { awk -F'\t' -v t="$1" -v c="$2" '$1==t {print $c}' "$MEM" | median; }
maxcol() { awk -F'\t' -v c="$1" 'NR==1||$c>m{m=$c} END{print m+0}' "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a=="" || b=="" || b+0==0 || a=="nan" || b=="nan") print "-"; else printf "%.2fx", a/b }'; }
fmt_us() { awk -v v="$1" 'BEGIN{ if (v=="" || v=="nan") print "-"; else if (v>=1000) printf "%.2f ms", v/1000; else printf "%.0f µs", v }'; }
fmt_mb() { awk -v v="$1" 'BEGIN{ if (v=="" || v=="nan" || v+0==0) print "-"; else printf "%.1f MiB", v/1024 }'; }
verdict() { awk -v r="$1" -v op="$2" -v g="$3" 'BEGIN{ sub(/x$/,"",r); if (r=="-") print "n/a";
    else if ((op==">=" && r+0>=g) || (op=="<=" && r+0<=g)) print "**met**"; else print "**not met**" }'; }
name_of() {
    case $1 in
        legate) echo legate-proxy ;; direct) echo "direct (no proxy)" ;;
        legate-mtls) echo "legate-proxy, mTLS upstream" ;; envoy-mtls) echo "envoy, mTLS upstream" ;;
        *) echo "$1" ;;
    esac
}
# ratios ENVOY_TARGET LEGATE_TARGET TITLE: legate-proxy ÷ Envoy against the issue's targets
# (for the protocol in $proto).
ratios() {
    local e=$1 l=$2 r_rps r_p50 r_p99 r_cpu r_rss
    r_rps=$(ratio "$(med "$l" "$proto" 4)" "$(med "$e" "$proto" 4)")
    r_p50=$(ratio "$(med "$l" "$proto" 5)" "$(med "$e" "$proto" 5)")
    r_p99=$(ratio "$(med "$l" "$proto" 6)" "$(med "$e" "$proto" 6)")
    r_cpu=$(ratio "$(med "$l" "$proto" 9)" "$(med "$e" "$proto" 9)")
    r_rss=$(ratio "$(medm "$l" 4)" "$(medm "$e" 4)")
    echo "| $3 | ratio | target | verdict |"
    echo "|---|---:|---:|---|"
    echo "| RPS | $r_rps | ≥ 3x | $(verdict "$r_rps" '>=' 3) |"
    echo "| p50 latency | $r_p50 | | |"
    echo "| p99 latency | $r_p99 | ≤ 0.5x | $(verdict "$r_p99" '<=' 0.5) |"
    echo "| RSS (peak during the run) | $r_rss | ≤ 0.25x | $(verdict "$r_rss" '<=' 0.25) |"
    echo "| CPU per request | $r_cpu | | |"
    echo
}

{
    echo "## Legate benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "- machine: $NCPU cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM"
    echo "- commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
    echo "- Envoy $("$ENVOY" --version 2>/dev/null | sed -n 's/.*version: //p' | head -1)"
    echo "- legate-proxy $("$REL/legate-proxy" --version 2>/dev/null | sed -n 's/.*version: //p' | head -1)"
    echo "- load: wrk $(wrk --version 2>&1 | head -1 | awk '{print $2}') \`wrk ${WRK_ARGS[*]} -d${DURATION}s URL\`$([[ $H2 == 1 ]] && echo "; h2load $(h2load --version | awk '{print $2}') \`h2load ${H2_ARGS[*]} -D $DURATION URL\` (h2c with prior knowledge; proxy → upstream stays HTTP/1.1)")"
    echo "- upstream: \`legate-upstream --static-body ok\`; proxies: \`-c bootstrap.yaml --concurrency 1 --disable-hot-restart -l warning\` on the same bootstrap file"
    [[ $MTLS == 1 ]] && echo "- mTLS upstream (the \`-mtls\` targets): \`legate-upstream --static-body ok --tls-cert bench.pem --tls-key bench.key --client-ca ca.pem\` (rustls, requires a client certificate), certificates from \`legate-cp certs init --service bench --service client\`; the service has \`tls: {ca, cert: client.pem, key: client.key, sni: bench, verify_san: [spiffe://example.org/ns/default/sa/bench]}\` (UpstreamTlsContext, certificates over SDS), HTTP/1.1 over TLS to the upstream; both proxies get the same bootstrap from a second legate-cp; no direct run (wrk has no client certificates)"
    echo "- per target: $REPS fresh starts, interleaved; each does a ${WARMUP}s warm-up then one ${DURATION}s measured run per protocol; medians over the $REPS"
    echo "- placement: $PLACEMENT"
    echo "- noise control: before each measured run the machine had to be ≤ ${QUIET_MAX}% busy for 2 s (waited ${WAITED}s in total); runs during which other processes used > ${NOISE_MAX}% of a core were redone: $(wc -l <"$DISCARDED") discarded; $(awk -F'\t' -v m="$NOISE_MAX" '$10>m' "$RESULTS" | wc -l) noisy run(s) kept after the retries ran out (⚠ below); max other CPU in a kept run: $(maxcol 10 "$RESULTS")% of a core"
    echo "- uptime at start: \`$UPTIME_START\`"
    echo "- uptime at end: \`$UPTIME_END\`"
    echo
    for proto in "${PROTOS[@]}"; do
        if [[ $proto == h1 ]]; then echo "### HTTP/1.1 keep-alive (wrk, $CONNS connections)"; else echo "### h2c (h2load, $H2_CONNS connections × $H2_STREAMS streams)"; fi
        echo
        echo "| target | RPS | p50 | p99 | CPU/request of the target process (user + sys) | IPIs/request to the load core | load core busy | RSS idle | RSS peak (runs) | VmHWM | RSS after |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for t in $TARGETS; do
            mem="| | | |"
            [[ $t != direct ]] && mem="$(fmt_mb "$(medm "$t" 3)") | $(fmt_mb "$(medm "$t" 4)") | $(fmt_mb "$(medm "$t" 5)") | $(fmt_mb "$(medm "$t" 6)")"
            [[ $t == direct ]] && mem="(upstream) | | | "
            printf '| %s | %.0f | %s | %s | %.1f µs (%.1f + %.1f) | %.3f | %.0f %% | %s |\n' "$(name_of "$t")" "$(med "$t" "$proto" 4)" \
                "$(fmt_us "$(med "$t" "$proto" 5)")" "$(fmt_us "$(med "$t" "$proto" 6)")" "$(med "$t" "$proto" 9)" \
                "$(med "$t" "$proto" 13)" "$(med "$t" "$proto" 14)" "$(med "$t" "$proto" 15)" "$(med "$t" "$proto" 18)" "$mem"
        done
        echo
        if has envoy && has legate; then ratios envoy legate "legate-proxy ÷ Envoy"; fi
        if has envoy-mtls && has legate-mtls; then ratios envoy-mtls legate-mtls "mTLS upstream: legate-proxy ÷ Envoy"; fi
        if has direct; then
            line="RPS as a fraction of direct:"
            for t in $TARGETS; do [[ $t == direct || $t == *-mtls ]] || line+=" $(name_of "$t") $(ratio "$(med "$t" "$proto" 4)" "$(med direct "$proto" 4)");"; done
            echo "${line%;}."
            # Through any proxy the load core does at least the direct run's work per request:
            # the direct RPS bounds every proxy, so direct ÷ Envoy bounds the RPS ratio. (Not
            # for h2c: behind a proxy the upstream serves HTTP/1.1, not the direct run's h2c.)
            if has envoy && [[ $proto == h1 ]]; then
                echo "Highest RPS ratio to Envoy this run could show (direct ÷ Envoy, see BENCHMARKS.md, \"The ceiling\"): $(ratio "$(med direct "$proto" 4)" "$(med envoy "$proto" 4)")."
            fi
            echo
        fi
    done
    echo "<details><summary>every measured run</summary>"
    echo
    echo "| target | proto | rep | RPS | p50 µs | p99 µs | requests | errors | CPU µs/req (user + sys) | IPIs/req to load core, to proxy core | steal % (proxy core) | busy % load core, proxy core | other CPU % | busy before % | load1 |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    sort -t$'\t' -k2,2 -k1,1 -k3,3n "$RESULTS" | awk -F'\t' -v m="$NOISE_MAX" '{printf "| %s | %s | %s | %.0f | %.0f | %.0f | %s | %s | %s (%s + %s) | %s, %s | %s | %s, %s | %s%s | %s | %s |\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$13,$14,$15,$16,$17,$18,$19,$10,($10>m?" ⚠":""),$11,$12}'
    echo
    if [[ -s $DISCARDED ]]; then
        echo "Discarded runs (other processes > ${NOISE_MAX}% of a core, or profiled):"
        echo
        echo "| target | proto | rep | RPS | p50 µs | p99 µs | requests | errors | CPU µs/req (user + sys) | IPIs/req to load core, to proxy core | steal % (proxy core) | busy % load core, proxy core | other CPU % | busy before % | load1 |"
        echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        awk -F'\t' '{printf "| %s | %s | %s | %.0f | %.0f | %.0f | %s | %s | %s (%s + %s) | %s, %s | %s | %s, %s | %s | %s | %s |\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$13,$14,$15,$16,$17,$18,$19,$10,$11,$12}' "$DISCARDED"
        echo
    fi
    echo "| proxy | rep | RSS idle KiB | peak KiB | VmHWM KiB | after KiB |"
    echo "|---|---:|---:|---:|---:|---:|"
    sort "$MEM" | awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s |\n", $1,$2,$3,$4,$5,$6}'
    echo
    echo "</details>"
} >"$WORK/report.md"

cat "$WORK/report.md"
if [[ -n ${OUT:-} ]]; then cp "$WORK/report.md" "$OUT"; fi
exit 0
}
