//! The one registry of user-facing error codes (GZxxxx) and the error value that
//! carries a code through every layer, into the store and out to the user.
//!
//! Ranges follow the earlier versions (seed 000's list): 1xxx infrastructure,
//! 2xxx execution (tasks, LLM endpoints, Python, functions and every other
//! provider), 3xxx workflow, 4xxx auth, 5xxx storage, 6xxx network, 8xxx system,
//! 9xxx CLI; a code's domain is the one its range names. Codes are stable: never
//! renumber one, only add.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    Infrastructure,
    Execution,
    Workflow,
    Auth,
    Storage,
    Network,
    System,
    Cli,
}

impl Domain {
    pub const ALL: [Domain; 8] = [
        Domain::Infrastructure,
        Domain::Execution,
        Domain::Workflow,
        Domain::Auth,
        Domain::Storage,
        Domain::Network,
        Domain::System,
        Domain::Cli,
    ];

    /// The codes this domain owns, as seed 000 lists them.
    pub fn range(self) -> (u16, u16) {
        match self {
            Domain::Infrastructure => (1000, 1999),
            Domain::Execution => (2000, 2999),
            Domain::Workflow => (3000, 3999),
            Domain::Auth => (4000, 4999),
            Domain::Storage => (5000, 5999),
            Domain::Network => (6000, 6999),
            Domain::System => (8000, 8999),
            Domain::Cli => (9000, 9999),
        }
    }

    /// What the domain's errors are about, for `errors stats`.
    pub fn covers(self) -> &'static str {
        match self {
            Domain::Infrastructure => "Redis, the server, workers and the queue",
            Domain::Execution => "tasks, LLM endpoints, Python, functions, HTTP, MCP",
            Domain::Workflow => "validation, dependencies, references, batches",
            Domain::Auth => "API keys, roles, permissions",
            Domain::Storage => "files and the store",
            Domain::Network => "connections, requests, file access",
            Domain::System => "resources and internal faults",
            Domain::Cli => "arguments and configuration",
        }
    }

    pub fn parse(text: &str) -> Option<Domain> {
        Domain::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(text))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Infrastructure => "infrastructure",
            Domain::Execution => "execution",
            Domain::Workflow => "workflow",
            Domain::Auth => "auth",
            Domain::Storage => "storage",
            Domain::Network => "network",
            Domain::System => "system",
            Domain::Cli => "cli",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One entry of the registry: what `gleitzeit errors show CODE` prints.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ErrorDef {
    pub code: &'static str,
    pub name: &'static str,
    pub domain: Domain,
    pub severity: Severity,
    pub retryable: bool,
    pub message: &'static str,
    pub hint: &'static str,
}

macro_rules! registry {
    ($( $variant:ident = $num:literal, $domain:ident, $sev:ident, $retry:literal, $msg:literal, $hint:literal; )*) => {
        /// Every code a user can meet. `ErrorCode::X.def()` gives its registry entry.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum ErrorCode { $( $variant = $num, )* }

        pub static REGISTRY: &[ErrorDef] = &[ $( ErrorDef {
            code: concat!("GZ", stringify!($num)),
            name: stringify!($variant),
            domain: Domain::$domain,
            severity: Severity::$sev,
            retryable: $retry,
            message: $msg,
            hint: $hint,
        }, )* ];

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            pub fn def(self) -> &'static ErrorDef {
                // ALL and REGISTRY are generated in the same order.
                let index = Self::ALL.iter().position(|c| *c == self).unwrap_or(0);
                &REGISTRY[index]
            }
        }
    };
}

registry! {
    RedisConnectionFailed = 1001, Infrastructure, Critical, true,
        "Cannot connect to Redis", "Check that Redis is running and that --redis-url / REDIS_URL points at it (e.g. redis://127.0.0.1:6379).";
    ServerUnreachable = 1002, Infrastructure, High, true,
        "Cannot reach the Gleitzeit server", "Start it with `gleitzeit serve`, or check --server / GLEITZEIT_HOST / GLEITZEIT_PORT.";
    ServiceStartFailed = 1003, Infrastructure, High, false,
        "A service could not start", "Another process may hold the port or file; choose another port or stop the other process.";
    WorkerLost = 1004, Infrastructure, Medium, true,
        "A worker node stopped responding", "Its tasks are reclaimed and re-run; check the worker's logs.";
    ServerShuttingDown = 1005, Infrastructure, Low, true,
        "The server is shutting down", "Retry in a moment; running workflows continue when the server is back.";
    DeadLettered = 1006, Infrastructure, High, false,
        "Task moved to the dead letters: worker nodes died running it", "It likely crashes its worker (memory, segfault, os._exit). `gleitzeit dead-letters list` shows its history; fix the cause, then `gleitzeit dead-letters retry ID`.";
    IncompatibleWorker = 1007, Infrastructure, High, false,
        "Worker and server speak different protocol versions", "Run the same gleitzeit version on the server and on every worker node.";
    MalformedQueueEntry = 1008, Infrastructure, Medium, false,
        "A queue entry could not be read", "It was moved to the dead letters (`gleitzeit dead-letters list`); something other than gleitzeit may be writing to the queue.";

    TaskFailed = 2001, Execution, Medium, true,
        "Task execution failed", "Read the task's error details; `gleitzeit get WORKFLOW_ID` shows every task's error.";
    TaskTimeout = 2002, Execution, Medium, true,
        "Task exceeded its timeout", "Raise `timeout:` on the task (seconds per attempt) or make the work smaller.";
    ProviderUnavailable = 2003, Execution, High, false,
        "No provider can run this method", "Check the method name (`gleitzeit functions list`, `gleitzeit providers list`) and that the provider is enabled in config.";
    InvalidParameters = 2004, Execution, Medium, false,
        "Task parameters are invalid", "Check the parameter names and types the method expects.";
    TaskCancelled = 2005, Execution, Low, false,
        "Task was cancelled", "The workflow was cancelled; `gleitzeit resume ID` continues it.";
    DependencyFailed = 2006, Execution, Medium, false,
        "A dependency of this task failed", "Fix the failed upstream task, or set `on_error: continue` on it to let dependants run.";
    LlmEndpointUnreachable = 2010, Execution, High, true,
        "LLM endpoint is unreachable", "Start the server (e.g. `ollama serve` or llama-server) or fix the endpoint URL in config / OLLAMA_HOST.";
    ModelNotFound = 2011, Execution, High, false,
        "Requested model is not available", "Install the model (e.g. `ollama pull llava`) or map the name to a served model with `models:` aliases in config.";
    LlmRequestFailed = 2012, Execution, Medium, true,
        "LLM request failed", "See the endpoint's error message; transient errors are retried on another endpoint.";
    StructuredOutputInvalid = 2013, Execution, Medium, true,
        "LLM reply does not match the requested schema", "Simplify the schema, raise retry.max_attempts, or use a model that follows instructions better.";
    RateLimited = 2014, Execution, Low, true,
        "Endpoint is rate limiting requests", "Lower concurrency or raise the endpoint's limits; the request is retried after the advised delay.";
    NoHealthyEndpoint = 2015, Execution, High, true,
        "No healthy endpoint serves this model", "Check `gleitzeit providers health`; endpoints come back after their circuit breaker cools down.";
    PythonException = 2020, Execution, Medium, true,
        "Python code raised an exception", "Read the traceback in the task's error; run the snippet with `gleitzeit exec` to iterate quickly.";
    PythonWorkerCrashed = 2021, Execution, High, true,
        "Python worker process died", "The code may have crashed the interpreter (segfault, os._exit); the worker was replaced.";
    PythonMemoryLimit = 2022, Execution, High, false,
        "Python task exceeded its memory limit", "Raise `memory_limit_mb` on the task or `python.memory_limit_mb` in config.";
    PythonResultNotSerializable = 2023, Execution, Low, false,
        "Python result is not JSON-serialisable", "Return plain dicts, lists, strings, numbers, booleans or None in `result`.";
    PythonNotFound = 2024, Execution, Critical, false,
        "python3 was not found", "Install Python 3 or set `python.interpreter` in config (or GLEITZEIT_PYTHON) to its path.";
    FunctionNotFound = 2030, Execution, Medium, false,
        "Unknown built-in function", "List the available functions with `gleitzeit functions list`.";
    FunctionArgumentInvalid = 2031, Execution, Medium, false,
        "Function argument is missing or has the wrong type", "See the function's arguments with `gleitzeit functions show NAME`.";
    FunctionFailed = 2032, Execution, Medium, false,
        "Built-in function failed", "Read the error message; it names the argument or value at fault.";
    HttpRequestFailed = 2040, Execution, Medium, true,
        "HTTP request failed", "Check the URL and the remote service; 5xx replies are retried.";
    McpServerFailed = 2041, Execution, High, true,
        "MCP server is unavailable or failed", "Check the server's entry under `mcp_servers` in config (command or url) and that it starts on its own.";
    McpToolError = 2042, Execution, Medium, false,
        "MCP tool returned an error", "Read the tool's message; `mcp/list_tools` shows each tool's input schema.";
    CustomProviderFailed = 2043, Execution, High, true,
        "Custom provider is unavailable or answered garbage", "Check the provider file's transport (command or url) and run the command by hand; `gleitzeit providers show NAME`.";
    JsonRpcError = 2044, Execution, Medium, false,
        "Custom provider answered with a JSON-RPC error", "Read the error's code and message; check the params against `gleitzeit providers show NAME`.";
    RetriesExhausted = 2050, Execution, Medium, false,
        "Task failed after all retry attempts", "Look at the last attempt's error; raise retry.max_attempts if the failure is transient.";
    ReplayMissing = 2060, Execution, High, false,
        "The recording has no answer for this request", "The workflow sends a request that was not recorded (changed prompt, model, options or an extra call); record it again with `gleitzeit run --record DIR`.";
    ReplayCorrupt = 2061, Execution, High, false,
        "A recording file cannot be read", "The named file of the recording directory is not a valid recorded exchange; restore it from version control or record again with `gleitzeit run --record DIR`.";

    ResultTooLarge = 2070, Execution, Medium, false,
        "Task result is over the result size limit", "Return less (write big data to a file and return its path), or raise limits.max_result_bytes in the config.";

    AgentMaxTurns = 2080, Execution, Medium, false,
        "Agent reached `max_turns` without a final answer", "The model kept asking for tools. Raise `max_turns`, narrow the prompt, or offer fewer tools; the error's details hold the transcript so far.";
    ToolCallMalformed = 2081, Execution, Medium, true,
        "The model server sent a malformed tool call", "The server's tool call has no name or its arguments are not a JSON object; retrying samples again. A model or chat template with proper tool support avoids it.";
    AgentToolFailed = 2082, Execution, Medium, false,
        "A tool the agent called failed (`on_tool_error: fail`)", "Read the tool's error in the details; with `on_tool_error: return` the model sees the error and may recover.";
    AgentToolUnavailable = 2083, Execution, High, false,
        "A tool offered to the agent cannot be provided", "The MCP server does not list the tool, or the tool's schema is not valid JSON Schema. `gleitzeit providers list` shows each MCP server's tools.";
    ToolCallRejected = 2084, Execution, Low, false,
        "The model called a tool that was not offered, or with arguments that do not fit its schema", "The call is not run; the error goes back to the model, which may correct it. Frequent rejections suggest a model with weak tool use or an unclear tool description.";

    YamlSyntax = 3001, Workflow, High, false,
        "Workflow file is not valid YAML or JSON", "Fix the syntax at the reported line and column (indentation, quotes, colons).";
    UnknownKey = 3002, Workflow, Medium, false,
        "Unknown key in workflow", "Remove the key or fix its spelling; see SPEC §1 for the accepted keys.";
    MissingField = 3003, Workflow, High, false,
        "Required field is missing", "Add the field; every workflow needs `name` and `tasks`, every task an `id` or `name` and a `method`.";
    WrongType = 3004, Workflow, Medium, false,
        "Value has the wrong type", "Use the type the key expects (string, number, list, mapping).";
    DuplicateTaskId = 3005, Workflow, High, false,
        "Two tasks have the same id or name", "Give every task a unique id.";
    MissingDependency = 3006, Workflow, High, false,
        "Dependency names no task in this workflow", "Use the id or name of a task defined in the same file.";
    DependencyCycle = 3007, Workflow, High, false,
        "Tasks depend on each other in a cycle", "Remove one dependency of the printed cycle.";
    UnknownMethod = 3008, Workflow, High, false,
        "Unknown method", "Use one of llm/chat, llm/generate, llm/vision, llm/embed, python/execute, python/script, python/function, function/call (or a function name), http/request, mcp/call_tool, mcp/list_tools, or a custom provider's protocol/method.";
    ReferenceNotAncestor = 3009, Workflow, High, false,
        "Reference to a task that does not run before this one", "Add the referenced task to `dependencies` so its result exists when this task runs.";
    InvalidRetryPolicy = 3010, Workflow, Medium, false,
        "Retry policy is invalid", "max_attempts >= 1, delays >= 0, max_delay >= base_delay, strategy exponential|linear|fixed.";
    EmptyWorkflow = 3011, Workflow, Medium, false,
        "Workflow has no tasks", "Add at least one task under `tasks:`.";
    UnknownReference = 3012, Workflow, High, false,
        "Reference names no task or input", "Reference a task id or name, `inputs.NAME`, `item`, `index` or `env.NAME`.";
    InvalidReference = 3013, Workflow, Medium, false,
        "Reference syntax is invalid", "Write references as ${task.path} or {{task.path}}; filters: json, raw, trim, code, default(\"x\").";
    InvalidValue = 3014, Workflow, Medium, false,
        "Value is not one of the accepted choices", "Use one of the values listed in the message.";
    ReferenceFieldMissing = 3020, Workflow, Medium, false,
        "Referenced field does not exist in the task's result", "Use one of the fields the message lists, or add `| default(\"x\")`.";
    WorkflowNotFound = 3021, Workflow, Medium, false,
        "Workflow not found", "List workflows with `gleitzeit list`; ids can be shortened to a unique prefix.";
    WorkflowNotResumable = 3022, Workflow, Medium, false,
        "Workflow cannot be resumed", "Only workflows that are not finished and not running in another live process can be resumed.";
    TaskNotFound = 3023, Workflow, Low, false,
        "Task not found in this workflow", "`gleitzeit get WORKFLOW_ID` lists the workflow's task ids.";
    InvalidInput = 3024, Workflow, Medium, false,
        "Workflow input is invalid", "Pass inputs as --input key=value (values are parsed as JSON when they can be) or --inputs FILE.";
    InvalidCondition = 3025, Workflow, Medium, false,
        "`when` condition is invalid", "Write conditions like `${check.result} == true and ${inputs.n} > 3`: references, quoted text, numbers, true/false/null, [lists], ==, !=, <, <=, >, >=, in, not in, and, or, not, parentheses.";
    ConditionFailed = 3026, Workflow, Medium, false,
        "`when` condition could not be evaluated", "Ordering (<, >) needs two numbers or two texts and `in` needs a list, text or object on the right; convert the value in an upstream task or use `| default(…)`.";
    InvalidForEach = 3027, Workflow, Medium, false,
        "`for_each` is not a list", "Give `for_each` an inline list, `range(N)`, or one reference (`${task.result}`) to a list.";
    SubWorkflowCycle = 3028, Workflow, High, false,
        "Sub-workflows include each other in a cycle", "A `workflow/run` task must not run its own file, directly or through other files; remove one `file:` of the printed cycle.";
    SubWorkflowFailed = 3029, Workflow, Medium, false,
        "Sub-workflow did not complete", "Read the sub-workflow's error; `gleitzeit get ID` with the workflow id in the error shows its tasks.";
    InvalidBudget = 3031, Workflow, Medium, false,
        "`budget` is invalid", "Write `budget: {tokens: 100000, cost: 2.50}`: a positive whole number of tokens and/or a positive cost in USD.";
    BudgetExceeded = 3032, Workflow, Medium, false,
        "Workflow budget used up", "The workflow's LLM calls reached its `budget:`; raise it, or use a smaller model or shorter prompts. `gleitzeit get ID` shows the usage per task.";
    InputLimitExceeded = 3033, Workflow, Medium, false,
        "Input exceeds a limit (nesting depth, alias expansion, task count, id length)", "Simplify the input, or raise the `limits.*` setting the message names in the config of the process that reads it.";
    InvalidAgentTool = 3040, Workflow, Medium, false,
        "An `llm/agent` tool or setting is invalid", "Each tool is one of `function: NAME`, `mcp: {server, tools: [...]}` or `http: {name, url_prefix}`, with unique names; see the README, section Agents.";
    ApprovalNotAvailable = 3041, Workflow, Medium, false,
        "Tool approval (`approve: true`) is not available yet", "Human approval of tool calls needs durable waits, which this version does not have; remove `approve: true` or leave the tool out.";
    InvalidTrigger = 3060, Workflow, Medium, false,
        "Trigger is invalid", "Each entry of `triggers:` has exactly one of cron, every, webhook or folder, plus optional inputs, overlap (skip|buffer_one|cancel_other|allow_all) and catchup (a duration).";
    InvalidCron = 3061, Workflow, Medium, false,
        "Cron expression is invalid", "Write five fields `minute hour day-of-month month day-of-week` (seconds may come first as a sixth), e.g. \"0 6 * * 1-5\", or @hourly, @daily, @weekly, @monthly, @yearly.";
    UnknownTimeZone = 3062, Workflow, Medium, false,
        "Unknown time zone", "Use an IANA time zone name such as Europe/Berlin, America/New_York or UTC.";
    IntervalTooShort = 3063, Workflow, Medium, false,
        "Schedule interval is invalid or under one second", "Write `every:` as a duration of at least one second, e.g. 30s, 15m, 1h.";
    ScheduleNotFound = 3064, Workflow, Low, false,
        "Schedule not found", "List schedules with `gleitzeit schedule list`; ids can be shortened to a unique prefix.";
    HookNotFound = 3065, Workflow, Low, false,
        "No webhook of that name", "Register it with `gleitzeit schedule add FILE` (a `webhook:` trigger) or `--webhook NAME`; `gleitzeit schedule list` shows the hooks.";
    HookBodyInvalid = 3066, Workflow, Medium, false,
        "Webhook body is invalid", "Send a JSON object (Content-Type: application/json) or a form (application/x-www-form-urlencoded) whose keys are inputs the workflow declares.";
    InvalidBackfillRange = 3067, Workflow, Low, false,
        "Backfill range is invalid", "Give --from and --to as RFC 3339 times (2026-01-01T00:00:00Z) or dates, with --from before --to; a backfill starts at most 1000 runs.";
    ScheduleNotRunnable = 3068, Workflow, Low, false,
        "The schedule cannot start this run", "Webhook and folder triggers have no ticks to backfill; a paused schedule starts nothing until `gleitzeit schedule resume ID`.";
    BatchNoFiles = 3030, Workflow, Low, false,
        "Batch folder has no matching files", "Check the folder and --pattern/--extensions/--type (add --recursive for subfolders); `gleitzeit discover DIR` lists what a folder holds.";

    TickFailed = 2100, Execution, Medium, true,
        "A scheduled tick could not start its run", "Read the message; the scheduler keeps running and tries the next tick. `gleitzeit schedule list` shows each schedule's last outcome.";
    HookRateLimited = 2101, Execution, Low, true,
        "Webhook called too often", "Wait for the time the Retry-After header gives; each hook accepts a limited number of calls per minute.";

    AuthRequired = 4001, Auth, High, false,
        "Authentication required", "Pass an API key with --api-key, GLEITZEIT_API_KEY or `gleitzeit auth login`.";
    TokenExpired = 4002, Auth, High, false,
        "Authentication token has expired", "Authenticate with: gleitzeit auth login";
    PermissionDenied = 4003, Auth, High, false,
        "Permission denied", "Ask an ADMIN for a key with the needed role.";
    InvalidApiKey = 4004, Auth, High, false,
        "API key is invalid", "Check for typos; keys look like gzt_… and carry a checksum.";
    TooManyAuthFailures = 4005, Auth, Medium, true,
        "Too many failed authentication attempts", "Wait a minute before trying again, with a valid key.";
    StreamTicketInvalid = 4006, Auth, Medium, false,
        "Stream ticket is unknown, used or expired", "Get a new one with your key (POST /api/v1/stream-tickets); each ticket opens one stream, within 30 seconds.";
    KeyInUrl = 4007, Auth, High, false,
        "API keys are not accepted in URLs", "Send the key in the Authorization header; browsers' EventSource and WebSocket open streams with a ticket (POST /api/v1/stream-tickets, then ?ticket=).";

    HookUnauthorized = 4010, Auth, High, false,
        "Webhook call not authorized", "Send a SERVICE key (Authorization: Bearer gzt_…) or the hook's secret (X-Gleitzeit-Hook-Secret header).";

    FileNotFound = 5001, Storage, Medium, false,
        "Requested file does not exist", "Check the file path and that the file exists.";
    FileUnreadable = 5002, Storage, Medium, false,
        "File cannot be read", "Check the file's permissions and that it is text (UTF-8).";
    DatabaseLocked = 5003, Storage, High, true,
        "Database is locked by another process", "Wait for the other gleitzeit process to finish, or use --ephemeral / another --db path.";
    DatabaseCorrupt = 5004, Storage, Critical, false,
        "Database file is corrupt or not a Gleitzeit database", "Move the file away (it is in ~/.gleitzeit by default) and run again; a new one is created.";
    DatabaseError = 5005, Storage, High, true,
        "Database operation failed", "Check free disk space and file permissions of the database directory.";
    SchemaTooNew = 5006, Storage, High, false,
        "Database was written by a newer Gleitzeit", "Upgrade gleitzeit, or point --db at another file.";
    FileWriteFailed = 5007, Storage, Medium, false,
        "File cannot be written", "Check the directory exists and is writable, or choose another path.";
    StoredRecordUnreadable = 5008, Storage, High, false,
        "A stored record cannot be read back", "It was written by an older version or the database is damaged; the workflow is marked failed. Submit it again from its file; other workflows are not affected.";

    ConnectionRefused = 6001, Network, High, true,
        "Connection refused", "Check that the remote service is running and the address is right.";
    NetworkTimeout = 6002, Network, Medium, true,
        "Network request timed out", "Check the remote service's load, or raise the timeout.";
    AddressBlocked = 6004, Network, High, false,
        "Target address is blocked", "Requests to loopback, private and link-local addresses are blocked unless config allows them (http.allow_private).";
    RequestTooLarge = 6005, Network, Low, false,
        "Request body is too large", "Send a smaller body, or raise server.max_body_bytes in the server's config.";
    MalformedRequest = 6006, Network, Low, false,
        "Request is malformed", "Check the request against the API description at /api/v1/openapi.json.";
    RouteNotFound = 6007, Network, Low, false,
        "No such API endpoint", "The API lives under /api/v1; /api/v1/openapi.json lists every endpoint.";
    FileAccessDenied = 6010, Network, High, false,
        "File access refused by the file-access policy", "Tasks read files only under the allowed roots: `files.roots` in the config of the machine that runs them (for workflows submitted over the API, `files.roles.ROLE`); the store, config file and saved credentials are refused always.";
    PathInvalid = 6011, Network, Medium, false,
        "Not a local file path", "Give the path of a local file, absolute or relative to the working directory; URLs, `~user/`, Windows-style paths, NUL bytes and empty paths are refused.";

    ResourceExhausted = 8001, System, Critical, true,
        "System resources exhausted", "Free memory or lower concurrency.";
    InternalError = 8003, System, Critical, false,
        "Internal error", "This is a bug in gleitzeit; please report it with the command you ran.";
    Interrupted = 8004, System, Low, false,
        "Interrupted", "The run was interrupted; `gleitzeit resume ID` continues it.";

    InvalidArgument = 9001, Cli, Low, false,
        "Invalid command-line argument", "See `gleitzeit COMMAND --help`.";
    ConfigInvalid = 9003, Cli, Medium, false,
        "Configuration is invalid", "Fix the reported key in the config file (`gleitzeit config show` prints the effective config).";
    FileExists = 9004, Cli, Low, false,
        "File already exists", "Choose another name or pass --force to overwrite.";
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        self.def().code
    }

    pub fn parse(text: &str) -> Option<ErrorCode> {
        let wanted = text.trim().to_ascii_uppercase();
        let wanted = if wanted.starts_with("GZ") {
            wanted
        } else {
            format!("GZ{wanted}")
        };
        Self::ALL.iter().copied().find(|c| c.as_str() == wanted)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        // An unknown code from a newer version still round-trips as an internal error
        // rather than making stored workflows unreadable.
        Ok(ErrorCode::parse(&text).unwrap_or(ErrorCode::InternalError))
    }
}

/// A user-facing error: a code from the registry plus what happened, where, and
/// what to do. It is plain data so it can be stored with a task and sent over the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GzError {
    pub code: ErrorCode,
    pub message: String,
    /// Specific advice for this occurrence; the registry's hint when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Where it came from: `file:line:col`, a task id, an endpoint, a reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub retryable: bool,
    /// Extra structured context (traceback, available fields, HTTP status, …).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

impl GzError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        GzError {
            code,
            message: message.into(),
            hint: None,
            location: None,
            retryable: code.def().retryable,
            details: serde_json::Value::Null,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn at(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn hint_text(&self) -> &str {
        self.hint.as_deref().unwrap_or(self.code.def().hint)
    }
}

impl fmt::Display for GzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(location) = &self.location {
            write!(f, " (at {location})")?;
        }
        Ok(())
    }
}

impl std::error::Error for GzError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_in_their_domain_range() {
        let mut seen = HashSet::new();
        for (code, def) in ErrorCode::ALL.iter().zip(REGISTRY) {
            assert!(seen.insert(def.code), "duplicate {}", def.code);
            assert_eq!(code.def().code, def.code);
            let number = *code as u16;
            let (low, high) = def.domain.range();
            assert!(
                (low..=high).contains(&number),
                "{} is outside its domain {}'s range",
                def.code,
                def.domain.as_str()
            );
            assert!(!def.hint.is_empty() && !def.message.is_empty());
        }
        assert!(REGISTRY.len() >= 25, "the seeds promise 25+ errors");
    }

    #[test]
    fn parse_accepts_with_or_without_prefix() {
        assert_eq!(
            ErrorCode::parse("GZ1001"),
            Some(ErrorCode::RedisConnectionFailed)
        );
        assert_eq!(ErrorCode::parse("gz3007"), Some(ErrorCode::DependencyCycle));
        assert_eq!(ErrorCode::parse("5001"), Some(ErrorCode::FileNotFound));
        assert_eq!(ErrorCode::parse("GZ0000"), None);
    }

    #[test]
    fn gz_error_round_trips_through_json() {
        let error = GzError::new(ErrorCode::TaskTimeout, "took too long").at("task t1");
        let text = serde_json::to_string(&error).unwrap();
        assert!(text.contains("\"GZ2002\""));
        let back: GzError = serde_json::from_str(&text).unwrap();
        assert_eq!(back, error);
        assert!(back.retryable);
    }
}
