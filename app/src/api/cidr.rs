//! IPv4 CIDR overlap: one rule for the wizard's as-you-pick warnings and the
//! server's check when a network is created (`topology::validate`).

use ipnet::Ipv4Net;

/// Whether two CIDR blocks share any address.
pub fn overlap(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// [`overlap`] of two typed-in blocks; text that is no IPv4 CIDR overlaps
/// nothing (the wizard says what is wrong with it elsewhere).
pub fn overlaps(a: &str, b: &str) -> bool {
    match (a.trim().parse::<Ipv4Net>(), b.trim().parse::<Ipv4Net>()) {
        (Ok(a), Ok(b)) => overlap(&a, &b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::overlaps;

    #[test]
    fn overlap_is_symmetric_and_exact() {
        assert!(overlaps("10.0.0.0/16", "10.0.128.0/17"));
        assert!(overlaps("10.0.128.0/17", "10.0.0.0/16"));
        assert!(!overlaps("10.0.0.0/16", "10.1.0.0/16"));
        assert!(overlaps("0.0.0.0/0", "192.168.1.0/24"));
        assert!(!overlaps("10.0.0.0/24", "10.0.1.0/24"));
        assert!(
            overlaps("10.0.0.7/16", "10.0.3.0/24"),
            "host bits are ignored"
        );
        assert!(!overlaps("nonsense", "10.0.0.0/8"));
        assert!(!overlaps("10.0.0.0/33", "10.0.0.0/8"));
    }
}
