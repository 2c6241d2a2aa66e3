//! The bundle rewrite: Docker's container becomes a container around a VM.
//!
//! The container's root becomes the read-only QEMU tree, Docker's rootfs is
//! bind-mounted at `/rootfs`, Docker's bind mounts follow it there, and the
//! process becomes `runq-proxy`. What belongs to the workload (process,
//! seccomp, read-only root, hostname) goes into the [`VmSpec`] for the guest.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, Mount, MountBuilder, ProcessBuilder, Root,
    RootBuilder, Spec, UserBuilder,
};
use runq_protocol::resolve::{Fs, MountView};
use runq_protocol::{
    Disk, DiskFormat, GuestArch, GuestConfig, HostSide, InitOptions, Machine, MountConfig,
    ProcessSpec, RootConfig, RootDisk, TmpfsMount, VmSpec, CONTAINER_ROOTFS, CONTAINER_RUNQ_DIR,
    CONTAINER_RUN_DIR,
};
use thiserror::Error;

use crate::disks::{self, DiskError};
use crate::options::{DockerSizing, Settings};

mod cri;
mod guest;
mod linux;
mod mounts;
mod process;

pub use cri::*;
pub use guest::*;
pub use linux::*;
use mounts::*;
pub use process::*;

/// Path of the proxy binary inside the QEMU tree.
pub const PROXY_PATH: &str = "/usr/bin/runq-proxy";

/// Where the proxy's container root lives in the bundle: a directory of
/// its own per container, holding only [`proxy_root_dirs`].
pub const PROXY_ROOT: &str = "runq/root";

/// The tree's empty directories that the container's mounts fill.
pub const TREE_MOUNT_POINTS: &[&str] = &["proc", "sys", "dev", "rootfs", "run", "runq"];

/// Where the VM template is mounted in the proxy's root (read-only), when
/// the VM starts from one.
pub const TEMPLATE_MOUNT_POINT: &str = "template";

/// The VM template `dir` at [`runq_protocol::TEMPLATE_DIR`] in the
/// proxy's root, read-only.
pub fn mount_template(spec: &mut Spec, dir: &Path) -> Result<(), BundleError> {
    let m = MountBuilder::default()
        .destination(runq_protocol::TEMPLATE_DIR)
        .typ("bind")
        .source(dir)
        .options(
            ["rbind", "ro", "nosuid", "nodev", "noexec"]
                .map(String::from)
                .to_vec(),
        )
        .build()?;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(m);
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// Names the host-side programs might read that the tree does not have:
/// `etc` (ld.so.preload, ld.so.cache, nsswitch), `bin` and `sbin` (PATH
/// lookups), `var` (QEMU's module-upgrade directory /var/run/qemu). Each
/// is an empty read-only tmpfs in the proxy's root.
const EMPTY_DIRS: &[&str] = &["bin", "etc", "sbin", "var"];

/// Every name in the proxy's root, each one a mount point: the tree's own
/// directories, the mount points, and [`EMPTY_DIRS`].
pub fn proxy_root_dirs(tree_dirs: &[String]) -> Vec<String> {
    let mut dirs: Vec<String> = TREE_MOUNT_POINTS.iter().map(|d| d.to_string()).collect();
    dirs.extend(EMPTY_DIRS.iter().map(|d| d.to_string()));
    dirs.extend(tree_dirs.iter().cloned());
    dirs.sort();
    dirs.dedup();
    dirs
}

/// A character device of the host that QEMU may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    pub path: PathBuf,
    pub major: i64,
    pub minor: i64,
}

/// Facts about the host the rewrite depends on (gathered by the caller).
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// The accelerator, resolved by probing (`auto`: KVM if it runs a
    /// guest here, else TCG).
    pub accel: runq_protocol::Accel,
    /// The runtime's capability bounding set, as a bit mask.
    pub bounding_caps: u64,
    /// `/dev/kvm`, `/dev/net/tun`, `/dev/vhost-*` as far as they exist.
    pub devices: Vec<HostDevice>,
    /// Whether a namespace path names the host's network namespace
    /// (Docker passes `--network host` as a path).
    pub is_host_netns: fn(&Path) -> bool,
    /// The processes that live in the network namespace at a path
    /// (another container's, as with `--network container:X`; a pod's
    /// sandbox); `None` when that cannot be told.
    pub netns_pids: fn(&Path) -> Option<Vec<u32>>,
    /// For a CRI pod's container: the pid of the running sandbox its
    /// annotation names, only when that sandbox's own spec marks it as
    /// containerd's CRI does (see `is_cri_sandbox`).
    pub cri_sandbox_pid: Option<u32>,
    /// The format of a disk image or device, `None` when the path is
    /// neither a regular file nor a block device.
    pub disk_format: fn(&Path) -> Result<DiskFormat, disks::ImageRefusal>,
    /// The filesystem mount destinations are resolved in (the image's
    /// rootfs, volumes' sources).
    pub fs: &'static (dyn Fs + Sync),
    /// The QEMU tree's own top-level directories (`usr`, `lib`, ...).
    pub tree_dirs: Vec<String>,
}

#[derive(Debug, Error)]
pub enum BundleError {
    #[error("config.json has no process to run")]
    NoProcess,
    #[error("container {0}: annotation io.kubernetes.cri.container-type=sandbox without io.kubernetes.cri.sandbox-id={0}: only containerd's CRI marks a pod sandbox, which runs without a VM; refused")]
    NotACriSandbox(String),
    #[error("config.json has no root filesystem")]
    NoRoot,
    #[error("process.args is empty: nothing to run")]
    NoArgs,
    #[error("mount destination {0:?} must be an absolute path without '..'")]
    BadDestination(PathBuf),
    #[error(transparent)]
    Resolve(#[from] runq_protocol::resolve::ResolveError),
    #[error("mount destination {0:?} resolves to the image's root (through its symlinks): nothing can be mounted over it")]
    DestinationIsRoot(PathBuf),
    #[error("process.cwd {0:?} must be an absolute path")]
    BadCwd(PathBuf),
    #[error("unknown rlimit {0:?}")]
    BadRlimit(String),
    #[error("unknown capability {0:?}")]
    BadCapability(String),
    #[error("--network host is not supported: the VM needs a network namespace of its own to take its interfaces from")]
    HostNetwork,
    #[error("--network container:... is not supported: that namespace's interfaces already belong to the other container's VM")]
    SharedNetwork,
    #[error("network namespace {0:?}: cannot tell which processes live in it; refused")]
    NetnsUnknown(PathBuf),
    #[error("pod {0}: another of its containers is running, and its VM holds the pod's network (the pod IP lives in that guest); runq runs a pod's containers one at a time: init containers, then one app container")]
    PodNetworkHeld(String),
    #[error("sysctl {0:?}: not a sysctl name (letters, digits, '_', '-' between dots)")]
    BadSysctl(String),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("RUNQ_ROOTDISK={0:?}: no runq disk with that id (give one as --volume FILE:/dev/runq/{0}/<cache>/<fs>)")]
    RootDiskUnknown(String),
    #[error("RUNQ_ROOTDISK={0:?}: the disk needs a filesystem (/dev/runq/{0}/<cache>/<fs>) to copy the image onto")]
    RootDiskNoFs(String),
    #[error("building the rewritten spec failed: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

/// What a rewrite produces: the container spec for the lower runtime and
/// the VM description for the proxy.
#[derive(Debug)]
pub struct Rewritten {
    pub spec: Spec,
    pub vm: VmSpec,
}

/// Docker's sizing flags as found in the spec.
pub fn docker_sizing(spec: &Spec) -> DockerSizing {
    let res = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let cpu = res.and_then(|r| r.cpu().as_ref());
    DockerSizing {
        cpu_quota: cpu.and_then(|c| c.quota()),
        cpu_period: cpu.and_then(|c| c.period()),
        memory_limit: res
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit()),
    }
}

fn linux_of(spec: &Spec) -> Option<&oci_spec::runtime::Linux> {
    spec.linux().as_ref()
}

fn is_clean_absolute(p: &Path) -> bool {
    p.is_absolute() && !p.components().any(|c| matches!(c, Component::ParentDir))
}

/// `/etc/hosts` -> `/rootfs/etc/hosts` (`dest` resolved in the image).
fn under_rootfs(dest: &Path) -> PathBuf {
    Path::new(CONTAINER_ROOTFS).join(dest.strip_prefix("/").unwrap_or(dest))
}

/// Docker's bundle, rewritten: the proxy's container around the VM
/// description.
pub fn rewrite(
    mut spec: Spec,
    id: &str,
    bundle: &Path,
    tree: &Path,
    settings: &Settings,
    host: &HostFacts,
    debug: bool,
) -> Result<Rewritten, BundleError> {
    let process = spec.process().clone().ok_or(BundleError::NoProcess)?;
    let lasting_netns = check_network_namespace(&spec, host)?;
    let root = spec.root().clone().ok_or(BundleError::NoRoot)?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let mut guest = guest_config(&spec, &process, root.readonly().unwrap_or(false), settings)?;
    let (mounts, tmpfs, mut disks, (binds, readonly_binds)) = rewrite_mounts(
        spec.mounts().clone().unwrap_or_default(),
        &rootfs,
        bundle,
        tree,
        host,
    )?;
    spec.set_mounts(Some(mounts));
    guest.mounts.tmpfs.extend(tmpfs);
    guest.mounts.binds = binds;
    guest.mounts.readonly_binds = readonly_binds;
    disks.extend(device_disks(&spec)?);
    check_disks(&disks, guest.root.rootdisk.as_ref())?;
    guest.disks = disks.iter().map(|d| d.guest.clone()).collect();
    spec.set_root(Some(proxy_root(bundle)?));
    spec.set_process(Some(proxy_process(&process, host.bounding_caps)?));
    if let Some(linux) = spec.linux_mut() {
        guest.devices = confine_proxy_linux(linux, &guest, &disks, settings, host)?;
    }
    let vm = VmSpec {
        id: id.to_string(),
        machine: Machine {
            arch: settings.guest_arch.unwrap_or(GuestArch::host()),
            accel: host.accel,
            cpus: settings.cpus,
            mem_mib: settings.mem_mib,
            cpu_model: settings.cpu_model.clone(),
            kernel: settings.kernel.clone(),
            apuuid: settings.apuuid.clone(),
            debug,
            template: false,
        },
        drives: disks.iter().map(Disk::drive).collect(),
        guest,
        host: HostSide {
            filters: host_filters(settings.share)?,
            warning: None,
            lasting_netns,
            noexec: settings.noexec,
        },
    };
    Ok(Rewritten { spec, vm })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::RuntimeOpts;
    use crate::options::resolve;

    /// A trimmed config.json as dockerd 20.10 writes it.
    const DOCKER_CONFIG: &str = r#"{
      "ociVersion": "1.0.2-dev",
      "process": {
        "terminal": false,
        "user": {"uid": 1000, "gid": 1000, "additionalGids": [10]},
        "args": ["sh", "-c", "echo hi"],
        "env": ["PATH=/usr/bin:/bin", "HOSTNAME=abc"],
        "cwd": "/work",
        "capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"], "effective": ["CAP_CHOWN"]},
        "noNewPrivileges": true,
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024}],
        "oomScoreAdj": 0
      },
      "root": {"path": "rootfs", "readonly": true},
      "hostname": "abc",
      "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
        {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/docker/c/hosts", "options": ["rbind", "rprivate"]},
        {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro"]},
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["rw", "nosuid", "size=65536k"]}
      ],
      "hooks": {"prestart": [{"path": "/proc/1/exe", "args": ["libnetwork-setkey", "abc"]}]},
      "linux": {
        "resources": {"devices": [{"allow": false, "access": "rwm"}],
                      "memory": {"limit": 536870912, "swap": 1073741824}},
        "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}],
        "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                    "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]},
        "maskedPaths": ["/proc/kcore"]
      }
    }"#;

    fn host() -> HostFacts {
        HostFacts {
            accel: runq_protocol::Accel::Tcg,
            // everything but CAP_NET_ADMIN (bit 12)
            bounding_caps: !(1u64 << 12),
            devices: vec![HostDevice {
                path: "/dev/kvm".into(),
                major: 10,
                minor: 232,
            }],
            is_host_netns: |p| p == Path::new("/proc/1/ns/net"),
            netns_pids: |p| match p.to_str() {
                Some(p) if p.starts_with("/proc/") => Some(vec![42]),
                Some(p) if p.ends_with("/held-pod") => Some(vec![42, 50, 51, 52]),
                Some(p) if p.ends_with("/unreadable") => None,
                _ => Some(vec![]),
            },
            cri_sandbox_pid: Some(42),
            disk_format: |p| match p.to_str() {
                Some("/img/q.qcow2") => Ok(runq_protocol::DiskFormat::Qcow2),
                Some("/img/dir") => Err(disks::ImageRefusal::NotAnImage),
                _ => Ok(runq_protocol::DiskFormat::Raw),
            },
            fs: &ImageFs,
            tree_dirs: vec!["kernels".into(), "usr".into()],
        }
    }

    /// An image (at /b/rootfs) whose symlinks point at the tree's
    /// programs, and a volume (/srv/data) holding a link that climbs out.
    #[derive(Debug)]
    struct ImageFs;

    impl Fs for ImageFs {
        fn node(&self, base: &Path, rel: &Path) -> runq_protocol::resolve::Node {
            use runq_protocol::resolve::Node;
            match base.join(rel).to_str() {
                Some("/b/rootfs/abs") => Node::Symlink("/usr/bin".into()),
                Some("/b/rootfs/rel") => Node::Symlink("../../usr/bin".into()),
                Some("/b/rootfs/usr" | "/b/rootfs/usr/bin" | "/b/rootfs/etc") => Node::Other,
                Some("/srv/data/up") => Node::Symlink("../../../../".into()),
                _ => Node::Missing,
            }
        }
    }

    /// Docker's config with its network namespace given by path.
    fn with_netns(path: &str) -> String {
        DOCKER_CONFIG.replace(
            r#"{"type": "network"}"#,
            &format!(r#"{{"type": "network", "path": "{path}"}}"#),
        )
    }

    fn run_rewrite(json: &str) -> Result<Rewritten, BundleError> {
        let spec: Spec = serde_json::from_str(json).unwrap();
        let settings = resolve(&RuntimeOpts::default(), &[], docker_sizing(&spec)).unwrap();
        rewrite(
            spec,
            "abc",
            Path::new("/b"),
            Path::new("/var/lib/runq/qemu"),
            &settings,
            &host(),
            false,
        )
    }

    #[test]
    fn container_runs_the_proxy_in_the_qemu_tree() {
        let r = run_rewrite(DOCKER_CONFIG).unwrap();
        let root = r.spec.root().as_ref().unwrap();
        assert_eq!(
            root.path(),
            Path::new("/b/runq/root"),
            "the bundle's, not the tree"
        );
        assert_eq!(root.readonly(), Some(true));
        assert_eq!(
            proxy_root_dirs(&["kernels".into(), "usr".into()]),
            [
                "bin", "dev", "etc", "kernels", "proc", "rootfs", "run", "runq", "sbin", "sys",
                "usr", "var"
            ]
        );
        let p = r.spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &vec![PROXY_PATH.to_string()]);
        assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
        assert_eq!(p.cwd(), Path::new("/"));
        // the hook that sets up Docker's network stays
        assert!(r.spec.hooks().as_ref().unwrap().prestart().is_some());
    }

    #[test]
    fn workload_moves_into_the_vm_description() {
        let r = run_rewrite(DOCKER_CONFIG).unwrap();
        let vm = r.vm;
        assert_eq!(vm.guest.process.args, ["sh", "-c", "echo hi"]);
        assert_eq!(vm.guest.process.cwd, "/work");
        assert_eq!((vm.guest.process.uid, vm.guest.process.gid), (1000, 1000));
        assert_eq!(vm.guest.process.additional_gids, [10]);
        assert_eq!(vm.guest.hostname.as_deref(), Some("abc"));
        assert!(vm.guest.root.readonly);
        assert_eq!(vm.machine.mem_mib, 512, "docker --memory sizes the guest");
        // Compiled for the guest: the default filter (one program).
        assert_eq!(vm.guest.seccomp.len(), 1);
        assert_eq!(vm.guest.process.rlimits, [(7, 1024, 4096)]);
        let caps = vm.guest.process.capabilities.unwrap();
        assert_eq!(caps.bounding, (1 << 0) | (1 << 5), "CAP_CHOWN, CAP_KILL");
        assert_eq!(caps.effective, 1 << 0);
        assert_eq!(
            (caps.permitted, caps.ambient),
            (0, 0),
            "absent sets are empty"
        );
        assert!(vm.guest.process.no_new_privileges);
    }

    #[test]
    fn cgroup_gets_room_for_the_vm_and_proxy_keeps_no_workload_rlimits() {
        let r = run_rewrite(DOCKER_CONFIG).unwrap();
        let res = r
            .spec
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .clone()
            .unwrap();
        let mem = res.memory().as_ref().unwrap();
        let want = (512 + vm_overhead_mib(runq_protocol::Accel::Tcg)) << 20;
        assert_eq!(mem.limit(), Some(want));
        assert_eq!(mem.swap(), Some(want.max(1 << 30)));
        assert!(r.spec.process().as_ref().unwrap().rlimits().is_none());
    }

    #[test]
    fn unknown_rlimit_is_refused_when_the_config_is_read() {
        let bad = DOCKER_CONFIG.replace("RLIMIT_NOFILE", "RLIMIT_BOGUS");
        let e = serde_json::from_str::<Spec>(&bad).unwrap_err();
        assert!(e.to_string().contains("RLIMIT_BOGUS"), "{e}");
    }

    #[test]
    fn seccomp_leaves_the_container_and_devices_are_added() {
        let r = run_rewrite(DOCKER_CONFIG).unwrap();
        let linux = r.spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        let dev = &linux.devices().as_ref().unwrap()[0];
        assert_eq!(
            (dev.path().as_path(), dev.major(), dev.minor()),
            (Path::new("/dev/kvm"), 10, 232)
        );
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap();
        assert!(!rules[0].allow(), "Docker's deny-all stays first");
        assert!(rules[1].allow() && rules[1].major() == Some(10) && rules[1].minor() == Some(232));
        assert_eq!(rules.len(), 2, "no rule for a whole device class (macvtap)");
        assert!(rules.iter().all(|r| !r.allow() || r.minor().is_some()));
        assert_eq!(linux.masked_paths().as_ref().unwrap(), PROXY_MASKED_PATHS);
        assert_eq!(
            r.vm.guest.mounts.masked_paths,
            ["/proc/kcore"],
            "Docker's, for the guest"
        );
    }

    fn mount_destinations(r: &Rewritten) -> Vec<String> {
        r.spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().to_string_lossy().into_owned())
            .collect()
    }

    /// DOCKER_CONFIG with extra mounts and devices.
    fn with_disks(mounts: &str, devices: &str) -> String {
        let c = DOCKER_CONFIG.replacen(r#""mounts": ["#, &format!(r#""mounts": [{mounts}"#), 1);
        c.replacen(
            r#""linux": {"#,
            &format!(r#""linux": {{"devices": [{devices}],"#),
            1,
        )
    }

    #[test]
    fn runq_disks_stay_in_the_proxy_dev_and_reach_the_vm_spec() {
        let json = with_disks(
            r#"{"destination": "/dev/runq/data/none/ext4/mnt/data", "type": "bind", "source": "/img/d.raw", "options": ["rbind"]},
               {"destination": "/dev/runq/q/writeback", "type": "bind", "source": "/img/q.qcow2", "options": ["rbind", "ro"]},"#,
            r#"{"path": "/dev/runq/blk/unsafe/xfs/x", "type": "b", "major": 8, "minor": 16}"#,
        );
        let r = run_rewrite(&json).unwrap();
        let dests = mount_destinations(&r);
        assert!(dests.contains(&"/dev/runq/data/none/ext4/mnt/data".to_string()));
        assert!(!dests.iter().any(|d| d.starts_with("/rootfs/dev/runq")));
        let got: Vec<_> =
            r.vm.drives
                .iter()
                .zip(&r.vm.guest.disks)
                .map(|(d, g)| {
                    assert_eq!((d.id.as_str(), d.readonly), (g.id.as_str(), g.readonly));
                    (
                        g.id.as_str(),
                        d.path.as_str(),
                        d.format,
                        d.cache,
                        g.mountpoint.as_deref(),
                        g.readonly,
                    )
                })
                .collect();
        use runq_protocol::{DiskCache as C, DiskFormat as F};
        assert_eq!(
            got,
            [
                (
                    "data",
                    "/dev/runq/data/none/ext4/mnt/data",
                    F::Raw,
                    C::None,
                    Some("/mnt/data"),
                    false
                ),
                (
                    "q",
                    "/dev/runq/q/writeback",
                    F::Qcow2,
                    C::Writeback,
                    None,
                    true
                ),
                (
                    "blk",
                    "/dev/runq/blk/unsafe/xfs/x",
                    F::Raw,
                    C::Unsafe,
                    Some("/x"),
                    false
                ),
            ]
        );
        // Docker's other bind mounts are listed for a rootdisk root.
        assert_eq!(r.vm.guest.mounts.binds, ["/etc/hosts", "/data"]);
    }

    #[test]
    fn bad_or_duplicate_disks_are_refused_by_name() {
        for (mounts, want) in [
            (
                r#"{"destination": "/dev/runq/d/fast", "type": "bind", "source": "/img/d"},"#,
                "cache \"fast\"",
            ),
            (
                r#"{"destination": "/dev/runq/d/none", "type": "bind", "source": "/img/d"},
                   {"destination": "/dev/runq/d/unsafe", "type": "bind", "source": "/img/e"},"#,
                "id \"d\" is used twice",
            ),
            (
                r#"{"destination": "/dev/runq/d/none", "type": "bind", "source": "/img/dir"},"#,
                "neither a regular file nor a block device",
            ),
        ] {
            let e = run_rewrite(&with_disks(mounts, ""))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn rootdisk_must_name_a_disk_with_a_filesystem() {
        let rewrite_with = |json: &str, env: &[&str]| {
            let spec: Spec = serde_json::from_str(json).unwrap();
            let env: Vec<String> = env.iter().map(|s| s.to_string()).collect();
            let settings = resolve(&RuntimeOpts::default(), &env, docker_sizing(&spec)).unwrap();
            rewrite(
                spec,
                "abc",
                Path::new("/b"),
                Path::new("/t"),
                &settings,
                &host(),
                false,
            )
        };
        let attach_only = with_disks(
            r#"{"destination": "/dev/runq/r/none", "type": "bind", "source": "/img/r"},"#,
            "",
        );
        let e = rewrite_with(&attach_only, &["RUNQ_ROOTDISK=r"]).unwrap_err();
        assert!(matches!(e, BundleError::RootDiskNoFs(_)), "{e}");
        let e = rewrite_with(&attach_only, &["RUNQ_ROOTDISK=other"]).unwrap_err();
        assert!(matches!(e, BundleError::RootDiskUnknown(_)), "{e}");
        let with_fs = with_disks(
            r#"{"destination": "/dev/runq/r/none/ext4", "type": "bind", "source": "/img/r"},"#,
            "",
        );
        let r = rewrite_with(&with_fs, &["RUNQ_ROOTDISK=r"]).unwrap();
        assert_eq!(r.vm.guest.root.rootdisk.unwrap().id, "r");
    }

    #[test]
    fn sysctls_and_masked_paths_go_to_the_guest() {
        let json = DOCKER_CONFIG.replacen(
            r#""linux": {"#,
            r#""linux": {"sysctl": {"net.ipv4.ip_forward": "1", "kernel.msgmax": "9000"},
                         "readonlyPaths": ["/proc/sys"],"#,
            1,
        );
        let r = run_rewrite(&json).unwrap();
        assert_eq!(
            r.vm.guest.sysctls,
            [
                ("kernel.msgmax".to_string(), "9000".to_string()),
                ("net.ipv4.ip_forward".to_string(), "1".to_string())
            ]
        );
        assert_eq!(r.vm.guest.mounts.masked_paths, ["/proc/kcore"]);
        assert_eq!(r.vm.guest.mounts.readonly_paths, ["/proc/sys"]);
        assert!(r.spec.linux().as_ref().unwrap().sysctl().is_none());
        for bad in ["../../etc/passwd", "net..x", "net/ipv4"] {
            let json = DOCKER_CONFIG.replacen(
                r#""linux": {"#,
                &format!(r#""linux": {{"sysctl": {{"{bad}": "1"}},"#),
                1,
            );
            assert!(
                matches!(run_rewrite(&json), Err(BundleError::BadSysctl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn privileged_is_privileged_in_the_guest_only() {
        let json = DOCKER_CONFIG
            .replacen(
                r#""linux": {"#,
                r#""linux": {"devices": [{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0},
                                     {"path": "/dev/runq/d/none", "type": "b", "major": 8, "minor": 16}],"#,
                1,
            )
            .replacen(
                r#""resources": {"devices": [{"allow": false, "access": "rwm"}],"#,
                r#""resources": {"devices": [{"allow": true, "access": "rwm"}],"#,
                1,
            )
            .replacen(
                r#"{"destination": "/proc","#,
                r#"{"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "rw"]},
        {"destination": "/proc","#,
                1,
            );
        let r = run_rewrite(&json).unwrap();
        assert!(r.vm.guest.privileged);
        let linux = r.spec.linux().as_ref().unwrap();
        let sys = r
            .spec
            .mounts()
            .iter()
            .flatten()
            .find(|m| m.destination() == Path::new("/sys"));
        assert_eq!(
            sys.and_then(|m| m.options().clone()),
            Some(vec![
                "nosuid".to_string(),
                "noexec".into(),
                "nodev".into(),
                "ro".into()
            ]),
            "the proxy's /sys is read-only"
        );
        assert!(linux
            .readonly_paths()
            .iter()
            .flatten()
            .any(|p| p == "/proc/sys"));
        assert!(linux
            .masked_paths()
            .iter()
            .flatten()
            .any(|p| p == "/proc/kcore"));
        let paths: Vec<_> = linux
            .devices()
            .as_ref()
            .unwrap()
            .iter()
            .map(|d| d.path().to_string_lossy().into_owned())
            .collect();
        assert_eq!(paths, ["/dev/runq/d/none", "/dev/kvm"], "no host devices");
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap();
        assert!(!rules[0].allow(), "deny all first");
        assert!(
            !rules.iter().any(|r| r.allow() && r.major().is_none()),
            "no allow-all rule left"
        );
        assert!(rules
            .iter()
            .any(|r| r.allow() && r.major() == Some(8) && r.minor() == Some(16)));
        assert!(!run_rewrite(DOCKER_CONFIG).unwrap().vm.guest.privileged);
    }

    #[test]
    fn mounts_follow_the_rootfs_and_system_mounts_stay() {
        let r = run_rewrite(DOCKER_CONFIG).unwrap();
        let dests = mount_destinations(&r);
        assert_eq!(
            dests,
            [
                "/rootfs",
                "/rootfs/etc/hosts",
                "/rootfs/data",
                // The proxy's own after the image's, covering them; none
                // of Docker's system mounts.
                "/kernels",
                "/usr",
                "/bin",
                "/etc",
                "/sbin",
                "/var",
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/sys",
                "/run",
                "/runq"
            ]
        );
        let mounts = r.spec.mounts().as_ref().unwrap();
        assert_eq!(mounts[0].source().as_deref(), Some(Path::new("/b/rootfs")));
        assert!(mounts[2]
            .options()
            .as_ref()
            .unwrap()
            .contains(&"ro".to_string()));
        let usr = &mounts[4];
        assert_eq!(
            usr.source().as_deref(),
            Some(Path::new("/var/lib/runq/qemu/usr"))
        );
        assert_eq!(
            usr.options().as_deref(),
            Some(&["bind".to_string(), "ro".into(), "nodev".into()][..])
        );
    }

    #[test]
    fn shm_size_comes_from_dockers_dev_shm_mount() {
        let with_shm = DOCKER_CONFIG.replace(
            r#"{"destination": "/proc","#,
            r#"{"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "size=100663296"]},
        {"destination": "/proc","#,
        );
        assert_eq!(
            run_rewrite(&with_shm).unwrap().vm.guest.mounts.shm_size,
            Some(96 << 20)
        );
        assert_eq!(
            run_rewrite(DOCKER_CONFIG).unwrap().vm.guest.mounts.shm_size,
            None
        );
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("12x"), None);
    }

    #[test]
    fn dockers_tmpfs_mounts_go_to_the_guest() {
        let r = run_rewrite(DOCKER_CONFIG).unwrap();
        assert!(!r
            .spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.destination().ends_with("scratch")));
        assert_eq!(
            r.vm.guest.mounts.tmpfs,
            [TmpfsMount {
                dest: "/scratch".into(),
                options: vec!["rw".into(), "nosuid".into(), "size=65536k".into()],
            }]
        );
    }

    #[test]
    fn proxy_caps_are_limited_to_the_host_bounding_set() {
        let r = run_rewrite(DOCKER_CONFIG).unwrap();
        let caps = r
            .spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap();
        let eff = caps.effective().as_ref().unwrap();
        assert!(eff.contains(&Capability::DacOverride));
        assert!(!eff.contains(&Capability::DacReadSearch), "no file handles");
        assert!(!eff.contains(&Capability::NetAdmin), "host lacks it");
        assert!(
            !eff.contains(&Capability::SysAdmin) && !eff.contains(&Capability::NetRaw),
            "the workload's caps go to the guest"
        );
        assert!(eff.contains(&Capability::Kill), "ends QEMU (another uid)");
        assert!(caps.ambient().as_ref().unwrap().is_empty());
    }

    #[test]
    fn exec_process_runs_the_proxy_and_carries_the_real_one() {
        let spec: Spec = serde_json::from_str(DOCKER_CONFIG).unwrap();
        let original = spec.process().clone().unwrap();
        let p = exec_proxy_process(&original).unwrap();
        let args = p.args().clone().unwrap();
        assert_eq!(args[0], PROXY_PATH);
        let carried =
            runq_protocol::exec_args::from_argv(&args[2..], p.env().clone().unwrap()).unwrap();
        assert_eq!(carried, process_spec(&original).unwrap());
        assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
        assert!(p
            .capabilities()
            .as_ref()
            .unwrap()
            .effective()
            .as_ref()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn host_and_shared_network_namespaces_are_refused() {
        let host = DOCKER_CONFIG.replace(r#"{"type": "network"}, "#, "");
        assert!(matches!(run_rewrite(&host), Err(BundleError::HostNetwork)));
        let shared = with_netns("/proc/42/ns/net");
        assert!(matches!(
            run_rewrite(&shared),
            Err(BundleError::SharedNetwork)
        ));
        // A namespace made for the container and still empty (podman's).
        let made = with_netns("/run/netns/netns-1234");
        assert!(run_rewrite(&made).unwrap().vm.host.lasting_netns);
        assert!(!run_rewrite(DOCKER_CONFIG).unwrap().vm.host.lasting_netns);
        let host_path = with_netns("/proc/1/ns/net");
        assert!(matches!(
            run_rewrite(&host_path),
            Err(BundleError::HostNetwork)
        ));
        // A Kubernetes pod's container joins the pod's netns by path.
        let pod = shared.replace(
            r#""hostname": "abc","#,
            r#""hostname": "abc", "annotations": {"io.kubernetes.cri.container-type": "container"},"#,
        );
        assert!(run_rewrite(&pod).unwrap().vm.host.lasting_netns);
        // Another container of the pod runs: its VM holds the pod's links.
        let held = pod.replace("/proc/42/ns/net", "/run/netns/held-pod");
        assert!(matches!(
            run_rewrite(&held),
            Err(BundleError::PodNetworkHeld(_))
        ));
        // The annotation alone is anybody's: without a running sandbox of
        // the CRI's making in that namespace, the non-CRI rule applies.
        let spec: Spec = serde_json::from_str(&pod).unwrap();
        let settings = resolve(&RuntimeOpts::default(), &[], docker_sizing(&spec)).unwrap();
        for pid in [None, Some(7)] {
            let unbound = HostFacts {
                cri_sandbox_pid: pid,
                ..self::tests::host()
            };
            let r = rewrite(
                spec.clone(),
                "abc",
                Path::new("/b"),
                Path::new("/var/lib/runq/qemu"),
                &settings,
                &unbound,
                false,
            );
            assert!(matches!(r, Err(BundleError::SharedNetwork)), "{pid:?}");
        }
        let unreadable = with_netns("/run/netns/unreadable");
        assert!(matches!(
            run_rewrite(&unreadable),
            Err(BundleError::NetnsUnknown(_))
        ));
        let claims: Spec =
            serde_json::from_str(&pod.replace(r#""container"}"#, r#""sandbox"}"#)).unwrap();
        assert!(matches!(
            is_cri_sandbox(&claims, "abc"),
            Err(BundleError::NotACriSandbox(_))
        ));
        let sandbox: Spec = serde_json::from_str(&pod.replace(
            r#""container"}"#,
            r#""sandbox", "io.kubernetes.cri.sandbox-id": "abc"}"#,
        ))
        .unwrap();
        assert!(is_cri_sandbox(&sandbox, "abc").unwrap());
        assert!(
            is_cri_sandbox(&sandbox, "other").is_err(),
            "another pod's id"
        );
        assert!(!is_cri_sandbox(&serde_json::from_str(&pod).unwrap(), "abc").unwrap());
    }

    #[test]
    fn image_symlinks_cannot_send_a_mount_onto_the_tree() {
        // /abs -> /usr/bin and /rel -> ../../usr/bin in the image, a
        // volume at /abs holding up -> ../../../../, and a mount below it.
        let cfg = DOCKER_CONFIG
            .replace(r#""destination": "/data", "type": "bind", "source": "/srv/data""#,
                r#""destination": "/abs", "type": "bind", "source": "/srv/data""#)
            .replace(
                r#"{"destination": "/scratch""#,
                r#"{"destination": "/rel/x", "type": "bind", "source": "/srv/x", "options": ["rbind"]},
        {"destination": "/abs/up/etc", "type": "bind", "source": "/srv/y", "options": ["rbind"]},
        {"destination": "/scratch""#,
            );
        let r = run_rewrite(&cfg).unwrap();
        let dests = mount_destinations(&r);
        for want in ["/rootfs/usr/bin", "/rootfs/usr/bin/x", "/rootfs/etc"] {
            assert!(dests.iter().any(|d| d == want), "{want} in {dests:?}");
        }
        for m in r.spec.mounts().iter().flatten() {
            let d = m.destination().to_string_lossy();
            let src = m.source().clone().unwrap_or_default();
            // Ours come from runq, never from the image or a volume.
            let ours = ["proc", "tmpfs", "devpts", "sysfs"]
                .contains(&src.to_string_lossy().as_ref())
                || src.starts_with("/var/lib/runq/qemu")
                || src == Path::new("/b/runq");
            assert!(
                ours || d.starts_with("/rootfs"),
                "{d} ({src:?}) escapes the image"
            );
        }
        assert!(
            r.vm.guest.mounts.binds.contains(&"/usr/bin".to_string()),
            "{:?}",
            r.vm.guest.mounts.binds
        );
    }

    #[test]
    fn volumes_at_system_paths_never_reach_the_proxys_container() {
        // An image's VOLUME ["/dev", "/dev/mqueue"], or -v W:/dev: Docker
        // lists them where its own /dev mounts were.
        let cfg = DOCKER_CONFIG.replace(
            r#"{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},"#,
            r#"{"destination": "/dev", "type": "bind", "source": "/var/lib/docker/volumes/w/_data", "options": ["rbind"]},
        {"destination": "/dev/mqueue", "type": "bind", "source": "/var/lib/docker/volumes/x/_data", "options": ["rbind"]},
        {"destination": "/sys", "type": "bind", "source": "/srv/evil", "options": ["rbind"]},"#,
        );
        let r = run_rewrite(&cfg).unwrap();
        for m in r.spec.mounts().iter().flatten() {
            let src = m.source().clone().unwrap_or_default();
            assert!(
                !src.starts_with("/var/lib/docker/volumes") && !src.starts_with("/srv/evil"),
                "{:?} from {src:?} in the proxy's container",
                m.destination()
            );
        }
        let dev = r
            .spec
            .mounts()
            .iter()
            .flatten()
            .find(|m| m.destination() == Path::new("/dev"));
        assert_eq!(dev.and_then(|m| m.typ().clone()).as_deref(), Some("tmpfs"));
    }

    #[test]
    fn a_destination_resolving_to_the_images_root_is_refused() {
        let cfg = DOCKER_CONFIG.replace(r#""destination": "/data""#, r#""destination": "/up""#);
        let cfg = cfg.replace(r#""destination": "/up""#, r#""destination": "/abs/../up""#);
        assert!(matches!(
            run_rewrite(&cfg),
            Err(BundleError::BadDestination(_))
        ));
        // /srv/data/up climbs to the image's root: a mount below /abs...
        let cfg = DOCKER_CONFIG.replace(
            r#"{"destination": "/scratch""#,
            r#"{"destination": "/data/up", "type": "bind", "source": "/srv/y", "options": ["rbind"]},
        {"destination": "/scratch""#,
        );
        assert!(matches!(
            run_rewrite(&cfg),
            Err(BundleError::DestinationIsRoot(_))
        ));
    }

    #[test]
    fn hostile_mount_destination_is_refused() {
        let bad = DOCKER_CONFIG.replace("\"/data\"", "\"/../../etc\"");
        assert!(matches!(
            run_rewrite(&bad),
            Err(BundleError::BadDestination(_))
        ));
        let rel = DOCKER_CONFIG.replace("\"/data\"", "\"data\"");
        assert!(matches!(
            run_rewrite(&rel),
            Err(BundleError::BadDestination(_))
        ));
    }

    #[test]
    fn missing_process_or_args_is_refused() {
        let v: serde_json::Value = serde_json::from_str(DOCKER_CONFIG).unwrap();
        let mut no_args = v.clone();
        no_args["process"]["args"] = serde_json::json!([]);
        assert!(matches!(
            run_rewrite(&no_args.to_string()),
            Err(BundleError::NoArgs)
        ));
        let mut no_proc = v;
        no_proc.as_object_mut().unwrap().remove("process");
        assert!(matches!(
            run_rewrite(&no_proc.to_string()),
            Err(BundleError::NoProcess)
        ));
    }
}
