//! The audit trail: every decision the loader makes about a plugin is one `tracing` event
//! with target [`TARGET`] (`skillgate::audit`), a field `event` naming the decision, and
//! the stable field names README's "Audit events" table documents. A security engineer
//! keeps these (`skillgate run --audit-log FILE` appends them as JSON lines; a host sends
//! them wherever its `tracing` subscriber does); nothing else in the crate logs to this
//! target.
//!
//! One function per event, so every call site names its fields the same way and an event
//! cannot be missing one: `verified`, `refused`, `loaded`, `unloaded`, `fault`, `limit`,
//! `waived`, `mark_reset`, `pulled` and `pushed` fire in this crate; `reloaded`, `reload_refused`, `restarted`,
//! `cancelled` and `tool` are the events of hot reload, restart, cancellation and host
//! tools, ready for that code to call; `freshness` is the TUF check of a release.
//!
//! Every text field is escaped ([`Escaped`]): plugin names, versions, paths and error
//! messages may carry what a plugin directory or plugin code chose, and a log line must not
//! be forged or reach a terminal as control sequences. Numbers stay numbers. An absent
//! optional field is left out (`tracing` records an `Option` only when it is `Some`).
//!
//! This module sits in layer 0 so that every layer can report a decision where it is made
//! (the worker's log reader in `exec/`, the trust rules in `trust/`, the gate on top): what
//! it needs from the layers above (a stage, an error's kind, an isolation mode) it takes as
//! text from the caller.
//!
//! Levels: INFO for `verified`, `pulled`, `pushed`, `loaded`, `unloaded`, `reloaded`,
//! `restarted`, an allowed `tool` and a `fresh` release; WARN for a `stale` release,
//! `refused`, `reload_refused`, `cancelled`, a denied `tool`,
//! `fault`, `limit`, `waived` and `mark_reset` — and for a `verified` or `loaded` event
//! that carries `danger` (a policy weakening checks is in force).

use std::fmt::Display;
use std::path::{Path, PathBuf};

use crate::base::escape::Escaped;

/// The `tracing` target of every audit event.
pub(crate) const TARGET: &str = "skillgate::audit";

/// Which plugin an event is about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject<'a> {
    /// The signed manifest's name, or the directory's name when the refusal came before
    /// the manifest was read.
    pub(crate) plugin: &'a str,
    /// The signed manifest's version, once known.
    pub(crate) version: Option<&'a str>,
    /// The plugin directory (as given, for a refusal), once known.
    pub(crate) path: Option<&'a Path>,
    /// The library's SHA-256 (hex), once verified.
    pub(crate) sha256: Option<&'a str>,
}

/// Where a loaded plugin runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Runs<'a> {
    /// `"thread"` or `"process"`.
    pub(crate) isolation: &'a str,
    /// The worker's process id (process isolation; the first worker's when there are
    /// several, or the one that served the call for a `fault`).
    pub(crate) worker_pid: Option<u32>,
}

/// Emits one audit event at `$level` with the subject's fields, `event = $event`, the
/// extra fields given, and `$message`.
macro_rules! emit {
    ($level:expr, $event:literal, $s:expr, { $($fields:tt)* }, $message:literal) => {
        tracing::event!(
            target: TARGET,
            $level,
            event = $event,
            plugin = %Escaped($s.plugin),
            version = $s.version.map(Escaped).map(tracing::field::display),
            path = $s.path.map(|p| tracing::field::display(Escaped(p.display()))),
            sha256 = $s.sha256,
            $($fields)*
            $message
        )
    };
}

/// A plugin's name when only its directory is known: the directory's last component (the
/// whole path if it has none, as `/` or `..`).
pub(crate) fn dir_name(path: &Path) -> std::borrow::Cow<'_, str> {
    path.file_name()
        .map_or_else(|| path.to_string_lossy(), |n| n.to_string_lossy())
}

/// The key ids as one field: `id1,id2`.
fn key_ids(signers: &[impl Display]) -> String {
    signers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `event = "verified"`: every check short of loading passed (`Gate::verify`,
/// `verify_and_inspect`, their `_staged` forms, each path of `verify_many`); with a
/// `state_dir`, the plugin's rollback mark is now at least `version`. `danger` names the
/// policy's weakenings in force, if any (the event is then WARN).
pub(crate) fn verified(s: &Subject<'_>, signers: &[impl Display], danger: Option<&str>) {
    let signers = key_ids(signers);
    match danger {
        None => emit!(tracing::Level::INFO, "verified", s, {
            signers = %Escaped(&signers),
        }, "plugin verified"),
        Some(danger) => emit!(tracing::Level::WARN, "verified", s, {
            signers = %Escaped(&signers),
            danger = %Escaped(danger),
        }, "plugin verified under a policy that weakens checks"),
    }
}

/// `event = "refused"`: a verify or load entry point refused the plugin at `stage`
/// ([`crate::pipeline::stage::Stage::name`], or `"setup"` when the host itself could not
/// be configured), with the error's `kind` (`Error::kind`) and full text.
pub(crate) fn refused(s: &Subject<'_>, stage: &str, kind: &str, error: &dyn Display) {
    emit!(tracing::Level::WARN, "refused", s, {
        stage = %Escaped(stage),
        kind = %Escaped(kind),
        error = %Escaped(error),
    }, "plugin refused");
}

/// `event = "loaded"`: the plugin is loaded and ready for calls. `enforcement` is what the
/// sandbox enforces, as one line of JSON (the object `LoadedPlugin::enforcement`
/// serializes to); `danger` as for [`verified`]; `resident` the distinct thread-mode
/// libraries this process keeps loaded for good and their bytes (`Gate::stats`).
pub(crate) fn loaded(
    s: &Subject<'_>,
    runs: &Runs<'_>,
    signers: &[impl Display],
    enforcement: &str,
    danger: Option<&str>,
    resident: (usize, u64),
) {
    let signers = key_ids(signers);
    let (libraries, bytes) = resident;
    match danger {
        None => emit!(tracing::Level::INFO, "loaded", s, {
            signers = %Escaped(&signers),
            isolation = %Escaped(runs.isolation),
            worker_pid = runs.worker_pid,
            enforcement = %Escaped(enforcement),
            thread_libraries_resident = libraries,
            thread_library_bytes = bytes,
        }, "plugin loaded"),
        Some(danger) => emit!(tracing::Level::WARN, "loaded", s, {
            signers = %Escaped(&signers),
            isolation = %Escaped(runs.isolation),
            worker_pid = runs.worker_pid,
            enforcement = %Escaped(enforcement),
            thread_libraries_resident = libraries,
            thread_library_bytes = bytes,
            danger = %Escaped(danger),
        }, "plugin loaded under a policy that weakens checks"),
    }
}

/// `event = "unloaded"`: the handle was dropped. In process isolation its workers have
/// been ended (killed and reaped) when this fires; in thread isolation the plugin's thread
/// is told to stop, and its library stays mapped for the life of the process (README,
/// "Unload policy").
pub(crate) fn unloaded(s: &Subject<'_>, runs: &Runs<'_>) {
    emit!(tracing::Level::INFO, "unloaded", s, {
        isolation = %Escaped(runs.isolation),
        worker_pid = runs.worker_pid,
    }, "plugin unloaded");
}

/// `event = "fault"`: a call failed because of the plugin (a crash, a timeout, a protocol
/// violation, a bad result, or a call on a handle an earlier fault poisoned), with the
/// error's `kind` and full text.
pub(crate) fn fault(s: &Subject<'_>, runs: &Runs<'_>, kind: &str, error: &dyn Display) {
    emit!(tracing::Level::WARN, "fault", s, {
        isolation = %Escaped(runs.isolation),
        worker_pid = runs.worker_pid,
        kind = %Escaped(kind),
        error = %Escaped(error),
    }, "plugin fault");
}

/// `event = "limit"`: the plugin ran into a bound of the policy that the host enforces
/// without failing the call (today: `limits.log_bytes`, output past it dropped).
/// `limit` names the policy field, `max` is its value, `excess` how much went past it
/// (bytes dropped), and `error` says what happened.
pub(crate) fn limit(plugin: &str, limit: &str, max: u64, excess: u64, error: &dyn Display) {
    tracing::warn!(
        target: TARGET,
        event = "limit",
        plugin = %Escaped(plugin),
        limit = %Escaped(limit),
        max,
        excess,
        error = %Escaped(error),
        "plugin limit reached"
    );
}

/// `event = "waived"`: a check refused, and a `danger` knob of the policy let the plugin
/// through anyway (today: an expired plugin under `danger.expired_plugins_warn_only`).
/// `kind` is the check's error kind, `error` the refusal that was waived, `danger` the
/// knob.
pub(crate) fn waived(s: &Subject<'_>, kind: &str, error: &dyn Display, danger: &str) {
    emit!(tracing::Level::WARN, "waived", s, {
        kind = %Escaped(kind),
        error = %Escaped(error),
        danger = %Escaped(danger),
    }, "a refusal was waived by a danger knob");
}

/// `event = "mark_reset"`: an administrator removed a plugin's rollback mark, so an older
/// signed version may load again. `version` is the mark removed (if there was one) and
/// `path` the state directory.
pub(crate) fn mark_reset(plugin: &str, old: Option<&str>, state_dir: &Path) {
    let s = Subject {
        plugin,
        version: old,
        path: Some(state_dir),
        sha256: None,
    };
    emit!(
        tracing::Level::WARN,
        "mark_reset",
        s,
        {},
        "rollback mark reset by an administrator"
    );
}

/// `event = "pulled"`: a release fetched from a registry (or layout directory) passed the
/// verification `skillgate verify` runs and was installed at `path`. `reference` is what
/// was asked for, `digest` the manifest digest installed (a tag resolved first).
pub(crate) fn pulled(s: &Subject<'_>, reference: &str, digest: &str) {
    emit!(tracing::Level::INFO, "pulled", s, {
        reference = %Escaped(reference),
        digest = %Escaped(digest),
    }, "plugin pulled and installed");
}

/// `event = "pushed"`: a signed plugin directory (at `path`) was published to `reference`
/// as the manifest `digest`.
pub(crate) fn pushed(s: &Subject<'_>, reference: &str, digest: &str) {
    emit!(tracing::Level::INFO, "pushed", s, {
        reference = %Escaped(reference),
        digest = %Escaped(digest),
    }, "plugin pushed");
}

/// `event = "reloaded"`: a loaded plugin was replaced by a newer release, verified in full;
/// new calls go to it. `from_version` is the version replaced.
pub(crate) fn reloaded(
    s: &Subject<'_>,
    runs: &Runs<'_>,
    signers: &[impl Display],
    from_version: &str,
) {
    let signers = key_ids(signers);
    emit!(tracing::Level::INFO, "reloaded", s, {
        from_version = %Escaped(from_version),
        signers = %Escaped(&signers),
        isolation = %Escaped(runs.isolation),
        worker_pid = runs.worker_pid,
    }, "plugin reloaded");
}

/// `event = "reload_refused"`: a reload was refused at `stage` (fields as [`refused`]);
/// the release loaded before keeps serving. `s` names the plugin by that serving release
/// (the refused one may never have been read) and the directory the reload read.
pub(crate) fn reload_refused(s: &Subject<'_>, stage: &str, kind: &str, error: &dyn Display) {
    emit!(tracing::Level::WARN, "reload_refused", s, {
        stage = %Escaped(stage),
        kind = %Escaped(kind),
        error = %Escaped(error),
    }, "plugin reload refused; the loaded release keeps serving");
}

/// `event = "restarted"`: a handle was restarted explicitly from the sealed copy it holds;
/// `worker_pid` is the new worker's, `was_poisoned` whether a fault had ended the old ones.
pub(crate) fn restarted(s: &Subject<'_>, runs: &Runs<'_>, was_poisoned: bool) {
    emit!(tracing::Level::INFO, "restarted", s, {
        isolation = %Escaped(runs.isolation),
        worker_pid = runs.worker_pid,
        was_poisoned = was_poisoned,
    }, "plugin restarted");
}

/// `event = "cancelled"`: a call was cancelled through its token: before it reached the
/// plugin, or while it ran (its worker then killed, or in thread mode the call abandoned).
/// `kind` and `error` are those of the error the call failed with.
pub(crate) fn cancelled(s: &Subject<'_>, runs: &Runs<'_>, kind: &str, error: &dyn Display) {
    emit!(tracing::Level::WARN, "cancelled", s, {
        isolation = %Escaped(runs.isolation),
        worker_pid = runs.worker_pid,
        kind = %Escaped(kind),
        error = %Escaped(error),
    }, "plugin call cancelled");
}

/// `event = "tool"`: the plugin asked its host for the tool named `tool`: allowed (INFO,
/// `decision = "allowed"`) when `denied` is `None`, else denied (WARN,
/// `decision = "denied"`, with `error` saying why).
pub(crate) fn tool(s: &Subject<'_>, runs: &Runs<'_>, tool: &str, denied: Option<&dyn Display>) {
    match denied {
        None => emit!(tracing::Level::INFO, "tool", s, {
            isolation = %Escaped(runs.isolation),
            worker_pid = runs.worker_pid,
            tool = %Escaped(tool),
            decision = "allowed",
        }, "host tool allowed"),
        Some(error) => emit!(tracing::Level::WARN, "tool", s, {
            isolation = %Escaped(runs.isolation),
            worker_pid = runs.worker_pid,
            tool = %Escaped(tool),
            decision = "denied",
            error = %Escaped(error),
        }, "host tool denied"),
    }
}

/// `event = "freshness"`: a release was checked against the policy's TUF repository
/// (`skillgate::fleet::freshness`): `decision = "fresh"` (INFO) when its current targets
/// list `plugin`/`version` with that `digest`, else `decision = "stale"` (WARN) with
/// `error` saying why. `metadata` is the repository's metadata source (directory or URL).
pub(crate) fn freshness(
    plugin: &str,
    version: &str,
    digest: &str,
    metadata: &str,
    refused: Option<&dyn Display>,
) {
    match refused {
        None => tracing::info!(
            target: TARGET,
            event = "freshness",
            plugin = %Escaped(plugin),
            version = %Escaped(version),
            digest = %Escaped(digest),
            metadata = %Escaped(metadata),
            decision = "fresh",
            "release listed by the TUF repository"
        ),
        Some(error) => tracing::warn!(
            target: TARGET,
            event = "freshness",
            plugin = %Escaped(plugin),
            version = %Escaped(version),
            digest = %Escaped(digest),
            metadata = %Escaped(metadata),
            decision = "stale",
            error = %Escaped(error),
            "release refused by the TUF freshness check"
        ),
    }
}

/// A [`Subject`] that owns its text: what a loaded plugin keeps for its later events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedSubject {
    /// As [`Subject::plugin`].
    pub(crate) plugin: String,
    /// As [`Subject::version`].
    pub(crate) version: Option<String>,
    /// As [`Subject::path`].
    pub(crate) path: Option<PathBuf>,
    /// As [`Subject::sha256`].
    pub(crate) sha256: Option<String>,
}

impl OwnedSubject {
    /// Borrowed, for an event.
    pub(crate) fn subject(&self) -> Subject<'_> {
        Subject {
            plugin: &self.plugin,
            version: self.version.as_deref(),
            path: self.path.as_deref(),
            sha256: self.sha256.as_deref(),
        }
    }
}

/// Fires [`unloaded`] when dropped. A handle holds it as its last field, so the event
/// comes after every other field was dropped: its workers ended and reaped.
#[derive(Debug)]
pub(crate) struct OnUnload {
    /// The plugin.
    pub(crate) subject: OwnedSubject,
    /// `"thread"` or `"process"`.
    pub(crate) isolation: String,
    /// The (first) worker's process id when it loaded.
    pub(crate) worker_pid: Option<u32>,
}

impl Drop for OnUnload {
    fn drop(&mut self) {
        let runs = Runs {
            isolation: &self.isolation,
            worker_pid: self.worker_pid,
        };
        unloaded(&self.subject.subject(), &runs);
    }
}
