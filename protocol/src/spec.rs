//! The VM description: everything the proxy and the guest need to know
//! about one container, derived once by `runq create`.

use serde::{Deserialize, Serialize};

/// A name that is none of an option enum's (`FromStr`'s error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not one of {allowed}")]
pub struct UnknownName {
    pub name: String,
    pub allowed: String,
}

/// The one idiom of every option enum: the names users type (and
/// `vm.json` carries, as serde spells them) in one table, giving `ALL`,
/// `as_str`, `FromStr` and `Display`.
#[macro_export]
macro_rules! named {
    ($t:ident { $($v:ident => $n:literal),+ $(,)? }) => {
        impl $t {
            pub const ALL: &'static [$t] = &[$($t::$v),+];
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($t::$v => $n),+
                }
            }
        }
        impl ::std::str::FromStr for $t {
            type Err = $crate::spec::UnknownName;
            fn from_str(s: &str) -> Result<Self, $crate::spec::UnknownName> {
                $t::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::spec::UnknownName {
                        name: s.to_string(),
                        allowed: $t::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                    })
            }
        }
        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named!(Accel { Kvm => "kvm", Tcg => "tcg" });
named!(Share { Virtiofs => "virtiofs", NineP => "9p" });
named!(GuestArch { X86_64 => "x86_64", S390x => "s390x" });
named!(NinePCache { None => "none", Loose => "loose", Fscache => "fscache", Mmap => "mmap" });
named!(DiskCache {
    Writeback => "writeback",
    Writethrough => "writethrough",
    None => "none",
    Unsafe => "unsafe",
});
named!(DiskFs { Ext2 => "ext2", Ext3 => "ext3", Ext4 => "ext4", Xfs => "xfs", Btrfs => "btrfs" });
named!(DiskFormat { Raw => "raw", Qcow2 => "qcow2" });

/// The accelerator a VM runs with, as `runq create` resolved it (the
/// user's `auto` is the runtime's `options::AccelChoice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
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

impl Disk {
    /// Its host side, for QEMU.
    pub fn drive(&self) -> Drive {
        Drive {
            id: self.guest.id.clone(),
            path: self.path.clone(),
            cache: self.cache,
            format: self.format,
            readonly: self.guest.readonly,
        }
    }
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

/// The capabilities runq names itself, by their Linux numbers (the
/// workload's come from the OCI spec by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Cap {
    Chown = 0,
    DacOverride = 1,
    Fowner = 3,
    Fsetid = 4,
    Kill = 5,
    Setgid = 6,
    Setuid = 7,
    Setpcap = 8,
    NetAdmin = 12,
    SysModule = 16,
    SysChroot = 18,
    Mknod = 27,
    Setfcap = 31,
}

impl Cap {
    /// Its bit in a capability mask.
    pub const fn bit(self) -> u64 {
        1 << self as u8
    }

    /// The mask of `caps`.
    pub const fn mask(caps: &[Cap]) -> u64 {
        let mut m = 0;
        let mut i = 0;
        while i < caps.len() {
            m |= caps[i].bit();
            i += 1;
        }
        m
    }
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

/// The VM description written by `runq create` as `vm.json`, in the parts
/// that each reader needs (after Cloud Hypervisor's `VmConfig`): the
/// machine QEMU emulates, the host side of its drives, what the guest is
/// told (sent to runq-init as it is), and the proxy's own settings.
/// Everything is resolved: no `auto`, no "the host's" left to decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Container id, for log lines.
    pub id: String,
    pub machine: Machine,
    /// The host side of each runq disk, in the order of `guest.disks`.
    pub drives: Vec<Drive>,
    pub guest: GuestConfig,
    pub host: HostSide,
}

/// The machine: what QEMU's command line is built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// The guest's architecture (the host's unless emulating, TCG only).
    pub arch: GuestArch,
    pub accel: Accel,
    pub cpus: u32,
    pub mem_mib: u32,
    /// `-cpu` value for QEMU; `None` means host (KVM) / max (TCG).
    pub cpu_model: Option<String>,
    /// Guest kernel: a directory name under the QEMU tree's `kernels/`.
    pub kernel: String,
    /// `RUNQ_APUUID`: a vfio-ap mediated device passed to an s390x guest
    /// (crypto adapters and domains).
    pub apuuid: Option<String>,
    /// Keep guest kernel messages, log the proxy's steps.
    pub debug: bool,
    /// Start by restoring the VM template mounted at [`TEMPLATE_DIR`]
    /// (`--template`, `RUNQ_TEMPLATE`) instead of booting: the machine is
    /// the template's (`-M pc` on x86_64, where devices can be hot-plugged
    /// after the restore). `runq create` sets it only with a validated
    /// template of exactly this machine.
    #[serde(default)]
    pub template: bool,
}

/// Where the proxy finds its VM template (read-only), in its root.
pub const TEMPLATE_DIR: &str = "/template";
/// The template's saved device state (a QEMU migration stream).
pub const TEMPLATE_STATE: &str = "state";
/// The template's guest RAM, a file of the guest's size (sparse where the
/// guest never wrote, zeros where it freed).
pub const TEMPLATE_RAM: &str = "ram";
/// The guest's console line saying it is ready to be saved as a
/// template: booted, modules loaded, waiting for its vsock device.
pub const TEMPLATE_READY: &str = "runq-init: template ready";

/// How a runq disk reaches QEMU (its guest side is a [`GuestDisk`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// The disk's id, as the guest sees it (serial, error messages).
    pub id: String,
    /// The image or device, as the proxy sees it.
    pub path: String,
    pub cache: DiskCache,
    pub format: DiskFormat,
    pub readonly: bool,
}

/// What runq-init is told, as runq create derived it; the proxy adds only
/// what it alone learns (see `wire::StartRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    pub process: ProcessSpec,
    pub hostname: Option<String>,
    pub root: RootConfig,
    pub mounts: MountConfig,
    /// runq disks to link under /dev/disk/by-runq-id and mount.
    pub disks: Vec<GuestDisk>,
    /// Docker's `--device` nodes (not runq disks), made in the guest.
    pub devices: Vec<DeviceNode>,
    /// Docker's `--privileged`: privileged in the guest (every guest
    /// device), never on the host (the proxy keeps its own device list).
    pub privileged: bool,
    /// OCI `linux.sysctl` (sorted by key), set before the workload starts.
    pub sysctls: Vec<(String, String)>,
    /// The workload's seccomp profile as BPF programs (compiled by `runq
    /// create`, packed by [`crate::bpf`]), all installed in the guest for
    /// the workload and every exec. Empty: unconfined.
    pub seccomp: Vec<Vec<u64>>,
    /// The VM's memory: the container cgroup's `memory.max` in the guest.
    pub memory_bytes: u64,
    pub init: InitOptions,
    /// A generated /etc/resolv.conf (runq's DNS options), else Docker's.
    pub resolv_conf: Option<String>,
}

/// How the container root arrives in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootConfig {
    pub share: Share,
    /// The 9p cache mode, when `share` is 9p.
    pub ninep_cache: NinePCache,
    /// Mount the root read-only.
    pub readonly: bool,
    /// `RUNQ_ROOTDISK`: the id of the disk that becomes the root, and the
    /// paths not copied onto it at first boot.
    pub rootdisk: Option<RootDisk>,
}

/// The workload's mount table beyond the root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    /// Destinations of Docker's bind mounts, as the workload sees them.
    pub binds: Vec<String>,
    /// Those of `binds` mounted read-only (`-v ...:ro`).
    pub readonly_binds: Vec<String>,
    /// Docker's `--tmpfs` and the runtime option `--tmpfs`.
    pub tmpfs: Vec<TmpfsMount>,
    /// Size of /dev/shm in bytes (Docker's `--shm-size`).
    pub shm_size: Option<u64>,
    /// OCI `linux.maskedPaths` and `readonlyPaths`.
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
}

/// What runq-init does around the workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitOptions {
    /// `RUNQ_SYSTEMD=1`: the workload is an init system; poweroff/halt
    /// report exit 0, anything else 1.
    pub systemd: bool,
    /// `--runqenv`: write the workload's environment to `/.runqenv`.
    pub runqenv: bool,
    /// `--sigusr`: SIGUSR1/2 run `/.runq/SIGUSR1`/`SIGUSR2` in the guest
    /// instead of reaching the workload.
    pub sigusr: bool,
}

/// The proxy's own settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSide {
    /// seccomp allow-lists for the host-side helpers, compiled by `runq
    /// create` for the host.
    pub filters: HostFilters,
    /// One line the proxy writes to the container's stderr before the
    /// guest boots (`--accel auto` fell back to TCG): the user of `docker
    /// run` sees it, not only runc's log.
    pub warning: Option<String>,
    /// The network namespace outlives the container (a Kubernetes pod's,
    /// or one given by path): its interfaces keep their addresses, so the
    /// pod's next container (after an init container) finds them.
    pub lasting_netns: bool,
    /// `--noexec`: refuse `runq exec`.
    pub noexec: bool,
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
    fn option_names_parse_print_and_match_serde() {
        for s in Share::ALL {
            assert_eq!(s.to_string().parse::<Share>(), Ok(*s));
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        for c in NinePCache::ALL {
            assert_eq!(serde_json::to_string(c).unwrap(), format!("\"{c}\""));
        }
        for a in GuestArch::ALL {
            assert_eq!(serde_json::to_string(a).unwrap(), format!("\"{a}\""));
        }
        for a in Accel::ALL {
            assert_eq!(serde_json::to_string(a).unwrap(), format!("\"{a}\""));
        }
        let e = "zfs".parse::<DiskFs>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"zfs\" is not one of ext2, ext3, ext4, xfs, btrfs"
        );
    }

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
        let disk = Disk {
            guest: GuestDisk {
                id: "data".into(),
                fs: Some(DiskFs::Xfs),
                mountpoint: Some("/data".into()),
                readonly: false,
            },
            path: "/dev/runq/data".into(),
            cache: DiskCache::None,
            format: DiskFormat::Qcow2,
        };
        let spec = VmSpec {
            id: "c1".into(),
            machine: Machine {
                arch: GuestArch::S390x,
                accel: Accel::Tcg,
                cpus: 2,
                mem_mib: 512,
                cpu_model: None,
                kernel: "runq".into(),
                apuuid: Some("e2a4c3b0-4f6a-4c3e-9a52-1d0b1c2d3e4f".into()),
                debug: false,
                template: false,
            },
            drives: vec![disk.drive()],
            guest: GuestConfig {
                process: ProcessSpec {
                    args: vec!["sh".into()],
                    env: vec!["A=1".into()],
                    cwd: "/".into(),
                    ..Default::default()
                },
                hostname: Some("h".into()),
                root: RootConfig {
                    share: Share::NineP,
                    ninep_cache: NinePCache::Loose,
                    readonly: true,
                    rootdisk: None,
                },
                mounts: MountConfig {
                    tmpfs: vec![TmpfsMount {
                        dest: "/tmp".into(),
                        options: vec!["size=1m".into()],
                    }],
                    ..Default::default()
                },
                disks: vec![disk.guest.clone()],
                devices: vec![],
                privileged: true,
                sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
                seccomp: vec![vec![0x0006_0000_7fff_0000]],
                memory_bytes: 512 << 20,
                init: InitOptions {
                    systemd: true,
                    ..Default::default()
                },
                resolv_conf: None,
            },
            host: HostSide::default(),
        };
        let json = spec.to_json().unwrap();
        assert!(json.contains("\"share\": \"9p\""));
        assert!(json.contains("\"cache\": \"none\""));
        assert_eq!(VmSpec::from_json(&json).unwrap(), spec);
    }
}
