//! What IMDS tells the agent, and the checks every answer passes before the
//! agent believes it (pure: no I/O).

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The instance the agent runs on, as IMDS describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceFacts {
    pub instance_id: String,
    pub availability_zone: String,
    pub region: String,
    pub private_ip: Ipv4Addr,
    /// The primary interface's MAC address (lower case).
    pub mac: String,
    /// The primary interface's ENI id.
    pub interface_id: String,
    /// `None` when the instance has no public address.
    pub public_ip: Option<Ipv4Addr>,
}

/// A spot interruption notice: EC2 will `action` the instance at `time`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpotAction {
    pub action: SpotActionKind,
    /// UTC, as EC2 writes it: `2026-01-02T03:04:05Z`.
    pub time: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpotActionKind {
    Terminate,
    Stop,
    Hibernate,
}

/// The instance identity document and its signature, exactly as served (the
/// signature covers these bytes, so they are kept as text, not re-encoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityDocument {
    pub document: String,
    pub signature: String,
}

/// A failed check: what the answer should have been.
pub type Expected = &'static str;

/// `i-` and 8 or 17 lower-case hex digits.
pub fn instance_id(text: &str) -> Result<String, Expected> {
    resource_id(text, "i-").ok_or("an instance id (i- and 8 or 17 hex digits)")
}

/// `eni-` and 8 or 17 lower-case hex digits.
pub fn interface_id(text: &str) -> Result<String, Expected> {
    resource_id(text, "eni-").ok_or("an interface id (eni- and 8 or 17 hex digits)")
}

fn resource_id(text: &str, prefix: &str) -> Option<String> {
    let hex = text.strip_prefix(prefix)?;
    let ok = matches!(hex.len(), 8 | 17)
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then(|| text.to_string())
}

/// A zone name: `us-east-1a`, `us-west-2-lax-1a`, `us-east-1-wl1-bos-wlz-1`.
pub fn availability_zone(text: &str) -> Result<String, Expected> {
    aws_name(text)
        .then(|| text.to_string())
        .ok_or("an availability zone name (like us-east-1a)")
}

/// A region name: `us-east-1`, `us-gov-west-1`.
pub fn region(text: &str) -> Result<String, Expected> {
    (aws_name(text) && text.ends_with(|c: char| c.is_ascii_digit()))
        .then(|| text.to_string())
        .ok_or("a region name (like us-east-1)")
}

/// Lower-case letters, digits and single dashes, starting with a letter.
fn aws_name(text: &str) -> bool {
    (2..=64).contains(&text.len())
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && !text.ends_with('-')
        && !text.contains("--")
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A zone belongs to the region its name starts with.
pub fn zone_in_region(zone: &str, region: &str) -> Result<(), Expected> {
    match zone.strip_prefix(region) {
        Some(rest) if !rest.is_empty() => Ok(()),
        _ => Err("a zone of the instance's region"),
    }
}

/// The region a zone name belongs to: the name up to its first number
/// (`us-gov-west-1a` -> `us-gov-west-1`, `us-west-2-lax-1a` -> `us-west-2`);
/// `None` when the name has no such shape.
pub fn region_of_zone(zone: &str) -> Option<String> {
    availability_zone(zone).ok()?;
    let mut end = 0;
    for part in zone.split('-') {
        let digits = part.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            let region = &zone[..end + digits];
            // A region has a partition, a name and a number at least.
            return (region.matches('-').count() >= 2).then(|| region.to_string());
        }
        end += part.len() + 1;
    }
    None
}

pub fn ipv4(text: &str) -> Result<Ipv4Addr, Expected> {
    text.parse().map_err(|_| "an IPv4 address")
}

/// Six colon-separated hex octets; returned in lower case, as IMDS uses it
/// in paths.
pub fn mac(text: &str) -> Result<String, Expected> {
    let octets: Vec<&str> = text.split(':').collect();
    let ok = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| text.to_ascii_lowercase())
        .ok_or("a MAC address (like 0e:12:34:56:78:9a)")
}

/// `{"action": "terminate", "time": "2026-01-02T03:04:05Z"}`.
pub fn spot_action(text: &str) -> Result<SpotAction, Expected> {
    const EXPECTED: Expected =
        "a spot notice ({\"action\": terminate|stop|hibernate, \"time\": \"YYYY-MM-DDTHH:MM:SSZ\"})";
    let notice: SpotAction = serde_json::from_str(text).map_err(|_| EXPECTED)?;
    utc_time(&notice.time).then_some(notice).ok_or(EXPECTED)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (the shape only; the failover logic parses it).
fn utc_time(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// The document is a JSON object (kept verbatim).
pub fn identity_document(text: &str) -> Result<String, Expected> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(_)) => Ok(text.to_string()),
        _ => Err("an identity document (a JSON object)"),
    }
}

/// The signature is base64 (EC2 may wrap it over lines).
pub fn identity_signature(text: &str) -> Result<String, Expected> {
    let ok = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=\n\r".contains(&b));
    ok.then(|| text.to_string())
        .ok_or("an identity signature (base64)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_i_and_8_or_17_hex_digits() {
        assert!(instance_id("i-0123456789abcdef0").is_ok());
        assert!(instance_id("i-1234abcd").is_ok());
        for bad in [
            "",
            "i-",
            "i-0123456789ABCDEF0",
            "i-0123456789abcdef",
            "x-0123456789abcdef0",
            "i-0123456789abcdefg",
            "i-0123456789abcdef0\n",
            "<html>",
        ] {
            assert!(instance_id(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn interface_ids_are_eni_and_hex() {
        assert!(interface_id("eni-0123456789abcdef0").is_ok());
        assert!(interface_id("i-0123456789abcdef0").is_err());
        assert!(interface_id("eni-xyz").is_err());
    }

    #[test]
    fn zones_and_regions_have_aws_names() {
        for zone in ["us-east-1a", "us-west-2-lax-1a", "us-east-1-wl1-bos-wlz-1"] {
            assert!(availability_zone(zone).is_ok(), "{zone}");
        }
        for bad in [
            "",
            "US-EAST-1A",
            "us east 1a",
            "-us-east-1a",
            "us--east-1a",
            "1a",
        ] {
            assert!(availability_zone(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(region("us-gov-west-1").is_ok());
        assert!(region("us-east-1a").is_err());
        assert!(zone_in_region("us-east-1a", "us-east-1").is_ok());
        assert!(zone_in_region("eu-west-1a", "us-east-1").is_err());
        assert!(zone_in_region("us-east-1", "us-east-1").is_err());
    }

    #[test]
    fn a_zone_names_its_region() {
        for (zone, region) in [
            ("us-east-1a", Some("us-east-1")),
            ("ap-northeast-1d", Some("ap-northeast-1")),
            ("us-gov-west-1a", Some("us-gov-west-1")),
            ("us-west-2-lax-1a", Some("us-west-2")),
            ("us-east-1-wl1-bos-wlz-1", Some("us-east-1")),
            ("lab-1a", None),
            ("zone", None),
        ] {
            assert_eq!(region_of_zone(zone).as_deref(), region, "{zone}");
        }
    }

    #[test]
    fn macs_are_six_hex_octets_in_lower_case() {
        assert_eq!(mac("0E:12:34:56:78:9a"), Ok("0e:12:34:56:78:9a".into()));
        for bad in [
            "0e:12:34:56:78",
            "0e:12:34:56:78:9a:bc",
            "0e-12-34-56-78-9a",
            "0e:12:34:56:78:zz",
        ] {
            assert!(mac(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn spot_notices_name_an_action_and_a_utc_time() {
        assert_eq!(
            spot_action(r#"{"action":"terminate","time":"2026-01-02T03:04:05Z"}"#),
            Ok(SpotAction {
                action: SpotActionKind::Terminate,
                time: "2026-01-02T03:04:05Z".into()
            })
        );
        for bad in [
            r#"{"action":"explode","time":"2026-01-02T03:04:05Z"}"#,
            r#"{"action":"stop","time":"soon"}"#,
            r#"{"action":"stop"}"#,
            "terminate",
        ] {
            assert!(spot_action(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn identity_documents_are_json_objects_and_signatures_base64() {
        assert!(identity_document(r#"{"instanceId":"i-1234abcd"}"#).is_ok());
        assert!(identity_document("[1]").is_err());
        assert!(identity_signature("YWJj\nZA==").is_ok());
        assert!(identity_signature("not base64!").is_err());
    }
}
