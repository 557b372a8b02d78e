//! What a successful call returns: the `output` object and the `files` list.

use serde_json::{Map, Value};

/// A successful call's result: `output` (any JSON object) and `files` (paths the plugin
/// created, VT Code's `files`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// The result's `output` object.
    pub data: Map<String, Value>,
    /// The result's `files` list.
    pub files: Vec<String>,
}

impl Output {
    /// An empty output.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `output[key]` to `value` (a string, number, bool, `Vec`, `serde_json::json!` value…).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }

    /// Adds a path to `files`.
    pub fn file(mut self, path: impl Into<String>) -> Self {
        self.files.push(path.into());
        self
    }
}

impl From<Map<String, Value>> for Output {
    fn from(data: Map<String, Value>) -> Self {
        Output {
            data,
            files: Vec::new(),
        }
    }
}
