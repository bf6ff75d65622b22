//! Built-in functions implemented in Rust. PLACEHOLDER API — being implemented.

use gleitzeit_core::GzError;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgKind {
    Integer,
    Number,
    String,
    Boolean,
    List,
    Object,
    Any,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ArgSpec {
    pub name: &'static str,
    pub kind: ArgKind,
    pub required: bool,
    /// Default as JSON text, shown by `functions show`.
    pub default: Option<&'static str>,
    pub description: &'static str,
}

#[derive(Clone, Copy, serde::Serialize)]
pub struct Function {
    pub name: &'static str,
    pub category: &'static str,
    pub description: &'static str,
    pub args: &'static [ArgSpec],
    pub returns: &'static str,
    pub example: &'static str,
    /// Reads files or does heavy work: run off the async executor.
    pub blocking: bool,
    #[serde(skip)]
    pub run: fn(&Map<String, Value>) -> Result<Value, GzError>,
}

impl Function {
    pub fn call(&self, args: &Map<String, Value>) -> Result<Value, GzError> {
        (self.run)(args)
    }
}

pub fn all() -> &'static [Function] {
    &[]
}

pub fn find(name: &str) -> Option<&'static Function> {
    all().iter().find(|f| f.name == name)
}
