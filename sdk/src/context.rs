//! One call's input, parsed from the host's context JSON.
//!
//! The parse is lenient where VT Code's is (a missing or `null` `input`, `config` or
//! `workspace_root` is empty; unknown fields are ignored, so a newer host can add some) and
//! strict about types: a field of the wrong type is an error result, never a guess.

use std::fmt;

use serde_json::{Map, Value};

/// The input of one call (VT Code's `PluginContext`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginContext {
    /// The call's input data (`input` in the context JSON).
    pub input: Map<String, Value>,
    /// The workspace the host granted this call, if any. Under skillgate the plugin can reach
    /// only what its sandbox grants, so a path here is no promise of access.
    pub workspace_root: Option<String>,
    /// The plugin's configuration (`config` in the context JSON).
    pub config: Map<String, Value>,
}

/// Why a context could not be read. Its text becomes the call's `error`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContextError {
    /// The host passed NULL.
    Null,
    /// The bytes are not UTF-8.
    NotUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// The text is not JSON.
    NotJson {
        /// What the JSON parser said.
        detail: String,
    },
    /// The JSON is not an object.
    NotObject,
    /// A field has the wrong type.
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContextError::Null => f.write_str("the host passed no context (NULL)"),
            ContextError::NotUtf8 { valid_up_to } => {
                write!(f, "context is not valid UTF-8 (at byte {valid_up_to})")
            }
            ContextError::NotJson { detail } => write!(f, "context is not valid JSON: {detail}"),
            ContextError::NotObject => f.write_str("context is not a JSON object"),
            ContextError::WrongType { field, expected } => {
                write!(f, "context field `{field}` is not {expected}")
            }
        }
    }
}

impl std::error::Error for ContextError {}

impl PluginContext {
    /// Parses the bytes of a context JSON document (without its NUL).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ContextError> {
        let text = std::str::from_utf8(bytes).map_err(|e| ContextError::NotUtf8 {
            valid_up_to: e.valid_up_to(),
        })?;
        let value: Value = serde_json::from_str(text).map_err(|e| ContextError::NotJson {
            detail: e.to_string(),
        })?;
        let Value::Object(mut doc) = value else {
            return Err(ContextError::NotObject);
        };
        Ok(PluginContext {
            input: object(&mut doc, "input")?,
            workspace_root: match doc.remove("workspace_root") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s),
                Some(_) => {
                    return Err(ContextError::WrongType {
                        field: "workspace_root",
                        expected: "a string or null",
                    });
                }
            },
            config: object(&mut doc, "config")?,
        })
    }

    /// `input[key]` if it is a string.
    pub fn input_str(&self, key: &str) -> Option<&str> {
        self.input.get(key).and_then(Value::as_str)
    }

    /// `input[key]` as a string, or an error naming the field, for use with `?` in a handler.
    pub fn required_str(&self, key: &str) -> Result<&str, String> {
        self.input_str(key)
            .ok_or_else(|| format!("input.{key} must be a string"))
    }
}

fn object(
    doc: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Map<String, Value>, ContextError> {
    match doc.remove(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(ContextError::WrongType {
            field,
            expected: "an object",
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn a_full_context_parses() {
        let ctx = PluginContext::from_json(
            br#"{"input":{"text":"a b"},"workspace_root":"/w","config":{"k":1},"future":true}"#,
        )
        .unwrap();
        assert_eq!(ctx.input_str("text"), Some("a b"));
        assert_eq!(ctx.workspace_root.as_deref(), Some("/w"));
        assert_eq!(ctx.config["k"], 1);
        assert_eq!(
            ctx.required_str("nope").unwrap_err(),
            "input.nope must be a string"
        );
    }

    #[test]
    fn missing_and_null_fields_are_empty() {
        let ctx = PluginContext::from_json(br#"{"input":null,"workspace_root":null}"#).unwrap();
        assert_eq!(ctx, PluginContext::default());
    }

    #[test]
    fn each_bad_context_is_named() {
        for (bytes, want) in [
            (&b"\xff{}"[..], ContextError::NotUtf8 { valid_up_to: 0 }),
            (b"[1,2]", ContextError::NotObject),
            (
                br#"{"input":[]}"#,
                ContextError::WrongType {
                    field: "input",
                    expected: "an object",
                },
            ),
            (
                br#"{"config":"x"}"#,
                ContextError::WrongType {
                    field: "config",
                    expected: "an object",
                },
            ),
            (
                br#"{"workspace_root":7}"#,
                ContextError::WrongType {
                    field: "workspace_root",
                    expected: "a string or null",
                },
            ),
        ] {
            assert_eq!(PluginContext::from_json(bytes).unwrap_err(), want);
        }
        assert!(matches!(
            PluginContext::from_json(b"{\"input\":"),
            Err(ContextError::NotJson { .. })
        ));
    }
}
