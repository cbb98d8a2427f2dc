//! When each phase of a lab's start happened, for `lab.json` and the log:
//! the lab's own (guest booted, the emulator and the control plane
//! answering, the first instance seen) and each instance's, read from the
//! files its boot writes (`phases`, the agent's log) and from the demo
//! traffic's first answers. Times are seconds since the Unix epoch; the
//! guest's clock is the host's (User-Mode Linux reads it).

use serde::Serialize;
use std::collections::BTreeMap;

pub type Stamp = f64;

/// Now, in seconds since the Unix epoch.
pub fn now() -> Stamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// One instance's first boot, phase by phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct InstanceTimeline {
    /// First in a snapshot of the emulator (its Auto Scaling group launched it).
    pub seen: Option<Stamp>,
    /// Its namespace exists and its boot started.
    pub mirrored: Option<Stamp>,
    /// cloud-init started its user data.
    pub user_data: Option<Stamp>,
    /// The user data started the agent's unit: the agent was downloaded,
    /// its digest checked and installed just before.
    pub agent_installed: Option<Stamp>,
    /// The agent's first log line (its instance facts from IMDS).
    pub agent_running: Option<Stamp>,
    /// The server registered it.
    pub registered: Option<Stamp>,
    /// Its first config is in its kernel.
    pub config_applied: Option<Stamp>,
}

impl InstanceTimeline {
    /// Every phase of the boot is known (nothing more to read).
    pub fn complete(&self) -> bool {
        self.config_applied.is_some() && self.user_data.is_some() && self.agent_installed.is_some()
    }

    /// Takes in what the instance's files say now (a phase once known
    /// keeps its first time).
    pub fn read(&mut self, phases: &str, agent_log: &str) {
        let p = first_phases(phases);
        keep(&mut self.user_data, p.get("user-data").copied());
        keep(
            &mut self.agent_installed,
            p.get("unit-vpcmesh-agent").copied(),
        );
        let marks = agent_marks(agent_log);
        keep(&mut self.agent_running, marks.running);
        keep(&mut self.registered, marks.registered);
        keep(&mut self.config_applied, marks.applied);
    }
}

fn keep(slot: &mut Option<Stamp>, found: Option<Stamp>) {
    if slot.is_none() {
        *slot = found;
    }
}

/// The whole lab's start.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timeline {
    /// The lab process started.
    pub started: Stamp,
    pub guest_booted: Option<Stamp>,
    /// The AWS emulator first answered (the accounts' roles assumed).
    pub aws_answered: Option<Stamp>,
    /// The control plane's `/readyz` first answered 200.
    pub control_plane_answered: Option<Stamp>,
    /// The first round that read the emulator.
    pub first_round: Option<Stamp>,
    pub first_instance_seen: Option<Stamp>,
    /// Demo traffic: the first answer between two VPCs (through a tunnel).
    pub first_ping: Option<Stamp>,
    /// Demo traffic: each pair's first answer (`HOST->ADDRESS`).
    pub pings: BTreeMap<String, Stamp>,
    pub instances: BTreeMap<String, InstanceTimeline>,
}

/// Each phase's first time in a `phases` file (`NAME SECONDS` lines).
pub fn first_phases(text: &str) -> BTreeMap<String, Stamp> {
    let mut found = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some(name), Some(Ok(at))) = (words.next(), words.next().map(str::parse::<f64>)) {
            found.entry(name.to_string()).or_insert(at);
        }
    }
    found
}

/// What the agent's log says about its start.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AgentMarks {
    pub running: Option<Stamp>,
    pub registered: Option<Stamp>,
    pub applied: Option<Stamp>,
}

/// The first line's time of: any line, "following the control plane"
/// (registered), "config applied". Lines are tracing's: an RFC 3339 UTC
/// time first.
pub fn agent_marks(log: &str) -> AgentMarks {
    let mut m = AgentMarks::default();
    for line in log.lines() {
        let Some(at) = line.split_whitespace().next().and_then(rfc3339) else {
            continue;
        };
        keep(&mut m.running, Some(at));
        if line.contains("following the control plane") {
            keep(&mut m.registered, Some(at));
        }
        if line.contains("config applied") {
            keep(&mut m.applied, Some(at));
        }
    }
    m
}

/// `2026-12-02T01:24:12.721168Z` in seconds since the Unix epoch.
pub fn rfc3339(s: &str) -> Option<Stamp> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, mo, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.splitn(3, ':');
    let (h, mi) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec >= 61.0 {
        return None;
    }
    Some((days_from_civil(y, mo, day) * 86_400 + h * 3_600 + mi * 60) as f64 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds from `from` to `to`, for the log.
pub fn after(from: Stamp, to: Option<Stamp>) -> Option<f64> {
    to.map(|t| ((t - from) * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_times_read_as_unix_seconds() {
        assert_eq!(rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(rfc3339("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        let t = rfc3339("2026-12-02T01:24:12.721168Z").expect("parses");
        assert!((t - 1_796_174_652.721_168).abs() < 1e-6, "{t}");
        for bad in ["2026-12-02T01:24:12", "2026-13-02T01:24:12Z", "INFO", ""] {
            assert_eq!(rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_instance_timeline_keeps_each_phase_first_time() {
        let log = "\
2026-12-02T01:24:12.000000Z  INFO appliance::sync::boot: instance facts instance_id=i-1
2026-12-02T01:24:13.500000Z  INFO appliance::sync::run: following the control plane appliance_id=x
lab systemd: vpcmesh-agent exited; starting it again in 2 s
2026-12-02T01:24:18.000000Z  INFO appliance::sync::run: config applied version=1 added=11
2026-12-02T01:24:30.000000Z  INFO appliance::sync::run: config applied version=2 added=1
";
        let base = rfc3339("2026-12-02T01:24:12Z").expect("parses");
        let mut t = InstanceTimeline::default();
        t.read("boot-first 10.5\nuser-data 11.25\n", "");
        assert_eq!(t.user_data, Some(11.25));
        assert!(!t.complete());
        t.read(
            "boot-first 10.5\nuser-data 11.25\nunit-vpcmesh-agent 20\nboot-again 99\nunit-vpcmesh-agent 100\n",
            log,
        );
        assert_eq!(t.agent_installed, Some(20.0));
        assert_eq!(t.agent_running, Some(base));
        assert_eq!(t.registered, Some(base + 1.5));
        assert_eq!(t.config_applied, Some(base + 6.0));
        assert!(t.complete());
        // A phase once known keeps its first time (a reboot appends).
        t.read("user-data 500\n", "");
        assert_eq!(t.user_data, Some(11.25));
    }

    #[test]
    fn offsets_are_rounded_to_tenths() {
        assert_eq!(after(10.0, Some(12.345)), Some(2.3));
        assert_eq!(after(10.0, None), None);
    }
}
