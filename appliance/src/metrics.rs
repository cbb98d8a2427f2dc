//! The agent's Prometheus metrics: per tunnel its state and the kernel's
//! counters, the reconciles and the applied config, the HA role and the
//! status reports. Served by `--metrics-listen` (off unless asked: bind it
//! to an address only the monitoring system reaches).

use crate::dataplane::ReconcileReport;
use crate::protocol::{HaRole, TunnelState, TunnelStatus};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::BTreeSet;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;
use uuid::Uuid;

pub struct AgentMetrics {
    registry: Registry,
    config_version: IntGauge,
    configs_applied: IntCounter,
    config_errors: IntCounter,
    drift_repairs: IntCounter,
    reconcile_seconds: Histogram,
    reconcile_changes: IntCounterVec,
    tunnel_state: IntGaugeVec,
    tunnel_bytes: IntCounterVec,
    tunnel_packets: IntCounterVec,
    tunnel_in_errors: IntCounterVec,
    tunnel_replay_drops: IntCounterVec,
    tunnel_integrity_failures: IntCounterVec,
    ha_active: IntGauge,
    status_reports: IntCounterVec,
    /// The peer sites that have series, to drop those that leave the config.
    peers: Mutex<BTreeSet<Uuid>>,
}

const STATES: [(TunnelState, &str); 4] = [
    (TunnelState::Pending, "pending"),
    (TunnelState::Up, "up"),
    (TunnelState::Rekeying, "rekeying"),
    (TunnelState::Down, "down"),
];

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}

fn counters(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric name"),
    )
}

pub static METRICS: LazyLock<AgentMetrics> = LazyLock::new(|| {
    let r = Registry::new();
    let gauge = |name: &str, help: &str| {
        register(&r, IntGauge::new(name, help).expect("a valid metric name"))
    };
    let counter = |name: &str, help: &str| {
        register(
            &r,
            IntCounter::new(name, help).expect("a valid metric name"),
        )
    };
    AgentMetrics {
        config_version: gauge(
            "vpcmesh_agent_config_version",
            "The version of the config the kernel holds",
        ),
        configs_applied: counter(
            "vpcmesh_agent_configs_applied_total",
            "Configs reconciled into the kernel",
        ),
        config_errors: counter(
            "vpcmesh_agent_config_errors_total",
            "Configs refused, not decrypted or not fully applied",
        ),
        drift_repairs: counter(
            "vpcmesh_agent_drift_repairs_total",
            "Times the periodic check found the kernel changed behind the agent's back and put it back",
        ),
        reconcile_seconds: register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "vpcmesh_agent_reconcile_duration_seconds",
                    "Time to read the kernel back, diff it and apply the changes",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
            )
            .expect("a valid histogram"),
        ),
        reconcile_changes: counters(
            &r,
            "vpcmesh_agent_reconcile_changes_total",
            "Kernel objects (SAs, policies, routes) changed by reconciles",
            &["change"],
        ),
        tunnel_state: register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "vpcmesh_agent_tunnel_state",
                    "1 for the state each tunnel is in, 0 for the others",
                ),
                &["peer_site", "state"],
            )
            .expect("a valid metric name"),
        ),
        tunnel_bytes: counters(
            &r,
            "vpcmesh_agent_tunnel_bytes_total",
            "Bytes through each tunnel's current SAs (resets when they are replaced)",
            &["peer_site", "direction"],
        ),
        tunnel_packets: counters(
            &r,
            "vpcmesh_agent_tunnel_packets_total",
            "Packets through each tunnel's current SAs (resets when they are replaced)",
            &["peer_site", "direction"],
        ),
        tunnel_in_errors: counters(
            &r,
            "vpcmesh_agent_tunnel_in_errors_total",
            "Inbound packets dropped on each tunnel: replay-window drops plus integrity failures",
            &["peer_site"],
        ),
        tunnel_replay_drops: counters(
            &r,
            "vpcmesh_agent_tunnel_replay_drops_total",
            "Inbound packets dropped as replayed or older than the replay window",
            &["peer_site"],
        ),
        tunnel_integrity_failures: counters(
            &r,
            "vpcmesh_agent_tunnel_integrity_failures_total",
            "Inbound packets whose ESP integrity check failed",
            &["peer_site"],
        ),
        ha_active: gauge(
            "vpcmesh_agent_ha_active",
            "1 while this member is its site's active appliance",
        ),
        status_reports: counters(
            &r,
            "vpcmesh_agent_status_reports_total",
            "Status reports, by outcome",
            &["outcome"],
        ),
        peers: Mutex::new(BTreeSet::new()),
        registry: r,
    }
});

/// A counter follows a kernel counter: it moves up with it, and starts
/// over when the kernel's does (a replaced SA), as a process restart would.
fn follow(c: &IntCounter, kernel: u64) {
    let now = c.get();
    if kernel >= now {
        c.inc_by(kernel - now);
    } else {
        c.reset();
        c.inc_by(kernel);
    }
}

impl AgentMetrics {
    pub fn applied(&self, version: u64, report: &ReconcileReport, took: Duration) {
        self.config_version.set(version as i64);
        self.configs_applied.inc();
        self.reconcile_seconds.observe(took.as_secs_f64());
        for (change, n) in [
            ("added", report.added),
            ("replaced", report.replaced),
            ("deleted", report.deleted),
        ] {
            self.reconcile_changes
                .with_label_values(&[change])
                .inc_by(n as u64);
        }
    }

    pub fn config_error(&self) {
        self.config_errors.inc();
    }

    pub fn drift_repaired(&self) {
        self.drift_repairs.inc();
    }

    pub fn status_report(&self, delivered: bool) {
        let outcome = if delivered { "delivered" } else { "failed" };
        self.status_reports.with_label_values(&[outcome]).inc();
    }

    /// The tunnels as the last status read them, with their inbound drops
    /// told apart (peer, replay, integrity); tunnels gone from the config
    /// lose their series.
    pub fn tunnels(&self, role: HaRole, tunnels: &[TunnelStatus], drops: &[(Uuid, u64, u64)]) {
        self.ha_active.set(i64::from(role == HaRole::Active));
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let now: BTreeSet<Uuid> = tunnels.iter().map(|t| t.peer_site).collect();
        for gone in peers.difference(&now) {
            let peer = gone.to_string();
            for (_, state) in STATES {
                let _ = self
                    .tunnel_state
                    .remove_label_values(&[peer.as_str(), state]);
            }
            for dir in ["in", "out"] {
                let _ = self.tunnel_bytes.remove_label_values(&[peer.as_str(), dir]);
                let _ = self
                    .tunnel_packets
                    .remove_label_values(&[peer.as_str(), dir]);
            }
            for c in [
                &self.tunnel_in_errors,
                &self.tunnel_replay_drops,
                &self.tunnel_integrity_failures,
            ] {
                let _ = c.remove_label_values(&[peer.as_str()]);
            }
        }
        *peers = now;
        for t in tunnels {
            let peer = t.peer_site.to_string();
            let p = peer.as_str();
            for (state, name) in STATES {
                self.tunnel_state
                    .with_label_values(&[p, name])
                    .set(i64::from(t.state == state));
            }
            follow(&self.tunnel_bytes.with_label_values(&[p, "in"]), t.in_bytes);
            follow(
                &self.tunnel_bytes.with_label_values(&[p, "out"]),
                t.out_bytes,
            );
            follow(
                &self.tunnel_packets.with_label_values(&[p, "in"]),
                t.in_packets,
            );
            follow(
                &self.tunnel_packets.with_label_values(&[p, "out"]),
                t.out_packets,
            );
            follow(&self.tunnel_in_errors.with_label_values(&[p]), t.in_errors);
        }
        for (peer, replay, integrity) in drops {
            let peer = peer.to_string();
            follow(
                &self.tunnel_replay_drops.with_label_values(&[&peer]),
                *replay,
            );
            follow(
                &self.tunnel_integrity_failures.with_label_values(&[&peer]),
                *integrity,
            );
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics could not be rendered");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Serves `GET /metrics` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                Ok::<_, std::convert::Infallible>(answer(&req))
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics: connection ended");
            }
        });
    }
}

fn answer(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (StatusCode::OK, METRICS.render()),
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, "GET only\n".to_string()),
        _ => (
            StatusCode::NOT_FOUND,
            "only /metrics is served\n".to_string(),
        ),
    };
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    if status == StatusCode::OK {
        res.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(prometheus::TEXT_FORMAT),
        );
    }
    res
}

/// `promtool check metrics` (Debian's prometheus package) on an exposition:
/// its verdict, lint problems included. For tests and for operators.
pub fn promtool_check(text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("promtool does not run (is the prometheus package installed?): {e}")
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("writing to promtool: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("promtool did not finish: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn tunnel(peer: Uuid, state: TunnelState, in_bytes: u64) -> TunnelStatus {
        TunnelStatus {
            peer_site: peer,
            state,
            in_bytes,
            in_packets: in_bytes / 100,
            out_bytes: 2 * in_bytes,
            out_packets: in_bytes / 50,
            in_errors: 3,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_agent_serves_tunnel_and_reconcile_metrics_that_pass_promtool() {
        let m = &*METRICS;
        let (east, west) = (Uuid::new_v4(), Uuid::new_v4());
        m.applied(
            42,
            &ReconcileReport {
                added: 5,
                replaced: 1,
                deleted: 0,
            },
            Duration::from_millis(3),
        );
        m.tunnels(
            HaRole::Active,
            &[
                tunnel(east, TunnelState::Up, 1000),
                tunnel(west, TunnelState::Pending, 0),
            ],
            &[(east, 2, 1), (west, 0, 0)],
        );
        // The east SAs are replaced (counters start over); west leaves.
        m.tunnels(
            HaRole::Active,
            &[tunnel(east, TunnelState::Rekeying, 300)],
            &[(east, 0, 0)],
        );
        m.status_report(true);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(serve(listener));
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.expect("answer");
        server.abort();
        let (head, text) = answer.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");

        promtool_check(text).unwrap_or_else(|e| panic!("promtool: {e}\n{text}"));
        let e = east.to_string();
        for line in [
            "vpcmesh_agent_config_version 42".to_string(),
            format!(r#"vpcmesh_agent_tunnel_state{{peer_site="{e}",state="rekeying"}} 1"#),
            format!(r#"vpcmesh_agent_tunnel_state{{peer_site="{e}",state="up"}} 0"#),
            format!(r#"vpcmesh_agent_tunnel_bytes_total{{direction="in",peer_site="{e}"}} 300"#),
            format!(r#"vpcmesh_agent_tunnel_bytes_total{{direction="out",peer_site="{e}"}} 600"#),
            format!(r#"vpcmesh_agent_tunnel_in_errors_total{{peer_site="{e}"}} 3"#),
            format!(r#"vpcmesh_agent_tunnel_replay_drops_total{{peer_site="{e}"}} 0"#),
            "vpcmesh_agent_ha_active 1".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
        assert!(
            !text.contains(&west.to_string()),
            "a tunnel gone from the config has no series left:\n{text}"
        );
        assert!(text.contains(r#"vpcmesh_agent_reconcile_changes_total{change="added"}"#));
        assert!(text.contains("vpcmesh_agent_reconcile_duration_seconds_count"));
        assert!(text.contains(r#"vpcmesh_agent_status_reports_total{outcome="delivered"}"#));
    }
}
