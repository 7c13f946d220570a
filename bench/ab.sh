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
if (($(nproc) >= 2)); then PROXY_CPU=1 LOAD_CPU=0; else PROXY_CPU=0 LOAD_CPU=0; fi
CLK_TCK=$(getconf CLK_TCK)
# user and system ticks of a process
ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }

start_bench_service "$LOAD_CPU"

RESULTS=$WORK/results.txt
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
        taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d3s "http://$LISTEN/" >/dev/null
        read -r u0 s0 < <(ticks "$pid")
        out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://$LISTEN/")
        read -r u1 s1 < <(ticks "$pid")
        stop "$pid"
        awk -v l="$label" -v rep="$rep" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$CLK_TCK" '
            /Requests\/sec/ { rps = $2 }
            $1 == "99%" { p99 = $2; if (p99 ~ /us$/) p99 = p99 + 0; else if (p99 ~ /ms$/) p99 = p99 * 1000; else p99 = p99 * 1e6 }
            /requests in/ { n = $1 }
            END { printf "%s %d %.0f %.0f %.2f %.2f\n", l, rep, rps, p99, u / hz * 1e6 / n, s / hz * 1e6 / n }
        ' <<<"$out" | tee -a "$RESULTS" >&2
    done
done

REPORT=$(awk -v a="$A" -v b="$B" '
    function median(arr, n,   i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
        return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
    }
    { k = $1; n[k]++; rps[k, n[k]] = $3; p99[k, n[k]] = $4; usr[k, n[k]] = $5; sys[k, n[k]] = $6 }
    END {
        print "| build | runs | RPS | p99 | CPU/request (user + sys) |"
        print "|---|---:|---:|---:|---:|"
        for (x = 0; x < 2; x++) {
            k = x ? "B" : "A"
            for (i = 1; i <= n[k]; i++) { r[i] = rps[k, i]; p[i] = p99[k, i]; u[i] = usr[k, i]; s[i] = sys[k, i]; t[i] = usr[k, i] + sys[k, i] }
            printf "| %s `%s` | %d | %.0f | %.0f µs | %.1f µs (%.1f + %.1f) |\n", k, (x ? b : a), n[k], median(r, n[k]), median(p, n[k]), median(t, n[k]), median(u, n[k]), median(s, n[k])
        }
    }' "$RESULTS")
{
    echo "## legate-proxy A/B ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "wrk -t1 -c$CONNS -d${DURATION}s, $REPS interleaved runs each, fresh proxy per run (\`--concurrency 1\`), medians:"
    echo
    echo "$REPORT"
} | tee "${OUT:-/dev/null}"

}
exit
