//! Heartbeats between the two members of a site: one UDP datagram every
//! interval to the partner's private address, port 4800.
//!
//! Authenticated with HMAC-SHA256 (truncated to 128 bits) under a key both
//! members derive from the epoch's data key (`heartbeat_key`), so nothing
//! else in the VPC can fake one: a forged "I am alive" would suppress a
//! failover, a forged handover would start one. Replays are refused: within
//! one agent process (`boot`) the sequence number must grow, across
//! processes the timestamp must, and every beat must be recent by the
//! receiver's clock (EC2 instances keep time with the Amazon Time Sync
//! Service; `MAX_SKEW` leaves room for far worse).
//!
//! Layout (76 bytes, big-endian): magic "VMHB", version, flags, member,
//! reserved, epoch (4), site (16), boot (16), seq (8), unix ms (8), MAC (16).

use crate::dataplane::HeartbeatKey;
use crate::protocol::Member;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;
use uuid::Uuid;

const MAGIC: &[u8; 4] = b"VMHB";
const VERSION: u8 = 1;
const SIGNED_LEN: usize = 60;
const MAC_LEN: usize = 16;
pub const BEAT_LEN: usize = SIGNED_LEN + MAC_LEN;
/// Beats older or newer than this by the receiver's clock are refused.
pub const MAX_SKEW: Duration = Duration::from_secs(2);

const FLAG_ACTIVE: u8 = 1;
const FLAG_HANDOVER: u8 = 2;
/// Agents before this flag ignore it (they judge the silence as before).
const FLAG_RESTARTING: u8 = 4;

/// What one member tells the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Beat {
    pub member: Member,
    pub site: Uuid,
    pub epoch: u32,
    /// Random per agent process.
    pub boot: [u8; 16],
    pub seq: u64,
    pub unix_ms: u64,
    /// The sender holds the site's address and routes.
    pub active: bool,
    /// The sender is leaving (a spot interruption notice) and asks the
    /// receiver to take over now.
    pub handover: bool,
    /// The sender's agent is stopping to start again (`systemctl restart`,
    /// an upgrade) while its kernel keeps forwarding: its silence for a
    /// moment is no failure.
    pub restarting: bool,
}

/// Why a datagram was not taken as the partner's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeatError {
    #[error("{0} bytes is not a heartbeat")]
    Length(usize),
    #[error("not a vpcmesh heartbeat (magic or version)")]
    Format,
    #[error("member byte {0} names no member")]
    Member(u8),
    #[error("a heartbeat of site {0}, not this site")]
    OtherSite(Uuid),
    #[error("a heartbeat from this member itself")]
    FromSelf,
    #[error("epoch {0} has no key here")]
    UnknownEpoch(u32),
    #[error("the MAC does not verify")]
    Mac,
    #[error("the heartbeat is {0} ms away from this clock")]
    Stale(i64),
    #[error("a replayed heartbeat (not newer than the last one taken)")]
    Replay,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &HeartbeatKey) -> HmacSha256 {
    // HMAC takes a key of any length; 32 bytes never fails.
    <HmacSha256 as Mac>::new_from_slice(key.bytes()).expect("HMAC accepts any key length")
}

impl Beat {
    pub fn encode(&self, key: &HeartbeatKey) -> [u8; BEAT_LEN] {
        let mut b = [0u8; BEAT_LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[5] = (if self.active { FLAG_ACTIVE } else { 0 })
            | (if self.handover { FLAG_HANDOVER } else { 0 })
            | (if self.restarting { FLAG_RESTARTING } else { 0 });
        b[6] = self.member.index() as u8;
        b[8..12].copy_from_slice(&self.epoch.to_be_bytes());
        b[12..28].copy_from_slice(self.site.as_bytes());
        b[28..44].copy_from_slice(&self.boot);
        b[44..52].copy_from_slice(&self.seq.to_be_bytes());
        b[52..60].copy_from_slice(&self.unix_ms.to_be_bytes());
        let mut m = mac(key);
        m.update(&b[..SIGNED_LEN]);
        let tag = m.finalize().into_bytes();
        b[SIGNED_LEN..].copy_from_slice(&tag[..MAC_LEN]);
        b
    }
}

/// Reads and checks the partner's beats for one member of one site.
#[derive(Debug)]
pub struct Receiver {
    pub site: Uuid,
    pub me: Member,
    last: Option<(u64, [u8; 16], u64)>,
}

impl Receiver {
    pub fn new(site: Uuid, me: Member) -> Self {
        Receiver {
            site,
            me,
            last: None,
        }
    }

    /// The beat in `datagram` if it is the partner's, authentic and new;
    /// `key_of` gives the heartbeat key of an epoch in play.
    pub fn accept<'k>(
        &mut self,
        datagram: &[u8],
        now_unix_ms: u64,
        key_of: impl Fn(u32) -> Option<&'k HeartbeatKey>,
    ) -> Result<Beat, BeatError> {
        if datagram.len() != BEAT_LEN {
            return Err(BeatError::Length(datagram.len()));
        }
        if &datagram[0..4] != MAGIC || datagram[4] != VERSION {
            return Err(BeatError::Format);
        }
        let member = match datagram[6] {
            0 => Member::A,
            1 => Member::B,
            m => return Err(BeatError::Member(m)),
        };
        let epoch = u32::from_be_bytes(be(&datagram[8..12]));
        let site = Uuid::from_bytes(be(&datagram[12..28]));
        if site != self.site {
            return Err(BeatError::OtherSite(site));
        }
        if member == self.me {
            return Err(BeatError::FromSelf);
        }
        let key = key_of(epoch).ok_or(BeatError::UnknownEpoch(epoch))?;
        let mut m = mac(key);
        m.update(&datagram[..SIGNED_LEN]);
        m.verify_truncated_left(&datagram[SIGNED_LEN..])
            .map_err(|_| BeatError::Mac)?;
        let boot: [u8; 16] = be(&datagram[28..44]);
        let seq = u64::from_be_bytes(be(&datagram[44..52]));
        let unix_ms = u64::from_be_bytes(be(&datagram[52..60]));
        let skew = now_unix_ms as i64 - unix_ms as i64;
        if skew.unsigned_abs() > MAX_SKEW.as_millis() as u64 {
            return Err(BeatError::Stale(skew));
        }
        if let Some((last_ms, last_boot, last_seq)) = self.last {
            let newer = if boot == last_boot {
                seq > last_seq
            } else {
                unix_ms > last_ms
            };
            if !newer {
                return Err(BeatError::Replay);
            }
        }
        self.last = Some((unix_ms, boot, seq));
        let flags = datagram[5];
        Ok(Beat {
            member,
            site,
            epoch,
            boot,
            seq,
            unix_ms,
            active: flags & FLAG_ACTIVE != 0,
            handover: flags & FLAG_HANDOVER != 0,
            restarting: flags & FLAG_RESTARTING != 0,
        })
    }
}

/// A fixed-size array from a slice of exactly that size.
fn be<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{heartbeat_key, DataKey};

    const NOW: u64 = 1_800_000_000_000;

    fn key(epoch: u32) -> HeartbeatKey {
        heartbeat_key(
            &DataKey::new(vec![7; 32]),
            Uuid::from_u128(1),
            epoch,
            Uuid::from_u128(2),
        )
    }

    fn beat(seq: u64) -> Beat {
        Beat {
            member: Member::A,
            site: Uuid::from_u128(2),
            epoch: 3,
            boot: [9; 16],
            seq,
            unix_ms: NOW + seq,
            active: true,
            handover: false,
            restarting: false,
        }
    }

    fn receiver() -> Receiver {
        Receiver::new(Uuid::from_u128(2), Member::B)
    }

    #[test]
    fn a_beat_round_trips_and_its_flags_survive() {
        let k = key(3);
        let mut b = beat(1);
        b.handover = true;
        let got = receiver().accept(&b.encode(&k), NOW, |e| (e == 3).then_some(&k));
        assert_eq!(got, Ok(b));
        let mut b = beat(2);
        b.restarting = true;
        let got = receiver().accept(&b.encode(&k), NOW, |e| (e == 3).then_some(&k));
        assert_eq!(got, Ok(b));
        assert_eq!(b.encode(&k)[5], FLAG_ACTIVE | FLAG_RESTARTING);
    }

    #[test]
    fn a_forged_or_tampered_beat_is_refused() {
        let k = key(3);
        let other = key(4);
        let mut r = receiver();
        // Signed with another key (what anyone without the data key has).
        let forged = beat(1).encode(&other);
        assert_eq!(r.accept(&forged, NOW, |_| Some(&k)), Err(BeatError::Mac));
        // One flipped flag bit: "active" turned off, a handover turned on.
        let mut bytes = beat(1).encode(&k);
        bytes[5] ^= FLAG_HANDOVER;
        assert_eq!(r.accept(&bytes, NOW, |_| Some(&k)), Err(BeatError::Mac));
        // A forged "restarting" (it would hold a failover off).
        let mut bytes = beat(1).encode(&k);
        bytes[5] |= FLAG_RESTARTING;
        assert_eq!(r.accept(&bytes, NOW, |_| Some(&k)), Err(BeatError::Mac));
        assert_eq!(
            r.accept(&bytes[..40], NOW, |_| Some(&k)),
            Err(BeatError::Length(40))
        );
        // An epoch without a key here.
        assert_eq!(
            r.accept(&beat(1).encode(&k), NOW, |_| None),
            Err(BeatError::UnknownEpoch(3))
        );
    }

    #[test]
    fn replays_old_beats_and_beats_from_elsewhere_are_refused() {
        let k = key(3);
        let mut r = receiver();
        let first = beat(5).encode(&k);
        assert!(r.accept(&first, NOW, |_| Some(&k)).is_ok());
        // The same beat again, and an older one of the same process.
        assert_eq!(r.accept(&first, NOW, |_| Some(&k)), Err(BeatError::Replay));
        assert_eq!(
            r.accept(&beat(4).encode(&k), NOW, |_| Some(&k)),
            Err(BeatError::Replay)
        );
        assert!(r.accept(&beat(6).encode(&k), NOW, |_| Some(&k)).is_ok());
        // A beat of an earlier process (another boot id, older time).
        let mut earlier = beat(100);
        earlier.boot = [1; 16];
        earlier.unix_ms = NOW;
        assert_eq!(
            r.accept(&earlier.encode(&k), NOW, |_| Some(&k)),
            Err(BeatError::Replay)
        );
        // A restarted partner (new boot id, later time) is taken.
        let mut restarted = beat(1);
        restarted.boot = [2; 16];
        restarted.unix_ms = NOW + 50;
        assert!(r.accept(&restarted.encode(&k), NOW, |_| Some(&k)).is_ok());
        // Recorded long ago and sent now.
        let mut old = beat(7);
        old.boot = [3; 16];
        old.unix_ms = NOW - 10_000;
        assert_eq!(
            receiver().accept(&old.encode(&k), NOW, |_| Some(&k)),
            Err(BeatError::Stale(10_000))
        );
        // Our own beat reflected back, and another site's.
        let mut own = beat(8);
        own.member = Member::B;
        assert_eq!(
            r.accept(&own.encode(&k), NOW + 8, |_| Some(&k)),
            Err(BeatError::FromSelf)
        );
        let mut elsewhere = beat(9);
        elsewhere.site = Uuid::from_u128(5);
        assert_eq!(
            r.accept(&elsewhere.encode(&k), NOW + 9, |_| Some(&k)),
            Err(BeatError::OtherSite(Uuid::from_u128(5)))
        );
    }

    #[test]
    fn heartbeat_keys_differ_by_epoch_and_site_and_never_print() {
        assert_ne!(key(3), key(4));
        let other_site = heartbeat_key(
            &DataKey::new(vec![7; 32]),
            Uuid::from_u128(1),
            3,
            Uuid::from_u128(9),
        );
        assert_ne!(key(3), other_site);
        assert_eq!(format!("{:?}", key(3)), "HeartbeatKey([redacted])");
    }
}
