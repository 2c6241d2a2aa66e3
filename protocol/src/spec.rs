//! The VM description: everything the proxy and the guest need to know
//! about one container, derived once by `runq create`.

use serde::{Deserialize, Serialize};

/// Accelerator choice (design decision 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when a probe proves it can run a guest, TCG otherwise.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// How the container rootfs reaches the guest (design decision 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Share {
    #[default]
    Virtiofs,
    #[serde(rename = "9p")]
    NineP,
}

/// The workload process, as the guest must start it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    /// `KEY=value` strings, in the order of the OCI spec.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    #[serde(default)]
    pub terminal: bool,
    /// `(resource, soft, hard)`; resource numbers index [`RLIMIT_NAMES`].
    #[serde(default)]
    pub rlimits: Vec<(u32, u64, u64)>,
    /// Capability sets as bit masks (bit N = capability number N);
    /// `None` leaves the process with init's (all).
    #[serde(default)]
    pub capabilities: Option<CapSets>,
    #[serde(default)]
    pub no_new_privileges: bool,
}

/// A tmpfs in the guest, with mount options as Docker writes them
/// (`nosuid`, `size=64m`, `mode=1777`...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TmpfsMount {
    pub dest: String,
    pub options: Vec<String>,
}

/// The five capability sets of a process, as bit masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

/// OCI rlimit names by Linux resource number (the same on x86_64 and
/// s390x: both use the generic numbering).
pub const RLIMIT_NAMES: &[&str] = &[
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
];

/// The resource number of an OCI rlimit name.
pub fn rlimit_resource(name: &str) -> Option<u32> {
    RLIMIT_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u32)
}

/// The VM description written by `runq create` as `vm.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Container id, for log lines.
    pub id: String,
    pub cpus: u32,
    pub mem_mib: u32,
    pub accel: Accel,
    pub share: Share,
    /// `-cpu` value for QEMU; `None` means host (KVM) / max (TCG).
    #[serde(default)]
    pub cpu_model: Option<String>,
    pub hostname: Option<String>,
    pub process: ProcessSpec,
    /// Mount the shared root read-only in the guest.
    #[serde(default)]
    pub readonly_root: bool,
    /// tmpfs mounts in the guest: Docker's `--tmpfs` and the runtime
    /// option `--tmpfs`.
    #[serde(default)]
    pub tmpfs: Vec<TmpfsMount>,
    /// Size of /dev/shm in bytes (Docker's `--shm-size`).
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// The workload's OCI seccomp profile, moved from the container (where
    /// QEMU runs) to the guest, verbatim.
    #[serde(default)]
    pub seccomp: Option<serde_json::Value>,
    /// Log debug lines from the proxy and keep guest kernel messages.
    #[serde(default)]
    pub debug: bool,
    /// `RUNQ_SYSTEMD=1`: the workload is an init system.
    #[serde(default)]
    pub systemd: bool,
    /// `--runqenv`: write the workload's environment to `/.runqenv`.
    #[serde(default)]
    pub runqenv: bool,
    /// `--noexec`: refuse `runq exec`.
    #[serde(default)]
    pub noexec: bool,
    /// `--sigusr`: SIGUSR1/2 run `/.runq/SIGUSR1`/`SIGUSR2` in the guest
    /// instead of reaching the workload.
    #[serde(default)]
    pub sigusr: bool,
    /// A generated /etc/resolv.conf (runq's DNS options), else Docker's.
    #[serde(default)]
    pub resolv_conf: Option<String>,
}

impl VmSpec {
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlimit_names_map_to_linux_numbers() {
        assert_eq!(rlimit_resource("RLIMIT_NOFILE"), Some(7));
        assert_eq!(rlimit_resource("RLIMIT_RTTIME"), Some(15));
        assert_eq!(rlimit_resource("RLIMIT_BOGUS"), None);
    }

    #[test]
    fn vm_spec_round_trips_through_json() {
        let spec = VmSpec {
            id: "c1".into(),
            cpus: 2,
            mem_mib: 512,
            accel: Accel::Tcg,
            share: Share::NineP,
            cpu_model: None,
            hostname: Some("h".into()),
            process: ProcessSpec {
                args: vec!["sh".into()],
                env: vec!["A=1".into()],
                cwd: "/".into(),
                ..Default::default()
            },
            readonly_root: true,
            tmpfs: vec![TmpfsMount {
                dest: "/tmp".into(),
                options: vec!["size=1m".into()],
            }],
            shm_size: None,
            seccomp: None,
            debug: false,
            systemd: true,
            runqenv: false,
            noexec: false,
            sigusr: false,
            resolv_conf: None,
        };
        let json = spec.to_json().unwrap();
        assert!(json.contains("\"share\": \"9p\""));
        assert_eq!(VmSpec::from_json(&json).unwrap(), spec);
    }
}
