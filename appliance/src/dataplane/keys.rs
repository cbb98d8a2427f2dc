//! One ESP key per tunnel direction, derived from the epoch's data key with
//! HKDF-SHA256. Both ends of a direction derive the same key: the info names
//! the network, the epoch, the sending site and member, the receiving site
//! and the SPI, all of which both ends know.

use crate::protocol::Member;
use crate::xfrm::{SaKey, AEAD_KEY_LEN};
use hkdf::Hkdf;
use sha2::Sha256;
use std::fmt;
use uuid::Uuid;
use zeroize::Zeroizing;

const SALT: &[u8] = b"vpcmesh/esp/v1";

/// The plaintext data key of one epoch, as KMS returned it. Wiped on drop,
/// never printed.
#[derive(Clone)]
pub struct DataKey(Zeroizing<Vec<u8>>);

impl DataKey {
    pub fn new(bytes: Vec<u8>) -> Self {
        DataKey(Zeroizing::new(bytes))
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

pub fn direction_key(
    data_key: &DataKey,
    network: Uuid,
    epoch: u32,
    (from_site, from_member): (Uuid, Member),
    to_site: Uuid,
    spi: u32,
) -> SaKey {
    let mut info = Vec::with_capacity(16 * 3 + 9);
    info.extend_from_slice(network.as_bytes());
    info.extend_from_slice(&epoch.to_be_bytes());
    info.extend_from_slice(from_site.as_bytes());
    info.push(from_member.index() as u8);
    info.extend_from_slice(to_site.as_bytes());
    info.extend_from_slice(&spi.to_be_bytes());
    let hk = Hkdf::<Sha256>::new(Some(SALT), &data_key.0);
    let mut okm = Zeroizing::new(vec![0u8; AEAD_KEY_LEN]);
    hk.expand(&info, &mut okm)
        .expect("36 bytes is far below HKDF-SHA256's 8160-byte limit");
    SaKey::new(okm.to_vec())
}

const HEARTBEAT_SALT: &[u8] = b"vpcmesh/heartbeat/v1";

/// The key that authenticates heartbeats between the two members of
/// `site` in `epoch`: both members derive it, and it differs from every ESP
/// key (another salt) and between sites and epochs (the info).
pub fn heartbeat_key(data_key: &DataKey, network: Uuid, epoch: u32, site: Uuid) -> HeartbeatKey {
    let mut info = Vec::with_capacity(16 * 2 + 4);
    info.extend_from_slice(network.as_bytes());
    info.extend_from_slice(&epoch.to_be_bytes());
    info.extend_from_slice(site.as_bytes());
    let hk = Hkdf::<Sha256>::new(Some(HEARTBEAT_SALT), &data_key.0);
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(&info, okm.as_mut())
        .expect("32 bytes is far below HKDF-SHA256's 8160-byte limit");
    HeartbeatKey(okm)
}

/// A heartbeat MAC key. Wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct HeartbeatKey(Zeroizing<[u8; 32]>);

impl HeartbeatKey {
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for HeartbeatKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeartbeatKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(bytes: u8) -> DataKey {
        DataKey::new(vec![bytes; 32])
    }

    #[test]
    fn both_ends_derive_the_same_key_and_directions_differ() {
        let (n, a, b) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let sender = direction_key(&key(7), n, 1, (a, Member::A), b, 0x1234);
        let receiver = direction_key(&key(7), n, 1, (a, Member::A), b, 0x1234);
        assert_eq!(sender, receiver);
        assert_ne!(
            sender,
            direction_key(&key(7), n, 1, (b, Member::A), a, 0x1234)
        );
        assert_ne!(
            sender,
            direction_key(&key(7), n, 1, (a, Member::B), b, 0x1234)
        );
        assert_ne!(
            sender,
            direction_key(&key(7), n, 2, (a, Member::A), b, 0x1234)
        );
        assert_ne!(
            sender,
            direction_key(&key(8), n, 1, (a, Member::A), b, 0x1234)
        );
    }

    #[test]
    fn keys_never_print() {
        let k = direction_key(
            &key(9),
            Uuid::nil(),
            1,
            (Uuid::nil(), Member::A),
            Uuid::nil(),
            9,
        );
        assert_eq!(format!("{k:?}"), "SaKey([36 bytes redacted])");
        assert_eq!(format!("{:?}", key(9)), "DataKey([redacted])");
    }
}
