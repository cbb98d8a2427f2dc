#!/usr/bin/env bash
# First load of the console over emulated networks, with the release bundle
# ./run.sh serves. The server runs in one network namespace and headless
# Chromium in another, joined by a veth pair; Chromium's DevTools network
# emulation adds each profile's round trip and throughput limit (this host's
# kernel has no sch_netem). Needs root; touches nothing outside the two
# namespaces it makes and removes.
#
#   e2e/bench/first-load.sh
set -euo pipefail
source "$(dirname "$0")/../../setup.sh"
cd "$VPCMESH_ROOT"
[ "$(id -u)" = 0 ] || die "run as root: the benchmark makes network namespaces"

setup_build
setup_runtime
setup_tests
leptos_build >/dev/null
wasm_release_bundle

srv=vpcmesh-fl-srv cli=vpcmesh-fl-cli
addr=10.203.0.1 port=3000
work=$(mktemp -d /tmp/vpcmesh-first-load.XXXXXX)
chmod 755 "$work"
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  ip netns del "$srv" 2>/dev/null || true
  ip netns del "$cli" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns del "$srv" 2>/dev/null || true
ip netns del "$cli" 2>/dev/null || true
ip netns add "$srv"
ip netns add "$cli"
ip -n "$srv" link set lo up
ip -n "$cli" link set lo up
ip link add fl-s netns "$srv" type veth peer name fl-c netns "$cli"
ip -n "$srv" addr add "$addr/30" dev fl-s
ip -n "$cli" addr add 10.203.0.2/30 dev fl-c
ip -n "$srv" link set fl-s up
ip -n "$cli" link set fl-c up

ip netns exec "$srv" "$VPCMESH_SERVER_BIN" --embedded-postgres "$work/pg" \
  --listen "$addr:$port" --public-url "http://$addr:$port" --insecure-http \
  --site-root "$VPCMESH_SITE_ROOT" --demo-admin bench@demo.vpcmesh.dev >"$work/server.log" 2>&1 &
server_pid=$!
password=
for _ in $(seq 1 450); do
  password=$(sed -n 's/.*with password \([^ ]*\).*/\1/p' "$work/server.log" | head -1)
  [ -n "$password" ] && ip netns exec "$cli" curl -sf "http://$addr:$port/readyz" >/dev/null && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; die "the server stopped"; }
  sleep 0.2
done
[ -n "$password" ] || die "the server did not start: $(cat "$work/server.log")"

wasm=$(stat -c %s "$VPCMESH_SITE_ROOT/pkg/vpcmesh.wasm") wasm_gz=$(stat -c %s "$VPCMESH_SITE_ROOT/pkg/vpcmesh.wasm.gz")
echo
echo "First load (median of 3 fresh browsers), release bundle (WebAssembly $wasm bytes, $wasm_gz gzipped); server: debug build, embedded Postgres"
printf '%-42s | %-33s | %-17s\n' "" "sign-in page, cold cache" "networks page"
printf '%-42s | %7s %7s %9s %8s | %9s %7s\n' "network (RTT, downlink)" "DOM" "load" "hydrated" "bytes" "hydrated" "bytes"
# name:RTT ms:down kbit/s:up kbit/s; the last is Lighthouse's mobile profile.
for profile in "none:0:0:0" "broadband:20:50000:10000" "4G:70:12000:4000" "slow 4G (Lighthouse):150:1638:750"; do
  IFS=: read -r name rtt down up <<<"$profile"
  label="$name"
  shaping=()
  if [ "$rtt" != 0 ]; then
    label="$name ($rtt ms, $down kbit/s)"
    shaping=("$rtt" "$down" "$up")
  fi
  # Three fresh browsers per profile; the medians are printed.
  runs=()
  for _ in 1 2 3; do
    runs+=("$(ip netns exec "$cli" node e2e/bench/first-load.mjs "http://$addr:$port" bench@demo.vpcmesh.dev "$password" "${shaping[@]}")")
  done
  node -e '
    const [label, ...runs] = process.argv.slice(1);
    const parsed = runs.map((r) => JSON.parse(r));
    const med = (page, key) => parsed.map((r) => r[page][key]).sort((a, b) => a - b)[1];
    const ms = (v, n = 7) => `${v} ms`.padStart(n);
    const c = (k) => med("cold", k), w = (k) => med("warm", k);
    console.log(`${label.padEnd(42)} | ${ms(c("dom"))} ${ms(c("load"))} ${ms(c("hydrated"), 9)} ${String(c("bytes")).padStart(8)} | ${ms(w("hydrated"), 9)} ${String(w("bytes")).padStart(7)}`);
  ' "$label" "${runs[@]}"
done
