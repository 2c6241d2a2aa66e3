//! The container's cgroup in the guest, as runc gives one with cgroupns:
//! cgroup v2 at `/sys/fs/cgroup` whose root is the container's cgroup,
//! with `memory.max` the VM's memory, so that runtimes sizing themselves
//! from cgroups (JVM, Go, .NET, Node) get the VM's answer; their CPU count
//! is the VM's vCPUs (no cpu controller: `cpu.max` absent means unlimited,
//! and the runtimes count CPUs).
//! Init stays outside it; the workload and every exec go in.

use std::fs::{self, File, OpenOptions};

use anyhow::{Context, Result};
use nix::mount::MsFlags;

/// The hierarchy in init's view.
const HIERARCHY: &str = "/sys/fs/cgroup";
/// The container's cgroup.
pub const CONTAINER: &str = "/sys/fs/cgroup/container";

/// Mount the hierarchy, make the container's cgroup with these limits.
/// The guest still works without it (a kernel without cgroup v2): the
/// error says why, the caller logs it.
pub fn prepare(memory_bytes: u64) -> Result<()> {
    crate::mounts::mount_fs(
        "cgroup2",
        HIERARCHY,
        "cgroup2",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    // Each controller alone: one the kernel lacks leaves the others. Not
    // the cpu controller: the vCPUs are the limit already (nproc says it),
    // and CFS bandwidth throttling in a TCG guest, whose clock jumps under
    // host load, is one more way to stall a workload for nothing.
    for c in ["+memory", "+pids"] {
        let _ = fs::write(format!("{HIERARCHY}/cgroup.subtree_control"), c);
    }
    fs::create_dir(CONTAINER).with_context(|| format!("creating {CONTAINER}"))?;
    fs::write(format!("{CONTAINER}/memory.max"), memory_bytes.to_string())
        .context("setting memory.max")?;
    Ok(())
}

/// `cgroup.procs` of the cgroup `pid` is in (as init sees the
/// hierarchy), for an exec to join the workload where it is.
pub fn procs_of(pid: nix::unistd::Pid) -> Option<File> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    if path.split('/').any(|c| c == "..") {
        return None;
    }
    OpenOptions::new()
        .write(true)
        .open(format!("{HIERARCHY}{path}/cgroup.procs"))
        .ok()
}

/// `cgroup.procs` of the container's cgroup, opened before a fork so
/// that the child moves itself there with one write(2); `None` when
/// there is no container cgroup.
pub fn procs() -> Option<File> {
    OpenOptions::new()
        .write(true)
        .open(format!("{CONTAINER}/cgroup.procs"))
        .ok()
}
