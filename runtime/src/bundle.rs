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
    Disk, DiskFormat, GuestDisk, ProcessSpec, TmpfsMount, VmSpec, CONTAINER_ROOTFS,
    CONTAINER_RUNQ_DIR, CONTAINER_RUN_DIR,
};
use thiserror::Error;

use crate::disks::{self, DiskError};
use crate::options::{DockerSizing, Settings};

/// Path of the proxy binary inside the QEMU tree.
pub const PROXY_PATH: &str = "/usr/bin/runq-proxy";

/// Docker's system mounts. The guest mounts its own; the proxy's
/// container gets runq's ([`proxy_system_mounts`]), never Docker's: any
/// mount Docker lists at these places (its own, or a user's or an image's
/// volume at /dev, /sys...) is left out of the proxy's container.
const CONTAINER_SYSTEM_MOUNTS: &[&str] = &[
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
];

/// Where the proxy's container root lives in the bundle: a directory of
/// its own per container, holding only [`proxy_root_dirs`].
pub const PROXY_ROOT: &str = "runq/root";

/// Docker's default masked and read-only paths, for the proxy's container.
const PROXY_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
const PROXY_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The tree's empty directories that the container's mounts fill.
pub const TREE_MOUNT_POINTS: &[&str] = &["proc", "sys", "dev", "rootfs", "run", "runq"];

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

/// What the proxy needs, and why:
/// - CHOWN, DAC_OVERRIDE, FOWNER, FSETID, MKNOD, SETFCAP, SETGID, SETUID,
///   SETPCAP: virtiofsd performs the guest's file operations on the shared
///   root with the guest's credentials (without SETPCAP its capability
///   sync takes a path its own seccomp filter kills); SETPCAP also cuts
///   the helpers' bounding sets;
/// - NET_ADMIN: joining the container's interfaces to taps (tc);
/// - KILL: ending QEMU, which runs as another uid;
/// - SYS_CHROOT: virtiofsd's chroot sandbox.
///
/// The proxy drops all but KILL once QEMU runs; virtiofsd keeps the file
/// serving ones, QEMU and vhost-device-vsock get none.
///
/// Anything the host's bounding set lacks is left out rather than asked
/// for (runc fails the start otherwise).
pub const PROXY_CAPS: &[(u8, Capability)] = &[
    (0, Capability::Chown),
    (1, Capability::DacOverride),
    (3, Capability::Fowner),
    (4, Capability::Fsetid),
    (5, Capability::Kill),
    (6, Capability::Setgid),
    (7, Capability::Setuid),
    (8, Capability::Setpcap),
    (12, Capability::NetAdmin),
    (18, Capability::SysChroot),
    (27, Capability::Mknod),
    (31, Capability::Setfcap),
];

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
    /// The runtime's capability bounding set, as a bit mask.
    pub bounding_caps: u64,
    /// `/dev/kvm`, `/dev/net/tun`, `/dev/vhost-*` as far as they exist.
    pub devices: Vec<HostDevice>,
    /// Whether a namespace path names the host's network namespace
    /// (Docker passes `--network host` as a path).
    pub is_host_netns: fn(&Path) -> bool,
    /// How many processes live in the network namespace at a path
    /// (another container's, as with `--network container:X`; a pod's
    /// sandbox); `usize::MAX` when that cannot be told.
    pub netns_users: fn(&Path) -> usize,
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

/// `net.ipv4.ip_forward`: dot-separated, no empty or path-like parts.
fn is_sysctl_name(k: &str) -> bool {
    k.split('.').all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// Docker's `--privileged` as it shows in the spec: a device rule that
/// allows every device.
fn is_privileged(spec: &Spec) -> bool {
    linux_of(spec)
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().as_ref())
        .is_some_and(|rules| {
            rules.iter().any(|r| {
                r.allow()
                    && matches!(r.typ(), None | Some(LinuxDeviceType::A))
                    && r.major().is_none()
                    && r.minor().is_none()
            })
        })
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

    if let Some(bad) = linux_of(&spec)
        .and_then(|l| l.sysctl().as_ref())
        .and_then(|m| m.keys().find(|k| !is_sysctl_name(k)))
    {
        return Err(BundleError::BadSysctl(bad.clone()));
    }
    let vm = VmSpec {
        id: id.to_string(),
        cpus: settings.cpus,
        mem_mib: settings.mem_mib,
        accel: settings.accel,
        share: settings.share,
        ninep_cache: settings.ninep_cache,
        guest_arch: settings.guest_arch,
        apuuid: settings.apuuid.clone(),
        kernel: settings.kernel.clone(),
        disks: Vec::new(),
        rootdisk: settings.rootdisk.clone(),
        binds: Vec::new(),
        readonly_binds: Vec::new(),
        sysctls: linux_of(&spec)
            .and_then(|l| l.sysctl().clone())
            .map(|m| m.into_iter().collect::<std::collections::BTreeMap<_, _>>())
            .unwrap_or_default()
            .into_iter()
            .collect(),
        masked_paths: linux_of(&spec)
            .and_then(|l| l.masked_paths().clone())
            .unwrap_or_default(),
        readonly_paths: linux_of(&spec)
            .and_then(|l| l.readonly_paths().clone())
            .unwrap_or_default(),
        cpu_model: settings.cpu_model.clone(),
        hostname: spec.hostname().clone(),
        process: process_spec(&process)?,
        readonly_root: root.readonly().unwrap_or(false),
        tmpfs: settings
            .tmpfs
            .iter()
            .map(|dest| TmpfsMount {
                dest: dest.clone(),
                options: vec!["nosuid".into(), "nodev".into(), "mode=1777".into()],
            })
            .collect(),
        shm_size: shm_size(&spec),
        systemd: settings.systemd,
        runqenv: settings.runqenv,
        noexec: settings.noexec,
        sigusr: settings.sigusr,
        resolv_conf: settings.resolv_conf.clone(),
        seccomp: match linux_of(&spec).and_then(|l| l.seccomp().as_ref()) {
            None => Vec::new(),
            Some(profile) => crate::seccomp::compile(
                profile,
                settings
                    .guest_arch
                    .unwrap_or(runq_protocol::GuestArch::host()),
            )?,
        },
        privileged: is_privileged(&spec),
        devices: Vec::new(),
        debug,
        host_filters: host_filters(settings.share)?,
        warning: None,
        lasting_netns,
    };

    let (mounts, tmpfs, mut disks, (binds, readonly_binds)) = rewrite_mounts(
        spec.mounts().clone().unwrap_or_default(),
        &rootfs,
        bundle,
        tree,
        host,
    )?;
    spec.set_mounts(Some(mounts));
    let mut vm = vm;
    vm.tmpfs.extend(tmpfs);
    disks.extend(device_disks(&spec)?);
    disks::check_unique(disks.iter().map(|d| d.guest.id.as_str()))?;
    if let Some(root) = &vm.rootdisk {
        match disks.iter().find(|d| d.guest.id == root.id) {
            None => return Err(BundleError::RootDiskUnknown(root.id.clone())),
            Some(d) if d.guest.fs.is_none() => {
                return Err(BundleError::RootDiskNoFs(root.id.clone()))
            }
            Some(_) => {}
        }
    }
    vm.disks = disks;
    vm.binds = binds;
    vm.readonly_binds = readonly_binds;
    spec.set_root(Some(proxy_root(bundle)?));
    spec.set_process(Some(proxy_process(&process, host.bounding_caps)?));

    if let Some(linux) = spec.linux_mut() {
        // QEMU needs syscalls the workload's profile forbids; the profile
        // is enforced inside the guest instead. The sysctls are the
        // guest's too (they would only touch the proxy's namespaces).
        linux.set_seccomp(None);
        linux.set_sysctl(None);
        // The workload's masked and read-only paths are the guest's; the
        // proxy's container gets Docker's defaults whatever Docker asked
        // (--privileged asks for none).
        linux.set_masked_paths(Some(
            PROXY_MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
        ));
        linux.set_readonly_paths(Some(
            PROXY_READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
        ));
        let mut devices = linux.devices().clone().unwrap_or_default();
        // Docker's --device nodes are the guest's (made there with the
        // same numbers, naming the guest kernel's device); --privileged
        // gives the guest all of its own. The proxy's container gets none
        // of the host's devices beyond runq disks and QEMU's own.
        if !vm.privileged {
            vm.devices = devices
                .iter()
                .filter(|d| !d.path().starts_with(disks::DISK_PREFIX))
                .filter_map(guest_device)
                .collect();
        }
        devices.retain(|d| d.path().starts_with(disks::DISK_PREFIX));
        devices.extend(
            host.devices
                .iter()
                .map(device_node)
                .collect::<Result<Vec<_>, _>>()?,
        );
        linux.set_devices(Some(devices.clone()));
        if let Some(res) = linux.resources_mut() {
            if let Some(mem) = res.memory_mut() {
                make_room_for_the_vm(mem, settings);
            }
            let mut rules = res.devices().clone().unwrap_or_default();
            if vm.privileged {
                rules = vec![LinuxDeviceCgroupBuilder::default()
                    .allow(false)
                    .access("rwm")
                    .build()?];
                for d in vm.disks.iter().filter_map(|d| {
                    devices
                        .iter()
                        .find(|n| n.path().to_string_lossy() == d.path)
                }) {
                    rules.push(
                        LinuxDeviceCgroupBuilder::default()
                            .allow(true)
                            .typ(LinuxDeviceType::B)
                            .major(d.major())
                            .minor(d.minor())
                            .access("rwm")
                            .build()?,
                    );
                }
            }
            rules.extend(
                host.devices
                    .iter()
                    .map(device_rule)
                    .collect::<Result<Vec<_>, _>>()?,
            );
            res.set_devices(Some(rules));
        }
    }
    Ok(Rewritten { spec, vm })
}

/// A character or block device of the spec as the guest makes it (FIFOs
/// and other types are left out: Docker's --device does not make them).
fn guest_device(d: &oci_spec::runtime::LinuxDevice) -> Option<runq_protocol::spec::DeviceNode> {
    let block = match d.typ() {
        LinuxDeviceType::B => true,
        LinuxDeviceType::C | LinuxDeviceType::U => false,
        _ => return None,
    };
    Some(runq_protocol::spec::DeviceNode {
        path: d.path().to_string_lossy().into_owned(),
        block,
        major: d.major(),
        minor: d.minor(),
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

/// The helpers' filters, each compiled once per container (QEMU's 9p
/// server also creates the guest's device nodes).
fn host_filters(share: runq_protocol::Share) -> Result<runq_protocol::HostFilters, BundleError> {
    let strict = crate::seccomp::host_filter(&[])?;
    let qemu = match share {
        runq_protocol::Share::NineP => crate::seccomp::host_filter(&["mknod", "mknodat"])?,
        runq_protocol::Share::Virtiofs => strict.clone(),
    };
    Ok(runq_protocol::HostFilters { qemu, strict })
}

/// Host memory a VM needs beyond its guest RAM: QEMU itself and the
/// helpers (~60 MiB measured), plus under TCG the translation cache,
/// which QEMU is told to cap at [`runq_protocol::TCG_TB_MIB`].
pub fn vm_overhead_mib(accel: runq_protocol::Accel) -> i64 {
    match accel {
        runq_protocol::Accel::Kvm => 128,
        _ => 128 + i64::from(runq_protocol::TCG_TB_MIB),
    }
}

/// Docker's `--memory` sized the guest; the container's cgroup, which
/// also holds QEMU, gets the VM's overhead on top so that the VM is not
/// OOM-killed when the guest uses what it was given.
fn make_room_for_the_vm(mem: &mut oci_spec::runtime::LinuxMemory, settings: &Settings) {
    let Some(limit) = mem.limit().filter(|l| *l > 0) else {
        return;
    };
    let needed = (i64::from(settings.mem_mib) + vm_overhead_mib(settings.accel)) << 20;
    let new_limit = limit.max(needed);
    mem.set_limit(Some(new_limit));
    if let Some(swap) = mem.swap().filter(|s| *s > 0) {
        mem.set_swap(Some(swap.max(new_limit)));
    }
}

/// An OCI process (the container's, or an exec'd one) as the guest runs it.
pub fn process_spec(process: &oci_spec::runtime::Process) -> Result<ProcessSpec, BundleError> {
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(BundleError::NoArgs);
    }
    if !process.cwd().is_absolute() {
        return Err(BundleError::BadCwd(process.cwd().clone()));
    }
    Ok(ProcessSpec {
        args,
        env: process.env().clone().unwrap_or_default(),
        cwd: process.cwd().to_string_lossy().into_owned(),
        uid: process.user().uid(),
        gid: process.user().gid(),
        additional_gids: process.user().additional_gids().clone().unwrap_or_default(),
        terminal: process.terminal().unwrap_or(false),
        rlimits: guest_rlimits(process)?,
        capabilities: process.capabilities().as_ref().map(cap_sets).transpose()?,
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
    })
}

/// OCI capability sets as bit masks for the guest (an absent set is
/// empty, as runc treats it).
fn cap_sets(
    c: &oci_spec::runtime::LinuxCapabilities,
) -> Result<runq_protocol::CapSets, BundleError> {
    let mask = |set: &Option<oci_spec::runtime::Capabilities>| -> Result<u64, BundleError> {
        let mut m = 0u64;
        for cap in set.iter().flatten() {
            let name = serde_json::to_value(cap)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let parsed: caps::Capability =
                name.parse().map_err(|_| BundleError::BadCapability(name))?;
            m |= 1u64 << parsed.index();
        }
        Ok(m)
    };
    Ok(runq_protocol::CapSets {
        bounding: mask(c.bounding())?,
        effective: mask(c.effective())?,
        permitted: mask(c.permitted())?,
        inheritable: mask(c.inheritable())?,
        ambient: mask(c.ambient())?,
    })
}

/// The process that runs in the container for an exec: `runq-proxy exec`
/// carrying the real process to the guest. It needs no capabilities: it
/// only talks to the vsock backend's socket.
pub fn exec_proxy_process(
    original: &oci_spec::runtime::Process,
) -> Result<oci_spec::runtime::Process, BundleError> {
    let guest = process_spec(original)?;
    let mut args = vec![PROXY_PATH.to_string()];
    args.extend(runq_protocol::exec_args::to_argv(&guest));
    // The workload's environment travels as the proxy's own.
    container_process(original, args, guest.env, HashSet::new())
}

/// The workload's rlimits, for the guest (the proxy keeps the shim's).
fn guest_rlimits(p: &oci_spec::runtime::Process) -> Result<Vec<(u32, u64, u64)>, BundleError> {
    p.rlimits()
        .iter()
        .flatten()
        .map(|r| {
            let name = serde_json::to_value(r.typ())
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let res = runq_protocol::rlimit_resource(&name).ok_or(BundleError::BadRlimit(name))?;
            Ok((res, r.soft(), r.hard()))
        })
        .collect()
}

/// CRI (Kubernetes) marks its containers with this annotation.
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// containerd's CRI names the pod's sandbox (its id) in every container.
const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// A CRI pod sandbox (the pause container) only holds the pod's
/// namespaces: it runs under the lower runtime as it is, no VM. The
/// annotation alone is anybody's to write (an image's labels, `docker run
/// --annotation`), so it counts only as containerd's CRI writes it: on the
/// container whose id is the sandbox id it names. Anything else claiming
/// to be a sandbox is refused rather than run without a VM.
pub fn is_cri_sandbox(spec: &Spec, id: &str) -> Result<bool, BundleError> {
    if cri_container_type(spec) != Some("sandbox") {
        return Ok(false);
    }
    let sandbox_id = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(CRI_SANDBOX_ID));
    if sandbox_id.map(String::as_str) == Some(id) {
        Ok(true)
    } else {
        Err(BundleError::NotACriSandbox(id.to_string()))
    }
}

fn cri_container_type(spec: &Spec) -> Option<&str> {
    spec.annotations()
        .as_ref()?
        .get(CRI_CONTAINER_TYPE)
        .map(String::as_str)
}

/// The VM takes over the interfaces of the container's network namespace:
/// a new one (Docker, runc makes it), or one made for this container and
/// still empty of processes (podman's, an orchestrator's); never the
/// host's, nor one another container lives in (its VM has its links).
/// A CRI pod's container joins the pod's namespace, where the sandbox
/// (no VM) lives, while no other container of the pod runs: the first
/// VM holds the pod's interfaces. Returns whether the namespace outlives
/// the container (given by path).
fn check_network_namespace(spec: &Spec, host: &HostFacts) -> Result<bool, BundleError> {
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let Some(netns) = namespaces
        .iter()
        .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
    else {
        return Err(BundleError::HostNetwork);
    };
    let Some(path) = netns.path() else {
        return Ok(false);
    };
    if (host.is_host_netns)(path) {
        return Err(BundleError::HostNetwork);
    }
    let users = (host.netns_users)(path);
    if cri_container_type(spec) == Some("container") {
        if users > 1 {
            let pod = spec
                .annotations()
                .as_ref()
                .and_then(|a| a.get(CRI_SANDBOX_ID))
                .cloned()
                .unwrap_or_default();
            return Err(BundleError::PodNetworkHeld(pod));
        }
        return Ok(true);
    }
    if users > 0 {
        return Err(BundleError::SharedNetwork);
    }
    Ok(true)
}

fn proxy_root(bundle: &Path) -> Result<Root, BundleError> {
    Ok(RootBuilder::default()
        .path(bundle.join(PROXY_ROOT))
        .readonly(true)
        .build()?)
}

/// Docker's `--shm-size`, from the /dev/shm tmpfs it asks for.
fn shm_size(spec: &Spec) -> Option<u64> {
    let m = spec
        .mounts()
        .as_ref()?
        .iter()
        .find(|m| m.destination() == Path::new("/dev/shm"))?;
    m.options()
        .iter()
        .flatten()
        .find_map(|o| o.strip_prefix("size="))
        .and_then(parse_size)
}

/// `100663296`, `64k`, `96m`, `1g` (mount(8) size syntax) in bytes.
fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()?.to_ascii_lowercase() {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Mounts for the container (Docker's moved under /rootfs) and the tmpfs
/// mounts that belong in the guest (a host tmpfs seen through virtiofs
/// would be no tmpfs to the workload).
/// A runq disk from a parsed destination.
fn disk(dest: disks::DiskDest, path: &Path, format: DiskFormat, readonly: bool) -> Disk {
    Disk {
        guest: GuestDisk {
            id: dest.id,
            fs: dest.fs,
            mountpoint: dest.mountpoint,
            readonly,
        },
        path: path.to_string_lossy().into_owned(),
        cache: dest.cache,
        format,
    }
}

/// `--device BLOCKDEV:/dev/runq/...`: runc creates the node at that path
/// in the proxy's container (Docker already allowed it in the cgroup).
fn device_disks(spec: &Spec) -> Result<Vec<Disk>, BundleError> {
    let devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for d in devices {
        let path = d.path().to_string_lossy().into_owned();
        if let Some(dest) = disks::parse_dest(&path) {
            if d.typ() != LinuxDeviceType::B {
                return Err(DiskError::NotAnImage {
                    dest: path.clone(),
                    path,
                }
                .into());
            }
            out.push(disk(dest?, d.path(), DiskFormat::Raw, false));
        }
    }
    Ok(out)
}

/// Mounts, guest tmpfs, disks, and the bind destinations (all, read-only).
type RewrittenMounts = (
    Vec<Mount>,
    Vec<TmpfsMount>,
    Vec<Disk>,
    (Vec<String>, Vec<String>),
);

fn mount(dest: &str, typ: &str, options: &[&str]) -> Result<Mount, BundleError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(typ)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn bind_ro(dest: &Path, source: &Path) -> Result<Mount, BundleError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(vec!["bind".into(), "ro".into(), "nodev".into()])
        .build()?)
}

/// /proc, /dev, /dev/pts, /dev/shm and a read-only /sys for the proxy and
/// QEMU, whatever Docker asked for (`--privileged` included).
fn proxy_system_mounts() -> Result<Vec<Mount>, BundleError> {
    Ok(vec![
        mount("/proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount("/sys", "sysfs", &["nosuid", "noexec", "nodev", "ro"])?,
    ])
}

/// Is `m` a bind mount (Docker writes both spellings)?
fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// Docker's mounts go under /rootfs at the place each one takes in a runc
/// container: resolved in the image (and in the mounts before it), so no
/// symlink of the image or of a volume can send one onto the QEMU tree.
fn rewrite_mounts(
    mounts: Vec<Mount>,
    rootfs: &Path,
    bundle: &Path,
    tree: &Path,
    host: &HostFacts,
) -> Result<RewrittenMounts, BundleError> {
    let mut view = MountView::new(rootfs, host.fs);
    // First, so that Docker's mounts below land inside it.
    let mut out = vec![MountBuilder::default()
        .destination(CONTAINER_ROOTFS)
        .typ("bind")
        .source(rootfs.to_path_buf())
        // The guest's kernel gives its files suid and device meaning; on
        // the host side nothing may (nothing here runs or opens them).
        .options(vec![
            "rbind".into(),
            "rw".into(),
            "nosuid".into(),
            "nodev".into(),
        ])
        .build()?];
    let mut disk_mounts = Vec::new();
    let mut guest_tmpfs = Vec::new();
    let mut disks = Vec::new();
    let mut binds = Vec::new();
    let mut readonly_binds = Vec::new();
    for mut m in mounts {
        let dest = m.destination().clone();
        if !is_clean_absolute(&dest) {
            return Err(BundleError::BadDestination(dest));
        }
        // A disk image stays at its /dev/runq path in the proxy's
        // container (a tmpfs /dev), where QEMU opens it.
        if let Some(parsed) = disks::parse_dest(&dest.to_string_lossy()) {
            let parsed = parsed?;
            let source = m.source().clone().unwrap_or_default();
            let format = (host.disk_format)(&source).map_err(|why| {
                let (dest, path) = (
                    dest.to_string_lossy().into_owned(),
                    source.to_string_lossy().into_owned(),
                );
                match why {
                    disks::ImageRefusal::NotAnImage => DiskError::NotAnImage { dest, path },
                    why => DiskError::Refused { dest, path, why },
                }
            })?;
            let ro = m
                .options()
                .as_ref()
                .is_some_and(|o| o.iter().any(|x| x == "ro"));
            disks.push(disk(parsed, &dest, format, ro));
            disk_mounts.push(m);
            continue;
        }
        if CONTAINER_SYSTEM_MOUNTS.iter().any(|s| Path::new(s) == dest) {
            continue;
        }
        if m.typ().as_deref() == Some("tmpfs") {
            guest_tmpfs.push(TmpfsMount {
                dest: dest.to_string_lossy().into_owned(),
                options: m.options().clone().unwrap_or_default(),
            });
            continue;
        }
        let resolved = view.resolve(&dest)?;
        if resolved == Path::new("/") {
            // runc cannot mount over a container's root either.
            return Err(BundleError::DestinationIsRoot(dest));
        }
        if is_bind(&m) {
            binds.push(resolved.to_string_lossy().into_owned());
            if m.options().iter().flatten().any(|o| o == "ro") {
                readonly_binds.push(resolved.to_string_lossy().into_owned());
            }
            view.add_bind(resolved.clone(), m.source().clone().unwrap_or_default());
        } else {
            view.add_opaque(resolved.clone());
        }
        m.set_destination(under_rootfs(&resolved));
        out.push(m);
    }
    // The proxy's root is a directory of the bundle with a fixed set of
    // names (proxy_root_dirs). Every name a host-side program reads (the
    // tree's directories, etc, proc, dev, sys, run, runq) is mounted here,
    // after Docker's mounts, from a source outside that root: whatever a
    // mount of the image's might have put there (a link swapped in a
    // shared volume while runc walked it) is covered, and the tree itself,
    // never the container's root, cannot be written.
    for d in &host.tree_dirs {
        out.push(bind_ro(&Path::new("/").join(d), &tree.join(d))?);
    }
    for d in EMPTY_DIRS
        .iter()
        .filter(|d| !host.tree_dirs.iter().any(|t| t == *d))
    {
        out.push(mount(
            &format!("/{d}"),
            "tmpfs",
            &["ro", "nosuid", "nodev", "noexec", "mode=755", "size=16k"],
        )?);
    }
    out.extend(proxy_system_mounts()?);
    out.push(mount(
        CONTAINER_RUN_DIR,
        "tmpfs",
        &["nosuid", "nodev", "mode=700", "size=16m"],
    )?);
    out.push(bind_ro(
        Path::new(CONTAINER_RUNQ_DIR),
        &bundle.join("runq"),
    )?);
    out.extend(disk_mounts);
    Ok((out, guest_tmpfs, disks, (binds, readonly_binds)))
}

fn proxy_process(
    original: &oci_spec::runtime::Process,
    bounding: u64,
) -> Result<oci_spec::runtime::Process, BundleError> {
    let caps: HashSet<Capability> = PROXY_CAPS
        .iter()
        .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
        .map(|(_, c)| *c)
        .collect();
    let mut p = container_process(
        original,
        vec![PROXY_PATH.to_string()],
        // The tree's programs are all in /usr/bin.
        vec!["PATH=/usr/bin".to_string()],
        caps,
    )?;
    p.set_oom_score_adj(original.oom_score_adj());
    Ok(p)
}

/// A process run as root in the container (the proxy, or its exec form)
/// on behalf of `original`: same terminal and AppArmor profile, the given
/// capabilities as its only ones, no_new_privs, and the shim's rlimits
/// (the builder's default RLIMIT_NOFILE is dropped: virtiofsd wants many
/// descriptors).
fn container_process(
    original: &oci_spec::runtime::Process,
    args: Vec<String>,
    env: Vec<String>,
    caps: HashSet<Capability>,
) -> Result<oci_spec::runtime::Process, BundleError> {
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?;
    let mut b = ProcessBuilder::default()
        .terminal(original.terminal().unwrap_or(false))
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .args(args)
        .env(env)
        .cwd("/")
        .capabilities(capabilities)
        .no_new_privileges(true);
    if let Some(size) = original.console_size() {
        b = b.console_size(size);
    }
    if let Some(a) = original.apparmor_profile() {
        b = b.apparmor_profile(a.clone());
    }
    let mut p = b.build()?;
    p.set_rlimits(None);
    Ok(p)
}

/// QEMU's devices (/dev/kvm, /dev/vhost-net...): the proxy opens them as
/// root, QEMU through its group.
fn device_node(d: &HostDevice) -> Result<LinuxDevice, BundleError> {
    Ok(LinuxDeviceBuilder::default()
        .path(d.path.clone())
        .typ(LinuxDeviceType::C)
        .major(d.major)
        .minor(d.minor)
        .file_mode(0o660u32)
        .uid(0u32)
        .gid(runq_protocol::QEMU_GID)
        .build()?)
}

fn device_rule(d: &HostDevice) -> Result<LinuxDeviceCgroup, BundleError> {
    Ok(LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(LinuxDeviceType::C)
        .major(d.major)
        .minor(d.minor)
        .access("rwm")
        .build()?)
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
            // everything but CAP_NET_ADMIN (bit 12)
            bounding_caps: !(1u64 << 12),
            devices: vec![HostDevice {
                path: "/dev/kvm".into(),
                major: 10,
                minor: 232,
            }],
            is_host_netns: |p| p == Path::new("/proc/1/ns/net"),
            netns_users: |p| match p.to_str() {
                Some(p) if p.starts_with("/proc/") => 1,
                Some(p) if p.ends_with("/held-pod") => 5,
                _ => 0,
            },
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
        assert_eq!(vm.process.args, ["sh", "-c", "echo hi"]);
        assert_eq!(vm.process.cwd, "/work");
        assert_eq!((vm.process.uid, vm.process.gid), (1000, 1000));
        assert_eq!(vm.process.additional_gids, [10]);
        assert_eq!(vm.hostname.as_deref(), Some("abc"));
        assert!(vm.readonly_root);
        assert_eq!(vm.mem_mib, 512, "docker --memory sizes the guest");
        // Compiled for the guest: the default filter (one program).
        assert_eq!(vm.seccomp.len(), 1);
        assert_eq!(vm.process.rlimits, [(7, 1024, 4096)]);
        let caps = vm.process.capabilities.unwrap();
        assert_eq!(caps.bounding, (1 << 0) | (1 << 5), "CAP_CHOWN, CAP_KILL");
        assert_eq!(caps.effective, 1 << 0);
        assert_eq!(
            (caps.permitted, caps.ambient),
            (0, 0),
            "absent sets are empty"
        );
        assert!(vm.process.no_new_privileges);
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
        let want = (512 + vm_overhead_mib(runq_protocol::Accel::Auto)) << 20;
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
            r.vm.masked_paths,
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
            r.vm.disks
                .iter()
                .map(|d| {
                    (
                        d.guest.id.as_str(),
                        d.path.as_str(),
                        d.format,
                        d.cache,
                        d.guest.mountpoint.as_deref(),
                        d.guest.readonly,
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
        assert_eq!(r.vm.binds, ["/etc/hosts", "/data"]);
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
        assert_eq!(r.vm.rootdisk.unwrap().id, "r");
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
            r.vm.sysctls,
            [
                ("kernel.msgmax".to_string(), "9000".to_string()),
                ("net.ipv4.ip_forward".to_string(), "1".to_string())
            ]
        );
        assert_eq!(r.vm.masked_paths, ["/proc/kcore"]);
        assert_eq!(r.vm.readonly_paths, ["/proc/sys"]);
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
        assert!(r.vm.privileged);
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
        assert!(!run_rewrite(DOCKER_CONFIG).unwrap().vm.privileged);
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
        assert_eq!(run_rewrite(&with_shm).unwrap().vm.shm_size, Some(96 << 20));
        assert_eq!(run_rewrite(DOCKER_CONFIG).unwrap().vm.shm_size, None);
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
            r.vm.tmpfs,
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
        let shared = DOCKER_CONFIG.replace(
            r#"{"type": "network"}"#,
            r#"{"type": "network", "path": "/proc/42/ns/net"}"#,
        );
        assert!(matches!(
            run_rewrite(&shared),
            Err(BundleError::SharedNetwork)
        ));
        // A namespace made for the container and still empty (podman's).
        let made = DOCKER_CONFIG.replace(
            r#"{"type": "network"}"#,
            r#"{"type": "network", "path": "/run/netns/netns-1234"}"#,
        );
        assert!(run_rewrite(&made).unwrap().vm.lasting_netns);
        assert!(!run_rewrite(DOCKER_CONFIG).unwrap().vm.lasting_netns);
        let host_path = DOCKER_CONFIG.replace(
            r#"{"type": "network"}"#,
            r#"{"type": "network", "path": "/proc/1/ns/net"}"#,
        );
        assert!(matches!(
            run_rewrite(&host_path),
            Err(BundleError::HostNetwork)
        ));
        // A Kubernetes pod's container joins the pod's netns by path.
        let pod = shared.replace(
            r#""hostname": "abc","#,
            r#""hostname": "abc", "annotations": {"io.kubernetes.cri.container-type": "container"},"#,
        );
        assert!(run_rewrite(&pod).unwrap().vm.lasting_netns);
        // Another container of the pod runs: its VM holds the pod's links.
        let held = pod.replace("/proc/42/ns/net", "/run/netns/held-pod");
        assert!(matches!(
            run_rewrite(&held),
            Err(BundleError::PodNetworkHeld(_))
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
            r.vm.binds.contains(&"/usr/bin".to_string()),
            "{:?}",
            r.vm.binds
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
