//! Who may do what: the one permission matrix. The server asks
//! `role.reach(permission)` for every request; the README's table is rendered
//! from the same data (`matrix_markdown`) and a test keeps the two equal.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    /// Everything, including users, keys and the audit log.
    Admin,
    /// All workflows, providers and nodes; no user management.
    Operator,
    /// Submits, sees and cancels their own workflows and events.
    User,
    /// For machines (workers, CI): submits and reads its own work.
    Service,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::User, Role::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::Operator => "OPERATOR",
            Role::User => "USER",
            Role::Service => "SERVICE",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(text.trim()))
    }

    /// How far a permission reaches for this role.
    pub fn reach(self, permission: Permission) -> Reach {
        use Permission::*;
        use Reach::{All, None, Own};
        use Role::*;
        match (permission, self) {
            (SubmitWorkflow, _) => Own,
            (ReadWorkflows | ReadEvents, Admin | Operator) => All,
            (ReadWorkflows | ReadEvents, User | Service) => Own,
            (CancelWorkflows, Admin | Operator) => All,
            (CancelWorkflows, User) => Own,
            (CancelWorkflows, Service) => None,
            (ReadSystem | ReadProviders, _) => All,
            (ReadMetrics, Admin | Operator | Service) => All,
            (ReadMetrics, User) => None,
            (ReadNodes, Admin | Operator) => All,
            (ReadNodes, User | Service) => None,
            (ManageUsers | ManageKeys | ReadAudit, Admin) => All,
            (ManageUsers | ManageKeys | ReadAudit, _) => None,
        }
    }
}

/// How far a key reaches: its user's role and, when the key was made with a
/// role of its own, that role too — the narrower of the two for every
/// permission. Ranks cannot express this (USER and SERVICE share one but
/// differ in what they may do), so a key never gains a right its user lacks.
pub fn key_reach(user: Role, key: Option<Role>, permission: Permission) -> Reach {
    let own = user.reach(permission);
    match key {
        Some(key) => own.min(key.reach(permission)),
        None => own,
    }
}

/// Whether a permission covers nothing, the caller's own workflows, or all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    None,
    Own,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    SubmitWorkflow,
    ReadWorkflows,
    CancelWorkflows,
    ReadEvents,
    /// Health, functions, the error registry, stats.
    ReadSystem,
    ReadProviders,
    ReadMetrics,
    ReadNodes,
    ManageUsers,
    ManageKeys,
    ReadAudit,
}

impl Permission {
    pub const ALL: [Permission; 11] = [
        Permission::SubmitWorkflow,
        Permission::ReadWorkflows,
        Permission::CancelWorkflows,
        Permission::ReadEvents,
        Permission::ReadSystem,
        Permission::ReadProviders,
        Permission::ReadMetrics,
        Permission::ReadNodes,
        Permission::ManageUsers,
        Permission::ManageKeys,
        Permission::ReadAudit,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Permission::SubmitWorkflow => "submit workflows",
            Permission::ReadWorkflows => "list and read workflows, tasks, results",
            Permission::CancelWorkflows => "cancel and resume workflows",
            Permission::ReadEvents => "follow events (SSE, WebSocket, Socket.IO)",
            Permission::ReadSystem => "health, stats, functions, error registry",
            Permission::ReadProviders => "list providers and endpoints",
            Permission::ReadMetrics => "Prometheus metrics",
            Permission::ReadNodes => "list worker nodes",
            Permission::ManageUsers => "create and disable users",
            Permission::ManageKeys => "create, list and revoke keys",
            Permission::ReadAudit => "read the audit log",
        }
    }
}

/// The matrix as a Markdown table, for the README.
pub fn matrix_markdown() -> String {
    let mut out = String::from(
        "| permission | ADMIN | OPERATOR | USER | SERVICE |\n| --- | --- | --- | --- | --- |\n",
    );
    for permission in Permission::ALL {
        out.push_str(&format!("| {} |", permission.describe()));
        for role in Role::ALL {
            let cell = match role.reach(permission) {
                Reach::All => "all",
                Reach::Own => "own",
                Reach::None => "—",
            };
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_case_insensitively() {
        for role in Role::ALL {
            assert_eq!(Role::parse(&role.as_str().to_lowercase()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn the_matrix_says_what_the_roles_promise() {
        // Admin: everything.
        assert!(Permission::ALL
            .iter()
            .all(|p| Role::Admin.reach(*p) >= Reach::Own));
        // Operator: all workflows, no user management.
        assert_eq!(Role::Operator.reach(Permission::ReadWorkflows), Reach::All);
        assert_eq!(
            Role::Operator.reach(Permission::CancelWorkflows),
            Reach::All
        );
        assert_eq!(Role::Operator.reach(Permission::ReadNodes), Reach::All);
        assert_eq!(Role::Operator.reach(Permission::ManageUsers), Reach::None);
        assert_eq!(Role::Operator.reach(Permission::ManageKeys), Reach::None);
        // User: only their own.
        for p in [
            Permission::ReadWorkflows,
            Permission::CancelWorkflows,
            Permission::ReadEvents,
        ] {
            assert_eq!(Role::User.reach(p), Reach::Own, "{p:?}");
        }
        assert_eq!(Role::User.reach(Permission::ReadAudit), Reach::None);
        assert_eq!(Role::User.reach(Permission::ReadNodes), Reach::None);
        // Service: submits and reads its own; cancels nothing.
        assert_eq!(Role::Service.reach(Permission::SubmitWorkflow), Reach::Own);
        assert_eq!(Role::Service.reach(Permission::ReadWorkflows), Reach::Own);
        assert_eq!(
            Role::Service.reach(Permission::CancelWorkflows),
            Reach::None
        );
        assert_eq!(Role::Service.reach(Permission::ReadMetrics), Reach::All);
    }

    #[test]
    fn a_key_reaches_what_both_its_user_and_its_own_role_reach() {
        // A SERVICE key of a USER: neither metrics (USER lacks them) nor
        // cancelling (SERVICE lacks it).
        let reach = |p| key_reach(Role::User, Some(Role::Service), p);
        assert_eq!(reach(Permission::ReadMetrics), Reach::None);
        assert_eq!(reach(Permission::CancelWorkflows), Reach::None);
        assert_eq!(reach(Permission::ReadWorkflows), Reach::Own);
        // An OPERATOR key of an ADMIN is an operator; no key role, the user's.
        assert_eq!(
            key_reach(Role::Admin, Some(Role::Operator), Permission::ManageKeys),
            Reach::None
        );
        for p in Permission::ALL {
            assert_eq!(key_reach(Role::User, None, p), Role::User.reach(p));
            for key in Role::ALL {
                assert!(key_reach(Role::User, Some(key), p) <= Role::User.reach(p));
            }
        }
    }

    #[test]
    fn the_markdown_table_has_a_row_per_permission() {
        let table = matrix_markdown();
        assert_eq!(table.lines().count(), 2 + Permission::ALL.len());
        assert!(table.contains("| cancel and resume workflows | all | all | own | — |"));
    }
}

#[cfg(test)]
mod readme {
    /// The README's permission table is this matrix, verbatim.
    #[test]
    fn the_readme_documents_the_enforced_matrix() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .expect("README.md");
        let table = super::matrix_markdown();
        assert!(
            readme.contains(&table),
            "README.md must contain the permission matrix exactly:\n{table}"
        );
    }
}
