#!/usr/bin/env bash
# Runs vpcmesh locally: builds the console, starts moto as local AWS and a
# private Postgres (data in .data/), creates the demo organization and its
# demo network, serves the console on http://127.0.0.1:3000, and starts the
# live lab: a User-Mode Linux guest where the demo network's instances boot,
# install the agent and bring real encrypted tunnels up.
#
#   ./run.sh                      local AWS (moto), embedded Postgres, the lab
#   ./run.sh --aws-profile NAME   real AWS with that profile instead of moto (no lab)
#   DATABASE_URL=postgres://...   use that database instead of the embedded one
set -euo pipefail
source "$(dirname "$0")/setup.sh"

aws_profile=
while [ $# -gt 0 ]; do
  case "$1" in
    --aws-profile) aws_profile=${2:?--aws-profile needs a profile name}; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see ./run.sh --help)" ;;
  esac
done

setup_build
setup_runtime
# The agent appliances download: the optimised, stripped build of the
# `agent` profile (a fifth of the debug build's bytes, which every
# instance fetches, checks and installs at its first boot).
agent_bin="$CARGO_TARGET_DIR/agent/vpcmesh-agent"
lab_bin="$CARGO_TARGET_DIR/debug/vpcmesh-lab"
if [ -z "${VPCMESH_SKIP_BUILD:-}" ]; then
  say "building the console"
  leptos_build
  say "building the size-optimized WebAssembly bundle"
  wasm_release_bundle
  say "building the appliance agent (appliances download it from the server) and the lab"
  build_agent_and_lab
else
  # Built already (./test.sh, or an earlier ./run.sh): start at once.
  VPCMESH_SERVER_BIN="$CARGO_TARGET_DIR/debug/vpcmesh-server"
  VPCMESH_SITE_ROOT="$VPCMESH_ROOT/target/site"
  for b in "$VPCMESH_SERVER_BIN" "$agent_bin" "$lab_bin"; do
    [ -x "$b" ] || die "VPCMESH_SKIP_BUILD is set but $b is not built (run ./run.sh without it once)"
  done
fi

data=${VPCMESH_DATA:-$VPCMESH_ROOT/.data}
listen=${VPCMESH_LISTEN:-127.0.0.1:3000}
mkdir -p "$data"
args=(--site-root "$VPCMESH_SITE_ROOT" --listen "$listen"
      --demo-admin "${VPCMESH_DEMO_ADMIN:-admin@demo.vpcmesh.dev}"
      --agent-binary "$agent_bin")
[ -n "${DATABASE_URL:-}" ] || args+=(--embedded-postgres "$data/pg")

pids=()
stop_all() {
  # Reverse order: the lab (it powers its guest off), the server, moto.
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
}
trap 'stop_all; exit 0' INT TERM
trap 'stop_all' EXIT

if [ -n "$aws_profile" ]; then
  say "using real AWS with profile $aws_profile (no lab: appliances run in your account)"
  export AWS_PROFILE=$aws_profile
else
  moto_port=${VPCMESH_MOTO_PORT:-5000}
  say "starting moto (local AWS) on 127.0.0.1:$moto_port"
  "$VPCMESH_MOTO_SERVER" -H 127.0.0.1 -p "$moto_port" >"$data/moto.log" 2>&1 &
  pids+=($!)
  args+=(--aws-endpoint-url "http://127.0.0.1:$moto_port" --demo-network)
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
fi

# The lab: where the demo network's appliances really run. It starts at
# once, beside the console: its guest boots while the console starts and
# the demo network is provisioned (it waits for the emulator by itself, and
# its instances appear only once the demo's stacks launch them).
lab_why=
if [ -n "$aws_profile" ]; then
  lab_why=none
elif [ "$(id -u)" != 0 ]; then
  lab_why="it needs root (network namespaces and a tap): run ./run.sh as root"
elif [ ! -x "${VPCMESH_UML:-}" ]; then
  lab_why="User-Mode Linux (linux.uml) is not installed"
fi
lab_pid=
if [ -z "$lab_why" ]; then
  say "starting the lab: the demo network's instances boot in a User-Mode Linux guest (log: $data/lab.log, timeline: $data/lab/lab.json)"
  RUST_LIB_BACKTRACE=0 "$lab_bin" run --dir "$data/lab" \
    --netns "${VPCMESH_LAB_NETNS:-vpcmesh-lab}" \
    --aws-endpoint-url "http://127.0.0.1:$moto_port" --control-plane "$listen" \
    --account "${VPCMESH_LAB_ACCOUNT:-210987654321}" --demo-traffic \
    --region us-east-1 --region eu-west-1 --region ap-southeast-2 >"$data/lab.log" 2>&1 &
  lab_pid=$!
elif [ "$lab_why" != none ]; then
  printf '\033[1;33mwarning:\033[0m no lab: %s.\n  The console runs, but no appliance runs anywhere: the demo network'"'"'s tunnels will stay pending.\n' "$lab_why" >&2
fi

say "starting the console on http://$listen (Ctrl-C stops everything)"
"$VPCMESH_SERVER_BIN" "${args[@]}" &
server_pid=$!
pids+=("$server_pid")
# Stopped first (see stop_all): the lab powers its guest off.
if [ -n "$lab_pid" ]; then
  pids+=("$lab_pid")
  say "lab commands: $VPCMESH_ROOT/lab.sh hosts | $VPCMESH_ROOT/lab.sh exec 'ip netns exec h1 ping -c 3 <address>'"
fi
wait "$server_pid"
