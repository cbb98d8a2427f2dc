#!/bin/bash
# vpcmesh appliance bootstrap: the EC2 user data of both launch templates of
# appliance-stack.yaml (put there when the template is rendered). A stock
# Amazon Linux 2023 instance runs it once at first boot; it
#   1. writes the agent's bootstrap file /etc/vpcmesh/agent.json,
#   2. downloads the agent from the control plane and installs it only if its
#      SHA-256 equals the digest pinned below (retrying forever otherwise:
#      an unverified binary is never installed or run),
#   3. installs and starts the systemd unit vpcmesh-agent.service.
# The download retries with capped exponential backoff and says what failed
# on the instance console ("vpcmesh-install: ..."). The agent reads its
# instance facts from IMDSv2 itself.
#
# CloudFormation's Fn::Sub fills the placeholders (a dollar sign and a stack
# parameter's name in braces) before the instance sees this file, so the
# script itself never uses the braced form of a shell variable: Fn::Sub would
# take it for a placeholder. The values the control plane substitutes are
# URLs, UUIDs, hex digests and vmb_ tokens: none needs quoting in JSON or in
# single quotes.
set -euo pipefail
umask 077

readonly server_url='${ServerUrl}'
readonly agent_url='${AgentUrl}'
readonly agent_sha256='${AgentSha256}'
readonly bin=/usr/local/bin/vpcmesh-agent
partial=

log() {
  local line="vpcmesh-install: $*"
  echo "$line" >&2
  if [ -w /dev/console ]; then
    echo "$line" >>/dev/console 2>/dev/null || true
  fi
}

# A download cut short (an error, a signal) leaves no half-written file.
trap 'if [ -n "$partial" ]; then rm -f "$partial"; fi' EXIT
trap 'exit 1' HUP INT TERM

# Runs "$@" until it succeeds: 1 s, 2 s, 4 s ... between tries, at most 60 s.
retry() {
  local what=$1 delay=1
  shift
  until "$@"; do
    log "$what failed; trying again in $delay s"
    sleep "$delay"
    delay=$((delay * 2 > 60 ? 60 : delay * 2))
  done
}

write_boot_config() {
  install -d -m 0700 /etc/vpcmesh
  local tmp
  tmp=$(mktemp /etc/vpcmesh/.agent.json.XXXXXX)
  # Quoted delimiter: nothing in the file is expanded by the shell. The
  # bootstrap token goes to this file only, never to a log.
  cat >"$tmp" <<'CONF'
{"server_url": "${ServerUrl}", "network_id": "${NetworkId}", "site_id": "${SiteId}", "member": "${Member}", "allocation_id": "${AllocationId}", "bootstrap_token": "${BootstrapToken}"}
CONF
  chmod 0600 "$tmp"
  mv -f "$tmp" /etc/vpcmesh/agent.json
}

# One try: download to a file beside the target, check the digest, rename
# into place (atomic: never a half-written or unverified agent at $bin).
install_agent() {
  local err actual
  install -d -m 0755 /usr/local/bin || return 1
  if ! partial=$(mktemp /usr/local/bin/.vpcmesh-agent.XXXXXX); then
    log "cannot create a temporary file in /usr/local/bin"
    partial=
    return 1
  fi
  if ! err=$(curl --fail --silent --show-error --compressed --connect-timeout 10 --max-time 600 \
    --output "$partial" "$agent_url" 2>&1); then
    log "download of $agent_url failed: $err"
    rm -f "$partial"
    partial=
    return 1
  fi
  actual=$(sha256sum "$partial" | cut -d ' ' -f 1) || actual=unreadable
  if [ "$actual" != "$agent_sha256" ]; then
    log "digest mismatch for $agent_url: expected sha256 $agent_sha256, got $actual; deleted, not installed"
    rm -f "$partial"
    partial=
    return 1
  fi
  if ! chmod 0755 "$partial" || ! mv -f "$partial" "$bin"; then
    log "moving the verified agent to $bin failed"
    rm -f "$partial"
    partial=
    return 1
  fi
  partial=
  log "installed $bin (sha256 $actual)"
}

# The sandbox both units share; each adds its capabilities, address
# families and writable paths.
sandbox() {
  cat <<'UNIT'
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateMounts=yes
ProtectProc=invisible
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictRealtime=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
UNIT
}

# Installs unit $1 from its own part (standard input) and the sandbox,
# atomically.
install_unit() {
  local path=/etc/systemd/system/$1 tmp
  tmp=$(mktemp "/etc/systemd/system/.$1.XXXXXX")
  { cat; sandbox; } >"$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$path"
}

write_unit() {
  install_unit vpcmesh-agent.service <<'UNIT'
[Unit]
Description=vpcmesh appliance agent (IPsec tunnels of this site)
Wants=network-online.target
After=network-online.target

[Service]
# READY=1 comes once UDP 4500 is bound and the first reconcile is done.
Type=notify
NotifyAccess=main
ExecStart=/usr/local/bin/vpcmesh-agent run
Restart=always
RestartSec=2
# Registration waits for the server and for EC2 to show this instance.
TimeoutStartSec=15min
StateDirectory=vpcmesh
StateDirectoryMode=0700
UMask=0077
# Sandbox: netlink (XFRM, routes), the UDP encapsulation socket, IMDS, AWS
# and the control plane over TCP, and a raw ICMP socket for connectivity
# checks (pings to the peers' inside addresses): CAP_NET_ADMIN and
# CAP_NET_RAW are all the agent needs. Kernel tunables stay writable: the
# agent turns on /proc/sys/net/ipv4/ip_forward.
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW
ReadWritePaths=/var/lib/vpcmesh
RestrictAddressFamilies=AF_UNIX AF_INET AF_NETLINK
UNIT
}

# The ESP-in-UDP socket, held by a process of its own while the agent
# restarts (an upgrade, a crash): the kernel decapsulates UDP 4500 only on
# such a socket, and the agent's own goes with it. It needs no capability.
write_nat_t_unit() {
  install_unit vpcmesh-nat-t.service <<'UNIT'
[Unit]
Description=vpcmesh ESP-in-UDP socket (UDP 4500), held while the agent restarts
Before=vpcmesh-agent.service

[Service]
ExecStart=/usr/local/bin/vpcmesh-agent hold-nat-t
Restart=always
RestartSec=1
UMask=0077
CapabilityBoundingSet=
ProtectKernelTunables=yes
RestrictAddressFamilies=AF_UNIX AF_INET
UNIT
}

log "setting up the vpcmesh agent for $server_url"
write_boot_config
retry "installing the verified agent" install_agent
write_unit
write_nat_t_unit
# No forwarding set here, nor persisted for later boots: the agent turns it
# on itself once its policies are in, so that after a reboot nothing is
# forwarded towards remote CIDRs (in clear) before then.
systemctl daemon-reload
# --no-block: cloud-init finishes now; the unit becomes active once the
# agent has registered and applied its first config.
systemctl enable --now --no-block vpcmesh-nat-t vpcmesh-agent
log "vpcmesh-agent enabled and starting"
