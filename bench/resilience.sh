#!/usr/bin/env bash
# Legate resilience benchmark: three endpoints behind one service with the resilience settings of
# examples/services.yaml (retries, circuit breakers, outlier detection), one endpoint broken.
#   503:    the third endpoint answers 503 to everything (legate-upstream --fail-rate 1)
#   closed: the third endpoint is a closed port (bound, then released: connection refused)
# For each scenario and each proxy (Envoy, legate-proxy; same bootstrap from legate-cp, same
# flags), a fresh proxy gets REQUESTS requests from `hey`, and the report shows what the
# application saw (success rate, p50/p99 latency) and what the proxy did (retries and outlier
# ejections, from its admin /stats). Target (issue 4): at least 99.9 % success with both proxies.
#
# Usage: bench/resilience.sh      (from anywhere inside the repository)
# Knobs (environment variables; defaults in brackets):
#   REQUESTS [10000]   requests per run                CONCURRENCY [10]  hey workers (-c)
#   SCENARIOS ["503 closed"]                           TARGETS ["envoy legate"]
#   REPS [1]           runs per scenario and proxy (fresh proxy each time; the report shows each)
#   EXAMPLE [examples/services.yaml]  the file whose service `payments` gives the settings
#   SKIP_BUILD [0]  reuse existing release binaries    KEEP [0]  keep the scratch directory
#   ENVOY, CARGO_TARGET_DIR (as bench/run.sh)          OUT [unset]  also write the report there
#
# Before each measured run the proxy is LIVE and has the three endpoints (admin /clusters), and
# no request has gone through it yet: the run includes finding out which endpoint is broken.
set -euo pipefail
{

REQUESTS=${REQUESTS:-10000}
CONCURRENCY=${CONCURRENCY:-10}
SCENARIOS=${SCENARIOS:-"503 closed"}
TARGETS=${TARGETS:-"envoy legate"}
REPS=${REPS:-1}
NAME=resilience
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
EXAMPLE=${EXAMPLE:-$ROOT/examples/services.yaml}

for tool in hey curl taskset awk timeout; do need "$tool" "apt-get install -y hey curl util-linux"; done
python3 -c 'import yaml' 2>/dev/null || die "python3 with PyYAML is needed (apt-get install -y python3-yaml)"
[[ -r $EXAMPLE ]] || die "$EXAMPLE not found"
CPUS=0-$(($(nproc) - 1))

build_release

# services_yaml OUT LISTEN_PORT ENDPOINT...: service `payments` as in $EXAMPLE (every key but
# its endpoints and tls), with these endpoints; ambassador `bench` routing everything to it.
services_yaml() {
    local out=$1 port=$2; shift 2
    python3 - "$EXAMPLE" "$out" "$port" "$@" <<'PY'
import re, sys, yaml
example, out, port, endpoints = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
# YAML 1.2 booleans only, as legate-cp reads them (PyYAML's 1.1 rules make `on:` a boolean).
class Loader(yaml.SafeLoader):
    pass
Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|false)$"), list("tf"))
payments = yaml.load(open(example), Loader=Loader)["services"]["payments"]
payments.pop("tls", None)
payments["endpoints"] = endpoints
doc = {
    "services": {"payments": payments},
    "ambassadors": {"bench": {"listen": f"127.0.0.1:{port}",
                              "routes": [{"prefix": "/", "service": "payments"}]}},
}
yaml.safe_dump(doc, open(out, "w"), sort_keys=False)
PY
}

# hosts_known ADMIN: the proxy's /clusters lists the three endpoints of `payments`.
hosts_known() {
    [[ $(curl -sf --max-time 2 "http://$1/clusters" | grep -c '^payments::[^:]*:[0-9]*::cx_active::') == 3 ]]
}

RESULTS=$WORK/results.tsv   # scenario target rep requests ok non2xx errors p50_ms p99_ms rps retries retry_ok overflow ejections
: >"$RESULTS"

run_one() {
    local scenario=$1 target=$2 rep=$3 label="$1.$2.$3"
    start_proxy "$target" "$label" "$CPUS" "$BOOTSTRAP"
    local pid=$LAST_PID admin=$ADMIN
    wait_for "$target to know the three endpoints" 30 hosts_known "$admin"
    local out=$WORK/$label.hey
    timeout 600 hey -n "$REQUESTS" -c "$CONCURRENCY" -t 10 "http://127.0.0.1:$LISTEN_PORT/" >"$out" 2>&1 ||
        die "hey failed: $(tail -5 "$out")"
    curl -s --max-time 5 "http://$admin/stats" >"$WORK/$label.stats" || die "$target /stats failed"
    kill -0 "$pid" 2>/dev/null || die "$target exited during the run; see $WORK/$label.err"
    stop "$pid"
    local ok non2xx errors p50 p99 rps
    ok=$(awk '/^Status code distribution:/{f=1; next} f && /^ *\[/{gsub(/[\[\]]/,"",$1); if ($1 ~ /^2/) n+=$2} f && /^$/{f=0} END{print n+0}' "$out")
    non2xx=$(awk '/^Status code distribution:/{f=1; next} f && /^ *\[/{gsub(/[\[\]]/,"",$1); if ($1 !~ /^2/) n+=$2} f && /^$/{f=0} END{print n+0}' "$out")
    errors=$(awk '/^Error distribution:/{f=1; next} f && /^ *\[/{gsub(/[\[\]]/,"",$1); n+=$1} END{print n+0}' "$out")
    p50=$(awk '$1=="50%" && $2=="in" {printf "%.2f", $3 * 1000}' "$out")
    p99=$(awk '$1=="99%" && $2=="in" {printf "%.2f", $3 * 1000}' "$out")
    rps=$(awk '/Requests\/sec:/{printf "%.0f", $2}' "$out")
    local s=$WORK/$label.stats c=cluster.payments
    counter() { awk -F': ' -v n="$1" '$1==n{v=$2} END{print v+0}' "$s"; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$target" "$rep" "$REQUESTS" \
        "$ok" "$non2xx" "$errors" "${p50:-nan}" "${p99:-nan}" "${rps:-0}" \
        "$(counter $c.upstream_rq_retry)" "$(counter $c.upstream_rq_retry_success)" \
        "$(counter $c.upstream_rq_retry_overflow)" "$(counter $c.outlier_detection.ejections_enforced_total)" >>"$RESULTS"
    log "$scenario/$target rep $rep: $ok/$REQUESTS 2xx ($non2xx other statuses, $errors client errors), p50 ${p50}ms, p99 ${p99}ms, $(counter $c.upstream_rq_retry) retries"
}

log "machine: $(nproc) cores, load $(loadavg)"
UPTIME_START=$(uptime)
for scenario in $SCENARIOS; do
    # Fresh upstreams and control plane per scenario.
    start_upstream "$scenario-up-1" "$CPUS"; UP1=$UPSTREAM
    start_upstream "$scenario-up-2" "$CPUS"; UP2=$UPSTREAM
    case $scenario in
        503)
            start_upstream "$scenario-up-3" "$CPUS" --fail-rate 1 --fail-status 503; BROKEN=$UPSTREAM
            [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$BROKEN/") == 503 ]] || die "$BROKEN does not answer 503"
            ;;
        closed)
            BROKEN=127.0.0.1:$(free_port)
            if curl -s -o /dev/null --max-time 2 "http://$BROKEN/"; then die "$BROKEN is not closed"; fi
            ;;
        *) die "unknown scenario $scenario (503 or closed)" ;;
    esac
    LISTEN_PORT=$(free_port)
    services_yaml "$WORK/$scenario.services.yaml" "$LISTEN_PORT" "$UP1" "$UP2" "$BROKEN"
    start_control_plane "$scenario.legate-cp" "$CPUS" "$WORK/$scenario.services.yaml" bench
    CP=$LAST_PID
    log "scenario $scenario: endpoints $UP1 $UP2 $BROKEN (broken); legate-cp $XDS; ambassador 127.0.0.1:$LISTEN_PORT"
    for rep in $(seq "$REPS"); do
        for target in $TARGETS; do run_one "$scenario" "$target" "$rep"; done
    done
    stop "$CP"
done
UPTIME_END=$(uptime)

# --- report ------------------------------------------------------------------------------------
name_of() { case $1 in legate) echo legate-proxy ;; *) echo "$1" ;; esac; }
{
    echo "## Legate resilience benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
    echo "- commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
    echo "- Envoy $("$ENVOY" --version 2>/dev/null | sed -n 's/.*version: //p' | head -1); legate-proxy $("$REL/legate-proxy" --version 2>/dev/null | sed -n 's/.*version: //p' | head -1)"
    echo "- service \`payments\`: every setting of \`services.payments\` in \`${EXAMPLE#"$ROOT"/}\` (retries, circuit breaker, outlier detection, timeouts, LB) with three endpoints: two \`legate-upstream\` echo instances and the broken one"
    echo "- load: \`hey -n $REQUESTS -c $CONCURRENCY -t 10\` (HTTP/1.1 keep-alive) per run; each run on a fresh proxy (\`--concurrency 1\`, same bootstrap from \`legate-cp bootstrap envoy\`), started after the proxy is LIVE and lists the three endpoints"
    echo "- success = 2xx as seen by hey; retries, retry successes, retry overflows and outlier ejections from the proxy's \`/stats\` (\`cluster.payments.upstream_rq_retry\`, \`…_retry_success\`, \`…_retry_overflow\`, \`…outlier_detection.ejections_enforced_total\`) after the run"
    echo "- uptime at start: \`$UPTIME_START\`; at end: \`$UPTIME_END\`"
    echo
    echo "| broken endpoint | proxy | rep | success | 2xx / requests | other statuses | client errors | p50 | p99 | RPS | retries | retry successes | retry overflows | ejections | ≥ 99.9 % |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    awk -F'\t' '{
        scen = ($1 == "503") ? "answers 503" : "closed port";
        name = ($2 == "legate") ? "legate-proxy" : $2;
        rate = $4 ? 100 * $5 / $4 : 0;
        printf "| %s | %s | %s | %.2f %% | %s / %s | %s | %s | %s ms | %s ms | %s | %s | %s | %s | %s | %s |\n",
            scen, name, $3, rate, $5, $4, $6, $7, $8, $9, $10, $11, $12, $13, $14, (rate >= 99.9 ? "**met**" : "**not met**") }' "$RESULTS"
    echo
} >"$WORK/report.md"

cat "$WORK/report.md"
if [[ -n ${OUT:-} ]]; then cp "$WORK/report.md" "$OUT"; fi
exit 0
}
