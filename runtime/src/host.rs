//! Facts about the host that `runq create` gathers for the bundle
//! rewrite (`bundle::HostFacts`): devices QEMU needs, the capability
//! bounding set, network namespaces, disk image formats, the tree.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::bundle::{self, HostDevice, HostFacts};
use crate::disks::ImageRefusal;

/// Character devices the proxy and QEMU use, where the host has them:
/// /dev/net/tun (taps for macvlan/ipvlan), /dev/vhost-net (virtio-net in
/// the host kernel), and /dev/kvm only for a KVM guest. The vsock backend
/// is vhost-user, so /dev/vhost-vsock is never given.
fn qemu_devices(accel: runq_protocol::Accel) -> Vec<&'static str> {
    let mut d = vec!["/dev/net/tun", "/dev/vhost-net"];
    if accel == runq_protocol::Accel::Kvm {
        d.insert(0, "/dev/kvm");
    }
    d
}

/// The character device at `path` as the container needs it.
fn char_device(path: &str) -> Option<HostDevice> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).ok()?;
    if !meta.file_type().is_char_device() {
        return None;
    }
    let rdev = meta.rdev();
    Some(HostDevice {
        path: PathBuf::from(path),
        major: nix::sys::stat::major(rdev) as i64,
        minor: nix::sys::stat::minor(rdev) as i64,
    })
}

/// `RUNQ_APUUID`: the vfio container and the mediated device's IOMMU group
/// node, which QEMU opens for `-device vfio-ap`.
fn vfio_ap_devices(uuid: &str) -> Result<Vec<HostDevice>> {
    let mdev = format!("/sys/devices/vfio_ap/matrix/{uuid}");
    let group = fs::read_link(format!("{mdev}/iommu_group"))
        .with_context(|| format!("RUNQ_APUUID={uuid}: no vfio-ap mediated device {mdev}"))?;
    let group = group
        .file_name()
        .context("malformed iommu_group link")?
        .to_string_lossy()
        .into_owned();
    ["/dev/vfio/vfio".to_string(), format!("/dev/vfio/{group}")]
        .iter()
        .map(|p| char_device(p).with_context(|| format!("RUNQ_APUUID={uuid}: {p} missing")))
        .collect()
}

/// The tree's own top-level directories (`usr`, `lib`, `kernels`...), not
/// the mount points the container fills.
fn tree_dirs(tree: &Path) -> Result<Vec<String>> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(tree).with_context(|| format!("reading {}", tree.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() && !bundle::TREE_MOUNT_POINTS.contains(&name.as_str()) {
            dirs.push(name);
        }
    }
    dirs.sort();
    Ok(dirs)
}

pub fn host_facts(
    tree: &Path,
    accel: runq_protocol::Accel,
    apuuid: Option<&str>,
    cri_sandbox_pid: Option<u32>,
) -> Result<HostFacts> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let bounding_caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .context("no CapBnd line in /proc/self/status")?;
    let mut devices = Vec::new();
    devices.extend(qemu_devices(accel).iter().filter_map(|p| char_device(p)));
    if let Some(uuid) = apuuid {
        devices.extend(vfio_ap_devices(uuid)?);
    }
    Ok(HostFacts {
        accel,
        bounding_caps,
        devices,
        is_host_netns,
        netns_pids,
        cri_sandbox_pid,
        disk_format,
        fs: &crate::host_fs::HostFs,
        tree_dirs: tree_dirs(tree)?,
    })
}

/// qcow2 or raw by the image's first bytes (a qcow2 naming another file
/// refused); block devices are raw.
fn disk_format(path: &Path) -> Result<runq_protocol::DiskFormat, ImageRefusal> {
    use std::io::Read;
    let meta = fs::metadata(path).map_err(|_| ImageRefusal::NotAnImage)?;
    if meta.file_type().is_block_device() {
        return Ok(runq_protocol::DiskFormat::Raw);
    }
    if !meta.is_file() {
        return Err(ImageRefusal::NotAnImage);
    }
    let mut header = Vec::with_capacity(crate::disks::HEADER_LEN);
    fs::File::open(path)
        .and_then(|f| {
            f.take(crate::disks::HEADER_LEN as u64)
                .read_to_end(&mut header)
        })
        .map_err(|_| ImageRefusal::NotAnImage)?;
    crate::disks::format_from_header(&header)
}

/// Same namespace inode as the runtime's own (which is the host's).
fn is_host_netns(path: &Path) -> bool {
    same_file(path, Path::new("/proc/self/ns/net"))
}

/// The processes with a thread in the network namespace at `path` (every
/// task, not only thread-group leaders: a thread may have joined it with
/// setns); `None` when unreadable: refused rather than guessed.
fn netns_pids(path: &Path) -> Option<Vec<u32>> {
    let procs = fs::read_dir("/proc").ok()?;
    fs::metadata(path).ok()?;
    let pids = procs
        .flatten()
        .filter_map(|p| {
            let pid: u32 = p.file_name().to_str()?.parse().ok()?;
            // Gone meanwhile: not a user.
            let mut tasks = fs::read_dir(p.path().join("task")).ok()?;
            tasks
                .any(|t| t.is_ok_and(|t| same_file(&t.path().join("ns/net"), path)))
                .then_some(pid)
        })
        .collect();
    Some(pids)
}

/// The pid of pod sandbox `id` when the lower runtime runs it and its own
/// spec marks it as containerd's CRI does (`io.kubernetes.cri.sandbox-id`
/// its own id, unknowable before its creation): what makes a container
/// that claims to be the pod's one. Anything else: `None`.
pub fn cri_sandbox_pid(cli: &crate::cli::Cli, id: &str) -> Option<u32> {
    let state = crate::commands::lower::lower_state(cli, id).ok()?;
    if state["status"].as_str() != Some("running") {
        return None;
    }
    let pid = u32::try_from(state["pid"].as_u64()?).ok()?;
    let config = Path::new(state["bundle"].as_str()?).join("config.json");
    let spec = oci_spec::runtime::Spec::load(config).ok()?;
    matches!(bundle::is_cri_sandbox(&spec, id), Ok(true)).then_some(pid)
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
