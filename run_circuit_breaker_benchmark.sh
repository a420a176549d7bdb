#!/usr/bin/env bash
# Circuit-breaker benchmark: the same job on a real local cluster (coordinator and worker
# processes) while one worker suffers a failure, once with the circuit breakers and once
# without (--disable-circuit-breaker: recovery on, base policy), alternating, same seeds and
# timings. A thin wrapper: the orchestration lives in `testfleet bench breaker`. Writes
# report.md, report.json and one SVG chart per metric to benchmark_reports/<timestamp>/.
#
#   ./run_circuit_breaker_benchmark.sh [--quick | --comprehensive]
#       [--failure-types=connection_failure,crash,hang,slow,flapping,resource_exhaustion]
#       [--repetitions=N] [--report-dir=DIR] [--proactive-recovery=false]
#
# --quick: every timing a tenth of the default (say so in the report), about 5 minutes.
# --comprehensive: every failure type at two intensities, three repetitions each.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

args=(bench breaker)
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) args+=(--quick); shift ;;
        --comprehensive) args+=(--comprehensive); shift ;;
        --failure-types=*) args+=(--failure-types "${1#*=}"); shift ;;
        --failure-types) args+=(--failure-types "$2"); shift 2 ;;
        --repetitions=*) args+=(--repetitions "${1#*=}"); shift ;;
        --report-dir=*) args+=(--report-dir "${1#*=}"); shift ;;
        --proactive-recovery=*) args+=(--proactive-recovery "${1#*=}"); shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

bin="${CARGO_TARGET_DIR:-target}/release/testfleet"
if [ ! -x "$bin" ] || [ -n "$(find src proto Cargo.toml -newer "$bin" 2>/dev/null | head -1)" ]; then
    echo "building testfleet (release) ..."
    cargo build --release --quiet
fi
exec "$bin" "${args[@]}"
