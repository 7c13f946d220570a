#!/usr/bin/env bash
# Legate A/B benchmark: two legate-proxy binaries (say, before and after a change) under the
# same HTTP/1.1 load, repetitions interleaved (A, B, A, B, ...) so that drift on a shared machine
# lands on both. Prints one line per run and the medians: RPS, p99 and the proxy's CPU time per
# request (user and kernel, from /proc/PID/stat). For the issue's comparison with Envoy use
# bench/run.sh; for a noise-free count of user-space work, bench/instructions.sh.
#
# Method: one legate-upstream (`--static-body ok`) and one legate-cp as in bench/run.sh; for each
# run a fresh proxy (`--concurrency 1`, the bootstrap from `legate-cp bootstrap envoy`) pinned to
# core 1, wrk pinned to core 0 with the upstream and legate-cp: a 3 s warm-up, then
# `wrk -t1 -c32 -d8s --latency`.
#
# Usage: bench/ab.sh A B        (two legate-proxy binaries; from anywhere)
# Knobs: REPS [4] runs per binary   DURATION [8]   CONNS [32]   KEEP [0]   OUT [unset]
set -euo pipefail
{

NAME=ab
REPS=${REPS:-4}
DURATION=${DURATION:-8}
CONNS=${CONNS:-32}
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# == 2 ]] || die "usage: bench/ab.sh A B (two legate-proxy binaries)"
A=$1
B=$2
for bin in "$A" "$B"; do [[ -x $bin ]] || die "$bin is not an executable"; done
need wrk "apt-get install -y wrk"
need curl "apt-get install -y curl"
for b in legate-cp legate-upstream; do
    [[ -x $REL/$b ]] || die "$REL/$b missing (cargo build --release -p legate-control-plane -p legate-test-upstream)"
done
if (($(nproc) >= 2)); then PROXY_CPU=1 LOAD_CPUS=0; else PROXY_CPU=0 LOAD_CPUS=0; fi
CLK_TCK=$(getconf CLK_TCK)
WRK_ARGS=(-t1 "-c$CONNS" --latency)

start_bench_service "$LOAD_CPUS"

RESULTS=$WORK/results.tsv # label rep rps p99_us user_us/req sys_us/req
: >"$RESULTS"
for rep in $(seq "$REPS"); do
    for label in A B; do
        bin=$A
        [[ $label == B ]] && bin=$B
        admin=$WORK/proxy.admin
        rm -f "$admin"
        start proxy "$PROXY_CPU" "$bin" -c "$BOOTSTRAP" --concurrency 1 --disable-hot-restart \
            -l warning --admin-address-path "$admin"
        pid=$LAST_PID
        wait_for "proxy $label admin address" 30 test -s "$admin"
        wait_for "a proxied 200 through $label" 30 curl -sf --max-time 2 -o /dev/null "http://$LISTEN/"
        run_wrk "$WORK/$label.$rep.warmup" 3 "http://$LISTEN/"
        u0=$(task_user_ticks "$pid")
        p0=$(task_ticks "$pid")
        run_wrk "$WORK/$label.$rep" "$DURATION" "http://$LISTEN/"
        u1=$(task_user_ticks "$pid")
        p1=$(task_ticks "$pid")
        stop "$pid"
        ((ERRS == 0)) || die "$label run $rep: $ERRS errors; see $WORK/$label.$rep"
        awk -v l="$label" -v rep="$rep" -v rps="$RPS" -v p99="$P99" -v u=$((u1 - u0)) \
            -v s=$((p1 - p0 - u1 + u0)) -v hz="$CLK_TCK" -v n="$REQS" \
            'BEGIN{printf "%s\t%d\t%.0f\t%.0f\t%.2f\t%.2f\n", l, rep, rps, p99, u/hz*1e6/n, s/hz*1e6/n}' |
            tee -a "$RESULTS" >&2
    done
done

# med LABEL COLUMN: the median of one column of one build's runs.
med() { awk -F'\t' -v l="$1" -v c="$2" '$1==l {print $c}' "$RESULTS" | median; }
{
    echo "## legate-proxy A/B ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "wrk -t1 -c$CONNS -d${DURATION}s, $REPS interleaved runs each, fresh proxy per run (\`--concurrency 1\`), medians:"
    echo
    echo "| build | runs | RPS | p99 | CPU/request (user + sys) |"
    echo "|---|---:|---:|---:|---:|"
    for label in A B; do
        bin=$A
        [[ $label == B ]] && bin=$B
        total=$(awk -F'\t' -v l="$label" '$1==l {print $5 + $6}' "$RESULTS" | median)
        awk -v l="$label" -v b="$bin" -v n="$REPS" -v rps="$(med "$label" 3)" -v p99="$(med "$label" 4)" \
            -v t="$total" -v u="$(med "$label" 5)" -v s="$(med "$label" 6)" \
            'BEGIN{printf "| %s `%s` | %d | %.0f | %.0f µs | %.1f µs (%.1f + %.1f) |\n", l, b, n, rps, p99, t, u, s}'
    done
} | tee "${OUT:-/dev/null}"

}
exit
