#!/usr/bin/env bash
# Runs vpcmesh locally: builds the console, starts moto as local AWS and a
# private Postgres (data in .data/), creates the demo organization and serves
# the console on http://127.0.0.1:3000.
#
#   ./run.sh                      local AWS (moto), embedded Postgres
#   ./run.sh --aws-profile NAME   real AWS with that profile instead of moto
#   DATABASE_URL=postgres://...   use that database instead of the embedded one
set -euo pipefail
source "$(dirname "$0")/setup.sh"

aws_profile=
while [ $# -gt 0 ]; do
  case "$1" in
    --aws-profile) aws_profile=${2:?--aws-profile needs a profile name}; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see ./run.sh --help)" ;;
  esac
done

setup_build
setup_runtime
say "building the console"
leptos_build
say "building the size-optimized WebAssembly bundle"
wasm_release_bundle
say "building the appliance agent (appliances download it from the server)"
(cd "$VPCMESH_ROOT" && cargo build --quiet -p appliance --bin vpcmesh-agent)

args=(--site-root "$VPCMESH_SITE_ROOT" --listen "${VPCMESH_LISTEN:-127.0.0.1:3000}"
      --demo-admin "${VPCMESH_DEMO_ADMIN:-admin@demo.vpcmesh.dev}"
      --agent-binary "$CARGO_TARGET_DIR/debug/vpcmesh-agent")
[ -n "${DATABASE_URL:-}" ] || args+=(--embedded-postgres "$VPCMESH_ROOT/.data/pg")

if [ -n "$aws_profile" ]; then
  say "using real AWS with profile $aws_profile"
  export AWS_PROFILE=$aws_profile
else
  moto_port=${VPCMESH_MOTO_PORT:-5000}
  say "starting moto (local AWS) on 127.0.0.1:$moto_port"
  mkdir -p "$VPCMESH_ROOT/.data"
  "$VPCMESH_MOTO_SERVER" -H 127.0.0.1 -p "$moto_port" >"$VPCMESH_ROOT/.data/moto.log" 2>&1 &
  moto_pid=$!
  args+=(--aws-endpoint-url "http://127.0.0.1:$moto_port" --demo-network)
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
fi

say "starting the console (Ctrl-C stops everything)"
"$VPCMESH_SERVER_BIN" "${args[@]}" &
server_pid=$!
# Whatever stops this script stops the server (gracefully) and moto with it.
trap 'kill -TERM $server_pid 2>/dev/null; wait $server_pid; kill ${moto_pid:-} 2>/dev/null; exit' INT TERM
trap 'kill ${moto_pid:-} 2>/dev/null || true' EXIT
wait $server_pid
