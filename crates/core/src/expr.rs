//! `when:` conditions: a small expression language over references.
//!
//! ```text
//! expr    := or
//! or      := and (("or" | "||") and)*
//! and     := not (("and" | "&&") not)*
//! not     := ("not" | "!") not | compare
//! compare := operand (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") operand)?
//! operand := ${reference} | 'text' | "text" | number | true | false | null
//!          | [operand, …] | "(" expr ")"
//! ```
//!
//! Semantics, chosen so a condition never does something surprising silently:
//! - `==` / `!=` compare JSON values; numbers by value (`1 == 1.0`), values of
//!   different types are simply unequal.
//! - `<` `<=` `>` `>=` compare two numbers or two strings; anything else (e.g.
//!   `"3" < 4`, `null < 1`) is an error, GZ3026, which fails the task: an ordering
//!   between unrelated types is almost always a bug in the workflow, and reading it
//!   as `false` would skip work without a trace.
//! - `a in b`: element of a list, substring of a string, key of an object;
//!   other right-hand sides are GZ3026.
//! - Truthiness (a bare operand, `not`, `and`, `or`): null, false, 0, "", [] and
//!   {} are false, everything else true. `and` / `or` short-circuit and give a
//!   boolean.
//!
//! Parsing happens at validation; evaluation is plain Rust over JSON values, has
//! no side effects and cannot panic: nesting depth and length are bounded.

use crate::errors::{ErrorCode, GzError};
use crate::refs::{self, Names, Reference, Scope};
use serde_json::Value;
use std::cmp::Ordering;

/// Longer conditions are refused: they belong in a task.
const MAX_LEN: usize = 4096;
/// Bounds recursion so hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 48;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Value),
    Ref(Reference),
    List(Vec<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
}

impl CmpOp {
    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::In => "in",
            CmpOp::NotIn => "not in",
        }
    }
}

/// A syntax error at byte `offset` of the expression.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub offset: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ref(Reference),
    Lit(Value),
    Word(String),
    Op(&'static str),
}

struct Lexer<'a> {
    text: &'a str,
    names: &'a dyn Names,
    tokens: Vec<(Tok, usize)>,
}

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        offset,
        message: message.into(),
    })
}

impl Lexer<'_> {
    fn run(mut self) -> Result<Vec<(Tok, usize)>, ParseError> {
        let bytes = self.text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            if c.is_ascii_whitespace() {
                i += 1;
                continue;
            }
            let start = i;
            if self.text[i..].starts_with("${") {
                let found =
                    refs::reference_at(self.text, i, self.names, false).ok_or(ParseError {
                        offset: i,
                        message: "malformed reference".into(),
                    })?;
                let reference = found.reference.map_err(|e| ParseError {
                    offset: i,
                    message: e.message,
                })?;
                self.tokens.push((Tok::Ref(reference), start));
                i = found.end;
                continue;
            }
            if c == b'"' || c == b'\'' {
                let (value, end) = string_literal(self.text, i)?;
                self.tokens.push((Tok::Lit(Value::String(value)), start));
                i = end;
                continue;
            }
            if c.is_ascii_digit()
                || (c == b'-'
                    && bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit())
                    && self.expects_operand())
            {
                let mut end = i + 1;
                while end < bytes.len()
                    && (bytes[end].is_ascii_digit()
                        || matches!(bytes[end], b'.' | b'e' | b'E' | b'_')
                        || (matches!(bytes[end], b'+' | b'-')
                            && matches!(bytes[end - 1], b'e' | b'E')))
                {
                    end += 1;
                }
                let raw = self.text[i..end].replace('_', "");
                let value = if let Ok(n) = raw.parse::<i64>() {
                    Value::from(n)
                } else {
                    match raw
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                    {
                        Some(n) => Value::Number(n),
                        None => return err(i, format!("`{}` is not a number", &self.text[i..end])),
                    }
                };
                self.tokens.push((Tok::Lit(value), start));
                i = end;
                continue;
            }
            if c.is_ascii_alphabetic() || c == b'_' {
                let mut end = i + 1;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_')
                {
                    end += 1;
                }
                let word = &self.text[i..end];
                let tok = match word {
                    "true" | "True" => Tok::Lit(Value::Bool(true)),
                    "false" | "False" => Tok::Lit(Value::Bool(false)),
                    "null" | "None" | "none" => Tok::Lit(Value::Null),
                    "and" | "or" | "not" | "in" => Tok::Word(word.to_string()),
                    _ => {
                        return err(
                            i,
                            format!("unexpected word `{word}`; references are written ${{{word}…}} and text is quoted"),
                        )
                    }
                };
                self.tokens.push((tok, start));
                i = end;
                continue;
            }
            const OPS: &[&str] = &[
                "==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "(", ")", "[", "]", ",",
            ];
            match OPS.iter().find(|op| self.text[i..].starts_with(**op)) {
                Some(op) => {
                    self.tokens.push((Tok::Op(op), start));
                    i += op.len();
                }
                None => {
                    let ch = self.text[i..].chars().next().unwrap_or('?');
                    let hint = if ch == '=' {
                        " (compare with `==`)"
                    } else {
                        ""
                    };
                    return err(i, format!("unexpected `{ch}`{hint}"));
                }
            }
        }
        Ok(self.tokens)
    }

    /// A `-` starts a negative number only where an operand may stand.
    fn expects_operand(&self) -> bool {
        !matches!(
            self.tokens.last(),
            Some((Tok::Ref(_) | Tok::Lit(_), _)) | Some((Tok::Op(")" | "]"), _))
        )
    }
}

/// A quoted string starting at `start`; backslash escapes the next character.
fn string_literal(text: &str, start: usize) -> Result<(String, usize), ParseError> {
    let quote = text.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, other)) => out.push(other),
                None => break,
            },
            c if c == quote => return Ok((out, start + 1 + i + c.len_utf8())),
            c => out.push(c),
        }
    }
    err(start, "text is missing its closing quote")
}

struct Parser {
    tokens: Vec<(Tok, usize)>,
    at: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |(_, o)| *o)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Word(w)) if w == word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Parser) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(self.offset(), "expression is nested too deeply");
        }
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        self.nested(|p| {
            let mut left = p.and()?;
            while p.eat_word("or") || p.eat_op("||") {
                left = Expr::Or(Box::new(left), Box::new(p.and()?));
            }
            Ok(left)
        })
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut left = self.not()?;
        while self.eat_word("and") || self.eat_op("&&") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.eat_word("not") || self.eat_op("!") {
            return self.nested(|p| Ok(Expr::Not(Box::new(p.not()?))));
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Expr, ParseError> {
        let left = self.operand()?;
        let op = match self.peek() {
            Some(Tok::Op("==")) => CmpOp::Eq,
            Some(Tok::Op("!=")) => CmpOp::Ne,
            Some(Tok::Op("<")) => CmpOp::Lt,
            Some(Tok::Op("<=")) => CmpOp::Le,
            Some(Tok::Op(">")) => CmpOp::Gt,
            Some(Tok::Op(">=")) => CmpOp::Ge,
            Some(Tok::Word(w)) if w == "in" => CmpOp::In,
            Some(Tok::Word(w))
                if w == "not"
                    && matches!(self.tokens.get(self.at + 1), Some((Tok::Word(n), _)) if n == "in") =>
            {
                self.at += 1;
                CmpOp::NotIn
            }
            _ => return Ok(left),
        };
        self.at += 1;
        let right = self.operand()?;
        if let Some(Tok::Op(o @ ("==" | "!=" | "<" | "<=" | ">" | ">="))) = self.peek() {
            return err(
                self.offset(),
                format!("comparisons do not chain; use `and` between them (found `{o}`)"),
            );
        }
        Ok(Expr::Compare(op, Box::new(left), Box::new(right)))
    }

    fn operand(&mut self) -> Result<Expr, ParseError> {
        let offset = self.offset();
        let Some((tok, _)) = self.tokens.get(self.at).cloned() else {
            return err(offset, "expression ends where a value is expected");
        };
        self.at += 1;
        match tok {
            Tok::Ref(r) => Ok(Expr::Ref(r)),
            Tok::Lit(v) => Ok(Expr::Literal(v)),
            Tok::Op("(") => {
                let inner = self.or()?;
                if !self.eat_op(")") {
                    return err(self.offset(), "missing `)`");
                }
                Ok(inner)
            }
            Tok::Op("[") => self.nested(|p| {
                let mut items = Vec::new();
                if p.eat_op("]") {
                    return Ok(Expr::List(items));
                }
                loop {
                    items.push(p.or()?);
                    if p.eat_op("]") {
                        return Ok(Expr::List(items));
                    }
                    if !p.eat_op(",") {
                        return err(p.offset(), "expected `,` or `]` in the list");
                    }
                }
            }),
            Tok::Op(op) => err(
                offset,
                format!("unexpected `{op}` where a value is expected"),
            ),
            Tok::Word(w) => err(
                offset,
                format!("unexpected `{w}` where a value is expected"),
            ),
        }
    }
}

/// Parses a condition. `names` are the workflow's task ids and names.
pub fn parse(text: &str, names: &dyn Names) -> Result<Expr, ParseError> {
    if text.len() > MAX_LEN {
        return err(0, format!("condition is longer than {MAX_LEN} characters"));
    }
    let tokens = Lexer {
        text,
        names,
        tokens: Vec::new(),
    }
    .run()?;
    if tokens.is_empty() {
        return err(0, "condition is empty");
    }
    let mut parser = Parser {
        tokens,
        at: 0,
        end: text.len(),
        depth: 0,
    };
    let expr = parser.or()?;
    if parser.at < parser.tokens.len() {
        return err(
            parser.offset(),
            "unexpected text after the end of the condition (missing `and` / `or`?)",
        );
    }
    Ok(expr)
}

impl Expr {
    /// Every reference in the expression, for validation.
    pub fn references(&self, out: &mut Vec<Reference>) {
        match self {
            Expr::Literal(_) => {}
            Expr::Ref(r) => out.push(r.clone()),
            Expr::List(items) => items.iter().for_each(|e| e.references(out)),
            Expr::Not(e) => e.references(out),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Compare(_, a, b) => {
                a.references(out);
                b.references(out);
            }
        }
    }

    /// Evaluates to a JSON value; conditions use [`truthy`] on it.
    pub fn eval(&self, scope: &dyn Scope) -> Result<Value, GzError> {
        Ok(match self {
            Expr::Literal(v) => v.clone(),
            Expr::Ref(r) => refs::resolve(r, scope)?,
            Expr::List(items) => Value::Array(
                items
                    .iter()
                    .map(|e| e.eval(scope))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Not(e) => Value::Bool(!truthy(&e.eval(scope)?)),
            Expr::And(a, b) => Value::Bool(truthy(&a.eval(scope)?) && truthy(&b.eval(scope)?)),
            Expr::Or(a, b) => Value::Bool(truthy(&a.eval(scope)?) || truthy(&b.eval(scope)?)),
            Expr::Compare(op, a, b) => Value::Bool(compare(*op, &a.eval(scope)?, &b.eval(scope)?)?),
        })
    }
}

/// Whether a condition's value counts as true.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "text",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

fn mismatch(op: CmpOp, a: &Value, b: &Value) -> GzError {
    GzError::new(
        ErrorCode::ConditionFailed,
        format!(
            "cannot evaluate {} {} {}: `{}` needs {}",
            short(a),
            op.symbol(),
            short(b),
            op.symbol(),
            match op {
                CmpOp::In | CmpOp::NotIn =>
                    format!("a list, a text or an object on the right, not {}", kind(b)),
                _ => format!("two numbers or two texts, not {} and {}", kind(a), kind(b)),
            }
        ),
    )
}

fn compare(op: CmpOp, a: &Value, b: &Value) -> Result<bool, GzError> {
    let ordering = |a: &Value, b: &Value| -> Option<Ordering> {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
                (Some(x), Some(y)) => Some(x.cmp(&y)),
                _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
            },
            (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
            _ => None,
        }
    };
    let contains = |a: &Value, b: &Value| -> Option<bool> {
        match (a, b) {
            (_, Value::Array(items)) => Some(items.iter().any(|item| equal(a, item))),
            (Value::String(needle), Value::String(hay)) => Some(hay.contains(needle.as_str())),
            (Value::String(key), Value::Object(map)) => Some(map.contains_key(key)),
            _ => None,
        }
    };
    Ok(match op {
        CmpOp::Eq => equal(a, b),
        CmpOp::Ne => !equal(a, b),
        CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => {
            let order = ordering(a, b).ok_or_else(|| mismatch(op, a, b))?;
            match op {
                CmpOp::Lt => order == Ordering::Less,
                CmpOp::Le => order != Ordering::Greater,
                CmpOp::Gt => order == Ordering::Greater,
                _ => order != Ordering::Less,
            }
        }
        CmpOp::In => contains(a, b).ok_or_else(|| mismatch(op, a, b))?,
        CmpOp::NotIn => !contains(a, b).ok_or_else(|| mismatch(op, a, b))?,
    })
}

#[cfg(test)]
mod tests;
