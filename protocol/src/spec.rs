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

/// A guest architecture other than the host's, emulated under TCG
/// (`--guest-arch`; the cross-arch boot test uses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestArch {
    #[serde(rename = "x86_64")]
    X86_64,
    S390x,
}

impl GuestArch {
    pub const fn as_str(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "x86_64",
            GuestArch::S390x => "s390x",
        }
    }

    /// Whether the guest's words are big-endian (seccomp_data, BPF).
    pub const fn big_endian(self) -> bool {
        match self {
            GuestArch::X86_64 => false,
            GuestArch::S390x => true,
        }
    }

    /// The architecture this binary runs on.
    pub const fn host() -> Self {
        if cfg!(target_arch = "s390x") {
            GuestArch::S390x
        } else {
            GuestArch::X86_64
        }
    }
}

/// 9p cache mode (`--9pcache`), the guest's `cache=` mount option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NinePCache {
    None,
    Loose,
    Fscache,
    #[default]
    Mmap,
}

impl NinePCache {
    pub const fn as_str(self) -> &'static str {
        match self {
            NinePCache::None => "none",
            NinePCache::Loose => "loose",
            NinePCache::Fscache => "fscache",
            NinePCache::Mmap => "mmap",
        }
    }
}

/// Host cache mode of a runq disk (QEMU's `cache=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskCache {
    Writeback,
    Writethrough,
    /// O_DIRECT with native AIO.
    None,
    Unsafe,
}

impl DiskCache {
    pub const ALL: [DiskCache; 4] = [
        DiskCache::Writeback,
        DiskCache::Writethrough,
        DiskCache::None,
        DiskCache::Unsafe,
    ];
    pub const fn as_str(self) -> &'static str {
        match self {
            DiskCache::Writeback => "writeback",
            DiskCache::Writethrough => "writethrough",
            DiskCache::None => "none",
            DiskCache::Unsafe => "unsafe",
        }
    }
}

/// Filesystems a runq disk may be mounted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFs {
    Ext2,
    Ext3,
    Ext4,
    Xfs,
    Btrfs,
}

impl DiskFs {
    pub const ALL: [DiskFs; 5] = [
        DiskFs::Ext2,
        DiskFs::Ext3,
        DiskFs::Ext4,
        DiskFs::Xfs,
        DiskFs::Btrfs,
    ];
    pub const fn as_str(self) -> &'static str {
        match self {
            DiskFs::Ext2 => "ext2",
            DiskFs::Ext3 => "ext3",
            DiskFs::Ext4 => "ext4",
            DiskFs::Xfs => "xfs",
            DiskFs::Btrfs => "btrfs",
        }
    }
}

/// Image format of a runq disk (block devices are raw).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

/// The virtio-blk serial of a runq disk, by which the guest finds it: the
/// id itself when it fits the 20 bytes virtio-blk holds, else `runq-`
/// and 15 hex digits of its FNV-1a hash (ids are 1-36 characters; UUIDs
/// are 36). Host and guest compute it alike.
pub fn disk_serial(id: &str) -> String {
    const VIRTIO_BLK_ID_BYTES: usize = 20;
    if id.len() <= VIRTIO_BLK_ID_BYTES {
        return id.to_string();
    }
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("runq-{:015x}", hash >> 4)
}

/// What the guest needs to know of a runq disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestDisk {
    /// `^[a-zA-Z0-9_-]{1,36}$`; [`disk_serial`] of it is the virtio-blk
    /// serial, by which the guest finds the device.
    pub id: String,
    pub fs: Option<DiskFs>,
    /// Where to mount it in the container; `None`: attach only.
    pub mountpoint: Option<String>,
    /// Attached and mounted read-only (`:ro`).
    pub readonly: bool,
}

/// A runq disk: `--volume FILE:/dev/runq/...` or `--device BLK:/dev/runq/...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    #[serde(flatten)]
    pub guest: GuestDisk,
    /// The image or device as the proxy sees it in its container.
    pub path: String,
    pub cache: DiskCache,
    pub format: DiskFormat,
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

/// A device node of Docker's `--device` in the guest's /dev: the same
/// type, numbers, mode and owner, naming the guest's own device (the host
/// device is not given to the host-side processes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeviceNode {
    pub path: String,
    /// Block device, else character device.
    pub block: bool,
    pub major: i64,
    pub minor: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
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
    /// The guest's architecture when it is not the host's (TCG only).
    #[serde(default)]
    pub guest_arch: Option<GuestArch>,
    /// `RUNQ_APUUID`: a vfio-ap mediated device passed to an s390x guest
    /// (crypto adapters and domains).
    #[serde(default)]
    pub apuuid: Option<String>,
    /// The 9p cache mode, when `share` is 9p.
    #[serde(default)]
    pub ninep_cache: NinePCache,
    /// Guest kernel: a directory name under the QEMU tree's `kernels/`.
    #[serde(default = "default_kernel")]
    pub kernel: String,
    /// runq disks, in the order given.
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// `RUNQ_ROOTDISK`: the id of the disk that becomes the root, and the
    /// paths not copied onto it at first boot.
    #[serde(default)]
    pub rootdisk: Option<RootDisk>,
    /// Destinations of Docker's bind mounts, as the workload sees them.
    #[serde(default)]
    pub binds: Vec<String>,
    /// Those of [`VmSpec::binds`] mounted read-only (`-v ...:ro`).
    #[serde(default)]
    pub readonly_binds: Vec<String>,
    /// OCI `linux.sysctl` (sorted by key), for the guest.
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
    /// OCI `linux.maskedPaths` and `readonlyPaths`, for the workload.
    #[serde(default)]
    pub masked_paths: Vec<String>,
    #[serde(default)]
    pub readonly_paths: Vec<String>,
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
    /// The workload's seccomp profile as BPF programs (compiled by `runq
    /// create`, each `sock_filter` packed in a u64), all installed in the
    /// guest for the workload and every exec. Empty: unconfined.
    #[serde(default)]
    pub seccomp: Vec<Vec<u64>>,
    /// Docker's `--privileged`: privileged in the guest (every guest
    /// device), never on the host (the proxy keeps its own device list).
    #[serde(default)]
    pub privileged: bool,
    /// Docker's `--device` nodes (not runq disks), made in the guest.
    #[serde(default)]
    pub devices: Vec<DeviceNode>,
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
    /// seccomp allow-lists for the host-side helpers, compiled by `runq
    /// create` for the host (packed as [`VmSpec::seccomp`]).
    #[serde(default)]
    pub host_filters: HostFilters,
    /// One line the proxy writes to the container's stderr before the
    /// guest boots (`--accel auto` fell back to TCG): the user of `docker
    /// run` sees it, not only runc's log.
    #[serde(default)]
    pub warning: Option<String>,
    /// The network namespace outlives the container (a Kubernetes pod's,
    /// or one given by path): its interfaces keep their addresses, so the
    /// pod's next container (after an init container) finds them.
    #[serde(default)]
    pub lasting_netns: bool,
}

/// The proxy's filters for the processes it starts next to the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFilters {
    /// QEMU (with 9p it serves files, and may create device nodes).
    pub qemu: Vec<u64>,
    /// vhost-device-vsock, and the proxy itself once QEMU runs.
    pub strict: Vec<u64>,
}

/// The uid and gid QEMU runs as in the container (no account uses them;
/// with no user namespace they are the host's): it owns nothing there,
/// and reaches its devices (/dev/kvm...) through the group only.
pub const QEMU_UID: u32 = 2_147_483_646;
pub const QEMU_GID: u32 = 2_147_483_646;

/// `RUNQ_ROOTDISK=<id>` (+ `RUNQ_ROOTDISK_EXCLUDE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootDisk {
    pub id: String,
    pub exclude: Vec<String>,
}

/// The kernel used unless `--kernel`/`RUNQ_KERNEL` names another: a
/// symlink in the tree to the one `make install` made the default.
pub const DEFAULT_KERNEL: &str = "default";

fn default_kernel() -> String {
    DEFAULT_KERNEL.to_string()
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
    fn disk_serials_fit_virtio_blk_and_stay_apart() {
        assert_eq!(disk_serial("data"), "data");
        assert_eq!(disk_serial("a2345678901234567890"), "a2345678901234567890");
        let uuid = disk_serial("0f8fad5b-d9cb-469f-a165-70867728950e");
        assert_eq!(uuid.len(), 20);
        assert!(uuid.starts_with("runq-"));
        assert_eq!(uuid, disk_serial("0f8fad5b-d9cb-469f-a165-70867728950e"));
        assert_ne!(uuid, disk_serial("0f8fad5b-d9cb-469f-a165-70867728950f"));
    }

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
            ninep_cache: NinePCache::Loose,
            guest_arch: Some(GuestArch::S390x),
            apuuid: Some("e2a4c3b0-4f6a-4c3e-9a52-1d0b1c2d3e4f".into()),
            kernel: "runq".into(),
            disks: vec![Disk {
                guest: GuestDisk {
                    id: "data".into(),
                    fs: Some(DiskFs::Xfs),
                    mountpoint: Some("/data".into()),
                    readonly: false,
                },
                path: "/dev/runq/data".into(),
                cache: DiskCache::None,
                format: DiskFormat::Qcow2,
            }],
            rootdisk: None,
            binds: vec![],
            readonly_binds: vec![],
            sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
            masked_paths: vec![],
            readonly_paths: vec![],
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
            seccomp: vec![vec![0x0006_0000_7fff_0000]],
            privileged: true,
            devices: vec![],
            debug: false,
            systemd: true,
            runqenv: false,
            noexec: false,
            sigusr: false,
            resolv_conf: None,
            host_filters: HostFilters::default(),
            warning: None,
            lasting_netns: false,
        };
        let json = spec.to_json().unwrap();
        assert!(json.contains("\"share\": \"9p\""));
        assert!(json.contains("\"cache\": \"none\""));
        assert_eq!(VmSpec::from_json(&json).unwrap(), spec);
    }
}
