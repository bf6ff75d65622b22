//! Wire-format and failure-injection tests of the Ollama double, driven by a
//! real HTTP client.

use std::time::{Duration, Instant};

use gleitzeit_testkit::{
    embedding_for, tokenize, Behavior, DoubleConfig, OllamaDouble, Reply, EMBEDDING_DIMS,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHAT_CHUNK_KEYS: &[&str] = &["model", "created_at", "message", "done"];
const CHAT_FINAL_KEYS: &[&str] = &[
    "model",
    "created_at",
    "message",
    "done_reason",
    "done",
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
];
const GENERATE_CHUNK_KEYS: &[&str] = &["model", "created_at", "response", "done"];
const GENERATE_FINAL_KEYS: &[&str] = &[
    "model",
    "created_at",
    "response",
    "done",
    "done_reason",
    "context",
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
];

async fn double(config: DoubleConfig) -> OllamaDouble {
    OllamaDouble::start(config).await.expect("double starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Reads the whole body; `Err` carries what arrived before the body failed.
async fn read_body(mut resp: reqwest::Response) -> Result<String, (String, reqwest::Error)> {
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) => return Ok(String::from_utf8(buf).expect("utf-8")),
            Err(e) => return Err((String::from_utf8_lossy(&buf).into_owned(), e)),
        }
    }
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

async fn post(url: String, body: Value) -> reqwest::Response {
    client().post(url).json(&body).send().await.expect("send")
}

fn assert_rfc3339(v: &Value) {
    let s = v.as_str().expect("created_at is a string");
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    assert!(s.ends_with('Z'), "{s}");
}

#[tokio::test]
async fn root_version_and_tags_match_ollama() {
    let d = double(DoubleConfig::default()).await;
    let c = client();

    let resp = c.get(d.url()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "Ollama is running");

    let resp = c.head(d.url()).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    let resp = c
        .get(format!("{}/api/version", d.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "application/json; charset=utf-8");
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"version": "0.5.7"})
    );

    let resp = c.get(format!("{}/api/tags", d.url())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let tags: Value = resp.json().await.unwrap();
    assert_eq!(keys(&tags), ["models"]);
    let models = tags["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    let m = &models[0];
    assert_eq!(
        keys(m),
        ["name", "model", "modified_at", "size", "digest", "details"]
    );
    assert_eq!(m["name"], "llama3.2:latest");
    assert_eq!(m["model"], "llama3.2:latest");
    assert_eq!(m["size"], 2_019_393_189u64);
    assert_rfc3339(&m["modified_at"]);
    let digest = m["digest"].as_str().unwrap();
    assert_eq!(digest.len(), 64);
    assert!(digest.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        m["details"],
        json!({
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M"
        })
    );
    assert_eq!(models[1]["name"], "llava:latest");
    assert_eq!(models[1]["details"]["families"], json!(["llama", "clip"]));

    let resp = c.get(format!("{}/api/nope", d.url())).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.text().await.unwrap(), "404 page not found");

    let stats = d.stats();
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.tags, 1);
    assert_eq!(stats.version, 1);
}

#[tokio::test]
async fn chat_streams_ndjson_by_default() {
    let d = double(DoubleConfig::default()).await;
    let resp = post(
        format!("{}/api/chat", d.url()),
        json!({
            "model": "llama3.2",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello there world"}
            ]
        }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "application/x-ndjson");
    let body = read_body(resp).await.expect("clean body");
    assert!(body.ends_with('\n'));
    let lines = parse_lines(&body);
    let (last, chunks) = lines.split_last().unwrap();
    let expected = tokenize("echo: hello there world");
    assert_eq!(chunks.len(), expected.len());
    for (chunk, token) in chunks.iter().zip(&expected) {
        assert_eq!(keys(chunk), CHAT_CHUNK_KEYS);
        assert_eq!(chunk["model"], "llama3.2");
        assert_rfc3339(&chunk["created_at"]);
        assert_eq!(
            chunk["message"],
            json!({"role": "assistant", "content": token})
        );
        assert_eq!(chunk["done"], false);
    }
    let text: String = chunks
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "echo: hello there world");

    assert_eq!(keys(last), CHAT_FINAL_KEYS);
    assert_eq!(last["message"], json!({"role": "assistant", "content": ""}));
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["prompt_eval_count"], 5);
    assert_eq!(last["eval_count"], expected.len());
    for k in [
        "total_duration",
        "load_duration",
        "prompt_eval_duration",
        "eval_duration",
    ] {
        assert!(last[k].as_u64().unwrap() > 0, "{k}");
    }
    let stats = d.stats();
    assert_eq!((stats.requests, stats.chat), (1, 1));
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test]
async fn chat_non_streaming_is_one_object() {
    let d = double(DoubleConfig::default()).await;
    let resp = post(
        format!("{}/api/chat", d.url()),
        json!({
            "model": "llama3.2:latest",
            "stream": false,
            "messages": [{"role": "user", "content": "what is up"}],
            "options": {"temperature": 0.2, "top_p": 0.9, "seed": 42},
            "keep_alive": "5m"
        }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "application/json; charset=utf-8");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(keys(&v), CHAT_FINAL_KEYS);
    assert_eq!(
        v["message"],
        json!({"role": "assistant", "content": "echo: what is up"})
    );
    assert_eq!(v["done"], true);
    assert_eq!(v["prompt_eval_count"], 3);
    assert_eq!(v["eval_count"], 4);
    let logged = d.stats().last_body("/api/chat").cloned().unwrap();
    assert_eq!(logged["options"]["seed"], 42);
    assert_eq!(logged["keep_alive"], "5m");
}

#[tokio::test]
async fn num_predict_and_stop_shape_the_reply() {
    let d = double(DoubleConfig::default()).await;
    let url = format!("{}/api/chat", d.url());
    let v: Value = post(
        url.clone(),
        json!({
            "model": "llama3.2", "stream": false,
            "messages": [{"role": "user", "content": "one two three four"}],
            "options": {"num_predict": 2}
        }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["message"]["content"], "echo: one");
    assert_eq!(v["eval_count"], 2);
    assert_eq!(v["done_reason"], "length");

    let v: Value = post(
        url.clone(),
        json!({
            "model": "llama3.2", "stream": false,
            "messages": [{"role": "user", "content": "one two STOP three"}],
            "options": {"stop": ["STOP"]}
        }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["message"]["content"], "echo: one two ");
    assert_eq!(v["done_reason"], "stop");

    // Ollama type-checks options and answers 500.
    let resp = post(
        url,
        json!({
            "model": "llama3.2", "stream": false,
            "messages": [{"role": "user", "content": "x"}],
            "options": {"num_predict": "many"}
        }),
    )
    .await;
    assert_eq!(resp.status(), 500);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "option \"num_predict\" must be of type integer"})
    );
}

#[tokio::test]
async fn chat_without_messages_loads_the_model() {
    let d = double(DoubleConfig::default()).await;
    let url = format!("{}/api/chat", d.url());
    let v: Value = post(url.clone(), json!({"model": "llama3.2", "messages": []}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        keys(&v),
        ["model", "created_at", "message", "done_reason", "done"]
    );
    assert_eq!(v["done_reason"], "load");
    let v: Value = post(url, json!({"model": "llama3.2", "keep_alive": 0}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["done_reason"], "unload");
}

#[tokio::test]
async fn generate_uses_response_and_context() {
    let d = double(DoubleConfig::default()).await;
    let url = format!("{}/api/generate", d.url());
    let resp = post(
        url.clone(),
        json!({"model": "llama3.2", "prompt": "why is the sky blue", "system": "be terse"}),
    )
    .await;
    assert_eq!(content_type(&resp), "application/x-ndjson");
    let lines = parse_lines(&read_body(resp).await.unwrap());
    let (last, chunks) = lines.split_last().unwrap();
    for chunk in chunks {
        assert_eq!(keys(chunk), GENERATE_CHUNK_KEYS);
        assert_eq!(chunk["done"], false);
    }
    let text: String = chunks
        .iter()
        .map(|c| c["response"].as_str().unwrap())
        .collect();
    assert_eq!(text, "echo: why is the sky blue");
    assert_eq!(keys(last), GENERATE_FINAL_KEYS);
    assert_eq!(last["response"], "");
    assert_eq!(last["done"], true);
    assert_eq!(last["prompt_eval_count"], 7);
    assert_eq!(last["eval_count"], chunks.len());
    let context = last["context"].as_array().unwrap();
    assert!(!context.is_empty());
    assert!(context.iter().all(Value::is_u64));

    let v: Value = post(
        url.clone(),
        json!({"model": "llama3.2", "prompt": "hi", "stream": false}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(keys(&v), GENERATE_FINAL_KEYS);
    assert_eq!(v["response"], "echo: hi");

    // raw mode has no context
    let v: Value = post(
        url.clone(),
        json!({"model": "llama3.2", "prompt": "hi", "raw": true, "stream": false}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(v.get("context").is_none());

    let v: Value = post(url, json!({"model": "llama3.2"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"model": "llama3.2", "created_at": v["created_at"], "response": "", "done": true, "done_reason": "load"})
    );
    assert_eq!(d.stats().generate, 4);
}

#[tokio::test]
async fn format_is_recorded_and_honoured() {
    let d = double(DoubleConfig::default()).await;
    let url = format!("{}/api/chat", d.url());
    let schema = json!({
        "type": "object",
        "properties": {"answer": {"type": "string"}, "score": {"type": "integer"}},
        "required": ["answer", "score"]
    });
    let v: Value = post(
        url.clone(),
        json!({
            "model": "llama3.2", "stream": false, "format": schema,
            "messages": [{"role": "user", "content": "rate this"}]
        }),
    )
    .await
    .json()
    .await
    .unwrap();
    let content: Value = serde_json::from_str(v["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"answer": "rate this", "score": 0}));
    assert_eq!(d.stats().last_body("/api/chat").unwrap()["format"], schema);

    let v: Value = post(
        url.clone(),
        json!({
            "model": "llama3.2", "stream": false, "format": "json",
            "messages": [{"role": "user", "content": "hi"}]
        }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["message"]["content"], r#"{"echo":"hi"}"#);
    assert_eq!(d.stats().last_body("/api/chat").unwrap()["format"], "json");

    // A format that is neither "json" nor a schema fails inside generation.
    let resp = post(
        url,
        json!({"model": "llama3.2", "stream": false, "format": "xml",
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 500);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"]
        .as_str()
        .unwrap()
        .starts_with("invalid format: "));
}

#[tokio::test]
async fn json_fixed_and_sequence_replies() {
    let d =
        double(DoubleConfig::default().with_reply(Reply::Json(json!({"ok": true, "n": 3})))).await;
    let v: Value = post(
        format!("{}/api/generate", d.url()),
        json!({"model": "llama3.2", "prompt": "x", "stream": false}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["response"], r#"{"ok":true,"n":3}"#);

    let d =
        double(DoubleConfig::default().with_reply(Reply::Fixed("a fixed <reply>".into()))).await;
    let resp = post(
        format!("{}/api/chat", d.url()),
        json!({"model": "llama3.2", "stream": false, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    // Go's encoder escapes HTML characters.
    let raw = resp.text().await.unwrap();
    assert!(
        raw.contains(r#""content":"a fixed \u003creply\u003e""#),
        "{raw}"
    );

    let d = double(
        DoubleConfig::default().with_reply(Reply::Sequence(vec!["first".into(), "second".into()])),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let v: Value = post(
            format!("{}/api/chat", d.url()),
            json!({"model": "llama3.2", "stream": false, "messages": [{"role": "user", "content": "x"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
        got.push(v["message"]["content"].as_str().unwrap().to_string());
    }
    assert_eq!(got, ["first", "second", "second"]);
}

#[tokio::test]
async fn embed_is_deterministic_and_normalised() {
    let d =
        double(DoubleConfig::default().with_models(["nomic-embed-text:latest", "llama3.2:latest"]))
            .await;
    let url = format!("{}/api/embed", d.url());
    let v: Value = post(
        url.clone(),
        json!({"model": "nomic-embed-text", "input": "hello world"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        keys(&v),
        [
            "model",
            "embeddings",
            "total_duration",
            "load_duration",
            "prompt_eval_count"
        ]
    );
    assert_eq!(v["model"], "nomic-embed-text");
    assert_eq!(v["prompt_eval_count"], 2);
    let embeddings: Vec<Vec<f32>> = serde_json::from_value(v["embeddings"].clone()).unwrap();
    assert_eq!(embeddings, vec![embedding_for("hello world")]);
    // float32 precision on the wire, like Go's encoder
    let first = embedding_for("hello world")[0];
    assert_eq!(
        v["embeddings"][0][0].to_string(),
        first.to_string().parse::<f64>().unwrap().to_string()
    );
    assert_eq!(embeddings[0].len(), EMBEDDING_DIMS);
    let norm: f32 = embeddings[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);

    let v: Value = post(
        url.clone(),
        json!({"model": "llama3.2", "input": ["a", "b c", "a"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    let embeddings: Vec<Vec<f32>> = serde_json::from_value(v["embeddings"].clone()).unwrap();
    assert_eq!(embeddings.len(), 3);
    assert_eq!(embeddings[0], embeddings[2]);
    assert_ne!(embeddings[0], embeddings[1]);

    let v: Value = post(url.clone(), json!({"model": "llama3.2", "input": []}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"model": "llama3.2", "embeddings": []}));

    let resp = post(url, json!({"model": "llama3.2", "input": 7})).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "invalid input type"})
    );

    let v: Value = post(
        format!("{}/api/embeddings", d.url()),
        json!({"model": "llama3.2", "prompt": "hello world"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(keys(&v), ["embedding"]);
    assert_eq!(v["embedding"].as_array().unwrap().len(), EMBEDDING_DIMS);
    assert_eq!(d.stats().embed, 5);
}

#[tokio::test]
async fn unknown_model_and_bad_bodies() {
    let d = double(DoubleConfig::default()).await;
    for (path, body) in [
        (
            "/api/chat",
            json!({"model": "xyz", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        ("/api/generate", json!({"model": "xyz", "prompt": "hi"})),
        ("/api/embed", json!({"model": "xyz", "input": "hi"})),
    ] {
        let resp = post(format!("{}{path}", d.url()), body).await;
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(content_type(&resp), "application/json; charset=utf-8");
        assert_eq!(
            resp.text().await.unwrap(),
            r#"{"error":"model \"xyz\" not found, try pulling it first"}"#,
            "{path}"
        );
    }

    let c = client();
    let resp = c
        .post(format!("{}/api/chat", d.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "missing request body"})
    );

    let resp = c
        .post(format!("{}/api/generate", d.url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"].is_string());
    assert_eq!(
        d.stats().last_body("/api/generate"),
        Some(&json!("{not json"))
    );

    let resp = post(
        format!("{}/api/chat", d.url()),
        json!({"model": "llama3.2", "messages": "nope"}),
    )
    .await;
    assert_eq!(resp.status(), 400);

    let resp = post(format!("{}/api/chat", d.url()), json!({"messages": []})).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "model is required"})
    );

    let resp = post(format!("{}/api/show", d.url()), json!({"model": "xyz"})).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "model 'xyz' not found"})
    );
    let v: Value = post(format!("{}/api/show", d.url()), json!({"model": "llava"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["capabilities"], json!(["completion", "vision"]));
    assert_eq!(v["details"]["family"], "llama");
}

#[tokio::test]
async fn images_are_checked_and_non_vision_use_recorded() {
    let d = double(DoubleConfig::default()).await;
    let url = format!("{}/api/chat", d.url());
    let msg = |model: &str, image: &str| {
        json!({
            "model": model, "stream": false,
            "messages": [{"role": "user", "content": "what is this", "images": [image]}]
        })
    };
    let resp = post(url.clone(), msg("llava", "aGVsbG8=")).await;
    assert_eq!(resp.status(), 200);
    let resp = post(url.clone(), msg("llama3.2", "aGVsbG8=")).await;
    assert_eq!(resp.status(), 200, "Ollama 0.5 still answers");
    let resp = post(url, msg("llava", "not*base64")).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"error": "illegal base64 data at input byte 3"})
    );
    let resp = post(
        format!("{}/api/generate", d.url()),
        json!({"model": "llama3.2", "prompt": "see", "images": ["aGVsbG8="], "stream": false}),
    )
    .await;
    assert_eq!(resp.status(), 200);

    let stats = d.stats();
    assert_eq!(stats.images_to_non_vision, 2);
    let flags: Vec<bool> = stats
        .request_log
        .iter()
        .map(|r| r.images_to_non_vision)
        .collect();
    assert_eq!(flags, [false, true, false, true]);
}

#[tokio::test]
async fn fail_applies_everywhere_with_retry_after() {
    let d = double(DoubleConfig::default().with_behavior(Behavior::Fail {
        status: 503,
        body: json!({"error": "overloaded"}),
        retry_after: Some(7),
    }))
    .await;
    let c = client();
    for resp in [
        c.get(format!("{}/api/tags", d.url())).send().await.unwrap(),
        c.get(format!("{}/api/version", d.url()))
            .send()
            .await
            .unwrap(),
        c.get(d.url()).send().await.unwrap(),
        post(
            format!("{}/api/chat", d.url()),
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await,
    ] {
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "7");
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"error": "overloaded"})
        );
    }
    d.set_behavior(Behavior::fail(500, "boom"));
    let resp = c.get(format!("{}/api/tags", d.url())).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    assert!(resp.headers().get("retry-after").is_none());
    assert_eq!(d.stats().requests, 5);
}

#[tokio::test]
async fn fail_first_then_recovers() {
    let d =
        double(DoubleConfig::default().with_behavior(Behavior::FailFirst { n: 2, status: 503 }))
            .await;
    let c = client();
    let chat = || {
        post(
            format!("{}/api/chat", d.url()),
            json!({"model": "llama3.2", "stream": false, "messages": [{"role": "user", "content": "x"}]}),
        )
    };
    // Health checks are not affected and do not use up the budget.
    let tags = c.get(format!("{}/api/tags", d.url())).send().await.unwrap();
    assert_eq!(tags.status(), 200);
    for _ in 0..2 {
        let resp = chat().await;
        assert_eq!(resp.status(), 503);
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"error": "server busy, please try again.  maximum pending requests exceeded"})
        );
    }
    assert_eq!(chat().await.status(), 200);
    assert_eq!(chat().await.status(), 200);

    // Setting it again restarts the count.
    d.set_behavior(Behavior::FailFirst { n: 1, status: 500 });
    assert_eq!(chat().await.status(), 500);
    assert_eq!(chat().await.status(), 200);
}

#[tokio::test]
async fn slow_delays_the_first_byte() {
    let delay = Duration::from_millis(200);
    let d = double(DoubleConfig::default().with_behavior(Behavior::Slow { delay })).await;
    let t = Instant::now();
    let resp = client()
        .get(format!("{}/api/tags", d.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(t.elapsed() >= delay);

    let t = Instant::now();
    let resp = post(
        format!("{}/api/chat", d.url()),
        json!({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert!(t.elapsed() >= delay, "headers arrive after the delay");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn token_delay_paces_the_stream() {
    let d = double(DoubleConfig::default().with_token_delay(Duration::from_millis(30))).await;
    let t = Instant::now();
    let resp = post(
        format!("{}/api/chat", d.url()),
        json!({"model": "llama3.2", "messages": [{"role": "user", "content": "a b c"}]}),
    )
    .await;
    let headers_at = t.elapsed();
    let lines = parse_lines(&read_body(resp).await.unwrap());
    assert_eq!(lines.len(), 5);
    // Headers come first; the 4 pauses (4 tokens + done record) follow.
    assert!(t.elapsed() - headers_at >= Duration::from_millis(100));
}

#[tokio::test]
async fn hang_up_closes_without_a_response() {
    let d = double(DoubleConfig::default().with_behavior(Behavior::HangUp)).await;
    let err = client()
        .post(format!("{}/api/chat", d.url()))
        .json(&json!({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .expect_err("no response");
    assert!(!err.is_status());

    // On the wire: not one byte before the close.
    let mut stream = tokio::net::TcpStream::connect(d.addr()).await.unwrap();
    let body = r#"{"model":"llama3.2","prompt":"x"}"#;
    let request = format!(
        "POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("closed promptly");
    assert!(
        read.is_err() || buf.is_empty(),
        "got {:?}",
        String::from_utf8_lossy(&buf)
    );

    // Tags still answer.
    let resp = client()
        .get(format!("{}/api/tags", d.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(d.stats().in_flight, 0);
}

#[tokio::test]
async fn malformed_stream_sends_a_garbage_line() {
    let d = double(DoubleConfig::default().with_behavior(Behavior::MalformedStream)).await;
    let resp = post(
        format!("{}/api/chat", d.url()),
        json!({"model": "llama3.2", "messages": [{"role": "user", "content": "one two three"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body = read_body(resp).await.expect("body ends cleanly");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 3);
    for line in &lines[..2] {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["done"], false);
    }
    assert!(serde_json::from_str::<Value>(lines[2]).is_err());

    let resp = post(
        format!("{}/api/generate", d.url()),
        json!({"model": "llama3.2", "prompt": "x", "stream": false}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.json::<Value>().await.is_err());
}

#[tokio::test]
async fn cut_stream_never_delivers_done() {
    let d = double(DoubleConfig::default().with_behavior(Behavior::CutStream)).await;
    let resp = post(
        format!("{}/api/chat", d.url()),
        json!({"model": "llama3.2", "messages": [{"role": "user", "content": "one two three four"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (partial, _err) = read_body(resp).await.expect_err("body must fail");
    let lines = parse_lines(&partial);
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["done"] == false));

    let resp = post(
        format!("{}/api/embed", d.url()),
        json!({"model": "llama3.2", "input": "x"}),
    )
    .await;
    assert!(resp.json::<Value>().await.is_err());
    assert_eq!(d.stats().in_flight, 0);
}

#[tokio::test]
async fn stream_error_line() {
    let d = double(
        DoubleConfig::default().with_behavior(Behavior::StreamError {
            message: "model runner crashed".into(),
        }),
    )
    .await;
    let resp = post(
        format!("{}/api/generate", d.url()),
        json!({"model": "llama3.2", "prompt": "one two three"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let lines = parse_lines(&read_body(resp).await.unwrap());
    assert_eq!(
        lines.last().unwrap(),
        &json!({"error": "model runner crashed"})
    );
    let resp = post(
        format!("{}/api/generate", d.url()),
        json!({"model": "llama3.2", "prompt": "x", "stream": false}),
    )
    .await;
    assert_eq!(resp.status(), 500);
}

#[tokio::test]
async fn counts_concurrent_requests() {
    let d = double(DoubleConfig::default().with_behavior(Behavior::Slow {
        delay: Duration::from_millis(300),
    }))
    .await;
    let c = client();
    let requests = (0..10).map(|i| {
        c.post(format!("{}/api/chat", d.url()))
            .json(&json!({"model": "llama3.2", "stream": false,
                          "messages": [{"role": "user", "content": format!("n {i}")}]}))
            .send()
    });
    let mut handles = Vec::new();
    for r in requests {
        handles.push(tokio::spawn(r));
    }
    for h in handles {
        assert_eq!(h.await.unwrap().unwrap().status(), 200);
    }
    let stats = d.stats();
    assert_eq!(stats.max_in_flight, 10);
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.chat, 10);
}

#[tokio::test]
async fn behavior_switches_at_runtime() {
    let d = double(DoubleConfig::default()).await;
    let c = client();
    let tags = || c.get(format!("{}/api/tags", d.url())).send();
    assert_eq!(tags().await.unwrap().status(), 200);
    d.set_behavior(Behavior::fail(500, "down"));
    assert_eq!(tags().await.unwrap().status(), 500);
    d.set_behavior(Behavior::Normal);
    assert_eq!(tags().await.unwrap().status(), 200);
    let stats = d.stats();
    assert_eq!(stats.tags, 3);
    let times: Vec<Instant> = stats.request_log.iter().map(|r| r.received_at).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
}

#[tokio::test]
async fn shutdown_refuses_connections() {
    let d = double(DoubleConfig::default()).await;
    let url = d.url();
    let c = client();
    // Keep a pooled keep-alive connection open across the shutdown.
    assert_eq!(
        c.get(format!("{url}/api/version"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    d.shutdown().await;
    let err = client()
        .get(format!("{url}/api/version"))
        .send()
        .await
        .expect_err("refused");
    assert!(err.is_connect(), "{err}");
    assert!(c.get(format!("{url}/api/version")).send().await.is_err());

    let d = double(DoubleConfig::default()).await;
    let url = d.url();
    drop(d);
    // Dropping stops the server in the background, so refusal comes a moment later.
    let refused = gleitzeit_testkit::poll::until_async(
        "a dropped double to refuse connections",
        || async { client().get(&url).send().await.map(|r| r.status()) },
        Result::is_err,
    )
    .await;
    assert!(refused.is_err());
}
