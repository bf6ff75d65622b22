//! A YAML document as a tree of nodes that remember where they stood in the file,
//! so every validation problem can name its line and column. JSON files go through
//! the same parser (JSON is YAML 1.2 flow syntax) and get positions for free.

use crate::errors::ErrorCode;
use crate::limits::{Limit, Limits, ALIAS_ALLOWANCE};
use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::{HashMap, HashSet};

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
    /// `YamlSyntax`, or `InputLimitExceeded` for a document over a limit.
    pub code: ErrorCode,
    pub hint: Option<String>,
}

impl SyntaxError {
    fn syntax(pos: Pos, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            pos,
            message: message.into(),
            code: ErrorCode::YamlSyntax,
            hint: None,
        }
    }

    fn limit(pos: Pos, limit: Limit, what: String, allowed: usize) -> SyntaxError {
        let error = limit.exceeded(what, allowed);
        SyntaxError {
            pos,
            message: error.message,
            code: error.code,
            hint: error.hint,
        }
    }
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

/// A list or mapping being read, with the size and height of what it holds
/// so far (an anchored node's are remembered for every alias of it).
struct Frame {
    pos: Pos,
    anchor: usize,
    kind: FrameKind,
    nodes: usize,
    height: usize,
}

enum FrameKind {
    Seq(Vec<Node>),
    /// Entries, the key waiting for its value, and (once a `<<` merge
    /// happened) the keys present, so merges stay linear in what they add.
    Map(Vec<(Node, Node)>, Option<Node>, Option<HashSet<String>>),
}

/// An anchored node: aliases clone it, so its size and height count again
/// at every alias.
struct Anchored {
    node: Node,
    nodes: usize,
    height: usize,
}

/// Parses the first document of `text` with the default [`Limits`].
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    parse_limited(text, &Limits::default())
}

/// Parses the first document of `text`. An empty document is an empty mapping's
/// absence: `Ok(None)`.
///
/// Refuses documents nested deeper than `limits.max_depth` (aliases count with
/// the depth of what they stand for) and documents whose aliases would add
/// more than `limits.max_alias_expansion` times their own nodes ("billion
/// laughs"), before building them.
pub fn parse_limited(text: &str, limits: &Limits) -> Result<Option<Node>, SyntaxError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Anchored> = HashMap::new();
    let mut root: Option<Node> = None;
    // Nodes the document spells out, and nodes its aliases add.
    let mut own_nodes: usize = 0;
    let mut alias_nodes: usize = 0;

    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| {
            SyntaxError::syntax(
                Pos {
                    line: e.marker().line(),
                    column: e.marker().col() + 1,
                },
                e.info().to_string(),
            )
        })?;
        let pos = pos_of(&span);
        // (node, its anchor id, nodes in it, its height)
        let finished: Option<(Node, usize, usize, usize)> = match event {
            Event::Scalar(value, style, anchor, tag) => {
                own_nodes += 1;
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
                    1,
                    0,
                ))
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(anchored) => {
                    if stack.len() + anchored.height > limits.max_depth {
                        return Err(SyntaxError::limit(
                            pos,
                            Limit::Depth,
                            format!(
                                "this alias nests the document more than {} levels deep",
                                limits.max_depth
                            ),
                            limits.max_depth,
                        ));
                    }
                    alias_nodes = alias_nodes.saturating_add(anchored.nodes);
                    let allowed = own_nodes
                        .saturating_mul(limits.max_alias_expansion)
                        .max(ALIAS_ALLOWANCE);
                    if alias_nodes > allowed {
                        return Err(SyntaxError::limit(
                            pos,
                            Limit::AliasExpansion,
                            format!(
                                "aliases would add more than {allowed} nodes to the document \
                                 ({}× its own {own_nodes}, and never fewer than {ALIAS_ALLOWANCE})",
                                limits.max_alias_expansion
                            ),
                            limits.max_alias_expansion,
                        ));
                    }
                    Some((
                        Node {
                            pos,
                            kind: anchored.node.kind.clone(),
                        },
                        0,
                        anchored.nodes,
                        anchored.height,
                    ))
                }
                None => {
                    return Err(SyntaxError::syntax(
                        pos,
                        "alias refers to an unknown anchor",
                    ))
                }
            },
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= limits.max_depth {
                    return Err(SyntaxError::limit(
                        pos,
                        Limit::Depth,
                        format!(
                            "the document nests more than {} levels deep",
                            limits.max_depth
                        ),
                        limits.max_depth,
                    ));
                }
                own_nodes += 1;
                let kind = if matches!(event, Event::SequenceStart(..)) {
                    FrameKind::Seq(Vec::new())
                } else {
                    FrameKind::Map(Vec::new(), None, None)
                };
                stack.push(Frame {
                    pos,
                    anchor,
                    kind,
                    nodes: 1,
                    height: 1,
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => stack.pop().map(|frame| {
                let kind = match frame.kind {
                    FrameKind::Seq(items) => NodeKind::Seq(items),
                    FrameKind::Map(entries, _, _) => NodeKind::Map(entries),
                };
                (
                    Node {
                        pos: frame.pos,
                        kind,
                    },
                    frame.anchor,
                    frame.nodes,
                    frame.height,
                )
            }),
            Event::DocumentEnd => {
                if root.is_some() {
                    break;
                }
                None
            }
            _ => None,
        };
        if let Some((node, anchor, nodes, height)) = finished {
            if anchor != 0 {
                anchors.insert(
                    anchor,
                    Anchored {
                        node: node.clone(),
                        nodes,
                        height,
                    },
                );
            }
            match stack.last_mut() {
                Some(parent) => {
                    parent.nodes = parent.nodes.saturating_add(nodes);
                    parent.height = parent.height.max(height + 1);
                    match &mut parent.kind {
                        FrameKind::Seq(items) => items.push(node),
                        FrameKind::Map(entries, pending_key, present) => match pending_key.take() {
                            Some(key) => {
                                // YAML merge key `<<: *base` folds the referenced mapping in.
                                if key.as_str() == Some("<<") {
                                    if let NodeKind::Map(merged) = node.kind {
                                        let present = present.get_or_insert_with(|| {
                                            entries
                                                .iter()
                                                .filter_map(|(k, _)| k.key_text())
                                                .collect()
                                        });
                                        for (k, v) in merged {
                                            if present.insert(k.key_text().unwrap_or_default()) {
                                                entries.push((k, v));
                                            }
                                        }
                                    }
                                } else {
                                    if let (Some(present), Some(text)) =
                                        (present.as_mut(), key.key_text())
                                    {
                                        present.insert(text);
                                    }
                                    entries.push((key, node));
                                }
                            }
                            None => *pending_key = Some(node),
                        },
                    }
                }
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
