use super::*;
use crate::cloud::{Address, Instance, RouteTable, Subnet, Vpc};

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("a literal CIDR")
}

fn instance(id: &str, subnet: &str, ip: &str) -> Instance {
    Instance {
        id: id.into(),
        region: "us-east-1".into(),
        vpc_id: "vpc-1".into(),
        subnet_id: subnet.into(),
        availability_zone: "us-east-1a".into(),
        private_ip: ip.parse().expect("literal"),
        mac: "0e:00:00:00:00:01".into(),
        interface_id: format!("eni-{id}"),
        launch_template: None,
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        instances: vec![
            instance("i-a", "subnet-a", "10.1.0.4"),
            instance("i-b", "subnet-b", "10.1.64.4"),
        ],
        vpcs: vec![Vpc {
            id: "vpc-1".into(),
            region: "us-east-1".into(),
            cidrs: vec![net("10.1.0.0/16"), net("10.33.0.0/16")],
            subnets: vec![
                Subnet {
                    id: "subnet-a".into(),
                    cidr: net("10.1.0.0/18"),
                },
                Subnet {
                    id: "subnet-b".into(),
                    cidr: net("10.1.64.0/18"),
                },
            ],
        }],
        route_tables: vec![RouteTable {
            id: "rtb-1".into(),
            vpc_id: "vpc-1".into(),
            main: false,
            subnets: vec!["subnet-a".into(), "subnet-b".into()],
            routes: vec![
                (net("10.1.0.0/16"), Target::Local),
                (net("0.0.0.0/0"), Target::InternetGateway),
                (net("10.2.0.0/16"), Target::Instance("i-a".into())),
                (net("10.3.0.0/16"), Target::Instance("i-gone".into())),
            ],
        }],
        addresses: vec![Address {
            public_ip: "198.18.0.1".parse().expect("literal"),
            instance_id: None,
            interface_id: Some("eni-i-a".into()),
            private_ip: Some("10.1.0.4".parse().expect("literal")),
        }],
        gateways: vec![],
    }
}

fn boot(i: &Instance) -> Option<InstanceBoot> {
    Some(InstanceBoot {
        dir: format!("/lab/{}", i.id),
        boot: format!("echo boot {}\n", i.id),
    })
}

fn route<'a>(d: &'a Desired, ns: &str, dest: &str) -> &'a str {
    d.resources
        .iter()
        .find(|(k, _)| matches!(k, Key::Route(n, _, to) if n == ns && *to == net(dest)))
        .map(|(_, r)| r.up.as_str())
        .unwrap_or_else(|| panic!("no route to {dest} in {ns}"))
}

#[test]
fn route_tables_become_kernel_tables_of_the_vpc_router() {
    let d = build(&snapshot(), &mut Names::default(), &boot, false);
    assert_eq!(
        route(&d, "vpc1", "10.2.0.0/16"),
        "ip -n vpc1 route replace 10.2.0.0/16 via 10.1.0.4 dev s0 table 100\n"
    );
    assert_eq!(
        route(&d, "vpc1", "0.0.0.0/0"),
        "ip -n vpc1 route replace 0.0.0.0/0 via 100.127.255.254 dev wan0 table 100\n"
    );
    // A route to an instance that is not running leads nowhere, as in AWS.
    assert_eq!(
        route(&d, "vpc1", "10.3.0.0/16"),
        "ip -n vpc1 route replace blackhole 10.3.0.0/16 table 100\n"
    );
    // Local: each subnet's bridge.
    assert!(route(&d, "vpc1", "10.1.64.0/18").contains("dev s1 table 100"));
    // Both subnets look their table up.
    for br in ["s0", "s1"] {
        let rule = &d.resources[&Key::Rule("vpc1".into(), br.into())];
        assert_eq!(
            rule.up,
            format!("ip -n vpc1 rule add iif {br} lookup 100 pref 100\n")
        );
    }
}

#[test]
fn every_cidr_gets_a_test_host_and_an_elastic_ip_is_natted_to_its_instance() {
    let d = build(&snapshot(), &mut Names::default(), &boot, false);
    let hosts: Vec<(String, String)> = d
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.address.to_string()))
        .collect();
    assert_eq!(
        hosts,
        vec![
            ("h1".into(), "10.1.63.254".into()),
            ("h1-2".into(), "10.33.255.254".into())
        ]
    );
    let nat = &d.resources[&Key::Nat(1, "198.18.0.1".parse().expect("literal"))];
    assert!(
        nat.up.contains("action nat ingress 198.18.0.1/32 10.1.0.4"),
        "{}",
        nat.up
    );
    assert!(
        nat.up.contains("action nat egress 10.1.0.4/32 198.18.0.1"),
        "{}",
        nat.up
    );
    let wan = &d.resources[&Key::WanRoute("198.18.0.1".parse().expect("literal"))];
    assert_eq!(
        wan.up,
        "ip -n wan route replace 198.18.0.1/32 via 100.127.0.1\n"
    );
    // The instance boots on its subnet's bridge with its own address and MAC.
    let i = &d.resources[&Key::Instance("i-a".into())];
    assert!(i.up.contains("master s0"), "{}", i.up);
    assert!(i.up.contains("addr add 10.1.0.4/18 dev eth0"), "{}", i.up);
    assert!(
        i.up.contains("ip link add eth0 address 0e:00:00:00:00:01 netns i-a type veth"),
        "{}",
        i.up
    );
    assert!(i.up.ends_with("echo boot i-a\n"), "{}", i.up);
}

#[test]
fn a_moved_address_and_a_terminated_instance_touch_only_what_changed() {
    let mut names = Names::default();
    let before = build(&snapshot(), &mut names, &boot, false);
    assert!(plan(&before.resources, &before.resources).is_empty());

    let mut moved = snapshot();
    moved.addresses[0].interface_id = Some("eni-i-b".into());
    moved.addresses[0].private_ip = Some("10.1.64.4".parse().expect("literal"));
    moved.instances.retain(|i| i.id != "i-a");
    let after = build(&moved, &mut names, &boot, false);
    let steps = plan(&before.resources, &after.resources);
    let described: Vec<String> = steps
        .iter()
        .map(|s| match s {
            Step::Up(k, _) => format!("up {k:?}"),
            Step::Down(k, _) => format!("down {k:?}"),
        })
        .collect();
    assert_eq!(
        described,
        vec![
            "down Instance(\"i-a\")".to_string(),
            "down Nat(1, 198.18.0.1)".into(),
            "up Route(\"vpc1\", 100, 10.2.0.0/16)".into(),
            "up Nat(1, 198.18.0.1)".into(),
        ],
        "{steps:#?}"
    );
    // The route that pointed at i-a now leads nowhere.
    assert!(route(&after, "vpc1", "10.2.0.0/16").contains("blackhole"));
}

#[test]
fn a_cidr_added_to_a_vpc_adds_its_segment_and_host_and_keeps_the_rest() {
    let mut names = Names::default();
    let before = build(&snapshot(), &mut names, &boot, false);
    let mut grown = snapshot();
    grown.vpcs[0].cidrs.push(net("10.44.0.0/16"));
    let after = build(&grown, &mut names, &boot, false);
    let steps = plan(&before.resources, &after.resources);
    assert!(!steps.is_empty());
    for s in &steps {
        let Step::Up(k, _) = s else {
            panic!("a CIDR added removed something: {s:#?}");
        };
        assert!(
            !before.resources.contains_key(k),
            "{k:?} was made again (with what hangs on it)"
        );
    }
    let made: Vec<&Key> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Up(k, _) => Some(k),
            Step::Down(..) => None,
        })
        .collect();
    assert!(made.contains(&&Key::Host("h1-3".into())), "{made:?}");
    assert!(made
        .iter()
        .any(|k| matches!(k, Key::Route(ns, _, to) if ns == "vpc1" && *to == net("10.44.0.0/16"))));
}

#[test]
fn a_host_whose_cidr_gains_a_subnet_moves_in_place() {
    let mut names = Names::default();
    let before = build(&snapshot(), &mut names, &boot, false);
    let mut split = snapshot();
    split.vpcs[0].subnets.push(Subnet {
        id: "subnet-c".into(),
        cidr: net("10.33.0.0/18"),
    });
    let after = build(&split, &mut names, &boot, false);
    let key = Key::Host("h1-2".into());
    let (old, new) = (&before.resources[&key], &after.resources[&key]);
    assert_ne!(
        old.up, new.up,
        "the host moved to the subnet's bridge and address"
    );
    let steps = plan(&before.resources, &after.resources);
    assert!(
        !steps
            .iter()
            .any(|s| matches!(s, Step::Down(k, _) if *k == key)),
        "the host's namespace is kept: {steps:#?}"
    );
    let up = steps
        .iter()
        .find_map(|s| match s {
            Step::Up(k, r) if *k == key => Some(r.up.as_str()),
            _ => None,
        })
        .expect("the host is brought to its new place");
    let flush = up
        .find("addr flush dev eth0")
        .expect("the old address goes");
    let add = up
        .find("addr add 10.33.63.254/18")
        .expect("the new one comes");
    assert!(flush < add, "{up}");
}

#[test]
fn names_never_move_to_another_object() {
    let mut names = Names::default();
    let mut snap = snapshot();
    build(&snap, &mut names, &boot, false);
    // A new subnet sorts first but takes the next free bridge name.
    snap.vpcs[0].subnets.insert(
        0,
        Subnet {
            id: "subnet-0".into(),
            cidr: net("10.1.128.0/18"),
        },
    );
    let d = build(&snap, &mut names, &boot, false);
    assert!(route(&d, "vpc1", "10.1.0.0/18").contains("dev s0 "));
    assert!(route(&d, "vpc1", "10.1.128.0/18").contains("dev s3 "));
}

#[test]
fn instances_without_a_host_side_wait_for_the_next_round() {
    let d = build(&snapshot(), &mut Names::default(), &|_| None, false);
    assert!(!d.resources.keys().any(|k| matches!(k, Key::Instance(_))));
}

#[test]
fn demo_traffic_is_one_long_ping_per_address_that_marks_its_first_answer() {
    let mut snap = snapshot();
    let mut other = snap.vpcs[0].clone();
    other.id = "vpc-2".into();
    other.cidrs = vec![net("10.2.0.0/16")];
    other.subnets = vec![Subnet {
        id: "subnet-c".into(),
        cidr: net("10.2.0.0/18"),
    }];
    snap.vpcs.push(other);
    let d = build(&snap, &mut Names::default(), &boot, true);
    let t = &d.resources[&Key::Traffic("h1".into())];
    assert!(t.up.contains("for a in 10.2.63.254; do"), "{}", t.up);
    assert_eq!(t.up.matches("ping ").count(), 1, "{}", t.up);
    assert!(t.up.contains("ping -D -n -i 1"), "{}", t.up);
    assert!(t.up.contains("> traffic/h1-'$a'"), "{}", t.up);
    assert!(t.down.contains("kill -TERM -$p"), "{}", t.down);
}
