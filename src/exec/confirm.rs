//! Confirming from outside what a worker reported about its own restrictions before
//! `dlopen`: `/proc/<pid>/status` (`Seccomp`, `NoNewPrivs`, `Seccomp_filters`),
//! `/proc/<pid>/ns/*` against the host's own, `/proc/<pid>/limits`, the cgroup it sits
//! in, and the workspace grant against the host's own plan. The report is the worker's word; what the kernel shows is the host's.

use crate::base::protocol::ProtocolViolation;
use crate::base::settings::Isolation;
use crate::sandbox::{Enforcement, TaskBound};

use super::cgroup::Cgroup;
use super::init::Init;

/// seccomp filters the worker installs on itself (on top of any the host inherited).
const WORKER_SECCOMP_FILTERS: u64 = 1;
/// Reads one `Name:\tvalue` field of a `/proc/<pid>/status` text.
fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Confirms from outside what the worker reported about itself before `dlopen`.
pub(super) fn confirm(
    pid: u32,
    cgroup: Option<&Cgroup>,
    init: &Init,
    report: &mut Enforcement,
) -> Result<(), ProtocolViolation> {
    let unconfirmed =
        |what: &'static str, reported: String, observed: String| ProtocolViolation::Unconfirmed {
            what,
            reported,
            observed,
        };
    if report.isolation != Isolation::Process {
        return Err(unconfirmed(
            "isolation",
            report.isolation.to_string(),
            Isolation::Process.to_string(),
        ));
    }
    // The workspace is the host's grant: the report must name the one the plan holds.
    if report.workspace.as_ref() != init.plan.workspace() {
        return Err(unconfirmed(
            "workspace",
            format!("{:?}", report.workspace),
            format!("the plan grants {:?}", init.plan.workspace()),
        ));
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let seccomp = status_field(&status, "Seccomp");
    if report.seccomp != (seccomp == Some("2")) {
        return Err(unconfirmed(
            "seccomp",
            report.seccomp.to_string(),
            format!("Seccomp: {}", seccomp.unwrap_or("unreadable")),
        ));
    }
    let nnp = status_field(&status, "NoNewPrivs");
    if report.no_new_privs != (nnp == Some("1")) {
        return Err(unconfirmed(
            "no_new_privs",
            report.no_new_privs.to_string(),
            format!("NoNewPrivs: {}", nnp.unwrap_or("unreadable")),
        ));
    }
    let filters = |s: &str| status_field(s, "Seccomp_filters").and_then(|v| v.parse::<u64>().ok());
    if report.seccomp
        && let Some(inherited) = filters(&own)
    {
        let expected = inherited.saturating_add(WORKER_SECCOMP_FILTERS);
        if filters(&status) != Some(expected) {
            return Err(unconfirmed(
                "seccomp_filters",
                expected.to_string(),
                format!("{:?}", filters(&status)),
            ));
        }
    }
    for name in &report.namespaces {
        if name != "user" && name != "net" {
            return Err(unconfirmed("namespaces", name.clone(), "unknown".into()));
        }
    }
    for ns in ["user", "net"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}"));
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}"));
        let (Ok(theirs), Ok(ours)) = (theirs, ours) else {
            return Err(unconfirmed(
                "namespaces",
                format!("{:?}", report.namespaces),
                format!("/proc/{pid}/ns/{ns} unreadable"),
            ));
        };
        let entered = report.namespaces.iter().any(|n| n == ns);
        if entered != (theirs != ours) {
            return Err(unconfirmed(
                "namespaces",
                format!("{ns} entered: {entered}"),
                format!("{} vs the host's {}", theirs.display(), ours.display()),
            ));
        }
    }
    let tasks = report.tasks;
    let confirmed = match tasks {
        TaskBound::Cgroup { max } => max == init.threads && cgroup.is_some_and(|c| c.holds(pid)),
        TaskBound::UserNamespaceRlimit { max } => {
            !init.cgroup
                && max == init.threads
                && report.namespaces.iter().any(|n| n == "user")
                && max_processes(pid) == Some(max)
        }
        TaskBound::NoThreads => !init.cgroup,
        TaskBound::Unbounded => false,
    };
    if !confirmed {
        return Err(unconfirmed(
            "tasks",
            format!("{tasks:?}"),
            format!(
                "cgroup: {}, Max processes: {:?}",
                init.cgroup,
                max_processes(pid)
            ),
        ));
    }
    Ok(())
}

/// The soft `Max processes` limit in `/proc/<pid>/limits`.
fn max_processes(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max processes"))?;
    line.strip_prefix("Max processes")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_by_name() {
        let status = "Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t3\nNoNewPrivs:\t1\n";
        assert_eq!(status_field(status, "Seccomp"), Some("2"));
        assert_eq!(status_field(status, "Seccomp_filters"), Some("3"));
        assert_eq!(status_field(status, "NoNewPrivs"), Some("1"));
        assert_eq!(status_field(status, "Missing"), None);
    }
}
