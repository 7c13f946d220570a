#!/usr/bin/env bash
# Legate instruction-count benchmark: user-space instructions legate-proxy executes per proxied
# HTTP/1.1 request, counted by valgrind's callgrind. Unlike RPS and CPU time, the count does not
# depend on what else the machine is doing, so it compares two builds of the proxy reliably on a
# shared machine. It does not count kernel time (the socket calls; about 60 % of the proxy's CPU
# time per request, see BENCHMARKS.md), nor cache misses or stalls.
#
# Method: legate-cp and a legate-upstream as in bench/run.sh; legate-proxy (release build, its
# bootstrap from `legate-cp bootstrap envoy`, --concurrency 1) runs under callgrind. After
# WARMUP requests the counters are zeroed (callgrind_control -z), then h2load sends REQUESTS
# HTTP/1.1 requests over CONNS keep-alive connections, and the counters are dumped. Reported:
# instructions per request, allocations (malloc calls) per request, and the functions with the
# most instructions of their own.
#
# Usage: bench/instructions.sh            (from anywhere inside the repository)
#        PROXY=/path/to/other/legate-proxy bench/instructions.sh   (another build, e.g. to A/B)
# Knobs (environment variables; defaults in brackets):
#   REQUESTS [20000]  WARMUP [2000]  CONNS [32]  TOP [25] functions listed
#   PROXY [$CARGO_TARGET_DIR/release/legate-proxy]    SKIP_BUILD [0]  KEEP [0]  OUT [unset]
set -euo pipefail
{

REQUESTS=${REQUESTS:-20000}
WARMUP=${WARMUP:-2000}
CONNS=${CONNS:-32}
TOP=${TOP:-25}
NAME=instructions
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need valgrind "apt-get install -y valgrind"
need callgrind_control "apt-get install -y valgrind"
need h2load "apt-get install -y nghttp2-client"
need curl "apt-get install -y curl"
CPUS=0-$(($(nproc) - 1))

build_release
PROXY=${PROXY:-$REL/legate-proxy}
[[ -x $PROXY ]] || die "$PROXY missing"

start_bench_service "$CPUS"

ADMIN_FILE=$WORK/proxy.admin
start proxy "$CPUS" valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
    "$PROXY" -c "$BOOTSTRAP" --concurrency 1 --disable-hot-restart -l warning \
    --admin-address-path "$ADMIN_FILE"
PROXY_PID=$LAST_PID
wait_for "legate-proxy (under valgrind) admin address" 120 test -s "$ADMIN_FILE"
ADMIN=$(cat "$ADMIN_FILE")
wait_for "legate-proxy /ready LIVE" 120 sh -c "curl -sf --max-time 5 http://$ADMIN/ready | grep -q LIVE"
wait_for "a proxied 200" 60 curl -sf --max-time 5 -o /dev/null "http://$LISTEN/"

log "warm-up: $WARMUP requests"
h2load --h1 -n "$WARMUP" -c "$CONNS" "http://$LISTEN/" >"$WORK/warmup.out"
callgrind_control -z "$PROXY_PID" >>"$WORK/callgrind_control.log" 2>&1
log "measured: $REQUESTS requests over $CONNS connections"
h2load --h1 -n "$REQUESTS" -c "$CONNS" "http://$LISTEN/" >"$WORK/h2load.out"
callgrind_control -d "$PROXY_PID" >>"$WORK/callgrind_control.log" 2>&1
OK=$(awk '/^status codes:/{print $3}' "$WORK/h2load.out")
[[ $OK == "$REQUESTS" ]] || die "expected $REQUESTS 2xx, h2load says: $(grep -E '^(requests|status codes):' "$WORK/h2load.out" | tr '\n' ' ')"
wait_for "the callgrind dump" 30 sh -c "ls '$WORK'/callgrind.out.* >/dev/null 2>&1"
DUMP=$(ls -t "$WORK"/callgrind.out.* | head -1)

# Self cost per function, and malloc calls, from the dump (callgrind's file format: `fn=`
# names a function, cost lines follow; `calls=` lines are followed by the inclusive cost of a
# call, which is not the caller's own).
REPORT=$(python3 - "$DUMP" "$REQUESTS" "$TOP" <<'PY'
import collections, re, sys
path, n, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names, own, mallocs = {}, collections.Counter(), 0
fn = cfn = None
after_calls = False
def name(tok):
    m = re.match(r'\((\d+)\)(?:\s+(.*))?', tok)
    if not m:
        return tok
    if m.group(2):
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), tok)
for line in open(path):
    line = line.rstrip('\n')
    if line.startswith('fn='):
        fn = name(line[3:])
    elif line.startswith('cfn='):
        cfn = name(line[4:])
    elif line.startswith('calls='):
        after_calls = True
        if cfn == 'malloc':
            mallocs += int(line[6:].split()[0])
    elif line[:1].isdigit() or line[:1] in '+-*':
        if after_calls:
            after_calls = False
        elif fn is not None:
            parts = line.split()
            if len(parts) > 1:
                own[fn] += int(parts[1])
total = sum(own.values())
print(f"| instructions per request | {total / n:,.0f} |")
print(f"| malloc calls per request | {mallocs / n:.2f} |")
print()
print("| instructions per request | share | function (own instructions) |")
print("|---:|---:|---|")
for f, c in own.most_common(top):
    f = f.replace('|', '\\|')
    print(f"| {c / n:,.0f} | {100 * c / total:.1f} % | `{f[:120]}` |")
PY
)

{
    echo "## Instructions per request (callgrind)"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'), proxy \`$PROXY\`:"
    echo "$REQUESTS HTTP/1.1 requests (h2load --h1, $CONNS connections) after $WARMUP warm-up requests."
    echo
    echo "| | |"
    echo "|---|---:|"
    echo "$REPORT"
} | tee "${OUT:-/dev/null}"
stop "$PROXY_PID"

}
exit
