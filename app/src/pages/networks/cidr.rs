//! IPv4 CIDR overlap for the wizard's as-you-pick warnings (the server checks
//! again when the network is created).

fn parse(cidr: &str) -> Option<(u32, u32)> {
    let (addr, len) = cidr.split_once('/')?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let octets: Vec<u32> = addr
        .split('.')
        .map(|o| o.parse().ok().filter(|v| *v <= 255))
        .collect::<Option<_>>()?;
    if octets.len() != 4 {
        return None;
    }
    let ip = octets.iter().fold(0u32, |acc, o| (acc << 8) | o);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((ip & mask, mask))
}

/// Whether two CIDR blocks share any address.
pub fn overlaps(a: &str, b: &str) -> bool {
    match (parse(a), parse(b)) {
        (Some((na, ma)), Some((nb, mb))) => {
            let common = ma & mb;
            na & common == nb & common
        }
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
        assert!(!overlaps("nonsense", "10.0.0.0/8"));
    }
}
