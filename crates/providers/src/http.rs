//! `http/request`: one HTTP call, guarded against server-side request forgery.
//!
//! A workflow may come from someone who should not reach this machine's
//! private network, so by default a request may only go to public addresses:
//! loopback, private, link-local (cloud metadata lives there), CGNAT, unique
//! local and unspecified addresses are refused. The check is made on the
//! addresses a name resolves to — by the resolver the HTTP client connects
//! with, so a name cannot resolve to a public address for the check and a
//! private one for the connection — on literal IPs in the URL, and again for
//! every redirect hop. `http.allow_hosts` opens named hosts (or IPs).

use crate::{CallContext, MethodInfo, Provider};
use async_trait::async_trait;
use gleitzeit_core::{ErrorCode, GzError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BLOCKED_MARK: &str = "gleitzeit: address blocked";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Hosts (names or IPs) that may be reached even if private.
    pub allow_hosts: Vec<String>,
    /// Turn the guard off entirely (a trusted, single-user machine).
    pub allow_private: bool,
    /// Default per-request timeout, seconds.
    pub timeout_secs: f64,
    /// Larger bodies fail the task rather than fill memory.
    pub max_response_bytes: usize,
    pub max_redirects: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            allow_hosts: Vec::new(),
            allow_private: false,
            timeout_secs: 30.0,
            max_response_bytes: 10 * 1024 * 1024,
            max_redirects: 5,
        }
    }
}

/// Addresses no workflow may reach unless allowed.
pub fn is_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // CGNAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_blocked(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local (incl. fd00:ec2::254)
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 of anything
        }
    }
}

struct Guard {
    allow_hosts: Vec<String>,
    allow_private: bool,
}

impl Guard {
    fn allows_host(&self, host: &str) -> bool {
        self.allow_private
            || self
                .allow_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host.trim_matches(['[', ']'])))
    }
}

/// The resolver the client connects with: it drops blocked addresses, so the
/// address that was checked is the address that is used.
struct GuardedResolver(Arc<Guard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = guard.allows_host(&host);
            let usable: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| allowed || !is_blocked(a.ip()))
                .collect();
            if usable.is_empty() {
                let first = addrs
                    .first()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                return Err(format!("{BLOCKED_MARK}: {host} resolves to {first}").into());
            }
            Ok(Box::new(usable.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

pub struct HttpProvider {
    config: HttpConfig,
    guard: Arc<Guard>,
    client: reqwest::Client,
}

fn invalid(message: impl Into<String>) -> GzError {
    GzError::new(ErrorCode::InvalidParameters, message)
}

fn blocked(url: &str, why: impl std::fmt::Display) -> GzError {
    GzError::new(
        ErrorCode::AddressBlocked,
        format!("request to {url} refused: {why}"),
    )
    .at(url.to_string())
}

impl HttpProvider {
    pub fn new(config: HttpConfig) -> Result<HttpProvider, GzError> {
        let guard = Arc::new(Guard {
            allow_hosts: config.allow_hosts.clone(),
            allow_private: config.allow_private,
        });
        let client = reqwest::Client::builder()
            // Redirects are followed by hand, so each hop is checked.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve names where the guard cannot see.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| GzError::new(ErrorCode::InternalError, format!("HTTP client: {e}")))?;
        Ok(HttpProvider {
            config,
            guard,
            client,
        })
    }

    /// Refuses a URL before any connection: bad scheme, or a literal IP in
    /// blocked space. Names are checked by the resolver.
    fn check_url(&self, url: &reqwest::Url) -> Result<(), GzError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(blocked(
                url.as_str(),
                format!("scheme `{}` is not http or https", url.scheme()),
            ));
        }
        let Some(host) = url.host_str() else {
            return Err(invalid(format!("URL `{url}` has no host")));
        };
        if self.guard.allows_host(host) {
            return Ok(());
        }
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            if is_blocked(ip) {
                return Err(blocked(url.as_str(), format!("{ip} is a private, loopback or link-local address"))
                    .with_hint("Requests to this machine's or private networks are refused; allow a host with `http.allow_hosts` in config."));
            }
        }
        Ok(())
    }

    async fn request(&self, params: &Value, ctx: &CallContext) -> Result<Value, GzError> {
        let map = params
            .as_object()
            .ok_or_else(|| invalid("http/request parameters must be a mapping"))?;
        let url_text = map
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("http/request needs `url`"))?;
        let mut url = reqwest::Url::parse(url_text)
            .map_err(|e| invalid(format!("`{url_text}` is not a URL: {e}")))?;
        if let Some(query) = map.get("query") {
            let query = query
                .as_object()
                .ok_or_else(|| invalid("`query` must be a mapping"))?;
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                pairs.append_pair(k, &text);
            }
        }
        let mut method = map
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("GET")
            .to_ascii_uppercase()
            .parse::<reqwest::Method>()
            .map_err(|_| invalid("`method` is not an HTTP method"))?;
        let timeout = map
            .get("timeout")
            .and_then(Value::as_f64)
            .filter(|t| *t > 0.0)
            .unwrap_or(self.config.timeout_secs);
        let expected: Option<Vec<u64>> = match map
            .get("expect_status")
            .or_else(|| map.get("expected_status"))
        {
            None => None,
            Some(Value::Number(n)) => n.as_u64().map(|n| vec![n]),
            Some(Value::Array(items)) => Some(items.iter().filter_map(Value::as_u64).collect()),
            Some(_) => {
                return Err(invalid(
                    "`expect_status` must be a status or a list of them",
                ))
            }
        };
        let mut body: Option<(Vec<u8>, &str)> = match (map.get("json"), map.get("body")) {
            (Some(_), Some(_)) => return Err(invalid("give `json` or `body`, not both")),
            (Some(json), None) => Some((
                serde_json::to_vec(json).unwrap_or_default(),
                "application/json",
            )),
            (None, Some(Value::String(text))) => {
                Some((text.clone().into_bytes(), "text/plain; charset=utf-8"))
            }
            (None, Some(other)) => Some((other.to_string().into_bytes(), "application/json")),
            (None, None) => None,
        };
        let headers = match map.get("headers") {
            None => Map::new(),
            Some(Value::Object(h)) => h.clone(),
            Some(_) => return Err(invalid("`headers` must be a mapping")),
        };

        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(timeout);
        let mut hops = 0;
        let response = loop {
            self.check_url(&url)?;
            let mut request = self.client.request(method.clone(), url.clone());
            for (k, v) in &headers {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                request = request.header(k.as_str(), text);
            }
            if let Some((bytes, content_type)) = &body {
                if !headers
                    .keys()
                    .any(|k| k.eq_ignore_ascii_case("content-type"))
                {
                    request = request.header("content-type", *content_type);
                }
                request = request.body(bytes.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let send = request.timeout(left).send();
            let response = tokio::select! {
                r = send => r.map_err(|e| self.transport_error(url.as_str(), e, timeout))?,
                _ = ctx.cancel.cancelled() => return Err(GzError::new(ErrorCode::TaskCancelled, "cancelled")),
            };
            if response.status().is_redirection() && hops < self.config.max_redirects {
                if let Some(location) = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                {
                    let next = url
                        .join(location)
                        .map_err(|e| invalid(format!("bad redirect `{location}`: {e}")))?;
                    hops += 1;
                    // 303 (and 301/302 after POST, as browsers do) become GET.
                    let status = response.status().as_u16();
                    if status == 303
                        || ((status == 301 || status == 302) && method == reqwest::Method::POST)
                    {
                        method = reqwest::Method::GET;
                        body = None;
                    }
                    url = next;
                    continue;
                }
            }
            break response;
        };
        let status = response.status().as_u16();
        let final_url = response.url().to_string();
        let mut header_map = Map::new();
        for (name, value) in response.headers() {
            if let Ok(v) = value.to_str() {
                header_map.insert(name.as_str().to_string(), json!(v));
            }
        }
        let is_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let mut bytes = Vec::new();
        let mut stream = response.bytes_stream();
        use futures_util::StreamExt;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport_error(&final_url, e, timeout))?;
            if bytes.len() + chunk.len() > self.config.max_response_bytes {
                return Err(GzError::new(
                    ErrorCode::HttpRequestFailed,
                    format!(
                        "response from {final_url} is larger than {} bytes",
                        self.config.max_response_bytes
                    ),
                )
                .with_hint("Raise http.max_response_bytes in config, or ask for less."));
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let parsed = if is_json || text.trim_start().starts_with(['{', '[']) {
            serde_json::from_str::<Value>(&text).ok()
        } else {
            None
        };
        let ok = match &expected {
            Some(list) => list.contains(&u64::from(status)),
            None => (200..300).contains(&status),
        };
        if !ok {
            let excerpt: String = text.chars().take(300).collect();
            let mut error = GzError::new(
                ErrorCode::HttpRequestFailed,
                format!("{method} {final_url} answered {status}: {excerpt}"),
            )
            .at(final_url.clone());
            error.retryable = status == 429 || status >= 500;
            error.details = json!({"status": status});
            return Err(error);
        }
        let mut result = Map::new();
        result.insert(
            "result".into(),
            parsed.clone().unwrap_or_else(|| json!(text)),
        );
        result.insert("status".into(), json!(status));
        result.insert("headers".into(), Value::Object(header_map));
        match parsed {
            Some(json) => result.insert("json".into(), json),
            None => result.insert("text".into(), json!(text)),
        };
        result.insert("url".into(), json!(final_url));
        result.insert(
            "duration_ms".into(),
            json!(started.elapsed().as_millis() as u64),
        );
        Ok(Value::Object(result))
    }

    fn transport_error(&self, url: &str, error: reqwest::Error, timeout: f64) -> GzError {
        let mut chain = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        if let Some(at) = chain.find(BLOCKED_MARK) {
            let why = chain[at + BLOCKED_MARK.len()..]
                .trim_start_matches(": ")
                .to_string();
            return blocked(url, why).with_hint(
                "The name resolves to a private, loopback or link-local address; allow it with `http.allow_hosts` in config.",
            );
        }
        if error.is_timeout() {
            return GzError::new(
                ErrorCode::NetworkTimeout,
                format!("{url} did not answer within {timeout:.1} s"),
            )
            .at(url.to_string());
        }
        let mut e = GzError::new(
            ErrorCode::HttpRequestFailed,
            format!("request to {url} failed: {chain}"),
        )
        .at(url.to_string());
        e.retryable = error.is_connect() || error.is_request();
        e
    }
}

#[async_trait]
impl Provider for HttpProvider {
    fn protocol(&self) -> &'static str {
        "http"
    }

    fn methods(&self) -> Vec<MethodInfo> {
        vec![MethodInfo {
            method: "http/request".into(),
            description: "HTTP request (method, url, query, headers, json|body, timeout, expect_status); private addresses refused".into(),
        }]
    }

    async fn call(&self, method: &str, params: Value, ctx: &CallContext) -> Result<Value, GzError> {
        match method {
            "http/request" => self.request(&params, ctx).await,
            other => Err(GzError::new(
                ErrorCode::ProviderUnavailable,
                format!("the http provider has no method `{other}`"),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
