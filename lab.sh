#!/usr/bin/env bash
# Talks to the lab ./run.sh started: `./lab.sh hosts` lists the test hosts
# and instances; `./lab.sh exec 'SCRIPT'` runs a shell script in the guest,
# e.g. ./lab.sh exec 'ip netns exec h1 ping -c 3 10.20.63.254'; `./lab.sh
# bench` prints the lab's start times, the guest's memory and iperf3
# throughput through a tunnel next to the same path without IPsec.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
target=${CARGO_TARGET_DIR:-${VPCMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vpcmesh}/target}
cmd=${1:?usage: ./lab.sh hosts | ./lab.sh exec SCRIPT | ./lab.sh bench}
shift
RUST_LIB_BACKTRACE=0 exec "$target/debug/vpcmesh-lab" "$cmd" --dir "${VPCMESH_DATA:-$root/.data}/lab" "$@"
