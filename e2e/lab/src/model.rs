//! The lab's network as a pure function of a cloud snapshot: every piece of
//! it (a namespace, a bridge, a route, a NAT rule) is one [`Resource`] with
//! the shell that makes it and the shell that removes it. [`plan`] diffs the
//! applied set against the desired one, so each round touches only what
//! moto changed.
//!
//! Layout inside the guest:
//! - `wan`: the Internet, a bridge with 100.127.255.254/16; each Elastic IP
//!   is a /32 route to the router of the VPC whose instance holds it.
//! - `vpc<v>`: the VPC router. One bridge per subnet (`s<n>`, the router at
//!   the subnet's .1, as in AWS), a leg on the WAN (`wan0`, 100.127.x.y),
//!   1:1 NAT of each Elastic IP to its instance's private address (tc
//!   `act_nat`, stateless as the Internet gateway is), and the VPC's route
//!   tables as kernel tables looked up by the subnet a packet comes from.
//!   Nothing leaves for the WAN without an Elastic IP.
//! - `tgw<t>`: a Transit Gateway, a leg in every attached VPC (the
//!   attachment subnet's .3) and its route tables, by ingress attachment.
//! - `<instance id>`: an instance: `eth0` on its subnet's bridge with its
//!   private address and MAC, default route via the subnet router, and
//!   169.254.169.254 on its loopback. The guest binds the lab's stand-ins
//!   for IMDS, the control plane and the AWS endpoints inside it, and
//!   carries them to the host.
//! - `h<v>` (and `h<v>-<n>` for the VPC's n-th CIDR): a test host on each
//!   CIDR, the last usable address of the CIDR's first subnet.

use crate::cloud::{Snapshot, Target};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

/// Where the demo traffic marks each pair's first answer, in the lab folder.
pub const TRAFFIC_MARKS: &str = "traffic";

/// The WAN router's address; VPC routers are 100.127.x.y/16 beside it.
pub const WAN_ROUTER: Ipv4Addr = Ipv4Addr::new(100, 127, 255, 254);

/// Indices that name things in the guest. They only grow, so a name never
/// moves to another object while the lab runs.
#[derive(Debug, Default, Clone)]
pub struct Names {
    vpcs: BTreeMap<String, u16>,
    segments: BTreeMap<(String, Ipv4Net), u16>,
    instances: BTreeMap<String, u32>,
    gateways: BTreeMap<String, u16>,
    tables: BTreeMap<String, u32>,
    nat: BTreeMap<Ipv4Addr, u16>,
}

fn next<K: Ord + Clone, V: Copy + Ord + From<u8> + std::ops::Add<Output = V>>(
    map: &mut BTreeMap<K, V>,
    key: &K,
    first: V,
) -> V {
    if let Some(v) = map.get(key) {
        return *v;
    }
    let v = map.values().max().map(|m| *m + V::from(1)).unwrap_or(first);
    map.insert(key.clone(), v);
    v
}

impl Names {
    pub fn vpc(&mut self, id: &str) -> u16 {
        next(&mut self.vpcs, &id.to_string(), 1)
    }
    fn segment(&mut self, vpc: &str, cidr: Ipv4Net) -> u16 {
        next(&mut self.segments, &(vpc.to_string(), cidr), 0)
    }
    pub fn instance(&mut self, id: &str) -> u32 {
        next(&mut self.instances, &id.to_string(), 1)
    }
    fn gateway(&mut self, id: &str) -> u16 {
        next(&mut self.gateways, &id.to_string(), 1)
    }
    fn table(&mut self, id: &str) -> u32 {
        next(&mut self.tables, &id.to_string(), 100)
    }
    fn nat(&mut self, ip: Ipv4Addr) -> u16 {
        next(&mut self.nat, &ip, 10)
    }
}

/// What one lab instance's boot needs from the host side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceBoot {
    /// The instance's own folder, shared with the host (logs, user data).
    pub dir: String,
    /// The script that boots it, run in its namespace (see `instance.rs`).
    pub boot: String,
}

/// Ordered: things are made in this order and removed in the reverse one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Wan,
    Vpc(u16),
    Segment(u16, u16),
    Gateway(u16),
    GatewayLeg(u16, u16),
    Host(String),
    Route(String, u32, Ipv4Net),
    Rule(String, String),
    Nat(u16, Ipv4Addr),
    WanRoute(Ipv4Addr),
    Traffic(String),
    /// Last: the network an instance boots into is complete first (and
    /// its boot, which keeps the guest busy, starts after the rest).
    Instance(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// For the runner's log.
    pub what: String,
    pub up: String,
    pub down: String,
    /// `up` replaces the previous version itself (routes): no `down` first.
    pub in_place: bool,
}

/// A test host, for the CLI, the README and the tests.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Host {
    pub name: String,
    pub region: String,
    pub vpc_id: String,
    pub cidr: Ipv4Net,
    pub address: Ipv4Addr,
}

#[derive(Clone, Debug, Default)]
pub struct Desired {
    pub resources: BTreeMap<Key, Resource>,
    pub hosts: Vec<Host>,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Up(Key, Resource),
    Down(Key, Resource),
}

impl Step {
    pub fn script(&self) -> &str {
        match self {
            Step::Up(_, r) => &r.up,
            Step::Down(_, r) => &r.down,
        }
    }
}

/// What takes `applied` to `desired`: removals first (children before
/// parents), then additions and changes (parents before children).
///
/// A resource whose description alone changed (a VPC gained a CIDR) is not
/// touched: removing a parent (a VPC's namespace) would take its children
/// (its bridges, the instances' and hosts' links) along.
pub fn plan(applied: &BTreeMap<Key, Resource>, desired: &BTreeMap<Key, Resource>) -> Vec<Step> {
    let mut steps = Vec::new();
    for (k, old) in applied.iter().rev() {
        match desired.get(k) {
            None => steps.push(Step::Down(k.clone(), old.clone())),
            Some(new) if !new.same_effect(old) && !new.in_place => {
                steps.push(Step::Down(k.clone(), old.clone()))
            }
            _ => {}
        }
    }
    for (k, new) in desired {
        if !applied.get(k).is_some_and(|old| old.same_effect(new)) {
            steps.push(Step::Up(k.clone(), new.clone()));
        }
    }
    steps
}

impl Resource {
    /// The same shell both ways: applying one in place of the other changes
    /// nothing in the guest.
    pub fn same_effect(&self, other: &Resource) -> bool {
        self.up == other.up && self.down == other.down && self.in_place == other.in_place
    }
}

fn nth(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}

/// The subnet router's address, as in AWS: the network's .1.
pub fn router(net: Ipv4Net) -> Ipv4Addr {
    nth(net, 1)
}

/// Where a Transit Gateway attachment's interface sits: the subnet's .3
/// (AWS reserves .1 to .3; moto hands instances addresses from .4).
fn attachment_address(net: Ipv4Net) -> Ipv4Addr {
    nth(net, 3)
}

/// A test host's address: the last usable one of the network.
pub fn host_address(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.broadcast()) - 1)
}

fn vpc_wan(v: u16) -> Ipv4Addr {
    Ipv4Addr::new(100, 127, (v >> 8) as u8, (v & 0xff) as u8)
}

fn ns_exists(ns: &str) -> String {
    format!("[ -e /run/netns/{ns} ] || ip netns add {ns}\nip -n {ns} link set lo up\n")
}

/// A segment (bridge) of a VPC: a subnet, or a CIDR without subnets.
#[derive(Clone, Debug)]
struct Segment {
    index: u16,
    cidr: Ipv4Net,
    subnet: Option<String>,
}

impl Segment {
    fn bridge(&self) -> String {
        format!("s{}", self.index)
    }
}

/// Builds the desired lab from `snap`. `boot` gives the boot of each
/// instance the runner is ready to start (its host side exists); instances
/// without one are left out this round.
pub fn build(
    snap: &Snapshot,
    names: &mut Names,
    boot: &dyn Fn(&crate::cloud::Instance) -> Option<InstanceBoot>,
    traffic: bool,
) -> Desired {
    let mut d = Desired::default();
    let put = |d: &mut Desired, k: Key, what: String, up: String, down: String, in_place| {
        d.resources.insert(
            k,
            Resource {
                what,
                up,
                down,
                in_place,
            },
        );
    };
    put(
        &mut d,
        Key::Wan,
        "the WAN".into(),
        format!(
            "{}ip -n wan link show br0 >/dev/null 2>&1 || ip -n wan link add br0 type bridge\nip -n wan addr replace {WAN_ROUTER}/16 dev br0\nip -n wan link set br0 up\nip netns exec wan sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0\n",
            ns_exists("wan")
        ),
        "ip netns del wan\n".into(),
        false,
    );

    // The instances that run now, by id.
    let instances: BTreeMap<&str, &crate::cloud::Instance> =
        snap.instances.iter().map(|i| (i.id.as_str(), i)).collect();
    let by_interface: BTreeMap<&str, &crate::cloud::Instance> = snap
        .instances
        .iter()
        .map(|i| (i.interface_id.as_str(), i))
        .collect();

    // Segments of every VPC, and where a Transit Gateway leg sits in it.
    let mut segments: BTreeMap<&str, Vec<Segment>> = BTreeMap::new();
    for vpc in &snap.vpcs {
        let v = names.vpc(&vpc.id);
        let mut segs = Vec::new();
        for s in &vpc.subnets {
            segs.push(Segment {
                index: names.segment(&vpc.id, s.cidr),
                cidr: s.cidr,
                subnet: Some(s.id.clone()),
            });
        }
        for c in &vpc.cidrs {
            if !vpc.subnets.iter().any(|s| c.contains(&s.cidr)) {
                segs.push(Segment {
                    index: names.segment(&vpc.id, *c),
                    cidr: *c,
                    subnet: None,
                });
            }
        }
        let ns = format!("vpc{v}");
        put(
            &mut d,
            Key::Vpc(v),
            format!("VPC {} ({}, {})", vpc.id, vpc.region, join(&vpc.cidrs)),
            format!(
                "{mk}ip -n {ns} link show wan0 >/dev/null 2>&1 || ip link add wan0 netns {ns} type veth peer name v{v} netns wan\n\
                 ip -n wan link set v{v} master br0 up\n\
                 ip -n {ns} addr replace {wan}/16 dev wan0\nip -n {ns} link set wan0 up\n\
                 ip netns exec {ns} sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0\n\
                 tc -n {ns} qdisc replace dev wan0 clsact\n\
                 tc -n {ns} filter replace dev wan0 ingress prio 65000 protocol ip matchall action drop\n\
                 tc -n {ns} filter replace dev wan0 egress prio 65000 protocol ip matchall action drop\n",
                mk = ns_exists(&ns),
                wan = vpc_wan(v),
            ),
            format!("ip -n {ns} link del wan0 2>/dev/null\nip netns del {ns}\n"),
            false,
        );
        for s in &segs {
            let br = s.bridge();
            put(
                &mut d,
                Key::Segment(v, s.index),
                format!("{} {} of {}", if s.subnet.is_some() { "subnet" } else { "CIDR" }, s.cidr, vpc.id),
                format!(
                    "ip -n {ns} link show {br} >/dev/null 2>&1 || ip -n {ns} link add {br} type bridge\n\
                     ip -n {ns} addr replace {}/{} dev {br}\nip -n {ns} link set {br} up\n",
                    router(s.cidr),
                    s.cidr.prefix_len()
                ),
                format!("ip -n {ns} link del {br}\n"),
                false,
            );
        }
        segments.insert(vpc.id.as_str(), segs);
    }
    let vpc_of = |id: &str| snap.vpcs.iter().find(|v| v.id == id);
    let segment_of = |vpc: &str, subnet: &str| {
        segments
            .get(vpc)
            .and_then(|s| s.iter().find(|s| s.subnet.as_deref() == Some(subnet)))
            .cloned()
    };
    let segment_holding = |vpc: &str, ip: Ipv4Addr| {
        segments
            .get(vpc)
            .and_then(|s| s.iter().find(|s| s.cidr.contains(&ip)))
            .cloned()
    };

    // Transit Gateways: a router with a leg in every attached VPC.
    let mut legs: BTreeMap<(String, String), (u16, Ipv4Addr, Segment)> = BTreeMap::new();
    for gw in &snap.gateways {
        let t = names.gateway(&gw.id);
        let ns = format!("tgw{t}");
        put(
            &mut d,
            Key::Gateway(t),
            format!("Transit Gateway {} ({})", gw.id, gw.region),
            format!(
                "{}ip netns exec {ns} sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0\n",
                ns_exists(&ns)
            ),
            format!("ip netns del {ns}\n"),
            false,
        );
        for a in &gw.attachments {
            let Some(vpc) = vpc_of(&a.vpc_id) else {
                continue;
            };
            let v = names.vpc(&vpc.id);
            let Some(seg) = a.subnet_ids.iter().find_map(|s| segment_of(&vpc.id, s)) else {
                continue;
            };
            let address = attachment_address(seg.cidr);
            put(
                &mut d,
                Key::GatewayLeg(t, v),
                format!("{} attachment {} to {} at {address}", gw.id, a.id, vpc.id),
                format!(
                    "ip -n {ns} link show v{v} >/dev/null 2>&1 || ip link add v{v} netns {ns} type veth peer name t{t} netns vpc{v}\n\
                     ip -n vpc{v} link set t{t} master {} up\n\
                     ip -n {ns} addr replace {address}/{} dev v{v}\nip -n {ns} link set v{v} up\n",
                    seg.bridge(),
                    seg.cidr.prefix_len()
                ),
                format!("ip -n {ns} link del v{v} 2>/dev/null\n"),
                false,
            );
            legs.insert((gw.id.clone(), vpc.id.clone()), (t, address, seg.clone()));
        }
        for table in &gw.tables {
            let n = names.table(&table.id);
            for (dest, att) in &table.routes {
                let Some(a) = gw.attachments.iter().find(|a| &a.id == att) else {
                    continue;
                };
                let Some((_, _, seg)) = legs.get(&(gw.id.clone(), a.vpc_id.clone())) else {
                    continue;
                };
                let v = names.vpc(&a.vpc_id);
                put(
                    &mut d,
                    Key::Route(ns.clone(), n, *dest),
                    format!("{} route {dest} -> {att}", gw.id),
                    format!(
                        "ip -n {ns} route replace {dest} via {} dev v{v} table {n}\n",
                        router(seg.cidr)
                    ),
                    format!("ip -n {ns} route del {dest} table {n} 2>/dev/null\n"),
                    true,
                );
            }
        }
        for a in &gw.attachments {
            let (Some(table), Some(_)) = (&a.table, legs.get(&(gw.id.clone(), a.vpc_id.clone())))
            else {
                continue;
            };
            let n = names.table(table);
            let v = names.vpc(&a.vpc_id);
            put(
                &mut d,
                Key::Rule(ns.clone(), format!("v{v}")),
                format!("{} looks up {table} for traffic from {}", gw.id, a.vpc_id),
                format!("ip -n {ns} rule add iif v{v} lookup {n} pref 100\n"),
                format!("ip -n {ns} rule del iif v{v} lookup {n} pref 100 2>/dev/null\n"),
                false,
            );
        }
    }

    // Route tables: one kernel table each in the VPC router, looked up by
    // the subnet (bridge) a packet arrives from.
    for vpc in &snap.vpcs {
        let v = names.vpc(&vpc.id);
        let ns = format!("vpc{v}");
        let segs = segments.get(vpc.id.as_str()).cloned().unwrap_or_default();
        let tables: Vec<&crate::cloud::RouteTable> = snap
            .route_tables
            .iter()
            .filter(|t| t.vpc_id == vpc.id)
            .collect();
        let main = tables.iter().find(|t| t.main);
        for t in &tables {
            let n = names.table(&t.id);
            for s in &segs {
                put(
                    &mut d,
                    Key::Route(ns.clone(), n, s.cidr),
                    format!("{} local {}", t.id, s.cidr),
                    format!(
                        "ip -n {ns} route replace {} dev {} table {n}\n",
                        s.cidr,
                        s.bridge()
                    ),
                    format!("ip -n {ns} route del {} table {n} 2>/dev/null\n", s.cidr),
                    true,
                );
            }
            for (dest, target) in &t.routes {
                let via = match target {
                    Target::Local => continue,
                    Target::InternetGateway => Some(format!("via {WAN_ROUTER} dev wan0")),
                    Target::Instance(id) => instances
                        .get(id.as_str())
                        .filter(|i| i.vpc_id == vpc.id)
                        .and_then(|i| {
                            segment_holding(&vpc.id, i.private_ip)
                                .map(|s| format!("via {} dev {}", i.private_ip, s.bridge()))
                        }),
                    Target::Interface(eni) => by_interface
                        .get(eni.as_str())
                        .filter(|i| i.vpc_id == vpc.id)
                        .and_then(|i| {
                            segment_holding(&vpc.id, i.private_ip)
                                .map(|s| format!("via {} dev {}", i.private_ip, s.bridge()))
                        }),
                    Target::TransitGateway(gw) => legs
                        .get(&(gw.clone(), vpc.id.clone()))
                        .map(|(_, address, seg)| format!("via {address} dev {}", seg.bridge())),
                    Target::Other(_) => None,
                };
                let how = match &via {
                    Some(via) => format!("{dest} {via}"),
                    None => format!("blackhole {dest}"),
                };
                put(
                    &mut d,
                    Key::Route(ns.clone(), n, *dest),
                    format!("{} route {dest} -> {}", t.id, describe(target)),
                    format!("ip -n {ns} route replace {how} table {n}\n"),
                    format!("ip -n {ns} route del {dest} table {n} 2>/dev/null\n"),
                    true,
                );
            }
        }
        for s in &segs {
            let table = s
                .subnet
                .as_ref()
                .and_then(|sub| tables.iter().find(|t| t.subnets.contains(sub)))
                .or(main);
            let Some(table) = table else { continue };
            let n = names.table(&table.id);
            let br = s.bridge();
            put(
                &mut d,
                Key::Rule(ns.clone(), br.clone()),
                format!("{} routes {} by {}", vpc.id, s.cidr, table.id),
                format!("ip -n {ns} rule add iif {br} lookup {n} pref 100\n"),
                format!("ip -n {ns} rule del iif {br} lookup {n} pref 100 2>/dev/null\n"),
                false,
            );
        }

        // A test host on each CIDR.
        for (i, c) in vpc.cidrs.iter().enumerate() {
            let seg = segs
                .iter()
                .find(|s| s.subnet.is_some() && c.contains(&s.cidr))
                .or_else(|| segs.iter().find(|s| s.cidr == *c));
            let Some(seg) = seg else { continue };
            let name = if i == 0 {
                format!("h{v}")
            } else {
                format!("h{v}-{}", i + 1)
            };
            let address = host_address(seg.cidr);
            put(
                &mut d,
                Key::Host(name.clone()),
                format!("test host {name} at {address} ({}, {})", vpc.region, vpc.id),
                format!(
                    "{mk}ip -n {name} link show eth0 >/dev/null 2>&1 || ip link add eth0 netns {name} type veth peer name h{i} netns {ns}\n\
                     ip -n {ns} link set h{i} master {br} up\n\
                     ip -n {name} addr flush dev eth0\nip -n {name} addr add {address}/{p} dev eth0\nip -n {name} link set eth0 up\n\
                     ip -n {name} route replace default via {gw}\n",
                    mk = ns_exists(&name),
                    br = seg.bridge(),
                    p = seg.cidr.prefix_len(),
                    gw = router(seg.cidr),
                ),
                format!("ip netns del {name}\n"),
                // A host that moves (its CIDR gained a subnet) keeps its
                // namespace: the up script moves its link and address. A
                // namespace deleted and made again can hold up the guest
                // for seconds, and its processes (demo traffic) would go.
                true,
            );
            d.hosts.push(Host {
                name,
                region: vpc.region.clone(),
                vpc_id: vpc.id.clone(),
                cidr: *c,
                address,
            });
        }
    }

    // Instances.
    for i in &snap.instances {
        let Some(seg) = segment_of(&i.vpc_id, &i.subnet_id) else {
            continue;
        };
        let Some(b) = boot(i) else { continue };
        let v = names.vpc(&i.vpc_id);
        let k = names.instance(&i.id);
        let ns = &i.id;
        // Few processes (each costs tens of milliseconds in the guest): a
        // fresh namespace each time (a step that failed half-way starts
        // over), the rest in one `ip -batch`. What EC2 gives the instance
        // besides its subnet (IMDS, the control plane, AWS) the guest binds
        // inside the namespace itself (see `guest.rs`).
        let mut up = String::new();
        let _ = write!(
            up,
            "if [ -e /run/netns/{ns} ]; then ip -n {ns} link del eth0 2>/dev/null || true; ip netns del {ns}; fi\n\
             ip netns add {ns}\n\
             ip link add eth0 {mac}netns {ns} type veth peer name i{k} netns vpc{v}\n\
             ip -n vpc{v} link set i{k} master {br} up\n\
             ip -n {ns} -batch - <<'IP'\nlink set lo up\naddr add 169.254.169.254/32 dev lo\n\
             addr add {ip}/{p} dev eth0\nlink set eth0 up\nroute add default via {gw}\nIP\n{boot}",
            br = seg.bridge(),
            mac = if i.mac.is_empty() {
                String::new()
            } else {
                format!("address {} ", i.mac)
            },
            ip = i.private_ip,
            p = seg.cidr.prefix_len(),
            gw = router(seg.cidr),
            boot = b.boot,
        );
        put(
            &mut d,
            Key::Instance(i.id.clone()),
            format!("instance {} ({}, {}, {})", i.id, i.region, i.availability_zone, i.private_ip),
            up,
            format!(
                "for p in $(ip netns pids {ns}); do kill -9 $p 2>/dev/null || true; done\nip netns del {ns}\nrm -rf /run/lab/{ns} /run/lab/{ns}.*\n"
            ),
            false,
        );
    }

    // Elastic IPs: routed to the VPC of the instance that holds each, and
    // NATed there to its private address.
    for a in &snap.addresses {
        let inst = a
            .instance_id
            .as_deref()
            .and_then(|id| instances.get(id))
            .or_else(|| a.interface_id.as_deref().and_then(|e| by_interface.get(e)));
        let Some(inst) = inst else { continue };
        let id = &inst.id;
        let private = a.private_ip.unwrap_or(inst.private_ip);
        let v = names.vpc(&inst.vpc_id);
        let prio = names.nat(a.public_ip);
        let ns = format!("vpc{v}");
        let eip = a.public_ip;
        put(
            &mut d,
            Key::Nat(v, eip),
            format!("Elastic IP {eip} -> {id} ({private})"),
            format!(
                "tc -n {ns} filter replace dev wan0 ingress prio {prio} protocol ip u32 match ip dst {eip}/32 action nat ingress {eip}/32 {private}\n\
                 tc -n {ns} filter replace dev wan0 egress prio {prio} protocol ip u32 match ip src {private}/32 action nat egress {private}/32 {eip}\n"
            ),
            format!(
                "tc -n {ns} filter del dev wan0 ingress prio {prio} 2>/dev/null\ntc -n {ns} filter del dev wan0 egress prio {prio} 2>/dev/null\n"
            ),
            false,
        );
        put(
            &mut d,
            Key::WanRoute(eip),
            format!("WAN: {eip} is at {}", inst.vpc_id),
            format!("ip -n wan route replace {eip}/32 via {}\n", vpc_wan(v)),
            format!("ip -n wan route del {eip}/32 2>/dev/null\n"),
            true,
        );
    }

    // Demo traffic: every primary test host pings the others' every few
    // seconds, as workloads in real VPCs would talk, so that tunnels carry
    // packets (and show counters) without anyone typing a ping.
    if traffic {
        let primary: Vec<&Host> = d.hosts.iter().filter(|h| !h.name.contains('-')).collect();
        let mut talks = Vec::new();
        for h in &primary {
            let others: Vec<String> = primary
                .iter()
                .filter(|o| o.vpc_id != h.vpc_id)
                .map(|o| o.address.to_string())
                .collect();
            if others.is_empty() {
                continue;
            }
            let name = &h.name;
            let pid = format!("/run/lab/traffic-{name}.pid");
            talks.push((
                Key::Traffic(name.clone()),
                format!("demo traffic from {name} to {}", others.join(" ")),
                // One ping process per address, each a process group of
                // its own (a loop spawning a ping per packet would keep the
                // one-vCPU guest busy while instances boot). The first
                // answer's time (`ping -D`) is marked, relative to the lab
                // folder where guest scripts run, for the lab's timeline.
                format!(
                    "if [ -f {pid} ]; then for p in $(cat {pid}); do kill -TERM -$p 2>/dev/null || true; done; fi\n\
                     : > {pid}\n\
                     mkdir -p {TRAFFIC_MARKS}\n\
                     for a in {}; do\n\
                     ip netns exec {name} setsid sh -c 'ping -D -n -i 1 -W 1 '$a' 2>/dev/null | {{ while read -r l; do case $l in *\"bytes from\"*) t=${{l#[}}; echo \"${{t%%]*}}\" > {TRAFFIC_MARKS}/{name}-'$a'; break;; esac; done; exec cat > /dev/null; }}' > /dev/null 2>&1 < /dev/null &\n\
                     echo $! >> {pid}\n\
                     done\n",
                    others.join(" ")
                ),
                format!("if [ -f {pid} ]; then for p in $(cat {pid}); do kill -TERM -$p 2>/dev/null || true; done; fi\nrm -f {pid}\n"),
            ));
        }
        for (k, what, up, down) in talks {
            put(&mut d, k, what, up, down, false);
        }
    }
    d
}

fn describe(t: &Target) -> String {
    match t {
        Target::Local => "local".into(),
        Target::InternetGateway => "internet gateway".into(),
        Target::Instance(i) => i.clone(),
        Target::Interface(e) => e.clone(),
        Target::TransitGateway(g) => g.clone(),
        Target::Other(o) => format!("{o} (not modelled: blackhole)"),
    }
}

fn join(cidrs: &[Ipv4Net]) -> String {
    cidrs
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
