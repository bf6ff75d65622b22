//! A YAML document as a tree of nodes that remember where they stood in the file,
//! so every validation problem can name its line and column. JSON files go through
//! the same parser (JSON is YAML 1.2 flow syntax) and get positions for free.

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::HashMap;

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Keys keep their own positions so "unknown key" can point at the key.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar(Scalar::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Seq(items) => Some(items),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.key_text().as_deref() == Some(key))
            .map(|(_, v)| v)
    }

    /// A mapping key as text; YAML allows `1: x` or `true: x`, which we read as "1"/"true".
    pub fn key_text(&self) -> Option<String> {
        match &self.kind {
            NodeKind::Scalar(Scalar::Str(s)) => Some(s.clone()),
            NodeKind::Scalar(Scalar::Int(i)) => Some(i.to_string()),
            NodeKind::Scalar(Scalar::Bool(b)) => Some(b.to_string()),
            NodeKind::Scalar(Scalar::Float(f)) => Some(f.to_string()),
            NodeKind::Scalar(Scalar::Null) => Some("null".into()),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar(Scalar::Null) => "null",
            NodeKind::Scalar(Scalar::Bool(_)) => "boolean",
            NodeKind::Scalar(Scalar::Int(_)) | NodeKind::Scalar(Scalar::Float(_)) => "number",
            NodeKind::Scalar(Scalar::Str(_)) => "string",
            NodeKind::Seq(_) => "list",
            NodeKind::Map(_) => "mapping",
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Scalar(Scalar::Null) => Value::Null,
            NodeKind::Scalar(Scalar::Bool(b)) => Value::Bool(*b),
            NodeKind::Scalar(Scalar::Int(i)) => Value::from(*i),
            NodeKind::Scalar(Scalar::Float(f)) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            NodeKind::Scalar(Scalar::Str(s)) => Value::String(s.clone()),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.key_text().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

/// Plain scalars are typed by the YAML 1.2 core schema (plus the `yes/no`-free
/// subset of 1.1 that users write most: `True`, `NULL`, `~`).
fn resolve_plain(text: &str) -> Scalar {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" => return Scalar::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    let looks_numeric = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'_'))
        && text.bytes().any(|b| b.is_ascii_digit());
    if looks_numeric {
        if let Ok(i) = text.parse::<i64>() {
            return Scalar::Int(i);
        }
        if let Ok(f) = text.parse::<f64>() {
            return Scalar::Float(f);
        }
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Scalar::Int(i);
        }
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Scalar::Int(i);
        }
    }
    Scalar::Str(text.to_string())
}

enum Frame {
    Seq(Pos, usize, Vec<Node>),
    Map(Pos, usize, Vec<(Node, Node)>, Option<Node>),
}

/// Parses the first document of `text`. An empty document is an empty mapping's
/// absence: `Ok(None)`.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;

    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| SyntaxError {
            pos: Pos {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            message: e.info().to_string(),
        })?;
        let pos = pos_of(&span);
        let finished: Option<(Node, usize)> = match event {
            Event::Scalar(value, style, anchor, tag) => {
                let scalar = match style {
                    ScalarStyle::Plain if tag.is_none() => resolve_plain(&value),
                    _ => Scalar::Str(value.into_owned()),
                };
                Some((
                    Node {
                        pos,
                        kind: NodeKind::Scalar(scalar),
                    },
                    anchor,
                ))
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(node) => Some((
                    Node {
                        pos,
                        kind: node.kind.clone(),
                    },
                    0,
                )),
                None => {
                    return Err(SyntaxError {
                        pos,
                        message: "alias refers to an unknown anchor".into(),
                    })
                }
            },
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq(pos, anchor, Vec::new()));
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map(pos, anchor, Vec::new(), None));
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(start, anchor, items)) => Some((
                    Node {
                        pos: start,
                        kind: NodeKind::Seq(items),
                    },
                    anchor,
                )),
                _ => None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(start, anchor, entries, _)) => Some((
                    Node {
                        pos: start,
                        kind: NodeKind::Map(entries),
                    },
                    anchor,
                )),
                _ => None,
            },
            Event::DocumentEnd => {
                if root.is_some() {
                    break;
                }
                None
            }
            _ => None,
        };
        if let Some((node, anchor)) = finished {
            if anchor != 0 {
                anchors.insert(anchor, node.clone());
            }
            match stack.last_mut() {
                Some(Frame::Seq(_, _, items)) => items.push(node),
                Some(Frame::Map(_, _, entries, pending_key)) => match pending_key.take() {
                    Some(key) => {
                        // YAML merge key `<<: *base` folds the referenced mapping in.
                        if key.as_str() == Some("<<") {
                            if let NodeKind::Map(merged) = node.kind {
                                for (k, v) in merged {
                                    if !entries.iter().any(|(ek, _)| ek.key_text() == k.key_text())
                                    {
                                        entries.push((k, v));
                                    }
                                }
                            }
                        } else {
                            entries.push((key, node));
                        }
                    }
                    None => *pending_key = Some(node),
                },
                None => {
                    if root.is_none() {
                        root = Some(node);
                    }
                }
            }
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_point_at_keys() {
        let node = parse("name: x\ntasks:\n  - id: a\n    method: python/execute\n")
            .unwrap()
            .unwrap();
        let tasks = node.get("tasks").unwrap().as_seq().unwrap();
        let (key, _) = &tasks[0].as_map().unwrap()[1];
        assert_eq!(key.as_str(), Some("method"));
        assert_eq!(key.pos, Pos { line: 4, column: 5 });
    }

    #[test]
    fn plain_scalars_are_typed_and_quoted_ones_stay_strings() {
        let node = parse("a: 5\nb: '5'\nc: true\nd: 1.5\ne: ~\nf: hello")
            .unwrap()
            .unwrap();
        let json = node.to_json();
        assert_eq!(
            json,
            serde_json::json!({"a": 5, "b": "5", "c": true, "d": 1.5, "e": null, "f": "hello"})
        );
    }

    #[test]
    fn json_documents_parse_with_positions() {
        let node = parse("{\n  \"name\": \"x\",\n  \"tasks\": []\n}")
            .unwrap()
            .unwrap();
        assert_eq!(node.get("tasks").unwrap().pos.line, 3);
    }

    #[test]
    fn anchors_and_merge_keys_work() {
        let text = "base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n";
        let json = parse(text).unwrap().unwrap().to_json();
        assert_eq!(json["other"], serde_json::json!({"x": 1, "y": 2}));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let error = parse("name: x\ntasks: [a, b\n").unwrap_err();
        assert!(error.pos.line >= 2, "{error:?}");
    }
}
