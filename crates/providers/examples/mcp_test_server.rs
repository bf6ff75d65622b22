//! A small MCP server over stdio, written with rmcp's server side, for the
//! MCP provider's tests: `add` (structured output), `fail` (a tool error) and
//! `crash` (the process exits mid-call).

#![forbid(unsafe_code)]

use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::{schemars, tool, tool_router, ServiceExt};
use serde::{Deserialize, Serialize};

struct TestServer;

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[schemars(crate = "rmcp::schemars")]
struct AddParams {
    a: i64,
    b: i64,
}

#[derive(Serialize, schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct AddOutput {
    sum: i64,
}

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[schemars(crate = "rmcp::schemars")]
struct FailParams {
    reason: String,
}

#[tool_router(server_handler)]
impl TestServer {
    #[tool(name = "add", description = "Add two integers")]
    fn add(&self, Parameters(AddParams { a, b }): Parameters<AddParams>) -> Json<AddOutput> {
        Json(AddOutput { sum: a + b })
    }

    #[tool(name = "fail", description = "Always fails with the given reason")]
    fn fail(
        &self,
        Parameters(FailParams { reason }): Parameters<FailParams>,
    ) -> Result<String, String> {
        Err(reason)
    }

    #[tool(name = "crash", description = "Exits the server process")]
    fn crash(&self) -> String {
        std::process::exit(7)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let service = TestServer.serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}
