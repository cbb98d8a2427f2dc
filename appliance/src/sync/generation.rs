//! SA generations on the agent's side. An SA (key, SPI) is installed once in
//! its life: installing it again would restart its sequence numbers under
//! the same key (AES-GCM nonces repeat, and peers drop everything as
//! replays). So whenever the kernel lost SAs that this generation already
//! installed (a reboot, a flush, a delete behind the agent's back), the agent
//! asks the server for a fresh generation, whose SPIs (and so keys) no kernel
//! has ever held, instead of putting the lost ones back.

use crate::dataplane::Plan;
use crate::xfrm::SaId;
use std::collections::BTreeSet;

/// What to do with a config, given what the kernel has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Install what is missing: none of it was ever installed before.
    Apply,
    /// The kernel lost SAs of this generation: ask for one above it.
    Renew { above: u32 },
    /// A config older than the generation the server already gave this
    /// agent (a long-poll answer that crossed the renewal): wait for the next.
    Outdated,
}

/// What this agent process knows about its generations.
#[derive(Clone, Debug, Default)]
pub struct Generations {
    /// A generation whose SAs this process knows to be fresh or its own:
    /// given at registration or renewal, or adopted from a kernel that held
    /// every SA of it.
    trusted: Option<u32>,
    /// SAs of the trusted generation that were in the kernel after the last
    /// apply: if one of them goes missing, it was lost, not new.
    seen: BTreeSet<SaId>,
}

impl Generations {
    /// A process that just registered: its generation is new everywhere.
    pub fn fresh(generation: u32) -> Self {
        Generations {
            trusted: Some(generation),
            seen: BTreeSet::new(),
        }
    }

    /// A process that started with a stored credential: it knows nothing
    /// about what the kernel held before it (an agent restart keeps it all; a
    /// reboot keeps nothing).
    pub fn unknown() -> Self {
        Generations::default()
    }

    pub fn decide(&self, config_generation: u32, plan: &Plan) -> Decision {
        let renew = Decision::Renew {
            above: config_generation,
        };
        match self.trusted {
            Some(t) if config_generation < t => Decision::Outdated,
            Some(t) if config_generation == t => {
                if !plan.stale.is_empty() || plan.missing.iter().any(|id| self.seen.contains(id)) {
                    renew
                } else {
                    Decision::Apply
                }
            }
            // Not known to be fresh: adoptable only if the kernel holds all
            // of it exactly (a restarted agent), else a new generation.
            _ if plan.missing.is_empty() && plan.stale.is_empty() => Decision::Apply,
            _ => renew,
        }
    }

    /// The server gave a new generation.
    pub fn renewed(&mut self, generation: u32) {
        self.trusted = Some(generation);
        self.seen.clear();
    }

    /// A plan of `generation` was applied: its SAs are in the kernel now.
    pub fn applied(&mut self, generation: u32, plan_sas: &BTreeSet<SaId>) {
        self.trusted = Some(generation);
        self.seen = plan_sas.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn sa(spi: u32) -> SaId {
        SaId {
            dst: Ipv4Addr::new(198, 51, 100, 2),
            spi,
        }
    }

    fn plan(fresh: &[u32], missing: &[u32], stale: &[u32]) -> Plan {
        Plan {
            fresh: fresh.iter().map(|s| sa(*s)).collect(),
            missing: missing.iter().map(|s| sa(*s)).collect(),
            stale: stale.iter().map(|s| sa(*s)).collect(),
            ..Plan::default()
        }
    }

    #[test]
    fn a_registered_agent_installs_its_fresh_generation() {
        let g = Generations::fresh(4);
        assert_eq!(g.decide(4, &plan(&[1, 2], &[1, 2], &[])), Decision::Apply);
    }

    #[test]
    fn a_restarted_agent_adopts_a_kernel_that_holds_everything() {
        let g = Generations::unknown();
        assert_eq!(g.decide(4, &plan(&[1, 2], &[], &[])), Decision::Apply);
    }

    #[test]
    fn a_rebooted_kernel_gets_a_new_generation_instead_of_the_old_sas() {
        let g = Generations::unknown();
        assert_eq!(
            g.decide(4, &plan(&[1, 2], &[1, 2], &[])),
            Decision::Renew { above: 4 }
        );
        // Even one SA lost while the agent was down.
        assert_eq!(
            g.decide(4, &plan(&[1, 2], &[2], &[])),
            Decision::Renew { above: 4 }
        );
    }

    #[test]
    fn an_sa_deleted_behind_the_agents_back_is_not_put_back() {
        let mut g = Generations::fresh(4);
        g.applied(4, &plan(&[1, 2], &[], &[]).fresh);
        assert_eq!(
            g.decide(4, &plan(&[1, 2], &[2], &[])),
            Decision::Renew { above: 4 }
        );
        // A new peer's SA was never installed: that one goes in.
        assert_eq!(g.decide(4, &plan(&[1, 2, 3], &[3], &[])), Decision::Apply);
    }

    #[test]
    fn an_sa_in_another_shape_is_never_reinstalled_under_its_key() {
        let mut g = Generations::fresh(4);
        g.applied(4, &plan(&[1], &[], &[]).fresh);
        assert_eq!(
            g.decide(4, &plan(&[1], &[], &[1])),
            Decision::Renew { above: 4 }
        );
    }

    #[test]
    fn a_config_from_before_the_renewal_waits() {
        let mut g = Generations::unknown();
        g.renewed(5);
        assert_eq!(g.decide(4, &plan(&[1], &[1], &[])), Decision::Outdated);
        assert_eq!(g.decide(5, &plan(&[7], &[7], &[])), Decision::Apply);
    }
}
