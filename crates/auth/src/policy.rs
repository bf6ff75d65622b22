//! What a workflow that arrives over the API may do, decided by the
//! submitter's role when it is submitted: which methods it may name
//! (`auth.methods`) and which files its tasks may read (`files.roles`, else
//! `files.roots`). A workflow naming a method outside the role's reach is
//! refused whole (403, GZ4003) before anything is stored; the file grant is
//! stored with the workflow and travels with every task call, so the process
//! that runs a task (this one or a worker node) enforces it.

use crate::Role;
use gleitzeit_core::access::FileAccess;
use gleitzeit_core::agent::{self, ToolSource};
use gleitzeit_core::{parse, ErrorCode, GzError, Workflow};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// Method patterns of roles `auth.methods` does not name: today's reach,
/// except that Python (arbitrary code on the server) is for ADMIN and
/// OPERATOR only until an operator allows it.
pub fn default_methods(role: Role) -> Vec<String> {
    match role {
        Role::Admin | Role::Operator => vec!["*".into()],
        Role::User | Role::Service => vec!["*".into(), "!python/*".into()],
    }
}

#[derive(Debug, Clone)]
struct Methods {
    patterns: Vec<String>,
    allow: GlobSet,
    deny: GlobSet,
    /// Some `!function/…` pattern exists: function names must be known at
    /// submit to be checked.
    denies_functions: bool,
}

impl Methods {
    fn new(role: Role, patterns: Vec<String>) -> Result<Methods, GzError> {
        let mut allow = GlobSetBuilder::new();
        let mut deny = GlobSetBuilder::new();
        let mut denies_functions = false;
        for pattern in &patterns {
            let (negated, text) = match pattern.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, pattern.as_str()),
            };
            let glob = Glob::new(text.trim()).map_err(|e| {
                GzError::new(
                    ErrorCode::ConfigInvalid,
                    format!("auth.methods.{}: `{pattern}` is not a pattern: {e}", role.as_str()),
                )
                .at("auth.methods")
                .with_hint("Patterns look like `llm/*`, `function/call` or `!python/*` (a leading `!` excludes).")
            })?;
            if negated {
                denies_functions |= text.starts_with("function/") || text.starts_with('*');
                deny.add(glob);
            } else {
                allow.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| {
                GzError::new(
                    ErrorCode::ConfigInvalid,
                    format!("auth.methods.{}: {e}", role.as_str()),
                )
                .at("auth.methods")
            })
        };
        Ok(Methods {
            patterns,
            allow: build(allow)?,
            deny: build(deny)?,
            denies_functions,
        })
    }

    fn allows(&self, method: &str) -> bool {
        self.allow.is_match(method) && !self.deny.is_match(method)
    }
}

/// The per-role policy for API workflows.
#[derive(Debug, Clone)]
pub struct Policy {
    methods: HashMap<Role, Methods>,
    files: HashMap<Role, FileAccess>,
}

impl Default for Policy {
    /// Default methods, and no file access for anyone.
    fn default() -> Policy {
        Policy::new(&BTreeMap::new(), &[], &BTreeMap::new()).unwrap_or_else(|_| Policy {
            methods: HashMap::new(),
            files: HashMap::new(),
        })
    }
}

fn role_of(setting: &str, name: &str) -> Result<Role, GzError> {
    Role::parse(name).ok_or_else(|| {
        GzError::new(
            ErrorCode::ConfigInvalid,
            format!("{setting}: `{name}` is not a role"),
        )
        .at(setting.to_string())
        .with_hint("Roles are ADMIN, OPERATOR, USER and SERVICE.")
    })
}

impl Policy {
    /// `methods`: `auth.methods`; `roots`: `files.roots`; `roles`:
    /// `files.roles`. Unknown role names and bad patterns are GZ9003.
    pub fn new(
        methods: &BTreeMap<String, Vec<String>>,
        roots: &[PathBuf],
        roles: &BTreeMap<String, Vec<PathBuf>>,
    ) -> Result<Policy, GzError> {
        let mut named_methods = HashMap::new();
        for (name, patterns) in methods {
            named_methods.insert(role_of("auth.methods", name)?, patterns.clone());
        }
        let mut named_roots = HashMap::new();
        for (name, dirs) in roles {
            named_roots.insert(role_of("files.roles", name)?, dirs.clone());
        }
        let mut policy = Policy {
            methods: HashMap::new(),
            files: HashMap::new(),
        };
        for role in Role::ALL {
            let patterns = named_methods
                .remove(&role)
                .unwrap_or_else(|| default_methods(role));
            policy.methods.insert(role, Methods::new(role, patterns)?);
            let dirs = named_roots.remove(&role).unwrap_or_else(|| roots.to_vec());
            policy.files.insert(role, FileAccess::under(dirs));
        }
        Ok(policy)
    }

    /// The file grant of workflows `role` submits.
    pub fn files(&self, role: Role) -> FileAccess {
        self.files.get(&role).cloned().unwrap_or_default()
    }

    /// The method patterns of `role`, as configured.
    pub fn methods(&self, role: Role) -> &[String] {
        self.methods
            .get(&role)
            .map(|m| m.patterns.as_slice())
            .unwrap_or(&[])
    }

    /// Whether `role` may submit a task with `method`.
    pub fn allows(&self, role: Role, method: &str) -> bool {
        self.methods.get(&role).is_some_and(|m| m.allows(method))
    }

    /// Checks every task (sub-workflows' too) against the role's methods and
    /// gives the workflow the role's file grant.
    pub fn admit(&self, role: Role, workflow: &mut Workflow) -> Result<(), GzError> {
        let methods = self.methods.get(&role).ok_or_else(|| {
            GzError::new(
                ErrorCode::PermissionDenied,
                "this role may submit no methods",
            )
        })?;
        check_methods(role, methods, workflow)?;
        workflow.access = Some(self.files(role));
        Ok(())
    }

    /// What `serve` prints at start, one line per setting.
    pub fn describe(&self, auth_required: bool) -> Vec<String> {
        let mut lines = Vec::new();
        let roles: &[Role] = if auth_required {
            &Role::ALL
        } else {
            &[Role::Admin]
        };
        for &role in roles {
            let files = self.files(role);
            let roots = if files.is_none() {
                "no file access".to_string()
            } else {
                let dirs: Vec<String> = files
                    .roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect();
                format!("files under {}", dirs.join(", "))
            };
            let who = if auth_required {
                role.as_str()
            } else {
                "everyone (--no-auth, as ADMIN)"
            };
            lines.push(format!(
                "  {who}: {roots}; methods {}",
                self.methods(role).join(", ")
            ));
        }
        let python: Vec<&str> = roles
            .iter()
            .filter(|r| self.allows(**r, "python/execute"))
            .map(|r| r.as_str())
            .collect();
        lines.push(format!(
            "  python (arbitrary code on this server) may be submitted by: {}",
            if python.is_empty() {
                "nobody".to_string()
            } else {
                python.join(", ")
            }
        ));
        if auth_required
            && (!self.allows(Role::User, "python/execute")
                || !self.allows(Role::Service, "python/execute"))
        {
            lines.push("  to allow it for USER or SERVICE, list it in the config: auth.methods: {USER: [\"*\"]}".into());
        }
        lines
    }
}

fn check_methods(role: Role, methods: &Methods, workflow: &Workflow) -> Result<(), GzError> {
    for task in &workflow.tasks {
        let refused = |what: String| {
            let error = GzError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "task `{}` uses {what}, which role {} may not submit; nothing was stored",
                    task.id,
                    role.as_str()
                ),
            )
            .at(format!("tasks.{}", task.id))
            .with_hint(format!(
                "Role {} may submit: {}. An ADMIN changes this with `auth.methods.{}` in the server's config.",
                role.as_str(),
                methods.patterns.join(", "),
                role.as_str()
            ))
            .with_details(serde_json::json!({
                "task": task.id, "method": task.method, "role": role.as_str(), "setting": "auth.methods",
            }));
            Err(error)
        };
        if !methods.allows(&task.method) {
            return refused(format!("method `{}`", task.method));
        }
        if task.method == "function/call" && methods.denies_functions {
            let name = task
                .params
                .get("function")
                .or_else(|| task.params.get("name"))
                .and_then(serde_json::Value::as_str);
            match name {
                Some(name) if !name.contains("${") => {
                    let full = format!("function/{name}");
                    if methods.deny.is_match(&full) {
                        return refused(format!("function `{name}` (`{full}`)"));
                    }
                }
                _ => {
                    return refused(
                        "a function named only at run time (some functions are excluded, so the name must be written out)".into(),
                    )
                }
            }
        }
        if task.method == agent::METHOD {
            // Each tool is a call of its own method: an agent reaches only
            // what its submitter could call directly.
            let Ok(spec) = agent::read(&task.params, &|_| true) else {
                return refused("an llm/agent task whose tools cannot be read".into());
            };
            for tool in &spec.tools {
                let (methods_used, function): (&[&str], _) = match &tool.source {
                    ToolSource::Function { function } => (&["function/call"], Some(function)),
                    ToolSource::Mcp { .. } => (&["mcp/list_tools", "mcp/call_tool"], None),
                    ToolSource::Http { .. } => (&["http/request"], None),
                };
                for method in methods_used {
                    if !methods.allows(method) {
                        return refused(format!("tool `{}` (method `{method}`)", tool.name));
                    }
                }
                if let (Some(name), true) = (function, methods.denies_functions) {
                    let full = format!("function/{name}");
                    if methods.deny.is_match(&full) {
                        return refused(format!("tool `{}` (function `{full}`)", tool.name));
                    }
                }
            }
        }
        if task.method == parse::SUB_WORKFLOW {
            if let Some(child) = task
                .params
                .get("workflow")
                .cloned()
                .and_then(|w| serde_json::from_value::<Workflow>(w).ok())
            {
                check_methods(role, methods, &child)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workflow(tasks: serde_json::Value) -> Workflow {
        serde_json::from_value(json!({"name": "w", "tasks": tasks})).unwrap()
    }

    fn task(id: &str, method: &str, params: serde_json::Value) -> serde_json::Value {
        json!({"id": id, "method": method, "params": params})
    }

    #[test]
    fn defaults_keep_python_for_admin_and_operator() {
        let policy = Policy::default();
        for role in [Role::Admin, Role::Operator] {
            assert!(policy.allows(role, "python/execute"));
        }
        for role in [Role::User, Role::Service] {
            assert!(!policy.allows(role, "python/execute"), "{role:?}");
            assert!(!policy.allows(role, "python/script"), "{role:?}");
            assert!(policy.allows(role, "llm/chat"));
            assert!(policy.allows(role, "function/call"));
            assert!(policy.allows(role, "myproto/anything"));
        }
        for role in Role::ALL {
            assert!(policy.files(role).is_none(), "no file access by default");
        }
    }

    #[test]
    fn an_agents_tools_need_their_own_methods() {
        let mut config = BTreeMap::new();
        config.insert(
            "USER".to_string(),
            vec![
                "llm/*".to_string(),
                "function/*".to_string(),
                "!function/read_file".to_string(),
            ],
        );
        let policy = Policy::new(&config, &[], &BTreeMap::new()).unwrap();
        let agent = |tools: serde_json::Value| {
            workflow(json!([task(
                "a",
                "llm/agent",
                json!({"prompt": "p", "tools": tools})
            )]))
        };
        let mut ok = agent(json!([{"function": "count_words"}]));
        policy.admit(Role::User, &mut ok).unwrap();
        for (tools, named) in [
            (
                json!([{"mcp": {"server": "files", "tools": ["read_text_file"]}}]),
                "mcp/list_tools",
            ),
            (
                json!([{"http": {"name": "f", "url_prefix": "https://x.example/"}}]),
                "http/request",
            ),
            (json!([{"function": "read_file"}]), "function/read_file"),
        ] {
            let error = policy.admit(Role::User, &mut agent(tools)).unwrap_err();
            assert_eq!(error.code, ErrorCode::PermissionDenied);
            assert!(error.message.contains(named), "{}", error.message);
        }
    }

    #[test]
    fn refusal_names_task_and_method_and_stores_no_grant() {
        let policy = Policy::default();
        let mut w = workflow(json!([
            task(
                "ok",
                "function/call",
                json!({"function": "fibonacci", "n": 3})
            ),
            task("steal", "python/execute", json!({"code": "1"})),
        ]));
        let error = policy.admit(Role::User, &mut w).unwrap_err();
        assert_eq!(error.code, ErrorCode::PermissionDenied);
        assert!(
            error.message.contains("`steal`") && error.message.contains("python/execute"),
            "{}",
            error.message
        );
        assert!(w.access.is_none());
        policy.admit(Role::Admin, &mut w).unwrap();
        assert_eq!(w.access, Some(FileAccess::none()));
    }

    #[test]
    fn configured_methods_roots_and_roles() {
        let methods = BTreeMap::from([(
            "USER".to_string(),
            vec![
                "llm/*".to_string(),
                "function/*".to_string(),
                "!function/read_file".to_string(),
            ],
        )]);
        let roles = BTreeMap::from([("OPERATOR".to_string(), vec![PathBuf::from("/srv/ops")])]);
        let policy = Policy::new(&methods, &[PathBuf::from("/srv/shared")], &roles).unwrap();
        assert_eq!(
            policy.files(Role::User).roots,
            vec![PathBuf::from("/srv/shared")]
        );
        assert_eq!(
            policy.files(Role::Operator).roots,
            vec![PathBuf::from("/srv/ops")]
        );
        assert!(!policy.allows(Role::User, "http/request"));
        let mut ok = workflow(json!([task(
            "a",
            "function/call",
            json!({"function": "fibonacci"})
        )]));
        policy.admit(Role::User, &mut ok).unwrap();
        let mut excluded = workflow(json!([task(
            "r",
            "function/call",
            json!({"function": "read_file", "path": "x"})
        )]));
        let error = policy.admit(Role::User, &mut excluded).unwrap_err();
        assert!(error.message.contains("read_file"), "{}", error.message);
        let mut dynamic = workflow(json!([task(
            "d",
            "function/call",
            json!({"function": "${inputs.f}"})
        )]));
        assert_eq!(
            policy.admit(Role::User, &mut dynamic).unwrap_err().code,
            ErrorCode::PermissionDenied
        );
        let bad_role = BTreeMap::from([("GUEST".to_string(), vec!["*".to_string()])]);
        assert_eq!(
            Policy::new(&bad_role, &[], &BTreeMap::new())
                .unwrap_err()
                .code,
            ErrorCode::ConfigInvalid
        );
        let bad_glob = BTreeMap::from([("USER".to_string(), vec!["llm/[".to_string()])]);
        assert_eq!(
            Policy::new(&bad_glob, &[], &BTreeMap::new())
                .unwrap_err()
                .code,
            ErrorCode::ConfigInvalid
        );
    }

    #[test]
    fn describe_says_who_may_run_python() {
        let lines = Policy::default().describe(true).join("\n");
        assert!(
            lines.contains(
                "python (arbitrary code on this server) may be submitted by: ADMIN, OPERATOR"
            ),
            "{lines}"
        );
        assert!(lines.contains("USER: no file access"), "{lines}");
        assert!(lines.contains("auth.methods"), "{lines}");
    }
}
