//! HTTP to a Gleitzeit server: its answers as typed values, its errors as the
//! `GzError`s the local side produces, its event stream (SSE) resumed across
//! reconnects.

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use gleitzeit_core::events::Event;
use gleitzeit_core::{ErrorCode, GzError};
use serde_json::Value;
use std::time::Duration;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub base: String,
}

fn unreachable(base: &str, why: impl std::fmt::Display) -> GzError {
    GzError::new(
        ErrorCode::ServerUnreachable,
        format!("cannot reach the Gleitzeit server at {base}: {why}"),
    )
    .at(base.to_string())
}

impl Client {
    pub fn new(url: &str) -> Result<Client, GzError> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(GzError::new(
                ErrorCode::InvalidArgument,
                format!("server URL `{url}` must start with http:// or https://"),
            )
            .with_hint("For example --server http://127.0.0.1:8765"));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some((key, _)) = crate::credentials::api_key() {
            if let Ok(mut value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            {
                // Kept out of debug output and HTTP/2 header compression.
                value.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, value);
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .default_headers(headers)
            .build()
            .map_err(|e| GzError::new(ErrorCode::InternalError, format!("HTTP client: {e}")))?;
        Ok(Client { http, base })
    }

    /// Whether a Gleitzeit server answers here (quickly: this runs before
    /// every client command that was not pointed at a server).
    pub async fn probe(&self) -> bool {
        let request = self
            .http
            // Quick: this runs before client commands, so it must not wait
            // on the server's LLM endpoints.
            .get(format!("{}/api/v1/health?quick=true", self.base))
            .timeout(Duration::from_millis(1500))
            .send();
        match request.await {
            Ok(response) => response
                .json::<Value>()
                .await
                // Without a key a server says only its status.
                .is_ok_and(|v| {
                    matches!(
                        v.get("status").and_then(Value::as_str),
                        Some("healthy" | "degraded" | "unhealthy")
                    )
                }),
            Err(_) => false,
        }
    }

    /// Fails unless a server answers here: for a server asked for by name,
    /// not answering is an error, not a reason to fall back to the store.
    pub async fn require(&self) -> Result<(), GzError> {
        match self.get("/api/v1/health?quick=true").await {
            Err(e) if e.code == ErrorCode::ServerUnreachable => Err(e),
            _ => Ok(()),
        }
    }

    /// An answer read into `T`; one that does not fit names the endpoint.
    fn read<T: serde::de::DeserializeOwned>(&self, path: &str, body: Value) -> Result<T, GzError> {
        serde_json::from_value(body).map_err(|e| {
            let endpoint = path.split('?').next().unwrap_or(path);
            GzError::new(
                ErrorCode::ServerUnreachable,
                format!(
                    "the server at {} sent an unexpected answer to {endpoint}: {e}",
                    self.base
                ),
            )
            .at(format!("{}{endpoint}", self.base))
        })
    }

    pub async fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, GzError> {
        let body = self.get(path).await?;
        self.read(path, body)
    }

    pub async fn post_as<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: Option<String>,
    ) -> Result<T, GzError> {
        let answer = self.post(path, query, body).await?;
        self.read(path, answer)
    }

    pub async fn post_json_as<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, GzError> {
        let answer = self.post_json(path, body).await?;
        self.read(path, answer)
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<Value, GzError> {
        let response = request
            .send()
            .await
            .map_err(|e| unreachable(&self.base, e))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| {
            GzError::new(
                ErrorCode::ServerUnreachable,
                format!(
                    "the server at {} sent a reply that is not JSON ({status}): {e}",
                    self.base
                ),
            )
        })?;
        if status.is_success() || (status.as_u16() == 503 && body.get("providers").is_some()) {
            return Ok(body);
        }
        let mut error: GzError = serde_json::from_value(body.clone()).unwrap_or_else(|_| {
            GzError::new(
                ErrorCode::InternalError,
                format!("the server answered {status}: {body}"),
            )
        });
        if let Some(diagnostics) = body.get("diagnostics").filter(|d| d.is_array()) {
            error.details = serde_json::json!({ "diagnostics": diagnostics });
        }
        Err(error)
    }

    pub async fn delete_as<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, GzError> {
        let answer = self
            .answer(self.http.delete(format!("{}{path}", self.base)))
            .await?;
        self.read(path, answer)
    }

    pub async fn get(&self, path: &str) -> Result<Value, GzError> {
        self.answer(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: Option<String>,
    ) -> Result<Value, GzError> {
        let mut request = self.http.post(format!("{}{path}", self.base)).query(query);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/yaml")
                .body(body);
        }
        self.answer(request).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value, GzError> {
        self.answer(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// The server's event stream (SSE), resumed by id across reconnects so a
    /// restarting server costs a pause, not events.
    pub fn events(
        &self,
        query: String,
        after: Option<u64>,
    ) -> BoxStream<'static, Result<Event, GzError>> {
        let client = self.clone();
        Box::pin(async_stream::try_stream! {
            // The last SSE id: a sequence number, or `SEQ.INDEX` inside a
            // stored chunk of tokens.
            let mut last: Option<String> = after.map(|seq| seq.to_string());
            let mut failures = 0u32;
            loop {
                let mut url = format!("{}/api/v1/events?{query}", client.base);
                if let Some(id) = &last {
                    url.push_str(&format!("&after={id}"));
                }
                let response = client.http.get(&url).send().await;
                let response = match response {
                    Ok(r) if r.status().is_success() => r,
                    Ok(r) => {
                        let status = r.status();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        Err(serde_json::from_value::<GzError>(body).unwrap_or_else(|_| {
                            GzError::new(ErrorCode::InternalError, format!("event stream refused: {status}"))
                        }))?;
                        continue;
                    }
                    Err(e) => {
                        failures += 1;
                        if failures > 60 {
                            Err(unreachable(&client.base, e))?;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                failures = 0;
                let mut bytes = response.bytes_stream();
                let mut buffer = Vec::new();
                let mut data = String::new();
                let mut id: Option<String> = None;
                while let Some(chunk) = bytes.next().await {
                    let Ok(chunk) = chunk else { break };
                    buffer.extend_from_slice(&chunk);
                    while let Some(line) = take_line(&mut buffer) {
                        let line = line.as_str();
                        if let Some(rest) = line.strip_prefix("data:") {
                            data.push_str(rest.trim_start());
                        } else if let Some(rest) = line.strip_prefix("id:") {
                            id = Some(rest.trim().to_string());
                        } else if line.is_empty() && !data.is_empty() {
                            if let Ok(event) = serde_json::from_str::<Event>(&data) {
                                last = Some(id.take().unwrap_or_else(|| event.seq.to_string()));
                                yield event;
                            }
                            data.clear();
                        }
                    }
                }
                // The server went away (restart, shutdown): reconnect and resume.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    }
}

/// Takes one complete line (without its `\n` or `\r\n`) off the front of an
/// event stream's byte buffer. Bytes wait in the buffer until their line ends,
/// so a character whose UTF-8 bytes arrive in two network chunks is decoded
/// whole rather than as two replacement characters.
fn take_line(buffer: &mut Vec<u8>) -> Option<String> {
    let end = buffer.iter().position(|byte| *byte == b'\n')?;
    let line: Vec<u8> = buffer.drain(..=end).collect();
    let text = String::from_utf8_lossy(&line);
    Some(text.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::take_line;

    #[test]
    fn a_character_split_across_chunks_is_decoded_whole() {
        let line = "data: {\"token\":\"に向け\"}\n".as_bytes();
        // Cut inside 向 (three bytes): the first chunk ends mid-character.
        let cut = line.iter().position(|b| *b == 0xe5).unwrap() + 1;
        let mut buffer = line[..cut].to_vec();
        assert_eq!(take_line(&mut buffer), None);
        buffer.extend_from_slice(&line[cut..]);
        assert_eq!(
            take_line(&mut buffer).as_deref(),
            Some("data: {\"token\":\"に向け\"}")
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn crlf_lines_and_the_blank_separator_come_out_bare() {
        let mut buffer = b"id: 7\r\n\r\nda".to_vec();
        assert_eq!(take_line(&mut buffer).as_deref(), Some("id: 7"));
        assert_eq!(take_line(&mut buffer).as_deref(), Some(""));
        assert_eq!(take_line(&mut buffer), None);
        assert_eq!(buffer, b"da");
    }
}
