//! The IMDS paths the agent reads, shared by the client and the emulator so
//! the two cannot drift apart.

pub const TOKEN: &str = "/latest/api/token";
pub const INSTANCE_ID: &str = "/latest/meta-data/instance-id";
pub const AVAILABILITY_ZONE: &str = "/latest/meta-data/placement/availability-zone";
pub const REGION: &str = "/latest/meta-data/placement/region";
pub const LOCAL_IPV4: &str = "/latest/meta-data/local-ipv4";
pub const MAC: &str = "/latest/meta-data/mac";
pub const PUBLIC_IPV4: &str = "/latest/meta-data/public-ipv4";
pub const SPOT_INSTANCE_ACTION: &str = "/latest/meta-data/spot/instance-action";
pub const IDENTITY_DOCUMENT: &str = "/latest/dynamic/instance-identity/document";
pub const IDENTITY_SIGNATURE: &str = "/latest/dynamic/instance-identity/signature";

/// The ENI behind the interface with this MAC address.
pub fn interface_id(mac: &str) -> String {
    format!("/latest/meta-data/network/interfaces/macs/{mac}/interface-id")
}

/// The request header that asks for a token of this many seconds.
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// The request header that carries the token.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// EC2 refuses token requests that went through a proxy (they carry this).
pub const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";
/// The longest token EC2 issues (six hours).
pub const MAX_TOKEN_TTL_SECS: u32 = 21_600;
