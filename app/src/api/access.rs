//! Who may do what: the one table every console operation is checked
//! against, on the server before it runs and in the browser to decide which
//! buttons to show. A role is a rank: viewers look, members build and run
//! networks, admins also destroy, rotate keys, fail over and manage people
//! and accounts.

use super::Role;
use serde::{Deserialize, Serialize};

/// One thing a signed-in user asks the console to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Dashboard numbers, networks, jobs, progress, connectivity results,
    /// failover state, accounts and the role template.
    Read,
    /// Change one's own password.
    ChangeOwnPassword,
    /// List VPCs and KMS keys through a customer role (the wizard's inputs).
    DiscoverCloud,
    CreateNetwork,
    /// See what applying or tearing down would change (reads AWS).
    PreviewPlan,
    ApplyNetwork,
    CheckConnectivity,
    TearDownNetwork,
    RotateKeys,
    FailOver,
    ManageAccounts,
    ManageUsers,
    ReadAuditLog,
    RenameOrganization,
}

impl Action {
    pub const ALL: [Action; 14] = [
        Action::Read,
        Action::ChangeOwnPassword,
        Action::DiscoverCloud,
        Action::CreateNetwork,
        Action::PreviewPlan,
        Action::ApplyNetwork,
        Action::CheckConnectivity,
        Action::TearDownNetwork,
        Action::RotateKeys,
        Action::FailOver,
        Action::ManageAccounts,
        Action::ManageUsers,
        Action::ReadAuditLog,
        Action::RenameOrganization,
    ];

    /// The least role that may do this.
    pub fn needs(self) -> Role {
        match self {
            Action::Read | Action::ChangeOwnPassword => Role::Viewer,
            Action::DiscoverCloud
            | Action::CreateNetwork
            | Action::PreviewPlan
            | Action::ApplyNetwork
            | Action::CheckConnectivity => Role::Member,
            Action::TearDownNetwork
            | Action::RotateKeys
            | Action::FailOver
            | Action::ManageAccounts
            | Action::ManageUsers
            | Action::ReadAuditLog
            | Action::RenameOrganization => Role::Admin,
        }
    }
}

impl Role {
    fn rank(self) -> u8 {
        match self {
            Role::Viewer => 0,
            Role::Member => 1,
            Role::Admin => 2,
        }
    }

    /// Whether this role may do `action`.
    pub fn may(self, action: Action) -> bool {
        self.rank() >= action.needs().rank()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_only_read_members_build_and_admins_do_everything() {
        for a in Action::ALL {
            assert!(Role::Admin.may(a), "{a:?}");
        }
        let viewer: Vec<_> = Action::ALL
            .into_iter()
            .filter(|a| Role::Viewer.may(*a))
            .collect();
        assert_eq!(viewer, [Action::Read, Action::ChangeOwnPassword]);
        assert!(Role::Member.may(Action::ApplyNetwork));
        assert!(!Role::Member.may(Action::TearDownNetwork));
        assert!(!Role::Member.may(Action::ManageUsers));
    }
}
