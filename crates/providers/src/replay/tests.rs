use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A provider that streams its prompt word by word and counts its calls.
#[derive(Default)]
struct Echo {
    calls: AtomicUsize,
}

#[async_trait]
impl Provider for Echo {
    fn protocol(&self) -> &'static str {
        "llm"
    }
    fn methods(&self) -> Vec<MethodInfo> {
        vec![]
    }
    async fn call(&self, method: &str, params: Value, ctx: &CallContext) -> Result<Value, GzError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let prompt = params["prompt"].as_str().unwrap_or_default().to_string();
        if prompt == "fail" {
            return Err(GzError::new(ErrorCode::LlmRequestFailed, "boom"));
        }
        for word in prompt.split(' ') {
            if let Some(sink) = &ctx.events {
                sink(ProviderEvent::Token {
                    text: format!("{word} "),
                });
            }
        }
        Ok(json!({"response": prompt, "call": n, "method": method,
                  "headers": {"content-type": "text/plain", "set-cookie": "sid=42"}}))
    }
}

fn collecting_ctx() -> (CallContext, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut ctx = CallContext::detached("t");
    let out = seen.clone();
    ctx.events = Some(Arc::new(move |e: ProviderEvent| {
        if let ProviderEvent::Token { text } = e {
            out.lock().unwrap().push(text);
        }
    }));
    (ctx, seen)
}

#[tokio::test]
async fn records_then_replays_results_tokens_and_errors_without_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let live = Arc::new(Echo::default());
    let recorder = Recorder::record(dir.path()).unwrap();
    let provider = recorder.wrap(live.clone());
    let (ctx, tokens) = collecting_ctx();
    let params = json!({"model": "m", "prompt": "hello big world", "api_key": "sk-secret"});
    let first = provider
        .call("llm/generate", params.clone(), &ctx)
        .await
        .unwrap();
    let second = provider
        .call("llm/generate", params.clone(), &ctx)
        .await
        .unwrap();
    let failed = provider
        .call("llm/generate", json!({"prompt": "fail"}), &ctx)
        .await
        .unwrap_err();
    assert_eq!(live.calls.load(Ordering::SeqCst), 3);
    let recorded_tokens = tokens.lock().unwrap().clone();
    assert_eq!(recorded_tokens.len(), 6);

    // Secrets never reach the files.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains("sk-secret"), "{text}");
        assert!(!text.contains("sid=42"), "{text}");
    }

    let recorder = Recorder::replay(dir.path()).unwrap();
    assert_eq!(recorder.len(), 3);
    let unused = Arc::new(Echo::default());
    let provider = recorder.wrap(unused.clone());
    let (ctx, tokens) = collecting_ctx();
    // The key ignores the secret, so another key replays the same answer.
    let params = json!({"model": "m", "prompt": "hello big world", "api_key": "other"});
    let mut a = provider
        .call("llm/generate", params.clone(), &ctx)
        .await
        .unwrap();
    let b = provider
        .call("llm/generate", params.clone(), &ctx)
        .await
        .unwrap();
    assert_eq!(a["call"], first["call"]);
    assert_eq!(b, redact_result(&second));
    a["headers"]
        .as_object_mut()
        .unwrap()
        .insert("set-cookie".into(), json!("sid=42"));
    assert_eq!(a, first);
    assert_eq!(*tokens.lock().unwrap(), recorded_tokens[..6]);
    let error = provider
        .call("llm/generate", json!({"prompt": "fail"}), &ctx)
        .await
        .unwrap_err();
    assert_eq!(error, failed);
    assert_eq!(unused.calls.load(Ordering::SeqCst), 0);

    // A third identical request was never recorded.
    let missing = provider
        .call("llm/generate", params, &ctx)
        .await
        .unwrap_err();
    assert_eq!(missing.code, ErrorCode::ReplayMissing);
    assert!(
        missing.message.contains("occurrence 3"),
        "{}",
        missing.message
    );
    let other = provider
        .call("llm/generate", json!({"prompt": "new"}), &ctx)
        .await
        .unwrap_err();
    assert_eq!(other.code, ErrorCode::ReplayMissing);
    assert!(!ErrorCode::ReplayMissing.def().hint.is_empty());
}

#[tokio::test]
async fn a_corrupt_entry_is_refused_naming_file_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::record(dir.path()).unwrap();
    let provider = recorder.wrap(Arc::new(Echo::default()));
    provider
        .call(
            "llm/chat",
            json!({"prompt": "x y"}),
            &CallContext::detached("t"),
        )
        .await
        .unwrap();
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let name = file.file_stem().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with("llm_chat-") && name.ends_with("-1"),
        "{name}"
    );

    // Not JSON.
    std::fs::write(&file, "{ not json").unwrap();
    let error = Recorder::replay(dir.path()).unwrap_err();
    assert_eq!(error.code, ErrorCode::ReplayCorrupt);
    assert!(
        error.message.contains(&file.display().to_string()),
        "{}",
        error.message
    );
    assert!(error.message.contains(&name), "{}", error.message);

    // Valid JSON, but the request was edited so it no longer matches its key.
    let entry = Entry {
        gleitzeit_recording: VERSION,
        method: "llm/chat".into(),
        key: name.split('-').nth(1).unwrap().to_string(),
        occurrence: 1,
        request: json!({"prompt": "edited"}),
        tokens: vec![],
        outcome: Outcome::Ok(json!({})),
    };
    std::fs::write(&file, serde_json::to_string(&entry).unwrap()).unwrap();
    let error = Recorder::replay(dir.path()).unwrap_err();
    assert_eq!(error.code, ErrorCode::ReplayCorrupt);

    let error = Recorder::replay(dir.path().join("nope")).unwrap_err();
    assert_eq!(error.code, ErrorCode::FileNotFound);
}

#[test]
fn redaction_removes_secret_headers_and_query_values() {
    let params = json!({
        "method": "GET",
        "url": "https://user:pw@example.test/a?q=1&api_key=sk-1&token=t",
        "headers": {"Authorization": "Bearer x", "X-Trace": "1", "Cookie": "c"},
        "max_tokens": 5,
    });
    let clean = redact(&params);
    let text = clean.to_string();
    for secret in ["sk-1", "Bearer", "pw@", "\"c\"", "token=t"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert_eq!(clean["headers"]["X-Trace"], "1");
    assert_eq!(clean["max_tokens"], 5);
    assert!(clean["url"].as_str().unwrap().contains("q=1"));
    // Key order does not change the key.
    assert_eq!(
        request_key("m", &json!({"a": 1, "b": 2})),
        request_key("m", &json!({"b": 2, "a": 1}))
    );
}
