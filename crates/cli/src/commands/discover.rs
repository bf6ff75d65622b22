//! `gleitzeit discover DIR`: what a folder holds, by file type, and which
//! batch command fits it.

use crate::batch::{extension, walk, FileKind};
use crate::context::Context;
use crate::output::{self, Paint};
use clap::Args;
use gleitzeit_core::GzError;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct DiscoverArgs {
    /// The folder to look at
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Look into subfolders too
    #[arg(long, short = 'r')]
    pub recursive: bool,
}

pub fn run(ctx: &Context, args: DiscoverArgs) -> Result<u8, GzError> {
    let files = walk(&args.dir, args.recursive)?;
    struct Group {
        count: usize,
        bytes: u64,
        extensions: BTreeMap<String, usize>,
    }
    let mut groups: BTreeMap<FileKind, Group> = BTreeMap::new();
    for path in &files {
        let group = groups.entry(FileKind::of(path)).or_insert(Group {
            count: 0,
            bytes: 0,
            extensions: BTreeMap::new(),
        });
        group.count += 1;
        group.bytes += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        *group.extensions.entry(extension(path)).or_default() += 1;
    }
    let dir = args.dir.display().to_string();
    let quoted = if dir.contains([' ', '\'', '"']) {
        format!("'{dir}'")
    } else {
        dir.clone()
    };
    let recursive = if args.recursive { " --recursive" } else { "" };
    let ext_list = |group: &Group| -> Vec<String> {
        group
            .extensions
            .keys()
            .filter(|e| !e.is_empty())
            .map(|e| format!(".{e}"))
            .collect()
    };
    let mut suggestions = Vec::new();
    for (kind, group) in &groups {
        let exts = ext_list(group).join(",");
        let line = match kind {
            FileKind::Text => format!("gleitzeit run --batch-folder {quoted}{recursive} --type text --extensions {exts} --prompt \"Summarize this document\""),
            FileKind::Vision => format!("gleitzeit run --batch-folder {quoted}{recursive} --type vision --prompt \"Describe this image\" --model llava"),
            FileKind::Data => format!("gleitzeit run --batch-folder {quoted}{recursive} --extensions {exts} --method python/execute --code \"result = sum(1 for _ in open(inputs['file_path']))\""),
            FileKind::Code => format!("gleitzeit run --batch-folder {quoted}{recursive} --extensions {exts} --prompt \"Review this code\""),
            FileKind::Other => continue,
        };
        suggestions.push(line);
    }
    if ctx.global.json {
        let kinds: Vec<Value> = groups
            .iter()
            .map(|(kind, g)| {
                json!({"type": kind.label(), "files": g.count, "bytes": g.bytes, "extensions": g.extensions})
            })
            .collect();
        println!(
            "{}",
            json!({"folder": dir, "files": files.len(), "types": kinds, "suggestions": suggestions})
        );
        return Ok(output::EXIT_OK);
    }
    let paint = Paint(output::color_stdout());
    let total: u64 = groups.values().map(|g| g.bytes).sum();
    println!("{dir}: {} files, {}", files.len(), size(total));
    if files.is_empty() {
        println!(
            "Nothing to batch here{}.",
            if args.recursive {
                ""
            } else {
                " (add --recursive to look into subfolders)"
            }
        );
        return Ok(output::EXIT_OK);
    }
    println!();
    println!(
        "{}",
        paint.bold(&format!(
            "{:<6}  {:>5}  {:>9}  EXTENSIONS",
            "TYPE", "FILES", "SIZE"
        ))
    );
    for (kind, group) in &groups {
        let list: Vec<String> = group
            .extensions
            .iter()
            .map(|(e, n)| {
                if e.is_empty() {
                    format!("(none) ({n})")
                } else {
                    format!(".{e} ({n})")
                }
            })
            .collect();
        println!(
            "{:<6}  {:>5}  {:>9}  {}",
            kind.label(),
            group.count,
            size(group.bytes),
            list.join(", ")
        );
    }
    if !suggestions.is_empty() {
        println!();
        println!("{}", paint.bold("Suggested batch commands:"));
        for line in &suggestions {
            println!("  {line}");
        }
    }
    Ok(output::EXIT_OK)
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / 1048576.0),
    }
}
