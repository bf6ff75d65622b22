//! `gleitzeit config [show|init|set KEY VALUE|path]`.

use crate::config::{config_path, Config};
use crate::context::Context;
use crate::output::{self, Paint};
use clap::{Args, Subcommand};
use gleitzeit_core::{ErrorCode, GzError};
use std::io::{BufRead, IsTerminal, Write};

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: Option<ConfigAction>,
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Print the effective configuration (the default)
    Show,
    /// Write a config file with the defaults
    Init {
        /// Overwrite an existing file
        #[arg(long)]
        force: bool,
    },
    /// Change one key in the config file, e.g. `execution.max_concurrent_tasks 8`
    Set { key: String, value: String },
    /// Print where the config file is
    Path,
}

fn write(path: &std::path::Path, config: &Config) -> Result<(), GzError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            GzError::new(
                ErrorCode::FileWriteFailed,
                format!("cannot create {}: {e}", parent.display()),
            )
        })?;
    }
    let text = format!(
        "# Gleitzeit configuration. `gleitzeit config show` prints the effective values.\n{}",
        config.to_yaml()
    );
    std::fs::write(path, text).map_err(|e| {
        GzError::new(
            ErrorCode::FileWriteFailed,
            format!("cannot write {}: {e}", path.display()),
        )
        .at(path.display().to_string())
    })
}

pub fn run(ctx: &Context, args: ConfigArgs) -> Result<u8, GzError> {
    let path = config_path(ctx.global.config.as_deref());
    let paint = Paint(output::color_stdout());
    // Seed 001: `gleitzeit config` on a new machine follows prompts to create
    // the default config. Only a person at a terminal is asked; scripts and
    // pipes get the effective configuration, as `config show` prints it.
    let offer_to_write = args.action.is_none()
        && !path.exists()
        && !ctx.global.json
        && std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal();
    match args.action.unwrap_or(ConfigAction::Show) {
        ConfigAction::Show => {
            // Secrets never reach the terminal (or a pasted bug report).
            let mut shown = ctx.config.clone();
            let redis = &mut shown.persistence.redis;
            redis.url = redis.url.as_deref().map(gleitzeit_store::redact_url);
            redis.password = redis.password.as_ref().map(|_| "***".to_string());
            if ctx.global.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&shown).unwrap_or_default()
                );
            } else {
                println!(
                    "{}",
                    paint.dim(&format!(
                        "# {} ({})",
                        path.display(),
                        if path.exists() {
                            "file"
                        } else {
                            "defaults; no file yet"
                        }
                    ))
                );
                print!("{}", shown.to_yaml());
            }
            if offer_to_write {
                offer_default_file(&path, &paint)?;
            }
        }
        ConfigAction::Init { force } => {
            if path.exists() && !force {
                return Err(GzError::new(
                    ErrorCode::FileExists,
                    format!("{} already exists", path.display()),
                )
                .at(path.display().to_string()));
            }
            write(&path, &Config::default())?;
            println!("{} wrote {}", paint.green("✓"), path.display());
        }
        ConfigAction::Set { key, value } => {
            // Edit the file's own values, not the environment-overridden ones.
            let mut config = match std::fs::read_to_string(&path) {
                Ok(text) => Config::parse(&text, &path)?,
                Err(_) => Config::default(),
            };
            config.set(&key, &value)?;
            write(&path, &config)?;
            println!("{} {key} = {value}  ({})", paint.green("✓"), path.display());
        }
        ConfigAction::Path => println!("{}", path.display()),
    }
    Ok(output::EXIT_OK)
}

/// Asks whether to write the defaults to `path` (no file there yet) and does
/// so on yes; Enter means yes, as the `[Y/n]` says.
fn offer_default_file(path: &std::path::Path, paint: &Paint) -> Result<(), GzError> {
    print!(
        "\nNo config file at {} yet. Write these defaults there? [Y/n] ",
        path.display()
    );
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    // End of input or an unreadable terminal is not a yes.
    let read = std::io::stdin().lock().read_line(&mut answer).unwrap_or(0);
    let yes = read > 0 && matches!(answer.trim().to_lowercase().as_str(), "" | "y" | "yes");
    if yes {
        write(path, &Config::default())?;
        println!("{} wrote {}", paint.green("✓"), path.display());
    } else {
        println!("Nothing written; `gleitzeit config init` writes it later.");
    }
    Ok(())
}
