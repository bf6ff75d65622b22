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
            (ManageProviders | ReadNodes | ManageNodes, Admin | Operator) => All,
            (ManageProviders | ReadNodes | ManageNodes, User | Service) => None,
            (RunWorker, Admin | Service) => All,
            (RunWorker, Operator | User) => None,
            (ManageUsers | ManageKeys | ReadAudit, Admin) => All,
            (ManageUsers | ManageKeys | ReadAudit, _) => None,
        }
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
    ManageProviders,
    ReadNodes,
    ManageNodes,
    RunWorker,
    ManageUsers,
    ManageKeys,
    ReadAudit,
}

impl Permission {
    pub const ALL: [Permission; 14] = [
        Permission::SubmitWorkflow,
        Permission::ReadWorkflows,
        Permission::CancelWorkflows,
        Permission::ReadEvents,
        Permission::ReadSystem,
        Permission::ReadProviders,
        Permission::ReadMetrics,
        Permission::ManageProviders,
        Permission::ReadNodes,
        Permission::ManageNodes,
        Permission::RunWorker,
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
            Permission::ManageProviders => "change providers and endpoints",
            Permission::ReadNodes => "list worker nodes",
            Permission::ManageNodes => "drain or remove worker nodes",
            Permission::RunWorker => "run as a worker node",
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
        assert_eq!(Role::Operator.reach(Permission::ManageNodes), Reach::All);
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
        // Service: submits and reads its own; runs workers; cancels nothing.
        assert_eq!(Role::Service.reach(Permission::SubmitWorkflow), Reach::Own);
        assert_eq!(Role::Service.reach(Permission::ReadWorkflows), Reach::Own);
        assert_eq!(
            Role::Service.reach(Permission::CancelWorkflows),
            Reach::None
        );
        assert_eq!(Role::Service.reach(Permission::RunWorker), Reach::All);
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
