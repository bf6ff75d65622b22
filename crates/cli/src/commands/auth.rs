//! `gleitzeit auth …`: first admin, login, users, keys, audit log. User and
//! key changes go to the server when one is in use (with an ADMIN key), else
//! straight to the local store: whoever can write the database file is its
//! administrator anyway.

use crate::context::Context;
use crate::output::{self, format_time, Paint};
use crate::service::{self, NewKey};
use clap::{Args, Subcommand};
use gleitzeit_api::auth::UserView;
use gleitzeit_auth::admin;
use gleitzeit_auth::ApiKey;
use gleitzeit_core::{ErrorCode, GzError};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Create the first ADMIN user and print their key (once)
    Init {
        /// The admin's user name
        #[arg(long, default_value = "admin")]
        user: String,
    },
    /// Use an API key for client commands (checked against the server)
    Login {
        /// The key [default: GLEITZEIT_API_KEY, else asked for (not echoed) or read from stdin]
        #[arg(long, value_name = "KEY")]
        api_key: Option<String>,
        /// Remember it in ~/.gleitzeit/credentials (mode 0600)
        #[arg(long)]
        save: bool,
    },
    /// Which key is in use, and who the server says it belongs to
    Status,
    /// Forget the saved key
    Logout,
    /// Users (ADMIN): list, create, disable
    #[command(subcommand, alias = "user")]
    Users(UsersCommand),
    /// API keys (ADMIN): create, list, revoke
    #[command(subcommand, alias = "key")]
    Keys(KeysCommand),
    /// The audit log (ADMIN)
    Audit {
        #[arg(long, short = 'n', default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    List,
    Create {
        name: String,
        #[arg(long)]
        email: Option<String>,
        /// ADMIN, OPERATOR, USER or SERVICE
        #[arg(long, default_value = "USER")]
        role: String,
    },
    Disable {
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct KeyCreateArgs {
    /// A label for the key
    pub label: Option<String>,
    /// Whose key it is
    #[arg(long)]
    pub user: Option<String>,
    /// A role narrower than the user's
    #[arg(long)]
    pub role: Option<String>,
    /// Expiry: days (30) or with a unit (30d, 12h)
    #[arg(long)]
    pub expires: Option<String>,
    /// Same as the label
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    Create(KeyCreateArgs),
    List {
        #[arg(long)]
        user: Option<String>,
    },
    Revoke {
        /// The key's id (gzt_ and 6 characters, from `auth keys list`)
        id: String,
    },
}

fn parse_days(text: &str) -> Result<u32, GzError> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "d"),
    };
    let days = match (number.parse::<u32>(), unit) {
        (Ok(n), "d") if n > 0 => Some(n),
        (Ok(n), "h") if n > 0 => Some(n.div_ceil(24)),
        _ => None,
    };
    days.ok_or_else(|| {
        GzError::new(
            ErrorCode::InvalidArgument,
            format!("--expires `{text}` is not a duration"),
        )
        .with_hint("Use days (30 or 30d) or hours (12h).")
    })
}

pub async fn run(ctx: &Context, command: AuthCommand) -> Result<u8, GzError> {
    let paint = Paint(output::color_stdout());
    match command {
        AuthCommand::Init { user } => {
            let store = ctx.open_store(false).await?;
            let (key, record) = admin::init(store.as_ref(), &user).await?;
            if ctx.global.json {
                println!(
                    "{}",
                    json!({"user": user, "role": "ADMIN", "key": key.reveal(), "key_id": record.id})
                );
            } else {
                println!("Created ADMIN user `{user}` and their API key:\n");
                println!("  {}\n", paint.bold(key.reveal()));
                println!("Save it now: it is not stored and will not be shown again.");
                println!("Use it: gleitzeit auth login --api-key KEY --save   (or export GLEITZEIT_API_KEY=KEY)");
                // Python on the server is arbitrary code: say who may submit it.
                let policy = gleitzeit_auth::policy::Policy::new(
                    &ctx.config.auth.methods,
                    &ctx.config.files.root_paths(),
                    &ctx.config.files.role_paths(),
                )?;
                println!("\nWhat API workflows may do (`serve` prints this too):");
                for line in policy.describe(true) {
                    println!("{line}");
                }
            }
            Ok(output::EXIT_OK)
        }
        AuthCommand::Login { api_key, save } => {
            let api_key = match api_key.or_else(|| std::env::var("GLEITZEIT_API_KEY").ok()) {
                Some(key) => key,
                None => read_key()?,
            };
            // A typo is caught here, before anything is sent.
            let key = ApiKey::parse(api_key.trim())?;
            std::env::set_var("GLEITZEIT_API_KEY", key.reveal());
            let who = service::connect(ctx).await?.whoami().await?;
            let saved = if save {
                Some(crate::credentials::save(key.reveal())?)
            } else {
                None
            };
            if ctx.global.json {
                println!(
                    "{}",
                    json!({"key_id": key.public_id(), "whoami": who, "saved": saved.map(|p| p.display().to_string())})
                );
                return Ok(output::EXIT_OK);
            }
            match &who {
                Some(who) => println!(
                    "Key {} belongs to `{}` ({}).",
                    key.public_id(),
                    who.user,
                    who.role
                ),
                None => println!(
                    "Key {} is well-formed (no server to check it with).",
                    key.public_id()
                ),
            }
            match saved {
                Some(path) => println!("Saved to {}.", path.display()),
                None => println!("Not saved: pass --save, or export GLEITZEIT_API_KEY."),
            }
            Ok(output::EXIT_OK)
        }
        AuthCommand::Status => {
            let key = crate::credentials::api_key();
            let service = service::connect(ctx).await?;
            let who = match &key {
                Some(_) => service.whoami().await?,
                None => None,
            };
            let key_id = key.as_ref().map(|(k, source)| {
                (
                    ApiKey::parse(k)
                        .map(|k| k.public_id())
                        .unwrap_or_else(|_| "(malformed)".into()),
                    *source,
                )
            });
            if ctx.global.json {
                println!(
                    "{}",
                    json!({"key_id": key_id.as_ref().map(|k| &k.0), "source": key_id.as_ref().map(|k| k.1), "whoami": who})
                );
                return Ok(output::EXIT_OK);
            }
            match &key_id {
                Some((id, source)) => println!("API key {id} (from {source})"),
                None => println!("No API key configured (local commands need none)."),
            }
            if let Some(who) = who {
                println!("Server says: `{}`, role {}", who.user, who.role);
            }
            Ok(output::EXIT_OK)
        }
        AuthCommand::Logout => {
            let removed = crate::credentials::remove()?;
            println!(
                "{}",
                if removed {
                    "Forgot the saved key."
                } else {
                    "No saved key to forget."
                }
            );
            if std::env::var_os("GLEITZEIT_API_KEY").is_some() {
                println!("GLEITZEIT_API_KEY is still set in this environment.");
            }
            Ok(output::EXIT_OK)
        }
        AuthCommand::Users(command) => users(ctx, command, &paint).await,
        AuthCommand::Keys(command) => keys(ctx, command, &paint).await,
        AuthCommand::Audit { limit } => {
            let entries = service::connect(ctx).await?.audit(limit).await?;
            if ctx.global.json {
                println!("{}", json!(entries));
                return Ok(output::EXIT_OK);
            }
            for e in entries {
                println!(
                    "{:>5}  {}  {:<16} {:<10} {:<22} {}{}",
                    e.seq,
                    format_time(e.at_ms),
                    e.action,
                    e.actor.as_deref().unwrap_or("-"),
                    e.target.as_deref().unwrap_or("-"),
                    e.outcome,
                    e.client
                        .as_deref()
                        .map(|c| format!("  from {c}"))
                        .unwrap_or_default()
                );
            }
            Ok(output::EXIT_OK)
        }
    }
}

async fn users(ctx: &Context, command: UsersCommand, paint: &Paint) -> Result<u8, GzError> {
    let service = service::connect(ctx).await?;
    let changed = |user: UserView| (json!(user), vec![user]);
    let (result, rows) = match command {
        UsersCommand::List => {
            let users = service.users().await?;
            (json!(users), users)
        }
        UsersCommand::Create { name, email, role } => {
            changed(service.create_user(&name, email, &role).await?)
        }
        UsersCommand::Disable { name } => changed(service.disable_user(&name).await?),
    };
    if ctx.global.json {
        println!("{result}");
        return Ok(output::EXIT_OK);
    }
    for u in rows {
        println!(
            "{:<20} {:<9} {}{}",
            u.name,
            u.role,
            if u.disabled {
                paint.red("disabled")
            } else {
                paint.green("active")
            },
            u.email
                .as_deref()
                .map(|e| format!("  <{e}>"))
                .unwrap_or_default()
        );
    }
    Ok(output::EXIT_OK)
}

async fn keys(ctx: &Context, command: KeysCommand, paint: &Paint) -> Result<u8, GzError> {
    let service = service::connect(ctx).await?;
    match command {
        KeysCommand::Create(args) => {
            let expires_days = args.expires.as_deref().map(parse_days).transpose()?;
            let label = args.label.or(args.name).unwrap_or_else(|| "key".into());
            let made = service
                .create_key(NewKey {
                    user: args.user,
                    label,
                    role: args.role,
                    expires_days,
                })
                .await?;
            let record = &made.record;
            if ctx.global.json {
                println!(
                    "{}",
                    json!({"key": made.key, "id": record.id, "user": record.user, "expires_ms": record.expires_ms})
                );
            } else {
                println!(
                    "Key {} for `{}`{}:\n\n  {}\n\nSave it now: it is not stored and will not be shown again.",
                    record.id,
                    record.user,
                    record.expires_ms.map(|t| format!(", expires {}", format_time(t))).unwrap_or_default(),
                    paint.bold(&made.key)
                );
            }
            Ok(output::EXIT_OK)
        }
        KeysCommand::List { user } => {
            let list = service.keys(user.as_deref()).await?;
            if ctx.global.json {
                println!("{}", json!(list));
                return Ok(output::EXIT_OK);
            }
            for k in list {
                let state = if k.revoked_ms.is_some() {
                    paint.red("revoked")
                } else if k.expires_ms.is_some_and(|t| t <= gleitzeit_store::now_ms()) {
                    paint.yellow("expired")
                } else {
                    paint.green("active")
                };
                println!(
                    "{:<12} {:<16} {:<20} {state}  created {}{}",
                    k.id,
                    k.user,
                    k.name,
                    format_time(k.created_ms),
                    k.expires_ms
                        .map(|t| format!(", expires {}", format_time(t)))
                        .unwrap_or_default()
                );
            }
            Ok(output::EXIT_OK)
        }
        KeysCommand::Revoke { id } => {
            service.revoke_key(&id).await?;
            if !ctx.global.json {
                println!("Revoked key {id}; it stops working at once.");
            } else {
                println!("{}", json!({"revoked": id}));
            }
            Ok(output::EXIT_OK)
        }
    }
}

/// Asks for a key on the terminal without echoing it, or reads one line from
/// a pipe (`echo $KEY | gleitzeit auth login`).
fn read_key() -> Result<String, GzError> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let mut saved = None;
    if stdin.is_terminal() {
        eprint!("API key: ");
        let _ = std::io::stderr().flush();
        saved = echo_off();
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(attrs) = saved {
        restore_terminal(&attrs);
        eprintln!();
    }
    match read {
        Ok(_) if !line.trim().is_empty() => Ok(line.trim().to_string()),
        _ => Err(GzError::new(ErrorCode::AuthRequired, "no API key given")
            .with_hint("Pass --api-key KEY, set GLEITZEIT_API_KEY, or type the key when asked; `gleitzeit auth init` (on the server's machine) creates the first one.")),
    }
}

/// Turns the terminal's echo off so a typed key is not shown; the settings
/// to restore, or `None` when stdin's settings cannot be read.
// The standard library has no terminal settings, and the key must not be
// shown: two libc calls on fd 0 with a struct they fill in themselves.
#[allow(unsafe_code)]
fn echo_off() -> Option<libc::termios> {
    // SAFETY: termios is plain data that tcgetattr fills in; fd 0 is open
    // for the whole process and tcsetattr only reads the struct.
    unsafe {
        let mut attrs: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut attrs) != 0 {
            return None;
        }
        let saved = attrs;
        attrs.c_lflag &= !libc::ECHO;
        libc::tcsetattr(0, libc::TCSANOW, &attrs);
        Some(saved)
    }
}

/// Puts back the terminal settings [`echo_off`] saved.
#[allow(unsafe_code)]
fn restore_terminal(attrs: &libc::termios) {
    // SAFETY: `attrs` came from tcgetattr on the same fd, which stays open.
    unsafe {
        libc::tcsetattr(0, libc::TCSANOW, attrs);
    }
}
