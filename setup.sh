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
  if ! uml_boots "$VPCMESH_UML"; then
    VPCMESH_UML=$(uml_for_this_cpu) || die "no User-Mode Linux kernel boots on this machine"
    export VPCMESH_UML
  fi
}

# Whether a UML kernel boots a guest to its init on this machine. Debian's
# UML 6.1 (and 6.12) cannot on hosts whose XSAVE area is larger than it
# expects (AVX-512 and AMX): PTRACE_SETREGSET wants the host's exact size,
# and the guest's init dies with "ptrace set fp regs failed". Remembered per
# kernel binary, host kernel and CPU.
uml_boots() {
  local uml=$1 key dir ok
  [ "$(id -u)" = 0 ] || return 0 # the guests need root; the tests say so themselves
  key=$( { sha256sum "$uml" | cut -c1-16; uname -r; grep -m1 '^flags' /proc/cpuinfo; } | sha256sum | cut -c1-16)
  ok="$VPCMESH_CACHE/uml/boots-$key"
  [ -e "$ok" ] && return 0
  dir=$(mktemp -d /tmp/vpcmesh-uml-check.XXXXXX)
  printf '#!/bin/sh\necho booted > %s/booted\npoweroff -f\n' "$dir" > "$dir/init.sh"
  chmod +x "$dir/init.sh"
  timeout 120 "$uml" mem=128M root=/dev/root rootfstype=hostfs rootflags=/ rw \
    "init=$dir/init.sh" con=null con0=fd:0,fd:1 </dev/null >"$dir/console.log" 2>&1 || true
  if [ -e "$dir/booted" ]; then
    mkdir -p "$VPCMESH_CACHE/uml" && touch "$ok"
    rm -rf "$dir"
    return 0
  fi
  say "User-Mode Linux ($uml) does not boot here: $(grep -m1 -E 'ptrace|panic|not found' "$dir/console.log" || echo 'its init never ran')"
  rm -rf "$dir"
  return 1
}

# A UML kernel built from Debian's linux-source-6.1 with
# e2e/lab/uml/xstate.patch (the host's XSAVE size, asked at start), with
# what the lab needs built in; built once into the cache (a few minutes).
uml_for_this_cpu() {
  local patch="$VPCMESH_ROOT/e2e/lab/uml/xstate.patch" dir out src o
  dir="$VPCMESH_CACHE/uml"
  out="$dir/linux-6.1-xstate-$(sha256sum "$patch" | cut -c1-12)"
  if [ ! -x "$out" ]; then
    say "building a User-Mode Linux kernel that boots on this CPU (once, into $dir)" >&2
    apt_ensure linux-source-6.1 bc flex bison >&2
    src="$dir/src"
    rm -rf "$src" && mkdir -p "$src"
    tar xJf /usr/src/linux-source-6.1.tar.xz -C "$src" --strip-components=1
    patch -d "$src" -p1 --quiet < "$patch"
    make -C "$src" ARCH=um defconfig >/dev/null
    "$src/scripts/config" --file "$src/.config" --disable MODULES \
      --disable UML_NET_VDE --disable UML_NET_PCAP --set-val KERNEL_STACK_ORDER 4
    for o in VETH BRIDGE OVERLAY_FS XFRM XFRM_USER XFRM_ALGO INET_ESP XFRM_STATISTICS \
      CRYPTO_GCM CRYPTO_CTR CRYPTO_GHASH CRYPTO_SEQIV CRYPTO_ECHAINIV CRYPTO_AES CRYPTO_AES_TI \
      CRYPTO_AEAD CRYPTO_SHA256 CRYPTO_HMAC CRYPTO_AUTHENC NET_SCHED NET_CLS NET_CLS_ACT \
      NET_SCH_INGRESS NET_CLS_U32 NET_CLS_MATCHALL NET_ACT_NAT NET_ACT_GACT NET_SCH_NETEM \
      NET_NS UML_NET_VECTOR HOSTFS TUN PACKET IP_ADVANCED_ROUTER IP_MULTIPLE_TABLES DUMMY \
      UNIX INET DEVTMPFS TMPFS PROC_FS SYSFS NAMESPACES UTS_NS IPC_NS PID_NS USER_NS \
      BINFMT_ELF BINFMT_SCRIPT FUTEX EPOLL SIGNALFD TIMERFD EVENTFD INOTIFY_USER FHANDLE \
      POSIX_TIMERS MULTIUSER NETFILTER CGROUPS; do
      "$src/scripts/config" --file "$src/.config" --enable "$o"
    done
    make -C "$src" ARCH=um olddefconfig >/dev/null
    make -C "$src" ARCH=um -j"$(nproc)" linux >"$dir/build.log" 2>&1 \
      || { tail -20 "$dir/build.log" >&2; return 1; }
    cp "$src/linux" "$out.tmp" && mv "$out.tmp" "$out"
    rm -rf "$src"
  fi
  uml_boots "$out" || return 1
  echo "$out"
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

# The agent appliances download (the `agent` profile: optimised and
# stripped, as a release ships it; ./run.sh and the lab tests serve it) and
# the lab runner.
build_agent_and_lab() {
  (cd "$VPCMESH_ROOT" && cargo build --quiet --profile agent -p appliance --bin vpcmesh-agent \
    && cargo build --quiet -p vpcmesh-lab --bin vpcmesh-lab)
}
