//! `gleitzeit functions list|show NAME`.

use crate::output::{self, Paint};
use clap::Subcommand;
use gleitzeit_core::parse::suggest;
use gleitzeit_core::{ErrorCode, GzError};

#[derive(Subcommand, Debug)]
pub enum FunctionsCommand {
    /// List the built-in functions
    List {
        /// Only this category (math, text, data, json, date, …)
        #[arg(long)]
        category: Option<String>,
    },
    /// Show a function's arguments, return value and an example
    Show { name: String },
}

pub fn run(cmd: &FunctionsCommand, json: bool) -> Result<u8, GzError> {
    let paint = Paint(output::color_stdout());
    match cmd {
        FunctionsCommand::List { category } => {
            let mut functions: Vec<_> = gleitzeit_functions::all()
                .iter()
                .filter(|f| {
                    category
                        .as_deref()
                        .is_none_or(|c| f.category.eq_ignore_ascii_case(c))
                })
                .collect();
            functions.sort_by_key(|f| (f.category, f.name));
            if json {
                println!("{}", serde_json::to_string(&functions).unwrap_or_default());
                return Ok(output::EXIT_OK);
            }
            let mut current = "";
            for f in &functions {
                if f.category != current {
                    current = f.category;
                    println!("{}", paint.bold(current));
                }
                let args: Vec<String> = f
                    .args
                    .iter()
                    .map(|a| {
                        if a.required {
                            a.name.to_string()
                        } else {
                            format!("[{}]", a.name)
                        }
                    })
                    .collect();
                println!(
                    "  {:<18} {:<40} {}",
                    f.name,
                    args.join(" "),
                    paint.dim(f.description)
                );
            }
            println!(
                "{} functions. `gleitzeit functions show NAME` for details.",
                functions.len()
            );
        }
        FunctionsCommand::Show { name } => {
            let Some(f) = gleitzeit_functions::find(name) else {
                let names: Vec<&str> = gleitzeit_functions::all().iter().map(|f| f.name).collect();
                let hint = suggest(name, names.iter().copied())
                    .map(|s| format!("Did you mean `{s}`?"))
                    .unwrap_or_else(|| "`gleitzeit functions list` shows all functions.".into());
                return Err(GzError::new(
                    ErrorCode::FunctionNotFound,
                    format!("unknown function `{name}`"),
                )
                .with_hint(hint));
            };
            if json {
                println!("{}", serde_json::to_string(f).unwrap_or_default());
                return Ok(output::EXIT_OK);
            }
            println!(
                "{}  {}",
                paint.bold(f.name),
                paint.dim(&format!("({})", f.category))
            );
            println!("  {}", f.description);
            println!("{}", paint.bold("arguments"));
            for a in f.args {
                let default = a.default.map(|d| format!(" = {d}")).unwrap_or_default();
                let required = if a.required { " (required)" } else { "" };
                println!(
                    "  {:<14} {:<8}{required}{default}  {}",
                    a.name,
                    format!("{:?}", a.kind).to_lowercase(),
                    paint.dim(a.description)
                );
            }
            println!("{}  {}", paint.bold("returns"), f.returns);
            println!("{}  {}", paint.bold("example"), f.example);
            println!(
                "{}  method: {}  (or function/call with function: {})",
                paint.bold("in YAML"),
                f.name,
                f.name
            );
        }
    }
    Ok(output::EXIT_OK)
}
