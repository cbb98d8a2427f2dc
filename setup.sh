# shellcheck shell=bash
# Installs what vpcmesh needs to build, run and test it, skipping whatever is
# already there (Debian packages, pinned crates.io tools, the moto venv, the
# browser-test packages). Sourced by run.sh and test.sh; safe to repeat.

set -euo pipefail

VPCMESH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VPCMESH_CACHE=${VPCMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vpcmesh}
CARGO_LEPTOS_VERSION=0.3.11
MOTO_VERSION=5.2.5
PARLIAMENT_VERSION=1.6.4
mkdir -p "$VPCMESH_CACHE/tools/bin"
# One build folder shared by every checkout on this machine: a fresh clone
# reuses compiled dependencies instead of starting cold.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$VPCMESH_CACHE/target}
export PATH="$VPCMESH_CACHE/tools/bin:$HOME/.cargo/bin:$PATH"
export VPCMESH_ROOT VPCMESH_CACHE
# cargo-leptos sets this while building; Leptos reads it at compile time
# (it names the WASM file). Every cargo run sees the same value, so test and
# lint builds reuse the console build instead of recompiling Leptos.
export LEPTOS_OUTPUT_NAME=vpcmesh

say() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_ensure() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  if [ -z "${VPCMESH_APT_UPDATED:-}" ]; then
    as_root apt-get update -qq
    VPCMESH_APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

rustc_minor() { "$1" --version 2>/dev/null | sed -E 's/^rustc 1\.([0-9]+).*/\1/'; }

# cargo-leptos 0.3.11 needs rustc >= 1.96: use Debian's rustc-web when the
# rustup toolchain is older.
# Tools are built for build speed, not peak speed: no LTO, parallel codegen.
tool_cargo() {
  local fast=(CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=1)
  if [ "$(rustc_minor rustc)" -ge 96 ] 2>/dev/null; then
    env "${fast[@]}" cargo "$@"
  else
    apt_ensure rustc-web cargo-web
    env "${fast[@]}" PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc /usr/bin/cargo "$@"
  fi
}

install_crate() { # crate version binary
  local have
  have=$("$3" --version 2>/dev/null | awk '{print $2}') || true
  [ "$have" = "$2" ] && return 0
  say "building $1 $2 from crates.io (once; cached in $VPCMESH_CACHE/tools)"
  # --locked first; when the registry lacks a locked version, resolve anew.
  tool_cargo install --locked --quiet "$1" --version "$2" --root "$VPCMESH_CACHE/tools" ||
    tool_cargo install --quiet "$1" --version "$2" --root "$VPCMESH_CACHE/tools"
}

setup_build() {
  command -v cargo >/dev/null || die "no Rust toolchain: install rustup (https://rustup.rs) first"
  apt_ensure build-essential
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt 2>/dev/null || true
  # The WebAssembly path: rustup's wasm32 target where it is installed,
  # otherwise Debian's compiler and std source with build-std.
  if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    VPCMESH_WASM=stable
  else
    VPCMESH_WASM=debian
    apt_ensure rustc-web cargo-web rust-web-src lld-19
    mkdir -p "$VPCMESH_CACHE/wasm-cargo"
    cat > "$VPCMESH_CACHE/wasm-cargo/cargo" <<'SH'
#!/bin/sh
# cargo for the WebAssembly build: Debian's toolchain, std built from source.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
       CARGO_UNSTABLE_BUILD_STD=std,panic_abort \
       CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-19
exec /usr/bin/cargo "$@"
SH
    chmod +x "$VPCMESH_CACHE/wasm-cargo/cargo"
  fi
  export VPCMESH_WASM
  install_crate cargo-leptos "$CARGO_LEPTOS_VERSION" cargo-leptos
  local bindgen
  bindgen=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/, ""); print; exit}' "$VPCMESH_ROOT/Cargo.lock")
  [ -n "$bindgen" ] || die "wasm-bindgen not found in Cargo.lock"
  install_crate wasm-bindgen-cli "$bindgen" wasm-bindgen
}

setup_runtime() {
  # curl and systemd-analyze: the user-data installer tests run the real script.
  apt_ensure postgresql util-linux curl systemd
  local venv="$VPCMESH_CACHE/venv"
  if [ "$("$venv/bin/python" -c 'import moto; print(moto.__version__)' 2>/dev/null)" != "$MOTO_VERSION" ]; then
    say "creating the moto venv ($MOTO_VERSION) in $venv"
    python3 -m venv --help >/dev/null 2>&1 || apt_ensure python3-venv
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  fi
  # moto's CloudFormation support brings cfn-lint, which the template tests run.
  [ -x "$venv/bin/cfn-lint" ] || "$venv/bin/pip" install --quiet --disable-pip-version-check cfn-lint
  # parliament lints every IAM policy the templates hold (server/tests/api/iam_lint.rs).
  if [ "$("$venv/bin/pip" show parliament 2>/dev/null | awk '/^Version:/{print $2}')" != "$PARLIAMENT_VERSION" ]; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check "parliament==$PARLIAMENT_VERSION"
  fi
  # moto with routable Elastic IPs (e2e/lab/moto_server.py says why).
  export VPCMESH_MOTO_PYTHON="$venv/bin/python"
  export VPCMESH_MOTO_SERVER="$VPCMESH_ROOT/e2e/lab/moto-server"
  export VPCMESH_CFN_LINT="$venv/bin/cfn-lint"
  export VPCMESH_PARLIAMENT="$venv/bin/parliament"
  setup_lab
}

# The data-plane lab: this host kernel has XFRM but no ESP, so ESP runs in a
# User-Mode Linux guest that boots from the host's own filesystem.
setup_lab() {
  apt_ensure user-mode-linux kmod iproute2 iputils-ping tshark iperf3 traceroute
  local modules version
  modules=$(ls -d /usr/lib/uml/modules/* 2>/dev/null | head -n1)
  [ -n "$modules" ] || die "user-mode-linux ships no modules in /usr/lib/uml/modules"
  version=$(basename "$modules")
  if [ "$(readlink "/lib/modules/$version" 2>/dev/null)" != "$modules" ]; then
    as_root mkdir -p /lib/modules
    as_root ln -sfn "$modules" "/lib/modules/$version"
  fi
  export VPCMESH_UML="$(command -v linux.uml)"
}

setup_tests() {
  apt_ensure chromium prometheus
  command -v npm >/dev/null || apt_ensure nodejs npm
  local e2e="$VPCMESH_ROOT/e2e"
  if [ ! -f "$e2e/node_modules/.package-lock.json" ] || [ "$e2e/package-lock.json" -nt "$e2e/node_modules/.package-lock.json" ]; then
    say "installing browser-test packages"
    (cd "$e2e" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# Builds the console: the WebAssembly bundle, CSS and the server binary.
leptos_build() {
  local cargo_bin
  cargo_bin=$(command -v cargo)
  if [ "$VPCMESH_WASM" = debian ]; then
    (cd "$VPCMESH_ROOT" && LEPTOS_BIN_CARGO_COMMAND="$cargo_bin" PATH="$VPCMESH_CACHE/wasm-cargo:$PATH" cargo-leptos build "$@")
  else
    (cd "$VPCMESH_ROOT" && cargo-leptos build "$@")
  fi
  VPCMESH_SERVER_BIN="$CARGO_TARGET_DIR/debug/vpcmesh-server"
  VPCMESH_SITE_ROOT="$VPCMESH_ROOT/target/site"
  # Compressed once here, so the server never compresses the bundle per request.
  gzip -kf -6 "$VPCMESH_SITE_ROOT"/pkg/*.wasm "$VPCMESH_SITE_ROOT"/pkg/*.js "$VPCMESH_SITE_ROOT"/pkg/*.css
  export VPCMESH_SERVER_BIN VPCMESH_SITE_ROOT
}

# The bundle `./run.sh` serves: the WebAssembly built for size (opt-level z,
# LTO), without its name section, and gzip-compressed. Replaces the debug bundle of leptos_build in target/site.
wasm_release_bundle() {
  local out="$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/app.wasm" pkg="$VPCMESH_SITE_ROOT/pkg"
  if [ "$VPCMESH_WASM" = debian ]; then
    (cd "$VPCMESH_ROOT" && PATH="$VPCMESH_CACHE/wasm-cargo:$PATH" cargo build --quiet -p app --lib \
      --target wasm32-unknown-unknown --profile wasm-release --no-default-features --features hydrate)
  else
    (cd "$VPCMESH_ROOT" && cargo build --quiet -p app --lib \
      --target wasm32-unknown-unknown --profile wasm-release --no-default-features --features hydrate)
  fi
  local tmp
  tmp=$(mktemp -d)
  wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
    --out-dir "$tmp" --out-name vpcmesh "$out"
  # No wasm-opt: Debian's binaryen (108) rewrites wasm-bindgen's externref
  # table into something browsers reject; opt-level z + LTO does the work.
  mv "$tmp/vpcmesh_bg.wasm" "$tmp/vpcmesh.wasm"
  mv "$tmp/vpcmesh.wasm" "$pkg/vpcmesh.wasm"
  mv "$tmp/vpcmesh.js" "$pkg/vpcmesh.js"
  rm -rf "$tmp"
  gzip -kf -9 "$pkg/vpcmesh.wasm" "$pkg/vpcmesh.js"
  say "release bundle: $(stat -c %s "$pkg/vpcmesh.wasm") bytes of WebAssembly, $(stat -c %s "$pkg/vpcmesh.wasm.gz") gzipped"
}
