//! Inserting reference values into Python source without letting them change the
//! program. A reference where an expression stands becomes a Python literal; inside
//! a string literal it is escaped for that string's quotes; inside a comment its line
//! breaks are removed. Text from an LLM can therefore never break out of its literal.

use super::{as_text, reference_at, resolve, Names, Reference, Scope, Segment};
use crate::errors::GzError;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Lex {
    Code,
    Comment,
    Str {
        quote: char,
        triple: bool,
        raw: bool,
        fmt: bool,
        bytes: bool,
    },
}

/// A Python literal for a JSON value.
pub fn literal(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => {
            let text = n.to_string();
            if text.starts_with('-') {
                format!("({text})")
            } else {
                text
            }
        }
        Value::String(s) => format!("\"{}\"", escape(s, '"', false, false)),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(literal).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("\"{}\": {}", escape(k, '"', false, false), literal(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// Escapes text for the inside of a non-raw Python string delimited by `quote`.
fn escape(text: &str, quote: char, fmt: bool, bytes: bool) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            '{' if fmt => out.push_str("{{"),
            '}' if fmt => out.push_str("}}"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if bytes && !c.is_ascii() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn insert(value: &Value, state: Lex) -> String {
    match state {
        Lex::Code => literal(value),
        Lex::Comment => as_text(value).replace(['\n', '\r'], " "),
        Lex::Str {
            quote,
            triple,
            raw,
            fmt,
            bytes,
        } => {
            let text = as_text(value);
            if raw {
                // A raw string cannot escape its quote: close it, add an ordinary
                // literal (Python joins adjacent literals), and reopen it.
                let delim: String =
                    std::iter::repeat_n(quote, if triple { 3 } else { 1 }).collect();
                let mut prefix = String::from("r");
                if fmt {
                    prefix.push('f');
                }
                if bytes {
                    prefix.push('b');
                }
                let inner_prefix = if bytes { "b" } else { "" };
                format!(
                    "{delim} {inner_prefix}\"{}\" {prefix}{delim}",
                    escape(&text, '"', false, bytes)
                )
            } else {
                escape(&text, quote, fmt, bytes)
            }
        }
    }
}

/// Renders Python source: references become literals or escaped string content by
/// where they stand. Code that is exactly one reference is the program itself
/// (seed 002 runs LLM-generated code with `code: "${llm_task.result}"`).
pub fn render(
    code: &str,
    names: &dyn Names,
    scope: &dyn Scope,
    used: &mut Vec<(Reference, Value)>,
) -> Result<String, GzError> {
    if !super::has_reference(code) {
        return Ok(code.to_string());
    }
    if let Ok(segments) = super::scan(code.trim(), names) {
        if let [Segment::Ref(reference)] = segments.as_slice() {
            let value = resolve(reference, scope)?;
            used.push((reference.clone(), value.clone()));
            let text = as_text(&value);
            // Models wrap code in Markdown fences, which are never valid Python:
            // run what is inside the first fence.
            return Ok(if text.contains("```") {
                super::extract_code(&text)
            } else {
                text
            });
        }
    }

    let mut out = String::with_capacity(code.len() + 64);
    let mut state = Lex::Code;
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let c = code[i..].chars().next().unwrap_or(' ');
        if code[i..].starts_with("$${") {
            out.push_str("${");
            i += 3;
            continue;
        }
        if c == '$' || c == '{' {
            // In f-strings `{{` is Python's escaped brace, never our reference.
            let allow_braces = !matches!(state, Lex::Str { fmt: true, .. });
            if let Some(found) = reference_at(code, i, names, allow_braces) {
                let reference = found.reference?;
                let value = resolve(&reference, scope)?;
                out.push_str(&insert(&value, state));
                used.push((reference, value));
                i = found.end;
                continue;
            }
        }
        match state {
            Lex::Code => {
                if c == '#' {
                    state = Lex::Comment;
                } else if c == '"' || c == '\'' {
                    // Look back for a string prefix (r, b, f, u in any case and order).
                    let mut start = out.len();
                    let prefix_bytes = out.as_bytes();
                    while start > 0
                        && prefix_bytes[start - 1].is_ascii_alphabetic()
                        && out.len() - start < 3
                    {
                        start -= 1;
                    }
                    let prefix = out[start..].to_ascii_lowercase();
                    let before_is_ident = start > 0
                        && (prefix_bytes[start - 1].is_ascii_alphanumeric()
                            || prefix_bytes[start - 1] == b'_');
                    let prefix = if !before_is_ident && prefix.chars().all(|p| "rbfu".contains(p)) {
                        prefix
                    } else {
                        String::new()
                    };
                    let triple = code[i..].starts_with(if c == '"' { "\"\"\"" } else { "'''" });
                    state = Lex::Str {
                        quote: c,
                        triple,
                        raw: prefix.contains('r'),
                        fmt: prefix.contains('f'),
                        bytes: prefix.contains('b'),
                    };
                    let width = if triple { 3 } else { 1 };
                    out.push_str(&code[i..i + width]);
                    i += width;
                    continue;
                }
            }
            Lex::Comment => {
                if c == '\n' {
                    state = Lex::Code;
                }
            }
            Lex::Str { quote, triple, .. } => {
                if c == '\\' {
                    out.push('\\');
                    i += 1;
                    if let Some(next) = code[i..].chars().next() {
                        out.push(next);
                        i += next.len_utf8();
                    }
                    continue;
                }
                if c == quote {
                    let closing = if triple {
                        bytes.get(i + 1) == Some(&(quote as u8))
                            && bytes.get(i + 2) == Some(&(quote as u8))
                    } else {
                        true
                    };
                    if closing {
                        let width = if triple { 3 } else { 1 };
                        out.push_str(&code[i..i + width]);
                        i += width;
                        state = Lex::Code;
                        continue;
                    }
                } else if c == '\n' && !triple {
                    state = Lex::Code;
                }
            }
        }
        out.push(c);
        i += c.len_utf8();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::scope;
    use super::*;
    use serde_json::json;

    fn render_with(code: &str, value: Value) -> String {
        let (mut names, mut scope) = scope();
        names.push("evil".into());
        scope
            .tasks
            .insert("evil".into(), (json!({ "result": value }), "result"));
        render(code, &names, &scope, &mut Vec::new()).unwrap()
    }

    const NASTY: &str = "it's \"quoted\" \"\"\" ''' \\ back\\slash\nnew line __import__('os').system('echo pwned') {x}";

    #[test]
    fn expression_position_gets_a_literal() {
        assert_eq!(
            render_with("data = ${evil}", json!({"a": [1, null, true], "b": -2})),
            "data = {\"a\": [1, None, True], \"b\": (-2)}"
        );
        let code = render_with("text = ${evil}", json!(NASTY));
        assert_eq!(code.lines().count(), 1, "{code}");
        assert!(code.starts_with("text = \"it's \\\"quoted\\\""), "{code}");
    }

    #[test]
    fn inside_strings_of_every_style_the_value_stays_data() {
        for template in [
            "x = '${evil}'",
            "x = \"${evil}\"",
            "x = '''${evil}'''",
            "x = \"\"\"${evil}\"\"\"",
            "x = f'{1}${evil}'",
            "x = r'${evil}'",
            "x = rb\"${evil}\"",
        ] {
            let code = render_with(template, json!(NASTY));
            assert_eq!(code.lines().count(), 1, "{template} -> {code}");
            assert!(!code.contains("\n"), "{code}");
        }
    }

    #[test]
    fn comments_lose_line_breaks() {
        let code = render_with("# note: ${evil}\nprint(1)", json!("a\nimport os"));
        assert_eq!(code, "# note: a import os\nprint(1)");
    }

    #[test]
    fn whole_code_reference_is_the_program() {
        let (names, scope) = scope();
        let mut used = Vec::new();
        let code = render("${llm_task.result | code}", &names, &scope, &mut used).unwrap();
        assert_eq!(code, "print(1)");
        assert_eq!(used.len(), 1);
    }

    #[test]
    fn whole_code_reference_to_fenced_text_runs_the_fenced_code() {
        let (names, scope) = scope();
        let code = render("${llm_task.result}", &names, &scope, &mut Vec::new()).unwrap();
        assert_eq!(code, "print(1)");
    }

    #[test]
    fn f_string_double_braces_are_left_alone() {
        let (names, scope) = scope();
        let code = render(
            "print(f\"{{llm_task}}\") ; y = {{llm_task.model}}",
            &names,
            &scope,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(code, "print(f\"{{llm_task}}\") ; y = \"m\"");
    }
}
