//! The plugin's metadata: the crate's `Cargo.toml`, then the macro's settings.
//!
//! Built in a `const`, so [`check`] can refuse at compile time a name or version skillgate's
//! manifest rules would refuse at load time.

use serde_json::{Map, Value};

/// A plugin's metadata, as `vtcode_plugin_metadata` reports it. [`export_plugin!`] builds it
/// from the crate's `Cargo.toml` and its settings, each a method here.
///
/// [`export_plugin!`]: crate::export_plugin
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    name: &'static str,
    description: &'static str,
    version: &'static str,
    author: Option<&'static str>,
    when_to_use: Option<&'static str>,
    when_not_to_use: Option<&'static str>,
    allowed_tools: Option<&'static [&'static str]>,
    thread_safe: bool,
}

impl Metadata {
    /// From `CARGO_PKG_NAME`, `CARGO_PKG_VERSION`, `CARGO_PKG_DESCRIPTION` and
    /// `CARGO_PKG_AUTHORS` (colon-separated; empty means none).
    pub const fn from_cargo(
        name: &'static str,
        version: &'static str,
        description: &'static str,
        authors: &'static str,
    ) -> Self {
        Metadata {
            name,
            description,
            version,
            author: if authors.is_empty() {
                None
            } else {
                Some(authors)
            },
            when_to_use: None,
            when_not_to_use: None,
            allowed_tools: None,
            thread_safe: false,
        }
    }

    /// Sets `name` (it must equal `plugin.json`'s).
    pub const fn name(self, name: &'static str) -> Self {
        Metadata { name, ..self }
    }

    /// Sets `description`.
    pub const fn description(self, description: &'static str) -> Self {
        Metadata {
            description,
            ..self
        }
    }

    /// Sets `version` (it must equal `plugin.json`'s).
    pub const fn version(self, version: &'static str) -> Self {
        Metadata { version, ..self }
    }

    /// Sets `author`.
    pub const fn author(self, author: &'static str) -> Self {
        Metadata {
            author: Some(author),
            ..self
        }
    }

    /// Sets `when_to_use`.
    pub const fn when_to_use(self, text: &'static str) -> Self {
        Metadata {
            when_to_use: Some(text),
            ..self
        }
    }

    /// Sets `when_not_to_use`.
    pub const fn when_not_to_use(self, text: &'static str) -> Self {
        Metadata {
            when_not_to_use: Some(text),
            ..self
        }
    }

    /// Sets `allowed_tools`.
    pub const fn allowed_tools(self, tools: &'static [&'static str]) -> Self {
        Metadata {
            allowed_tools: Some(tools),
            ..self
        }
    }

    /// Sets `thread_safe` (skillgate records it and serializes calls all the same).
    pub const fn thread_safe(self, thread_safe: bool) -> Self {
        Metadata {
            thread_safe,
            ..self
        }
    }

    /// The plugin's name.
    pub const fn plugin_name(&self) -> &'static str {
        self.name
    }

    /// The plugin's version.
    pub const fn plugin_version(&self) -> &'static str {
        self.version
    }

    /// The metadata document: exactly VT Code's nine keys.
    pub fn to_json(&self) -> String {
        let text = |s: Option<&str>| s.map_or(Value::Null, |s| Value::String(s.to_owned()));
        let mut doc = Map::new();
        doc.insert("name".into(), self.name.into());
        doc.insert("description".into(), self.description.into());
        doc.insert("version".into(), self.version.into());
        // Cargo joins authors with ':'.
        let author = self
            .author
            .map(|a| a.split(':').collect::<Vec<_>>().join(", "));
        doc.insert("author".into(), text(author.as_deref()));
        doc.insert("abi_version".into(), crate::ABI_VERSION.into());
        doc.insert("when_to_use".into(), text(self.when_to_use));
        doc.insert("when_not_to_use".into(), text(self.when_not_to_use));
        doc.insert(
            "allowed_tools".into(),
            self.allowed_tools
                .map_or(Value::Null, |t| t.iter().map(|&s| Value::from(s)).collect()),
        );
        doc.insert("thread_safe".into(), self.thread_safe.into());
        Value::Object(doc).to_string()
    }
}

/// Fails the build (this is evaluated in a `const`) when skillgate's manifest rules would
/// refuse the name: 1 to 64 characters of `[A-Za-z0-9._+-]`; or the version is empty.
pub const fn check(metadata: &Metadata) {
    let name = metadata.name.as_bytes();
    assert!(
        !name.is_empty() && name.len() <= 64,
        "plugin name must be 1 to 64 characters"
    );
    let mut rest = name;
    while let [c, tail @ ..] = rest {
        assert!(
            c.is_ascii_alphanumeric() || *c == b'.' || *c == b'_' || *c == b'+' || *c == b'-',
            "plugin name may hold only A-Z a-z 0-9 . _ + -"
        );
        rest = tail;
    }
    assert!(!metadata.version.is_empty(), "plugin version is empty");
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn cargo_fields_and_settings_become_the_nine_keys() {
        const M: Metadata = Metadata::from_cargo("wc", "1.2.3", "Counts", "Ann <a@x>:Bob")
            .when_to_use("to count")
            .allowed_tools(&["bash"]);
        check(&M);
        let doc: Value = serde_json::from_str(&M.to_json()).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "name": "wc", "description": "Counts", "version": "1.2.3",
                "author": "Ann <a@x>, Bob", "abi_version": 1, "when_to_use": "to count",
                "when_not_to_use": null, "allowed_tools": ["bash"], "thread_safe": false
            })
        );
    }

    #[test]
    fn no_authors_is_null() {
        let doc: Value =
            serde_json::from_str(&Metadata::from_cargo("a", "1.0.0", "", "").to_json()).unwrap();
        assert_eq!(doc["author"], Value::Null);
        assert_eq!(doc["allowed_tools"], Value::Null);
    }

    #[test]
    #[should_panic(expected = "plugin name may hold only")]
    fn a_name_skillgate_refuses_is_refused() {
        check(&Metadata::from_cargo("a/b", "1.0.0", "", ""));
    }
}
