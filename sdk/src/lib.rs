//! Write a native skill plugin for skillgate (and VT Code) as one Rust function.
//!
//! # The ABI this crate implements
//!
//! A plugin is a shared library (`crate-type = ["cdylib"]`) exporting VT Code's plugin ABI,
//! version 1, as four C functions:
//!
//! | export | C signature | returns |
//! |---|---|---|
//! | `vtcode_plugin_version` | `uint32_t (void)` | [`ABI_VERSION`] (1) |
//! | `vtcode_plugin_metadata` | `const char *(void)` | metadata JSON, owned by the plugin |
//! | `vtcode_plugin_execute` | `const char *(const char *context_json)` | result JSON, owned by the plugin |
//! | `vtcode_plugin_free_string` | `void (const char *)` | releases either string above |
//!
//! The host sends a context `{"input": {…}, "workspace_root": "…" | null, "config": {…}}` and
//! expects back `{"success": bool, "output": {…}, "error": "…" | null, "files": ["…"]}`. The
//! metadata is `{"name", "description", "version", "author", "abi_version",
//! "when_to_use", "when_not_to_use", "allowed_tools", "thread_safe"}`; skillgate compares its
//! `name`, `version` and `abi_version` with the plugin's signed `plugin.json` and refuses a
//! plugin whose library says otherwise. The C declarations are in
//! `include/skillgate_plugin.h` at the root of the skillgate repository.
//!
//! # Why a crate for four functions
//!
//! Each export is a boundary where a small mistake costs the host, not the plugin:
//!
//! - **A panic must not cross it.** Unwinding out of an `extern "C"` function aborts the
//!   process, and in skillgate's thread mode (and in VT Code) that process is the host. Every
//!   export here runs its Rust code under [`std::panic::catch_unwind`]: a panicking handler
//!   becomes `{"success": false, "error": "plugin panicked: <message> (<file:line:col>)"}` and
//!   the plugin goes on serving calls. A build with `panic = "abort"` could not keep that
//!   promise, so it does not compile.
//! - **Strings have one owner.** Every string handed to the host is allocated here and freed
//!   only by this crate's `vtcode_plugin_free_string`, which looks the pointer up in a table of
//!   strings still handed out: NULL, a pointer this crate never returned, and a second free of
//!   the same string are ignored instead of corrupting the heap, and the allocation is freed
//!   with the length it was made with, whatever the host wrote into it.
//! - **Input is parsed, not trusted.** A NULL context, bytes that are not UTF-8, text that is
//!   not JSON, and JSON of the wrong shape each give an error result naming what was wrong;
//!   the handler only ever sees a well-formed [`PluginContext`].
//! - **Metadata is the crate's own.** Name, version, description and authors come from the
//!   plugin crate's `Cargo.toml` (`env!` expands in the plugin crate), so the library and the
//!   package cannot drift apart; a name skillgate would refuse is a compile error. The
//!   metadata export allocates its JSON each call and cannot panic.
//!
//! # Use
//!
//! ```
//! use skillgate_plugin::{export_plugin, Output, PluginContext};
//!
//! fn shout(ctx: PluginContext) -> Result<Output, String> {
//!     let text = ctx.required_str("text")?;
//!     Ok(Output::new().with("shout", text.to_uppercase()))
//! }
//!
//! export_plugin!(handler: shout, when_to_use: "To make text louder", allowed_tools: &[]);
//! ```
//!
//! The handler may return any `Result<O, E>` where `O: Into<`[`Output`]`>` (an [`Output`], or a
//! `serde_json::Map`) and `E: Display` (a `String`, `&str`, `Box<dyn Error>`, …); an `Err`
//! becomes `{"success": false, "error": "<E's text>"}`.
//!
//! Settings after the handler, each optional, override or add metadata: `name`,
//! `description`, `version`, `author`, `when_to_use`, `when_not_to_use` (each a `&'static
//! str`), `allowed_tools` (`&'static [&'static str]`) and `thread_safe` (`bool`; skillgate
//! records it and still serializes calls).
//!
//! # Host tools and progress
//!
//! Under skillgate, [`host()`] returns the host's table during a call: [`Host::call_tool`]
//! asks the host to run a tool the plugin's signed `plugin.json` names in `"tools"` (and the
//! host's policy allows), for example reading a file of the workspace the host chose to
//! share; [`Host::progress`] sends a progress message the host receives while the call runs.
//!
//! ```no_run
//! use skillgate_plugin::{host, serde_json::json, Output, PluginContext};
//!
//! fn summarize(ctx: PluginContext) -> Result<Output, String> {
//!     let host = host().ok_or("this host offers no tools")?;
//!     host.progress(&json!({"stage": "reading"}));
//!     let file = host
//!         .call_tool("workspace.read", &json!({"path": ctx.required_str("path")?}))
//!         .map_err(|e| e.to_string())?;
//!     Ok(Output::new().with("bytes", file["bytes"].clone()))
//! }
//! ```
//!
//! Build the plugin with `cargo build --release`: Rust's defaults on Linux (full RELRO,
//! `BIND_NOW`, a non-executable stack, only the C runtime and `libgcc_s` as `DT_NEEDED`) pass
//! skillgate's default ELF policy.

// The handler's panic must be caught at the boundary; with `panic = "abort"` it would abort
// the host process instead.
#[cfg(panic = "abort")]
compile_error!(
    "skillgate-plugin catches a handler's panic at the ABI boundary, which `panic = \"abort\"` \
     makes impossible (the panic would abort the host process): build the plugin with \
     `panic = \"unwind\"`, Rust's default"
);

mod boundary;
mod context;
mod host;
mod metadata;
mod output;

pub use context::{ContextError, PluginContext};
pub use host::{host, Host, ToolError, HOST_TABLE_VERSION};
pub use metadata::Metadata;
pub use output::Output;
/// Re-exported so a plugin needs no direct dependency on `serde_json` to build its output.
pub use serde_json;

/// The plugin ABI version this crate implements; `vtcode_plugin_version` returns it.
pub const ABI_VERSION: u32 = 1;

/// What [`export_plugin!`] expands to calls; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::boundary::{execute, free_string, metadata};
    pub use crate::host::{set_table, HostTableV1};
    pub use crate::metadata::check as check_metadata;
}

/// Defines the four ABI v1 exports (`vtcode_plugin_version`, `vtcode_plugin_metadata`,
/// `vtcode_plugin_execute`, `vtcode_plugin_free_string`) around one handler function, and
/// the host extension's optional `skillgate_plugin_host_v1` (see [`host`]).
///
/// Use it once, at the root of a `cdylib` crate:
///
/// ```
/// # use skillgate_plugin::{Output, PluginContext};
/// # fn my_handler(_: PluginContext) -> Result<Output, String> { Ok(Output::new()) }
/// // `skillgate_plugin::export_plugin!(my_handler);` without settings, or:
/// skillgate_plugin::export_plugin!(
///     handler: my_handler,
///     when_to_use: "When the user asks for a word count",
///     allowed_tools: &["file_read"],
/// );
/// ```
///
/// `my_handler` is any `FnOnce(PluginContext) -> Result<O, E>` with `O: Into<Output>` and
/// `E: Display` (a function, or a closure expression). The settings are the builder methods of
/// [`Metadata`] (see the crate docs); an unknown one is a compile error.
#[macro_export]
macro_rules! export_plugin {
    (handler: $handler:expr $(, $key:ident : $value:expr)* $(,)?) => {
        /// This plugin's metadata: the crate's `Cargo.toml`, then the macro's settings.
        const __SKILLGATE_PLUGIN_METADATA: $crate::Metadata = $crate::Metadata::from_cargo(
            ::core::env!("CARGO_PKG_NAME"),
            ::core::env!("CARGO_PKG_VERSION"),
            ::core::env!("CARGO_PKG_DESCRIPTION"),
            ::core::env!("CARGO_PKG_AUTHORS"),
        )
        $(.$key($value))*;

        // A name or version skillgate would refuse fails the build, not the load.
        const _: () = $crate::__private::check_metadata(&__SKILLGATE_PLUGIN_METADATA);

        /// ABI v1: the ABI version this plugin implements.
        #[unsafe(no_mangle)]
        pub extern "C" fn vtcode_plugin_version() -> u32 {
            $crate::ABI_VERSION
        }

        /// ABI v1: this plugin's metadata as JSON; release it with `vtcode_plugin_free_string`.
        #[unsafe(no_mangle)]
        pub extern "C" fn vtcode_plugin_metadata() -> *const ::core::ffi::c_char {
            $crate::__private::metadata(&__SKILLGATE_PLUGIN_METADATA)
        }

        /// ABI v1: runs one call; returns the result JSON, to be released with
        /// `vtcode_plugin_free_string`.
        ///
        /// # Safety
        ///
        /// `context_json` is NULL or a NUL-terminated string that stays valid and unchanged
        /// for the duration of the call.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn vtcode_plugin_execute(
            context_json: *const ::core::ffi::c_char,
        ) -> *const ::core::ffi::c_char {
            // SAFETY: the caller's promise above is exactly `execute`'s contract.
            unsafe { $crate::__private::execute(context_json, $handler) }
        }

        /// ABI v1: releases a string this plugin returned. NULL, a pointer it never
        /// returned, and a second release are ignored.
        #[unsafe(no_mangle)]
        pub extern "C" fn vtcode_plugin_free_string(string: *const ::core::ffi::c_char) {
            $crate::__private::free_string(string)
        }

        /// The host extension (skillgate): keeps the host's table for
        /// `skillgate_plugin::host()`. A host without it never calls this.
        ///
        /// # Safety
        ///
        /// `table` is NULL or a host table that lives as long as the process.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn skillgate_plugin_host_v1(
            table: *const $crate::__private::HostTableV1,
        ) {
            // SAFETY: the caller's promise above is exactly `set_table`'s contract.
            unsafe { $crate::__private::set_table(table) }
        }
    };
    ($handler:expr $(,)?) => {
        $crate::export_plugin!(handler: $handler);
    };
}
