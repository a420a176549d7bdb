#!/usr/bin/env bash
# Local high-availability demo and soak: N coordinators and W workers on loopback under a
# continuous workload, optionally with seeded fault injection (SIGKILL of the leader, of
# followers and of workers; SIGSTOP/SIGCONT pauses; restarts). A thin wrapper: the
# orchestration lives in `testfleet ha`. Prints events live, writes ha-report/ha-report.md
# and .json, cleans up every process (also on Ctrl-C), exits non-zero if an acknowledged
# task was lost or finished twice, or if the final replica check (`testfleet cluster check`)
# finds the coordinators' DuckDB files differing.
#
#   ./run_high_availability_cluster.sh [--nodes N] [--workers W] [--base-port P]
#                                      [--runtime S] [--fault-injection] [--seed N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

nodes=3 workers=3 runtime=120 seed=1 base_port="" faults=""
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) nodes="$2"; shift 2 ;;
        --workers) workers="$2"; shift 2 ;;
        --base-port) base_port="$2"; shift 2 ;;
        --runtime) runtime="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --fault-injection) faults="--fault-injection"; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

bin="${CARGO_TARGET_DIR:-target}/release/testfleet"
if [ ! -x "$bin" ] || [ -n "$(find src proto Cargo.toml -newer "$bin" 2>/dev/null | head -1)" ]; then
    echo "building testfleet (release) ..."
    cargo build --release --quiet
fi

args=(ha --nodes "$nodes" --workers "$workers" --runtime "$runtime" --seed "$seed")
[ -n "$base_port" ] && args+=(--base-port "$base_port")
[ -n "$faults" ] && args+=("$faults")
exec "$bin" "${args[@]}"
