//! The proxy container's mounts: Docker's, each destination resolved in
//! the image as runc would, moved under /rootfs; runq disks kept in the
//! proxy's /dev; the QEMU tree and runq's own system mounts.

use runq_protocol::GuestDisk;

use super::*;

/// Docker's system mounts. The guest mounts its own; the proxy's
/// container gets runq's ([`proxy_system_mounts`]), never Docker's: any
/// mount Docker lists at these places (its own, or a user's or an image's
/// volume at /dev, /sys...) is left out of the proxy's container.
pub(super) const CONTAINER_SYSTEM_MOUNTS: &[&str] = &[
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
];

pub(super) fn mount(dest: &str, typ: &str, options: &[&str]) -> Result<Mount, BundleError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(typ)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

pub(super) fn bind_ro(dest: &Path, source: &Path) -> Result<Mount, BundleError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(vec!["bind".into(), "ro".into(), "nodev".into()])
        .build()?)
}

/// /proc, /dev, /dev/pts, /dev/shm and a read-only /sys for the proxy and
/// QEMU, whatever Docker asked for (`--privileged` included).
pub(super) fn proxy_system_mounts() -> Result<Vec<Mount>, BundleError> {
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
pub(super) fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// Docker's mounts go under /rootfs at the place each one takes in a runc
/// container: resolved in the image (and in the mounts before it), so no
/// symlink of the image or of a volume can send one onto the QEMU tree.
/// Mounts for the container (Docker's moved under /rootfs, then the
/// proxy's own) and what belongs in the guest: tmpfs mounts (a host tmpfs
/// seen through virtiofs would be no tmpfs to the workload), runq disks,
/// the bind destinations.
pub(super) fn rewrite_mounts(
    mounts: Vec<Mount>,
    rootfs: &Path,
    bundle: &Path,
    tree: &Path,
    host: &HostFacts,
) -> Result<RewrittenMounts, BundleError> {
    let mut view = MountView::new(rootfs, host.fs);
    // First, so that Docker's mounts below land inside it.
    let mut out = vec![rootfs_bind(rootfs)?];
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
            disks.push(disk_of_mount(&m, parsed?, host)?);
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
    out.extend(proxy_own_mounts(bundle, tree, host)?);
    out.extend(disk_mounts);
    Ok((out, guest_tmpfs, disks, (binds, readonly_binds)))
}

/// Docker's rootfs at /rootfs. The guest's kernel gives its files suid
/// and device meaning; on the host side nothing may (nothing here runs
/// or opens them).
fn rootfs_bind(rootfs: &Path) -> Result<Mount, BundleError> {
    Ok(MountBuilder::default()
        .destination(CONTAINER_ROOTFS)
        .typ("bind")
        .source(rootfs.to_path_buf())
        .options(vec![
            "rbind".into(),
            "rw".into(),
            "nosuid".into(),
            "nodev".into(),
        ])
        .build()?)
}

/// The runq disk a `/dev/runq/...` mount names, its image format read
/// from the source.
fn disk_of_mount(
    m: &Mount,
    parsed: disks::DiskDest,
    host: &HostFacts,
) -> Result<Disk, BundleError> {
    let dest = m.destination();
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
    Ok(disk(parsed, dest, format, ro))
}

/// The proxy's root is a directory of the bundle with a fixed set of
/// names (proxy_root_dirs). Every name a host-side program reads (the
/// tree's directories, etc, proc, dev, sys, run, runq) is mounted here,
/// after Docker's mounts, from a source outside that root: whatever a
/// mount of the image's might have put there (a link swapped in a shared
/// volume while runc walked it) is covered, and the tree itself, never
/// the container's root, cannot be written.
fn proxy_own_mounts(
    bundle: &Path,
    tree: &Path,
    host: &HostFacts,
) -> Result<Vec<Mount>, BundleError> {
    let mut out = Vec::new();
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
    Ok(out)
}

/// A runq disk from a parsed destination.
pub(super) fn disk(dest: disks::DiskDest, path: &Path, format: DiskFormat, readonly: bool) -> Disk {
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
pub(super) fn device_disks(spec: &Spec) -> Result<Vec<Disk>, BundleError> {
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
