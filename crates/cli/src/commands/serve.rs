//! `gleitzeit serve` (also `start`, `dev start`, `hub`): the runtime behind the
//! HTTP API, on the configured store, until SIGINT/SIGTERM.

use crate::context::Context;
use crate::output;
use clap::Args;
use gleitzeit_core::{ErrorCode, GzError};
use gleitzeit_server::{Server, ServerConfig};
use std::time::Duration;

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1, or GLEITZEIT_HOST]
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on [default: 8765, or GLEITZEIT_PORT]
    #[arg(long, short = 'p')]
    pub port: Option<u16>,
    /// Seconds to wait at shutdown for tasks in flight to be recorded
    #[arg(long, value_name = "SECONDS")]
    pub grace: Option<f64>,
    /// Do not resume workflows a previous process left unfinished
    #[arg(long)]
    pub no_resume: bool,
    /// Accept requests without an API key (anyone who can connect is ADMIN)
    #[arg(long)]
    pub no_auth: bool,
}

pub async fn run(ctx: &Context, args: ServeArgs) -> Result<u8, GzError> {
    let section = &ctx.config.server;
    let host = args.host.unwrap_or_else(|| section.host.clone());
    let port = args.port.unwrap_or(section.port);
    let grace = args.grace.unwrap_or(section.grace_seconds);
    if !grace.is_finite() || grace < 0.0 {
        return Err(GzError::new(
            ErrorCode::InvalidArgument,
            format!("--grace must be a number of seconds ≥ 0, not {grace}"),
        ));
    }
    let trusted_proxy = trusted_proxy(section)?;
    let policy = gleitzeit_auth::policy::Policy::new(
        &ctx.config.auth.methods,
        &ctx.config.files.root_paths(),
        &ctx.config.files.role_paths(),
    )?;
    let store = ctx.open_store(false).await?;
    // Workflows over the API carry their submitter's grant; anything else
    // (adopted from the command line) reads no files here.
    let runtime = ctx
        .runtime(store)
        .await?
        .with_default_files(gleitzeit_core::access::FileAccess::none());
    let cluster = if runtime.is_remote() {
        Some(std::sync::Arc::new(
            gleitzeit_cluster::admin::Admin::connect(&ctx.redis_url(), ctx.redis_prefix()).await?,
        ))
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|e| {
            GzError::new(
                ErrorCode::ServiceStartFailed,
                format!("cannot listen on {host}:{port}: {e}"),
            )
            .with_hint(if e.kind() == std::io::ErrorKind::AddrInUse {
                "Another process uses that port (maybe a server is already running: `gleitzeit health`); pick another with --port."
            } else {
                "Check --host (an address of this machine) and --port."
            })
        })?;
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| format!("{host}:{port}"));
    let server = Server::new(
        runtime,
        ServerConfig {
            max_body_bytes: section.max_body_bytes,
            grace: Duration::from_secs_f64(grace),
            auth_required: !args.no_auth,
            cluster: cluster.clone(),
            trusted_proxy,
            policy: policy.clone(),
            ..ServerConfig::default()
        },
    );
    let resumed = if args.no_resume {
        Vec::new()
    } else {
        server.resume_interrupted().await?
    };
    let loopback = listener
        .local_addr()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false);
    if args.no_auth && !loopback {
        eprintln!(
            "warning: --no-auth while listening on {address}, beyond this machine: anyone who can reach it is ADMIN and can run workflows (Python code included)."
        );
    }
    if !args.no_auth && server.users_exist().await == Some(false) {
        eprintln!(
            "note: this server requires API keys and has no users yet; create the first admin key with `gleitzeit auth init` (or start with --no-auth on a trusted machine)."
        );
    }
    let location = match ctx.backend() {
        "sqlite" => format!("sqlite {}", ctx.config.db_path().display()),
        "redis" => format!(
            "redis {} prefix {}",
            gleitzeit_store::redact_url(&ctx.redis_url()),
            ctx.redis_prefix()
        ),
        other => other.to_string(),
    };
    // One line a script (or a test) can wait for.
    println!("Gleitzeit server listening on http://{address} (store: {location})");
    println!("Policy for workflows submitted over the API:");
    for line in policy.describe(!args.no_auth) {
        println!("{line}");
    }
    let python = &ctx.config.providers.python;
    println!(
        "  python workers: network {}, isolation {}{}",
        python.network.as_str(),
        python.isolation.as_str(),
        if cluster.is_some() {
            " (worker nodes apply their own config, and read files only under their own files.roots)"
        } else {
            ""
        }
    );
    if !resumed.is_empty() {
        println!(
            "Resumed {} interrupted workflow(s): {}",
            resumed.len(),
            resumed.join(", ")
        );
    }
    if let Some(cluster) = &cluster {
        let active = cluster
            .nodes()
            .await
            .map(|n| n.iter().filter(|n| n.state == "active").count())
            .unwrap_or(0);
        println!("Scale-out: tasks run on worker nodes (`gleitzeit worker --backend redis`); {active} active now.");
    }
    println!("API: http://{address}/api/v1  events: /api/v1/events  docs: /api/v1/openapi.json");
    if let (Some(header), false) = (&section.trusted_proxy_header, args.no_auth) {
        // Which address the failed-attempt limiter counts is a security
        // setting: say it once, where the operator looks.
        println!(
            "Client addresses: from `{}` when the connection comes from {}",
            header.trim(),
            section.trusted_proxies.join(", ")
        );
    }
    server
        .serve(listener, crate::launch::shutdown_signal())
        .await?;
    println!("Server stopped.");
    Ok(output::EXIT_OK)
}

/// `server.trusted_proxy_header` and `server.trusted_proxies`, both or
/// neither: a header believed from anyone would let every client choose the
/// address the failed-attempt limiter counts.
fn trusted_proxy(
    section: &crate::config::ServerSection,
) -> Result<Option<gleitzeit_server::TrustedProxy>, GzError> {
    let invalid = |message: String| {
        GzError::new(ErrorCode::ConfigInvalid, message)
            .at("server.trusted_proxies")
            .with_hint("Set both, e.g. `trusted_proxy_header: X-Forwarded-For` and `trusted_proxies: [127.0.0.1]` (the proxy's own address), or neither.")
    };
    match (
        &section.trusted_proxy_header,
        section.trusted_proxies.is_empty(),
    ) {
        (None, true) => Ok(None),
        (None, false) => Err(invalid(
            "server.trusted_proxies is set but server.trusted_proxy_header is not".into(),
        )),
        (Some(_), true) => Err(invalid(
            "server.trusted_proxy_header is set but server.trusted_proxies names no proxy".into(),
        )),
        (Some(header), false) => {
            let header = gleitzeit_server::auth::proxy_header(header)?;
            let addresses = section
                .trusted_proxies
                .iter()
                .map(|a| {
                    a.trim().parse::<std::net::IpAddr>().map_err(|_| {
                        invalid(format!(
                            "`{a}` in server.trusted_proxies is not an IP address"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(gleitzeit_server::TrustedProxy { header, addresses }))
        }
    }
}
