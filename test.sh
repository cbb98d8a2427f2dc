#!/usr/bin/env bash
# Runs every vpcmesh test: format, lints, unit and integration tests (real
# Postgres clusters the tests start), and browser end-to-end tests in
# headless Chromium. Installs what is missing first.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$VPCMESH_ROOT"

setup_build
setup_runtime
setup_tests

logs=$(mktemp -d)
started=$(date +%s)
step() { say "$1"; shift; "$@"; }

step "format check" cargo fmt --all -- --check
step "clippy (-D warnings)" cargo clippy --workspace --all-targets --quiet -- -D warnings
step "building the console (WASM + server)" leptos_build
step "building the agent appliances download and the lab runner (the lab tests run them)" build_agent_and_lab
retries="$CARGO_TARGET_DIR/tmp/live-lab-retries.log"
rm -f "$retries"
step "unit and integration tests" bash -c 'set -o pipefail; cargo test --workspace 2>&1 | tee "$0/cargo-test.log"' "$logs"
step "browser end-to-end tests (Chromium)" bash -c 'set -o pipefail; node --test --test-reporter=spec e2e/tests/ 2>&1 | tee "$0/e2e.log"' "$logs"

rust_passed=$(awk '/^test result:/{s+=$4} END{print s+0}' "$logs/cargo-test.log")
rust_failed=$(awk '/^test result:/{s+=$6} END{print s+0}' "$logs/cargo-test.log")
e2e_passed=$(awk '/^ℹ pass /{print $3}' "$logs/e2e.log" | tail -1)
e2e_failed=$(awk '/^ℹ fail /{print $3}' "$logs/e2e.log" | tail -1)
if [ -s "$retries" ]; then
  say "live-lab tests that ran twice because the User-Mode Linux guest froze on the first try:"
  cat "$retries"
fi
say "done in $(( $(date +%s) - started ))s: rust $rust_passed passed, browser ${e2e_passed:-0} passed"
echo "tests: $(( rust_passed + ${e2e_passed:-0} )) passed, $(( rust_failed + ${e2e_failed:-0} )) failed"
