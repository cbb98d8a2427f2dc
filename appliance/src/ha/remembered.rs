//! What a member remembers of its pair across an agent restart: that it was
//! armed (a passive that heard its partner), and when it last heard it. An
//! agent that restarts (an upgrade, a crash, `systemctl restart`) starts
//! unarmed and arms only on a beat; if the partner died meanwhile it would
//! never hear one, and never fail the partner over. With this mark, a
//! member armed moments ago is armed again (`Pair::resume_armed`).
//!
//! Only a fresh mark counts: the passive refreshes it every
//! [`REFRESH_EVERY`] while armed and removes it when it stops being armed,
//! and a mark older than [`RESUME_WITHIN`] (an instance that was down for a
//! while, whose partner has long taken over) is ignored. The mark names the
//! site and member, so a disk moved to another instance arms nothing.

use crate::protocol::Member;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

pub const FILE: &str = "ha-armed.json";
/// A mark at most this old (by the wall clock) arms a restarted member.
pub const RESUME_WITHIN: Duration = Duration::from_secs(30);
/// How often an armed member refreshes its mark.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Mark {
    site: Uuid,
    member: Member,
    heard_unix_ms: u64,
}

/// Records that this member is armed and heard its partner at `heard_unix_ms`.
pub fn save(dir: &Path, site: Uuid, member: Member, heard_unix_ms: u64) -> std::io::Result<()> {
    let mark = Mark {
        site,
        member,
        heard_unix_ms,
    };
    let bytes = serde_json::to_vec(&mark).map_err(std::io::Error::other)?;
    crate::state_file::write_atomically(dir, FILE, &bytes)
}

/// This member is not armed (any more).
pub fn clear(dir: &Path) -> std::io::Result<()> {
    crate::state_file::remove(dir, FILE)
}

/// How long ago this member (of `site`) last heard its partner while armed,
/// if its mark is fresh; a missing, foreign, stale or unreadable mark arms
/// nothing (and the last two say so in the log).
pub fn load(dir: &Path, site: Uuid, member: Member, now_unix_ms: u64) -> Option<Duration> {
    let text = std::fs::read(dir.join(FILE)).ok()?;
    let mark: Mark = match serde_json::from_slice(&text) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, file = FILE, "the HA mark cannot be read; starting unarmed");
            return None;
        }
    };
    if mark.site != site || mark.member != member {
        return None;
    }
    // A mark from the future (the clock stepped back) is as good as stale.
    let age = now_unix_ms.checked_sub(mark.heard_unix_ms)?;
    let age = Duration::from_millis(age);
    if age > RESUME_WITHIN {
        tracing::info!(
            age_ms = age.as_millis() as u64,
            "the HA mark is stale; starting unarmed"
        );
        return None;
    }
    Some(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vpcmesh-ha-mark-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_fresh_mark_of_this_member_arms_it_and_nothing_else_does() {
        let d = dir("fresh");
        let site = Uuid::from_u128(7);
        assert_eq!(load(&d, site, Member::B, NOW), None, "no mark");
        save(&d, site, Member::B, NOW - 4_000).unwrap();
        assert_eq!(load(&d, site, Member::B, NOW), Some(Duration::from_secs(4)));
        assert_eq!(load(&d, site, Member::A, NOW), None, "another member");
        assert_eq!(
            load(&d, Uuid::from_u128(8), Member::B, NOW),
            None,
            "another site"
        );
        let stale = NOW + RESUME_WITHIN.as_millis() as u64;
        assert_eq!(load(&d, site, Member::B, stale), None, "stale");
        assert_eq!(
            load(&d, site, Member::B, NOW - 5_000),
            None,
            "from the future"
        );
        clear(&d).unwrap();
        assert_eq!(load(&d, site, Member::B, NOW), None, "cleared");
        std::fs::write(d.join(FILE), b"{not json").unwrap();
        assert_eq!(load(&d, site, Member::B, NOW), None, "unreadable");
        let _ = std::fs::remove_dir_all(&d);
    }
}
