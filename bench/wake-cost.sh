#!/usr/bin/env bash
# What waking a thread on another core costs the waker on this machine (bench/wake-cost.c): on a
# VM every interprocessor interrupt may exit to the hypervisor, and a proxy pays one each time
# it sends to a client or upstream whose core has gone idle. bench/run.sh counts those IPIs per
# request; this measures what one costs. See BENCHMARKS.md, "The ceiling".
#
# Usage: bench/wake-cost.sh [SAMPLES]   (default 5000 per case, 200 µs apart: ~3 s)
set -euo pipefail
command -v cc >/dev/null || { echo "wake-cost: needs a C compiler (apt-get install -y gcc)" >&2; exit 1; }
dir=$(mktemp -d /tmp/legate-wake-cost.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cc -O2 -Wall -Wextra -o "$dir/wake-cost" "$(dirname "${BASH_SOURCE[0]}")/wake-cost.c" -lpthread
echo "wake-cost, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, kernel $(uname -r), $(cpuidle=/sys/devices/system/cpu/cpuidle/current_driver; [[ -r $cpuidle ]] && echo "cpuidle driver $(cat $cpuidle)" || echo "no cpuidle driver")"
echo
"$dir/wake-cost" "${1:-5000}"
