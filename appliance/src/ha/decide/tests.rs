use super::*;

const MS: Duration = Duration::from_millis(1);

fn settings(partner_known: bool, take_over: Option<u64>) -> Settings {
    Settings {
        interval: 100 * MS,
        dead_after: 300 * MS,
        partner_known,
        take_over,
    }
}

/// A member that has started, applied its config, heard its partner once
/// (active unless this member finds the address on itself) and asked EC2.
fn started(me: Member, holder: Holder) -> (Pair, Instant) {
    let t0 = Instant::now();
    let mut p = Pair::new(me, t0);
    assert_eq!(p.next(t0), None, "nothing before a config is applied");
    p.configure(Some(settings(true, None)), t0);
    let partner_active = holder != Holder::Me;
    assert_eq!(
        p.on_beat(t0, partner_active, false),
        Some(Action::CheckHolder)
    );
    (p, t0).also(|(p, t0)| {
        assert_eq!(p.on_holder(*t0, Some(holder)), None);
    })
}

/// The same, without a heartbeat from the partner.
fn started_unheard(me: Member, holder: Holder) -> (Pair, Instant) {
    let t0 = Instant::now();
    let mut p = Pair::new(me, t0);
    p.configure(Some(settings(true, None)), t0);
    assert_eq!(p.next(t0), Some(Action::CheckHolder));
    let _ = p.on_holder(t0, Some(holder));
    (p, t0)
}

trait Also: Sized {
    fn also(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl<T> Also for T {}

#[test]
fn a_member_that_finds_the_address_on_itself_is_active_and_on_its_partner_passive() {
    let (a, _) = started(Member::A, Holder::Me);
    assert_eq!(
        (a.role(), a.reason()),
        (HaRole::Active, HaReason::HoldsAddress)
    );
    let (b, _) = started(Member::B, Holder::Partner);
    assert_eq!(
        (b.role(), b.reason()),
        (HaRole::Passive, HaReason::PartnerActive)
    );
}

#[test]
fn a_free_address_is_claimed_by_a_at_once_and_by_b_only_after_the_grace() {
    let t0 = Instant::now();
    let mut a = Pair::new(Member::A, t0);
    a.configure(Some(settings(true, None)), t0);
    assert_eq!(a.next(t0), Some(Action::CheckHolder));
    assert_eq!(
        a.on_holder(t0, Some(Holder::Elsewhere(None))),
        Some(Action::TakeOver(HaReason::Claimed))
    );
    let _ = a.on_took_over(t0, true);
    assert_eq!((a.role(), a.reason()), (HaRole::Active, HaReason::Claimed));

    let mut b = Pair::new(Member::B, t0);
    b.configure(Some(settings(true, None)), t0);
    assert_eq!(b.next(t0), Some(Action::CheckHolder));
    assert_eq!(b.on_holder(t0, Some(Holder::Elsewhere(None))), None);
    assert_eq!(b.role(), HaRole::Passive);
    // After the grace, with A still silent and the address still free.
    let later = t0 + CLAIM_GRACE + MS;
    assert_eq!(b.next(later), Some(Action::CheckHolder));
    assert_eq!(
        b.on_holder(later, Some(Holder::Elsewhere(None))),
        Some(Action::TakeOver(HaReason::Claimed))
    );
}

#[test]
fn the_passive_takes_over_when_the_heard_partner_falls_silent_and_not_before() {
    let (mut b, t0) = started(Member::B, Holder::Partner);
    let mut t = t0;
    for _ in 0..10 {
        t += 100 * MS;
        assert_eq!(b.on_beat(t, true, false), None);
        assert_eq!(b.next(t), None);
    }
    // 300 ms of silence is the limit, not yet a failover.
    assert_eq!(b.next(t + 300 * MS), None);
    assert_eq!(
        b.next(t + 301 * MS),
        Some(Action::TakeOver(HaReason::PartnerSilent))
    );
    // One takeover at a time.
    assert_eq!(b.next(t + 400 * MS), None);
    let _ = b.on_took_over(t + 450 * MS, true);
    assert_eq!(
        (b.role(), b.reason()),
        (HaRole::Active, HaReason::PartnerSilent)
    );
    assert_eq!(b.since(), t + 450 * MS);
}

#[test]
fn a_failed_takeover_is_tried_again_after_a_pause() {
    let (mut b, t0) = started(Member::B, Holder::Partner);
    let _ = b.on_beat(t0, true, false);
    let t = t0 + 400 * MS;
    assert_eq!(b.next(t), Some(Action::TakeOver(HaReason::PartnerSilent)));
    assert_eq!(b.on_took_over(t, false), None);
    assert_eq!(b.role(), HaRole::Passive);
    assert_eq!(b.next(t + RETRY_AFTER - MS), None);
    assert_eq!(
        b.next(t + RETRY_AFTER),
        Some(Action::TakeOver(HaReason::PartnerSilent))
    );
}

#[test]
fn a_passive_that_never_heard_its_partner_does_not_take_over_on_silence() {
    let (mut b, t0) = started_unheard(Member::B, Holder::Partner);
    for i in 1..50 {
        let t = t0 + i * 100 * MS;
        match b.next(t) {
            None => {}
            // Drift checks, answered "the partner holds it".
            Some(Action::CheckHolder) => {
                assert_eq!(b.on_holder(t, Some(Holder::Partner)), None)
            }
            other => panic!("{other:?} at {i}"),
        }
    }
    assert_eq!(b.role(), HaRole::Passive);
}

/// A member restarted from an armed state: configured, asked EC2.
fn resumed(me: Member, holder: Holder) -> (Pair, Instant) {
    let t0 = Instant::now();
    let mut p = Pair::new(me, t0);
    p.resume_armed();
    p.configure(Some(settings(true, None)), t0);
    assert_eq!(p.next(t0), Some(Action::CheckHolder), "EC2 first");
    assert_eq!(p.on_holder(t0, Some(holder)), None);
    (p, t0)
}

#[test]
fn a_member_restarted_while_armed_fails_over_a_partner_that_died_meanwhile() {
    let (mut b, t0) = resumed(Member::B, Holder::Partner);
    assert!(b.armed(), "armed again without a beat");
    // The partner gets one dead time to be heard...
    assert_eq!(b.next(t0 + 300 * MS), None);
    // ...then its silence is a failover.
    assert_eq!(
        b.next(t0 + 301 * MS),
        Some(Action::TakeOver(HaReason::PartnerSilent))
    );
}

#[test]
fn a_member_restarted_while_armed_stays_passive_while_its_partner_beats() {
    let (mut b, t0) = resumed(Member::B, Holder::Partner);
    for i in 1..30 {
        let t = t0 + i * 100 * MS;
        assert_eq!(b.on_beat(t, true, false), None, "at {i}");
        assert_eq!(b.next(t), None, "at {i}");
    }
    assert_eq!(
        (b.role(), b.reason()),
        (HaRole::Passive, HaReason::PartnerActive)
    );
}

#[test]
fn a_remembered_arming_needs_a_known_partner_and_counts_once() {
    // The config does not name the partner yet: nothing to arm for.
    let t0 = Instant::now();
    let mut b = Pair::new(Member::B, t0);
    b.resume_armed();
    b.configure(Some(settings(false, None)), t0);
    assert_eq!(b.next(t0), Some(Action::CheckHolder));
    let _ = b.on_holder(t0, Some(Holder::Partner));
    assert!(!b.armed());
    // The memory was of the restart, not of every later config.
    b.configure(Some(settings(true, None)), t0 + 100 * MS);
    assert!(!b.armed(), "a later config does not arm it");
    // And a member that finds the address on itself is simply active.
    let (a, _) = resumed(Member::A, Holder::Me);
    assert_eq!((a.role(), a.armed()), (HaRole::Active, false));
}

#[test]
fn a_partner_whose_agent_restarts_may_be_silent_for_the_grace_and_no_longer() {
    let (mut b, t0) = started(Member::B, Holder::Partner);
    let t = t0 + 100 * MS;
    assert_eq!(b.on_beat(t, true, false), None);
    b.on_partner_restarting(t);
    // Silent far beyond the dead time: no failover while it restarts.
    for i in 1..(RESTART_GRACE.as_millis() as u32 / 100) {
        let now = t + i * 100 * MS;
        match b.next(now) {
            None => {}
            // Drift checks, answered "the partner holds it".
            Some(Action::CheckHolder) => assert_eq!(b.on_holder(now, Some(Holder::Partner)), None),
            other => panic!("{other:?} at {i}"),
        }
    }
    // A restart that never came back.
    assert_eq!(
        b.next(t + RESTART_GRACE + MS),
        Some(Action::TakeOver(HaReason::PartnerSilent))
    );

    // The new process beats (passive while it asks EC2): the grace is
    // over, and its silence counts as usual again.
    let (mut b, t0) = started(Member::B, Holder::Partner);
    b.on_partner_restarting(t0);
    let back = t0 + 3000 * MS;
    assert_eq!(b.on_beat(back, false, false), None);
    assert_eq!(b.next(back + 300 * MS), None);
    assert_eq!(
        b.next(back + 301 * MS),
        Some(Action::TakeOver(HaReason::PartnerSilent))
    );
}

#[test]
fn split_brain_the_demoted_member_stays_passive_while_the_path_is_cut() {
    // A active, B passive, both hear each other; then the path is cut.
    let (mut a, t0) = started(Member::A, Holder::Me);
    let (mut b, _) = started(Member::B, Holder::Partner);
    let mut t = t0;
    for _ in 0..5 {
        t += 100 * MS;
        let _ = a.on_beat(t, false, false);
        let _ = b.on_beat(t, true, false);
    }
    // Cut. The active asks EC2 every interval while its partner is silent.
    let cut = t;
    let mut a_checks = 0;
    let mut b_took = None;
    let mut holder = Holder::Me; // as A sees it
    for i in 1..=100 {
        let now = cut + i * 10 * MS;
        if let Some(Action::TakeOver(r)) = b.next(now) {
            assert_eq!(r, HaReason::PartnerSilent);
            let _ = b.on_took_over(now, true);
            b_took = Some(now);
            holder = Holder::Partner;
        }
        if let Some(Action::CheckHolder) = a.next(now) {
            a_checks += 1;
            let _ = a.on_holder(now, Some(holder.clone()));
        }
        if let Some(took) = b_took {
            if a.role() == HaRole::Active {
                // One interval, plus this loop's 10 ms step.
                assert!(
                    now.duration_since(took) <= 110 * MS,
                    "both active for {:?}",
                    now.duration_since(took)
                );
            }
        }
    }
    assert!(b_took.is_some() && a_checks >= 1);
    assert_eq!(
        (a.role(), a.reason()),
        (HaRole::Passive, HaReason::AddressTaken)
    );
    assert_eq!(b.role(), HaRole::Active);
    // A never heard B since it became passive: it stays passive for as
    // long as the cut lasts (no flapping).
    for i in 0..200 {
        let now = cut + 2 * Duration::from_secs(1) + i * 100 * MS;
        match a.next(now) {
            None => {}
            Some(Action::CheckHolder) => {
                let _ = a.on_holder(now, Some(Holder::Partner));
            }
            Some(other) => panic!("the demoted member acted: {other:?}"),
        }
    }
    assert_eq!(a.role(), HaRole::Passive);
    // The path heals: A hears B again, and is armed for B's next failure.
    let healed = cut + Duration::from_secs(30);
    if let Some(Action::CheckHolder) = a.on_beat(healed, true, false) {
        assert_eq!(a.on_holder(healed, Some(Holder::Partner)), None);
    }
    assert_eq!(
        a.next(healed + 301 * MS),
        Some(Action::TakeOver(HaReason::PartnerSilent))
    );
}

#[test]
fn two_actives_settle_on_what_ec2_says() {
    let (mut a, t0) = started(Member::A, Holder::Me);
    // B took over (A's heartbeats were lost a moment) and says so.
    assert_eq!(
        a.on_beat(t0 + 10 * MS, true, false),
        Some(Action::CheckHolder)
    );
    let _ = a.on_holder(t0 + 20 * MS, Some(Holder::Partner));
    assert_eq!(
        (a.role(), a.reason()),
        (HaRole::Passive, HaReason::AddressTaken)
    );
    // The other way round: EC2 says A still holds it; A stays.
    let (mut a, t0) = started(Member::A, Holder::Me);
    assert_eq!(
        a.on_beat(t0 + 10 * MS, true, false),
        Some(Action::CheckHolder)
    );
    let _ = a.on_holder(t0 + 20 * MS, Some(Holder::Me));
    assert_eq!(a.role(), HaRole::Active);
}

#[test]
fn a_server_request_is_carried_out_once_per_value() {
    let (mut b, t0) = started(Member::B, Holder::Partner);
    let _ = b.on_beat(t0, true, false);
    b.configure(Some(settings(true, Some(7))), t0);
    assert_eq!(
        b.next(t0 + 10 * MS),
        Some(Action::TakeOver(HaReason::Requested))
    );
    // The partner's last beat said it was active: EC2 settles it.
    assert_eq!(
        b.on_took_over(t0 + 20 * MS, true),
        Some(Action::CheckHolder)
    );
    assert_eq!(b.on_holder(t0 + 25 * MS, Some(Holder::Me)), None);
    assert_eq!(
        (b.role(), b.reason()),
        (HaRole::Active, HaReason::Requested)
    );
    assert_eq!(b.take_over_done(), Some(7));
    // The same value again (the config is re-sent): nothing.
    b.configure(Some(settings(true, Some(7))), t0);
    let _ = b.on_beat(t0 + 30 * MS, false, false);
    assert_eq!(b.next(t0 + 40 * MS), None);
    // A request to an active member is done without changing its reason.
    b.configure(Some(settings(true, Some(8))), t0);
    assert_eq!(
        b.next(t0 + 50 * MS),
        Some(Action::TakeOver(HaReason::Requested))
    );
    let _ = b.on_took_over(t0 + 60 * MS, true);
    assert_eq!(b.take_over_done(), Some(8));
    assert_eq!(b.reason(), HaReason::Requested);
}

#[test]
fn a_request_frees_a_member_demoted_while_the_path_was_cut() {
    let (mut a, t0) = started(Member::A, Holder::Me);
    let _ = a.on_holder(t0, Some(Holder::Partner));
    assert_eq!(a.role(), HaRole::Passive);
    a.configure(Some(settings(true, Some(1))), t0);
    assert_eq!(
        a.next(t0 + Duration::from_secs(60)),
        Some(Action::TakeOver(HaReason::Requested))
    );
}

#[test]
fn a_spot_notice_hands_over_to_the_partner_and_yields_once_it_is_active() {
    let (mut a, t0) = started(Member::A, Holder::Me);
    let (mut b, _) = started(Member::B, Holder::Partner);
    let _ = a.on_beat(t0, false, false);
    let _ = b.on_beat(t0, true, false);
    assert_eq!(a.on_leaving(t0 + 10 * MS), None);
    assert!(a.leaving());
    // B hears "handover" in A's next beat and takes over at once.
    assert_eq!(
        b.on_beat(t0 + 20 * MS, true, true),
        Some(Action::TakeOver(HaReason::HandedOver))
    );
    let _ = b.on_took_over(t0 + 40 * MS, true);
    assert_eq!(
        (b.role(), b.reason()),
        (HaRole::Active, HaReason::HandedOver)
    );
    // A hears B active, asks EC2, yields.
    assert_eq!(
        a.on_beat(t0 + 50 * MS, true, false),
        Some(Action::CheckHolder)
    );
    let _ = a.on_holder(t0 + 60 * MS, Some(Holder::Partner));
    assert_eq!(
        (a.role(), a.reason()),
        (HaRole::Passive, HaReason::HandingOver)
    );
    // A leaving member never takes the site back.
    let _ = a.on_beat(t0 + 70 * MS, false, false);
    for i in 1..20 {
        let now = t0 + 70 * MS + i * 100 * MS;
        if let Some(Action::CheckHolder) = a.next(now) {
            let _ = a.on_holder(now, Some(Holder::Elsewhere(None)));
        }
        assert_eq!(a.role(), HaRole::Passive);
    }
}

#[test]
fn without_an_ha_config_member_a_is_active_and_b_passive() {
    let t0 = Instant::now();
    let mut a = Pair::new(Member::A, t0);
    a.configure(None, t0);
    assert_eq!(a.next(t0), Some(Action::TakeOver(HaReason::Claimed)));
    let _ = a.on_took_over(t0, true);
    assert_eq!(a.role(), HaRole::Active);
    let mut b = Pair::new(Member::B, t0);
    b.configure(None, t0);
    for i in 0..100 {
        assert_eq!(b.next(t0 + i * 100 * MS), None);
    }
}

#[test]
fn an_active_whose_address_went_to_nobody_takes_it_back() {
    let (mut a, t0) = started(Member::A, Holder::Me);
    let t = t0 + CHECK_EVERY;
    assert_eq!(a.next(t), Some(Action::CheckHolder));
    assert_eq!(
        a.on_holder(t, Some(Holder::Elsewhere(None))),
        Some(Action::TakeOver(HaReason::Claimed))
    );
}

#[test]
fn after_its_own_stall_a_member_waits_one_more_dead_time_before_judging_silence() {
    let (mut b, t0) = started(Member::B, Holder::Partner);
    let _ = b.on_beat(t0, true, false);
    // B's loop wakes 2 s late: A's beats may be late for the same reason.
    let woke = t0 + Duration::from_secs(2);
    b.on_stall(woke);
    assert_eq!(b.next(woke), None);
    assert_eq!(b.next(woke + 299 * MS), None);
    // A beat arrives: nothing happened.
    let _ = b.on_beat(woke + 100 * MS, true, false);
    assert_eq!(b.next(woke + 350 * MS), None);
    // Still silent after the grace: a failover.
    assert_eq!(
        b.next(woke + 401 * MS),
        Some(Action::TakeOver(HaReason::PartnerSilent))
    );
}
