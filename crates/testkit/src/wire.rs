//! Deterministic text, token, embedding and model-metadata helpers, and the
//! bits of Go/Ollama wire formatting the double reproduces.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Dimensions of the double's embeddings.
pub const EMBEDDING_DIMS: usize = 8;

/// Longest token the double emits; longer words are split.
const MAX_TOKEN_CHARS: usize = 8;

/// Splits `text` into the chunks the double streams: each token is a run of
/// whitespace followed by at most 8 non-whitespace characters (a longer word
/// continues in further tokens). Concatenating the tokens gives `text` back.
///
/// `tokenize("echo: hello world") == ["echo:", " hello", " world"]`.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut word_chars = 0;
    for c in text.chars() {
        if c.is_whitespace() {
            if word_chars > 0 {
                tokens.push(std::mem::take(&mut current));
                word_chars = 0;
            }
            current.push(c);
        } else {
            if word_chars == MAX_TOKEN_CHARS {
                tokens.push(std::mem::take(&mut current));
                word_chars = 0;
            }
            current.push(c);
            word_chars += 1;
        }
    }
    if !current.is_empty() {
        match tokens.last_mut() {
            // Trailing whitespace belongs to the last token.
            Some(last) if word_chars == 0 => last.push_str(&current),
            _ => tokens.push(current),
        }
    }
    tokens
}

/// Number of whitespace-separated words: the double's prompt token count.
pub fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn sha(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn hash_vector(text: &str) -> [f64; EMBEDDING_DIMS] {
    let digest = sha(text);
    let mut v = [0.0; EMBEDDING_DIMS];
    for (i, x) in v.iter_mut().enumerate() {
        let bytes = [
            digest[i * 4],
            digest[i * 4 + 1],
            digest[i * 4 + 2],
            digest[i * 4 + 3],
        ];
        *x = f64::from(i32::from_le_bytes(bytes)) / f64::from(i32::MAX);
    }
    v
}

/// The double's embedding of `text`: the sum of one pseudo-random vector per
/// lower-cased word (so texts sharing words are similar), L2-normalised.
/// Text without words gets the vector of the whole text.
pub fn embedding_for(text: &str) -> Vec<f32> {
    let mut sum = [0.0f64; EMBEDDING_DIMS];
    let mut words = 0;
    for word in text.split_whitespace() {
        words += 1;
        for (s, x) in sum.iter_mut().zip(hash_vector(&word.to_lowercase())) {
            *s += x;
        }
    }
    if words == 0 {
        sum = hash_vector(text);
    }
    let norm = sum.iter().map(|x| x * x).sum::<f64>().sqrt();
    let norm = if norm > 0.0 { norm } else { 1.0 };
    sum.iter().map(|x| (x / norm) as f32).collect()
}

/// Token ids for generate's `context`: one per word of `text`.
pub(crate) fn context_ids(text: &str) -> Vec<u64> {
    text.split_whitespace()
        .map(|w| {
            let d = sha(w);
            u64::from(u32::from_le_bytes([d[0], d[1], d[2], d[3]])) % 128_256
        })
        .collect()
}

/// Ollama's name normalisation, enough for matching: lower case, and a
/// missing tag means `:latest`.
pub(crate) fn canonical_name(name: &str) -> String {
    let name = name.trim().to_lowercase();
    let last = name.rsplit('/').next().unwrap_or("");
    if last.contains(':') {
        name
    } else {
        format!("{name}:latest")
    }
}

pub(crate) fn is_vision(name: &str) -> bool {
    let name = name.to_lowercase();
    name.contains("llava") || name.contains("vision")
}

pub(crate) fn is_embedding_model(name: &str) -> bool {
    let name = name.to_lowercase();
    name.contains("embed") || name.contains("minilm") || name.contains("bge")
}

pub(crate) const MODIFIED_AT: &str = "2024-09-25T20:04:21.627391563Z";

pub(crate) struct ModelFacts {
    pub(crate) family: &'static str,
    pub(crate) families: &'static [&'static str],
    pub(crate) parameter_size: &'static str,
    pub(crate) parameter_count: u64,
    pub(crate) quantization_level: &'static str,
    pub(crate) size: u64,
    pub(crate) context_length: u64,
    pub(crate) embedding_length: u64,
}

pub(crate) fn model_facts(name: &str) -> ModelFacts {
    let n = name.to_lowercase();
    let facts = |family,
                 families,
                 parameter_size,
                 parameter_count,
                 quantization_level,
                 size,
                 context_length,
                 embedding_length| ModelFacts {
        family,
        families,
        parameter_size,
        parameter_count,
        quantization_level,
        size,
        context_length,
        embedding_length,
    };
    if n.contains("llama3.2-vision") {
        facts(
            "mllama",
            &["mllama"],
            "10.7B",
            9_775_000_000,
            "Q4_K_M",
            7_901_829_417,
            131_072,
            4096,
        )
    } else if n.contains("llava") {
        facts(
            "llama",
            &["llama", "clip"],
            "7B",
            6_738_415_616,
            "Q4_0",
            4_733_363_377,
            32_768,
            4096,
        )
    } else if n.contains("llama3.2") {
        facts(
            "llama",
            &["llama"],
            "3.2B",
            3_212_749_888,
            "Q4_K_M",
            2_019_393_189,
            131_072,
            3072,
        )
    } else if n.contains("llama3") {
        facts(
            "llama",
            &["llama"],
            "8.0B",
            8_030_261_248,
            "Q4_K_M",
            4_920_753_328,
            131_072,
            4096,
        )
    } else if n.contains("mistral") {
        facts(
            "llama",
            &["llama"],
            "7.2B",
            7_248_023_552,
            "Q4_0",
            4_113_301_824,
            32_768,
            4096,
        )
    } else if n.contains("qwen") {
        facts(
            "qwen2",
            &["qwen2"],
            "7.6B",
            7_615_616_512,
            "Q4_K_M",
            4_683_087_332,
            32_768,
            3584,
        )
    } else if n.contains("gemma") {
        facts(
            "gemma2",
            &["gemma2"],
            "9.2B",
            9_241_705_984,
            "Q4_0",
            5_443_152_417,
            8192,
            3584,
        )
    } else if n.contains("phi") {
        facts(
            "phi3",
            &["phi3"],
            "3.8B",
            3_821_079_552,
            "Q4_0",
            2_176_178_913,
            131_072,
            3072,
        )
    } else if n.contains("nomic-embed") {
        facts(
            "nomic-bert",
            &["nomic-bert"],
            "137M",
            136_727_040,
            "F16",
            274_302_450,
            2048,
            768,
        )
    } else if is_embedding_model(&n) {
        facts(
            "bert",
            &["bert"],
            "23M",
            22_565_376,
            "F16",
            45_960_996,
            512,
            384,
        )
    } else {
        facts(
            "llama",
            &["llama"],
            "7B",
            6_738_415_616,
            "Q4_K_M",
            4_081_004_224,
            8192,
            4096,
        )
    }
}

/// The 64-hex digest `/api/tags` shows (no `sha256:` prefix there).
pub(crate) fn digest_hex(name: &str) -> String {
    sha(&canonical_name(name))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn details(name: &str) -> Value {
    let f = model_facts(name);
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": f.family,
        "families": f.families,
        "parameter_size": f.parameter_size,
        "quantization_level": f.quantization_level,
    })
}

/// RFC 3339 with nanoseconds in UTC, as Go marshals `time.Now().UTC()`.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Serialises like Go's `encoding/json`: `<`, `>`, `&`, U+2028 and U+2029
/// are escaped (they can only occur inside strings).
pub(crate) fn go_json(value: &Value) -> String {
    let raw = serde_json::to_string(value).unwrap_or_else(|_| "null".to_string());
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Go's strict standard base64 decoding check: the error Ollama returns for
/// a bad image (`illegal base64 data at input byte N`).
pub(crate) fn check_base64(data: &str) -> Result<(), String> {
    let bytes: Vec<(usize, u8)> = data
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b != b'\r' && *b != b'\n')
        .collect();
    let err = |i: usize| Err(format!("illegal base64 data at input byte {i}"));
    let is_alpha = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
    for (q, quantum) in bytes.chunks(4).enumerate() {
        let last = (q + 1) * 4 >= bytes.len();
        for (j, &(i, b)) in quantum.iter().enumerate() {
            if b == b'=' {
                // Padding only in the last quantum, after two data chars,
                // and only '=' from there on.
                if !last || j < 2 || quantum[j..].iter().any(|&(_, b)| b != b'=') {
                    return err(i);
                }
                break;
            }
            if !is_alpha(b) {
                return err(i);
            }
        }
        if quantum.len() < 4 {
            return err(quantum[0].0);
        }
    }
    Ok(())
}

/// A value a grammar-constrained model could produce for `schema`.
pub(crate) fn instance_for_schema(schema: &Value, text: &str, depth: usize) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    let Some(obj) = schema.as_object() else {
        return Value::String(text.to_string());
    };
    if let Some(c) = obj.get("const") {
        return c.clone();
    }
    if let Some(first) = obj
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = obj
            .get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return instance_for_schema(first, text, depth + 1);
        }
    }
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if obj.contains_key("properties") => "object",
        _ if obj.contains_key("items") => "array",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = obj.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    out.insert(k.clone(), instance_for_schema(v, text, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let n = obj
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .max(1);
            let item = obj
                .get("items")
                .cloned()
                .unwrap_or(json!({"type": "string"}));
            Value::Array(
                (0..n.min(16))
                    .map(|_| instance_for_schema(&item, text, depth + 1))
                    .collect(),
            )
        }
        "integer" => json!(obj.get("minimum").and_then(Value::as_i64).unwrap_or(0)),
        "number" => json!(obj.get("minimum").and_then(Value::as_f64).unwrap_or(0.0)),
        "boolean" => Value::Bool(true),
        "null" => Value::Null,
        _ => Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_round_trips_and_splits_words() {
        assert_eq!(tokenize("echo: hello world"), ["echo:", " hello", " world"]);
        assert_eq!(tokenize("  a b  "), ["  a", " b  "]);
        assert_eq!(tokenize("abcdefghij"), ["abcdefgh", "ij"]);
        assert!(tokenize("").is_empty());
        let text = "{\"answer\":42,\"items\":[\"x\"]} and more\ntext";
        assert_eq!(tokenize(text).concat(), text);
    }

    #[test]
    fn embeddings_are_normalised_and_deterministic() {
        let a = embedding_for("the quick brown fox");
        assert_eq!(a.len(), EMBEDDING_DIMS);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_eq!(a, embedding_for("the quick brown fox"));
        assert_ne!(a, embedding_for("something else"));
        assert_eq!(embedding_for("").len(), EMBEDDING_DIMS);
    }

    #[test]
    fn base64_like_go() {
        assert!(check_base64("aGVsbG8=").is_ok());
        assert!(check_base64("aGVsbG8h").is_ok());
        assert!(check_base64("").is_ok());
        assert_eq!(
            check_base64("aGV*bG8=").unwrap_err(),
            "illegal base64 data at input byte 3"
        );
        assert_eq!(
            check_base64("aGVsbG8").unwrap_err(),
            "illegal base64 data at input byte 4"
        );
    }

    #[test]
    fn names() {
        assert_eq!(canonical_name("Llama3.2"), "llama3.2:latest");
        assert_eq!(canonical_name("llama3.2:1b"), "llama3.2:1b");
        assert!(is_vision("llava:latest"));
        assert!(is_vision("llama3.2-vision"));
        assert!(!is_vision("llama3.2"));
        assert_eq!(digest_hex("llama3.2").len(), 64);
    }

    #[test]
    fn schema_instances() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 3},
                "tags": {"type": "array", "items": {"type": "string"}},
                "kind": {"enum": ["a", "b"]},
                "ok": {"type": "boolean"}
            },
            "required": ["name"]
        });
        assert_eq!(
            instance_for_schema(&schema, "hi", 0),
            json!({"name": "hi", "age": 3, "tags": ["hi"], "kind": "a", "ok": true})
        );
    }

    #[test]
    fn go_json_escapes_html() {
        assert_eq!(
            go_json(&json!({"a": "<b>&"})),
            r#"{"a":"\u003cb\u003e\u0026"}"#
        );
    }
}
