//! `function/call`: the built-in functions of `gleitzeit-functions`, run inline
//! (they are pure and fast) unless they declare themselves blocking.

use crate::{CallContext, MethodInfo, Provider};
use async_trait::async_trait;
use gleitzeit_core::{ErrorCode, GzError};
use serde_json::{Map, Value};

pub struct FunctionProvider;

/// Arguments may be given flat (`{function: fibonacci, n: 10}`) or nested under
/// `args` / `kwargs` (seed 000's Python API).
pub fn arguments(params: &Value) -> Result<(String, Map<String, Value>), GzError> {
    let Some(map) = params.as_object() else {
        return Err(GzError::new(
            ErrorCode::InvalidParameters,
            "function/call parameters must be a mapping",
        ));
    };
    let name = map
        .get("function")
        .or_else(|| map.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            GzError::new(
                ErrorCode::InvalidParameters,
                "function/call needs `function: NAME`",
            )
            .with_hint(
                "Name the function, e.g. `function: fibonacci`, or write `method: fibonacci`.",
            )
        })?
        .to_string();
    let mut args = Map::new();
    for (k, v) in map {
        match k.as_str() {
            "function" | "name" | "timeout" => {}
            "args" | "kwargs" if v.is_object() => args.extend(
                v.as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone())),
            ),
            _ => {
                args.insert(k.clone(), v.clone());
            }
        }
    }
    Ok((name, args))
}

#[async_trait]
impl Provider for FunctionProvider {
    fn protocol(&self) -> &'static str {
        "function"
    }

    fn methods(&self) -> Vec<MethodInfo> {
        vec![MethodInfo {
            method: "function/call".into(),
            description: "Call a built-in function (`gleitzeit functions list`)".into(),
        }]
    }

    async fn call(
        &self,
        _method: &str,
        params: Value,
        ctx: &CallContext,
    ) -> Result<Value, GzError> {
        let (name, args) = arguments(&params)?;
        let function = gleitzeit_functions::find(&name).ok_or_else(|| {
            GzError::new(
                ErrorCode::FunctionNotFound,
                format!("unknown function `{name}`"),
            )
        })?;
        let result = if function.blocking {
            let files = ctx.files.clone();
            tokio::task::spawn_blocking(move || function.call(&args, &files))
                .await
                .map_err(|e| {
                    GzError::new(
                        ErrorCode::InternalError,
                        format!("function `{name}` panicked: {e}"),
                    )
                })?
        } else {
            function.call(&args, &ctx.files)
        }?;
        Ok(serde_json::json!({ "result": result }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flat_and_nested_arguments() {
        let (name, args) = arguments(&json!({"function": "fibonacci", "n": 5})).unwrap();
        assert_eq!((name.as_str(), &args["n"]), ("fibonacci", &json!(5)));
        let (_, args) =
            arguments(&json!({"function": "f", "kwargs": {"n": 3}, "args": {"m": 1}})).unwrap();
        assert_eq!(args["n"], 3);
        assert_eq!(args["m"], 1);
        assert_eq!(
            arguments(&json!({"n": 1})).unwrap_err().code,
            ErrorCode::InvalidParameters
        );
    }
}
