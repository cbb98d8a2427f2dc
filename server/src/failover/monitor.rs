//! The health monitor's backstop. A site's members fail over between
//! themselves within a second when the active dies; what they cannot see is
//! an active whose heartbeats still arrive but whose control channel froze
//! (it no longer reports, so it no longer gets configs). When the reported
//! active of a site has not reported for `failover_after` while its partner
//! reports, passive, the monitor asks the partner to take over through its
//! config.
//!
//! Every replica runs the monitor. A site's decisions are taken under its
//! row's lock and re-check the site's state under it, so however many
//! replicas look, one silence gets one request; a request not done within
//! `failover_retry` is asked once more, then the monitor waits for the
//! agents (or a human) for as long as that silence lasts.

use super::store::{self, NewRequest, SilentActive, TakeoverRow};
use super::Source;
use crate::{audit, state::AppState};
use sqlx::PgPool;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// One silence is asked about at most this often: once, and once more.
pub const MAX_ATTEMPTS: u16 = 2;

/// What to do about a silent active, given the site's latest request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Request {
        attempt: u16,
    },
    /// Why nothing is asked now.
    Wait(&'static str),
}

/// `silent`: the silent active and its last report (one silence).
pub fn decide(
    latest: Option<&TakeoverRow>,
    silent: (Uuid, Option<OffsetDateTime>),
    now: OffsetDateTime,
    retry_after: Duration,
) -> Decision {
    let Some(l) = latest else {
        return Decision::Request { attempt: 1 };
    };
    let same_silence = l.source == Source::HealthMonitor
        && l.silent_appliance_id == Some(silent.0)
        && l.silent_seen_at == silent.1;
    if l.pending() {
        if now - l.requested_at < retry_after {
            return Decision::Wait("a takeover is pending");
        }
        if !same_silence {
            // Someone else's request (a user's) that never got done.
            return Decision::Request { attempt: 1 };
        }
        if l.attempt < MAX_ATTEMPTS {
            return Decision::Request {
                attempt: l.attempt + 1,
            };
        }
        return Decision::Wait("asked twice for this silence; the agents decide");
    }
    if same_silence {
        return Decision::Wait("this silence was handled");
    }
    Decision::Request { attempt: 1 }
}

/// A request the monitor made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub site_id: Uuid,
    pub number: u64,
    pub appliance_id: Uuid,
    pub attempt: u16,
}

/// One look at every site; returns the requests this call made.
pub async fn sweep(pool: &PgPool, after: Duration, retry_after: Duration) -> Vec<Issued> {
    let candidates = match store::silent_actives(pool, after, None).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "health monitor: listing silent actives failed");
            return Vec::new();
        }
    };
    let mut issued = Vec::new();
    for c in candidates {
        match step(pool, c.site_id, after, retry_after).await {
            Ok(Some(i)) => issued.push(i),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(site_id = %c.site_id, error = %e, "health monitor: a site's step failed")
            }
        }
    }
    issued
}

/// Decides for one site under its lock.
#[tracing::instrument(skip(pool, after, retry_after))]
async fn step(
    pool: &PgPool,
    site_id: Uuid,
    after: Duration,
    retry_after: Duration,
) -> Result<Option<Issued>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !store::lock_site(&mut *tx, site_id).await? {
        return Ok(None);
    }
    // Re-checked under the lock: another replica may have acted, the
    // active may have reported, the partner may have taken over.
    let Some(c) = store::silent_actives(&mut *tx, after, Some(site_id))
        .await?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let latest = store::latest_request(&mut *tx, site_id).await?;
    let now = OffsetDateTime::now_utc();
    let attempt = match decide(
        latest.as_ref(),
        (c.silent.id, c.silent.last_seen_at),
        now,
        retry_after,
    ) {
        Decision::Request { attempt } => attempt,
        Decision::Wait(why) => {
            tracing::debug!(
                number = latest.as_ref().map(|l| l.number),
                why,
                "health monitor waits"
            );
            return Ok(None);
        }
    };
    let number = latest.as_ref().map_or(1, |l| l.number + 1);
    let request = NewRequest {
        site_id,
        number,
        member: c.partner.member,
        appliance_id: c.partner.id,
        source: Source::HealthMonitor,
        requested_by: None,
        silent: c.silent.last_seen_at.map(|at| (c.silent.id, at)),
        attempt,
    };
    if store::insert_request(&mut *tx, &request).await?.is_none() {
        return Ok(None);
    }
    let silent_secs = c
        .silent
        .last_seen_at
        .map_or(0, |at| (now - at).whole_seconds().max(0));
    audit::record(
        &mut *tx,
        c.org_id,
        None,
        "network.site.failover",
        Some(&describe(&c, number, silent_secs)),
    )
    .await?;
    tx.commit().await?;
    tracing::warn!(
        %site_id,
        number,
        attempt,
        silent = %c.silent.id,
        silent_instance = %c.silent.instance_id,
        silent_secs,
        to = %c.partner.id,
        to_instance = %c.partner.instance_id,
        "health monitor: the active stopped reporting while its partner reports; asked the partner to take over"
    );
    Ok(Some(Issued {
        site_id,
        number,
        appliance_id: c.partner.id,
        attempt,
    }))
}

fn describe(c: &SilentActive, number: u64, silent_secs: i64) -> String {
    format!(
        "{} / {}: member {} ({}) takes over from member {} ({}, silent for {silent_secs} s) (request {number}, by the health monitor)",
        c.network_name,
        c.site_name,
        c.partner.member.as_str().to_uppercase(),
        c.partner.instance_id,
        c.silent.member.as_str().to_uppercase(),
        c.silent.instance_id,
    )
}

/// How often the monitor looks: a tenth of the backstop's time, so a
/// silence is acted on at most 10% late (between 0.1 and 5 s).
pub fn interval(after: Duration) -> Duration {
    (after / 10).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Runs the monitor in this process until the pool closes.
pub fn spawn(state: AppState) {
    let after = state.settings.failover_after;
    let retry = state.settings.failover_retry;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval(after));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if state.pool.is_closed() {
                return;
            }
            sweep(&state.pool, after, retry).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpcmesh_protocol::Member;

    const RETRY: Duration = Duration::from_secs(60);

    fn request(
        source: Source,
        silent: Option<(Uuid, OffsetDateTime)>,
        age_secs: u64,
    ) -> TakeoverRow {
        TakeoverRow {
            site_id: Uuid::nil(),
            number: 4,
            member: Member::B,
            appliance_id: Uuid::new_v4(),
            instance_id: "i-0b".into(),
            appliance_live: true,
            requested_at: OffsetDateTime::now_utc() - Duration::from_secs(age_secs),
            source,
            requested_by: None,
            requested_by_email: None,
            silent_appliance_id: silent.map(|s| s.0),
            silent_seen_at: silent.map(|s| s.1),
            attempt: 1,
            done_at: None,
        }
    }

    #[test]
    fn a_silence_is_asked_about_once_then_once_more_if_not_done_then_never() {
        let now = OffsetDateTime::now_utc();
        let silence = (Uuid::new_v4(), now - Duration::from_secs(30));
        let key = (silence.0, Some(silence.1));
        assert_eq!(
            decide(None, key, now, RETRY),
            Decision::Request { attempt: 1 }
        );
        let mut r = request(Source::HealthMonitor, Some(silence), 5);
        assert!(matches!(
            decide(Some(&r), key, now, RETRY),
            Decision::Wait(_)
        ));
        r.requested_at = now - Duration::from_secs(61);
        assert_eq!(
            decide(Some(&r), key, now, RETRY),
            Decision::Request { attempt: 2 }
        );
        r.attempt = 2;
        assert!(matches!(
            decide(Some(&r), key, now, RETRY),
            Decision::Wait(_)
        ));
        // Done (or addressed to an appliance since replaced): this silence
        // is handled; a new silence of the same appliance is a new event.
        r.attempt = 1;
        r.done_at = Some(now);
        assert!(matches!(
            decide(Some(&r), key, now, RETRY),
            Decision::Wait(_)
        ));
        let later = (silence.0, Some(now - Duration::from_secs(26)));
        assert_eq!(
            decide(Some(&r), later, now, RETRY),
            Decision::Request { attempt: 1 }
        );
    }

    #[test]
    fn a_pending_user_request_holds_the_monitor_back_until_it_is_stale() {
        let now = OffsetDateTime::now_utc();
        let key = (Uuid::new_v4(), Some(now - Duration::from_secs(30)));
        let mut r = request(Source::User, None, 10);
        assert!(matches!(
            decide(Some(&r), key, now, RETRY),
            Decision::Wait(_)
        ));
        r.requested_at = now - Duration::from_secs(90);
        assert_eq!(
            decide(Some(&r), key, now, RETRY),
            Decision::Request { attempt: 1 }
        );
        r.done_at = Some(now);
        assert_eq!(
            decide(Some(&r), key, now, RETRY),
            Decision::Request { attempt: 1 }
        );
    }

    #[test]
    fn the_monitor_looks_often_enough_to_act_at_most_ten_percent_late() {
        assert_eq!(
            interval(Duration::from_secs(25)),
            Duration::from_millis(2500)
        );
        assert_eq!(interval(Duration::from_secs(1)), Duration::from_millis(100));
        assert_eq!(interval(Duration::from_secs(600)), Duration::from_secs(5));
    }
}
