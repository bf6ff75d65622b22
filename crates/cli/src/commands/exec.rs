//! `gleitzeit exec CODE`: run Python once on the warm pool, print what it printed
//! and its `result`.

use crate::context::Context;
use crate::output;
use clap::Args;
use gleitzeit_core::{ErrorCode, GzError};
use gleitzeit_providers::python::PythonProvider;
use gleitzeit_providers::{CallContext, Provider};
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Python code; `-` reads it from standard input
    pub code: String,
    /// Seconds before the code is stopped
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

pub async fn run(ctx: &Context, args: ExecArgs) -> Result<u8, GzError> {
    let code = if args.code == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| {
            GzError::new(
                ErrorCode::FileUnreadable,
                format!("cannot read standard input: {e}"),
            )
        })?;
        text
    } else {
        args.code
    };
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        return Err(GzError::new(
            ErrorCode::InvalidArgument,
            "--timeout must be a positive number of seconds",
        ));
    }
    let mut python_config = ctx.python_config();
    python_config.workers = 1;
    let provider = PythonProvider::new(python_config);
    let mut call = CallContext::detached("exec");
    call.timeout = Some(Duration::from_secs_f64(args.timeout));
    let outcome = tokio::select! {
        r = provider.call("python/execute", json!({"code": code}), &call) => r,
        _ = tokio::time::sleep(Duration::from_secs_f64(args.timeout) + Duration::from_secs(2)) => {
            Err(GzError::new(ErrorCode::TaskTimeout, format!("code ran longer than {} s", args.timeout)))
        }
    };
    provider.shutdown().await;
    let record = outcome?;
    if ctx.global.json {
        println!("{record}");
        return Ok(output::EXIT_OK);
    }
    let stdout = record.get("stdout").and_then(Value::as_str).unwrap_or("");
    print!("{stdout}");
    if let Some(stderr) = record.get("stderr").and_then(Value::as_str) {
        eprint!("{stderr}");
    }
    // `result` is the printed output itself when the code set no variable.
    let result = record.get("result").cloned().unwrap_or(Value::Null);
    let printed = stdout.trim_end_matches('\n');
    if !result.is_null() && result.as_str() != Some(printed) {
        println!(
            "result: {}",
            serde_json::to_string_pretty(&result).unwrap_or_default()
        );
    }
    Ok(output::EXIT_OK)
}
