//! High availability as the console sees it: why each appliance has its
//! role, the takeovers the server asked for (an admin's "Fail over now", or
//! the health monitor's backstop), and the history of failovers.

use super::ConsoleError;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// Who asked for a takeover: a user (their email, None once removed) or the
/// server's health monitor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RequestedBy {
    User { email: Option<String> },
    HealthMonitor,
}

impl RequestedBy {
    pub fn describe(&self) -> String {
        match self {
            RequestedBy::User { email: Some(e) } => e.clone(),
            RequestedBy::User { email: None } => "a removed user".to_string(),
            RequestedBy::HealthMonitor => "health monitor".to_string(),
        }
    }
}

/// A takeover the server asked of one member: the site's latest request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeoverView {
    pub site_id: String,
    /// Grows per site; the member's config carries it as `ha.take_over`.
    pub number: u64,
    /// "a" or "b": the member asked to become active.
    pub member: String,
    pub instance_id: String,
    pub requested_at: String,
    pub requested_by: RequestedBy,
    /// When the member reported it carried the request out.
    pub done_at: Option<String>,
}

/// One failover: a site's active role moved to its other appliance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverEntry {
    pub site_id: String,
    pub site_name: String,
    pub region: String,
    /// The appliance that was active before (None: unknown).
    pub from_instance_id: Option<String>,
    pub from_member: Option<String>,
    pub to_instance_id: String,
    pub to_member: String,
    /// "partner_silent", "requested" or "handed_over".
    pub reason: String,
    /// For a requested takeover: who asked.
    pub requested_by: Option<RequestedBy>,
    /// When the new active took the role.
    pub at: String,
    pub recorded_at: String,
}

/// An HA reason code (`ha_reason` of an appliance, `reason` of a failover)
/// in words. An unknown code is shown as it is, never guessed at.
pub fn describe_ha_reason(code: &str) -> String {
    match code {
        "starting" => "starting up",
        "holds_address" => "holds the Elastic IP",
        "claimed" => "claimed the free Elastic IP",
        "partner_silent" => "took over: partner stopped answering",
        "requested" => "took over on request",
        "handed_over" => "took over: partner handed over",
        "partner_active" => "standby: partner holds the Elastic IP",
        "address_taken" => "standby: partner took the Elastic IP",
        "handing_over" => "handing over to partner (spot notice)",
        other => return other.to_string(),
    }
    .to_string()
}

/// Asks the passive appliance of a site to take over now (admins; a drill,
/// or to move traffic off an instance). 202 with the request.
#[server(endpoint = "fail_over")]
pub async fn fail_over(id: String, site_id: String) -> Result<TakeoverView, ConsoleError> {
    crate::backend::console()?.fail_over(&id, &site_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_words_and_unknown_codes_stay_visible() {
        assert!(describe_ha_reason("partner_silent").contains("stopped answering"));
        assert_eq!(describe_ha_reason("requested"), "took over on request");
        assert_eq!(describe_ha_reason("new_reason"), "new_reason");
        assert_eq!(
            RequestedBy::HealthMonitor.describe(),
            "health monitor".to_string()
        );
    }
}
