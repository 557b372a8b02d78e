//! The built-in host tools: `workspace.read` and `workspace.write`, beneath the workspace
//! the host named when it loaded the plugin.
//!
//! The plugin names a path relative to the workspace; the tool resolves it by descriptor
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV)` from the workspace directory, itself opened from `/` along its
//! canonical path without following any symlink. So `..`, an absolute path, a symlink
//! anywhere on the way (placed by an earlier plugin, say) and a mount point are refused by
//! the kernel, not by string checks. Sizes are bounded both ways. Hand-written over rustix
//! rather than cap-std: two calls of `openat2` are all it needs.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Instant;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::tools::{HostTools, ToolCaller, ToolError};

/// `workspace.read` (`{"path": REL}` → `{"content": TEXT, "bytes": N}`) and
/// `workspace.write` (`{"path": REL, "content": TEXT}` → `{"bytes": N}`, creating or
/// truncating a regular file, mode 0644), beneath the workspace named at load.
///
/// ```no_run
/// # fn main() -> Result<(), skillgate::Error> {
/// use std::sync::Arc;
/// use skillgate::{Gate, Policy, tools::WorkspaceTools};
/// let gate = Gate::new(Policy::from_file("policy/default.json")?)?
///     .with_host_tools(Arc::new(WorkspaceTools::new()));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct WorkspaceTools {
    max_file_bytes: usize,
}

impl Default for WorkspaceTools {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkspaceTools {
    /// The two tools, reading and writing files of at most 1 MiB.
    pub fn new() -> Self {
        WorkspaceTools {
            max_file_bytes: 1024 * 1024,
        }
    }

    /// The largest file read or written, in bytes.
    pub fn max_file_bytes(mut self, bytes: usize) -> Self {
        self.max_file_bytes = bytes;
        self
    }
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

fn workspace_dir(caller: &ToolCaller) -> Result<OwnedFd, ToolError> {
    let root = caller.workspace.as_deref().ok_or_else(|| {
        ToolError::Refused("the host named no workspace when it loaded this plugin".into())
    })?;
    rustix::fs::openat2(
        rustix::fs::CWD,
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| ToolError::Failed(format!("cannot open the workspace: {e}")))
}

fn relative(args: &serde_json::Value) -> Result<&str, ToolError> {
    let path = args
        .get("path")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| ToolError::InvalidArguments("\"path\" must be a string".into()))?;
    if path.is_empty() || path.len() > 4096 || path.contains('\0') || Path::new(path).is_absolute()
    {
        return Err(ToolError::InvalidArguments(
            "\"path\" must be a non-empty relative path".into(),
        ));
    }
    Ok(path)
}

fn open_beneath(
    caller: &ToolCaller,
    path: &str,
    flags: OFlags,
    mode: Mode,
) -> Result<std::fs::File, ToolError> {
    let dir = workspace_dir(caller)?;
    rustix::fs::openat2(&dir, path, flags | OFlags::CLOEXEC, mode, BENEATH)
        .map(std::fs::File::from)
        .map_err(|e| match e {
            rustix::io::Errno::XDEV | rustix::io::Errno::LOOP => ToolError::Refused(format!(
                "{path:?} is not beneath the workspace without a symlink or mount"
            )),
            e => ToolError::Failed(format!("{path:?}: {e}")),
        })
}

impl WorkspaceTools {
    fn read(
        &self,
        caller: &ToolCaller,
        args: &serde_json::Value,
    ) -> Result<serde_json::Value, ToolError> {
        let path = relative(args)?;
        let file = open_beneath(caller, path, OFlags::RDONLY | OFlags::NOCTTY, Mode::empty())?;
        let meta = file
            .metadata()
            .map_err(|e| ToolError::Failed(format!("{path:?}: {e}")))?;
        if !meta.is_file() {
            return Err(ToolError::Refused(format!(
                "{path:?} is not a regular file"
            )));
        }
        let cap = u64::try_from(self.max_file_bytes).unwrap_or(u64::MAX);
        let mut bytes = Vec::new();
        file.take(cap.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| ToolError::Failed(format!("{path:?}: {e}")))?;
        if bytes.len() > self.max_file_bytes {
            return Err(ToolError::TooLarge {
                what: "the file",
                limit: self.max_file_bytes,
            });
        }
        let len = bytes.len();
        let content = String::from_utf8(bytes)
            .map_err(|_| ToolError::Refused(format!("{path:?} is not UTF-8 text")))?;
        Ok(serde_json::json!({ "content": content, "bytes": len }))
    }

    fn write(
        &self,
        caller: &ToolCaller,
        args: &serde_json::Value,
    ) -> Result<serde_json::Value, ToolError> {
        let path = relative(args)?;
        let content = args
            .get("content")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| ToolError::InvalidArguments("\"content\" must be a string".into()))?;
        if content.len() > self.max_file_bytes {
            return Err(ToolError::TooLarge {
                what: "the content",
                limit: self.max_file_bytes,
            });
        }
        let mut file = open_beneath(
            caller,
            path,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOCTTY,
            Mode::from_raw_mode(0o644),
        )?;
        let meta = file
            .metadata()
            .map_err(|e| ToolError::Failed(format!("{path:?}: {e}")))?;
        if !meta.is_file() {
            return Err(ToolError::Refused(format!(
                "{path:?} is not a regular file"
            )));
        }
        file.write_all(content.as_bytes())
            .map_err(|e| ToolError::Failed(format!("{path:?}: {e}")))?;
        Ok(serde_json::json!({ "bytes": content.len() }))
    }
}

impl HostTools for WorkspaceTools {
    fn call_tool(
        &self,
        plugin: &ToolCaller,
        name: &str,
        args: &serde_json::Value,
        _deadline: Instant,
    ) -> Result<serde_json::Value, ToolError> {
        match name {
            "workspace.read" => self.read(plugin, args),
            "workspace.write" => self.write(plugin, args),
            other => Err(ToolError::Unknown(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::base::settings::Isolation;

    fn caller(dir: &Path) -> ToolCaller {
        ToolCaller {
            name: "p".into(),
            version: "1.0.0".into(),
            isolation: Isolation::Thread,
            workspace: Some(std::fs::canonicalize(dir).unwrap()),
        }
    }

    #[test]
    fn reads_and_writes_stay_beneath_the_workspace() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        std::fs::create_dir_all(ws.join("sub")).unwrap();
        std::fs::write(ws.join("sub/a.txt"), "hello").unwrap();
        std::fs::write(tmp.path().join("secret"), "no").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), ws.join("link")).unwrap();
        let t = WorkspaceTools::new().max_file_bytes(16);
        let c = caller(&ws);
        let deadline = Instant::now();
        let read = |p: &str| {
            t.call_tool(
                &c,
                "workspace.read",
                &serde_json::json!({"path": p}),
                deadline,
            )
        };
        assert_eq!(read("sub/a.txt").unwrap()["content"], "hello");
        for escape in ["../secret", "sub/../../secret", "link"] {
            assert!(
                matches!(read(escape), Err(ToolError::Refused(_))),
                "{escape}"
            );
        }
        assert!(matches!(
            read("/etc/passwd"),
            Err(ToolError::InvalidArguments(_))
        ));
        let w = t
            .call_tool(
                &c,
                "workspace.write",
                &serde_json::json!({"path": "out.txt", "content": "x"}),
                deadline,
            )
            .unwrap();
        assert_eq!(w["bytes"], 1);
        assert_eq!(std::fs::read_to_string(ws.join("out.txt")).unwrap(), "x");
        let big = "y".repeat(17);
        assert!(matches!(
            t.call_tool(
                &c,
                "workspace.write",
                &serde_json::json!({"path": "b", "content": big}),
                deadline
            ),
            Err(ToolError::TooLarge { .. })
        ));
        assert!(matches!(
            t.call_tool(
                &c,
                "workspace.write",
                &serde_json::json!({"path": "link", "content": "z"}),
                deadline
            ),
            Err(ToolError::Refused(_))
        ));
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("secret")).unwrap(),
            "no"
        );
    }
}
