//! Filesystems: the initramfs basics for init itself, then the container's
//! root (shared from the host) with the mounts runc would give it.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use runq_protocol::resolve::{MountView, StdFs};
use runq_protocol::{wire::StartRequest, DiskFs, GuestDisk, Share, ROOTFS_TAG};

pub const ROOT: &str = "/rootfs";
pub const ROOT_C: &std::ffi::CStr = c"/rootfs";

pub fn mount_fs(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    fs::create_dir_all(target).with_context(|| format!("creating mount point {target}"))?;
    mount(Some(src), target, Some(fstype), flags, data)
        .with_context(|| format!("mounting {fstype} on {target}"))
}

pub fn mount_initramfs_basics() -> Result<()> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount_fs("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, None)?;
    mount_fs("proc", "/proc", "proc", nosuid | MsFlags::MS_NODEV, None)?;
    mount_fs("sysfs", "/sys", "sysfs", nosuid | MsFlags::MS_NODEV, None)?;
    Ok(())
}

/// `p` in the container's root as runc resolves a mount destination in a
/// container's rootfs: the image's symlinks followed inside the root, `..`
/// clamped at it (a tmpfs at `/abs -> /usr/bin` lands on the image's
/// /usr/bin, never on init's own).
pub fn in_root(p: &str) -> Result<String> {
    let resolved = MountView::new(ROOT, &StdFs)
        .resolve(Path::new(p))
        .with_context(|| format!("mount destination {p}"))?;
    Ok(format!("{ROOT}{}", resolved.display()))
}

/// Where the shared root goes when a rootdisk takes [`ROOT`]'s place.
const SHARED: &str = "/shared";
/// Marks a rootdisk that already holds the image's content.
const ROOTDISK_MARK: &str = "/.runq-rootdisk";

/// The shared container root (virtiofs or 9p) at `target`.
fn mount_shared_root(start: &StartRequest, target: &str) -> Result<()> {
    match start.share {
        Share::Virtiofs => mount_fs(ROOTFS_TAG, target, "virtiofs", MsFlags::empty(), None),
        Share::NineP => {
            let data = format!(
                "trans=virtio,version=9p2000.L,msize=512000,cache={},posixacl",
                start.ninep_cache.as_str()
            );
            mount_fs(ROOTFS_TAG, target, "9p", MsFlags::empty(), Some(&data))
        }
    }
}

/// Mount the container root at [`ROOT`] and what runc would mount in it.
pub fn mount_container_root(start: &StartRequest) -> Result<()> {
    let devices = disk_devices(&start.disks)?;
    match &start.rootdisk {
        None => mount_shared_root(start, ROOT)?,
        Some(rd) => {
            // The disk becomes the root; the shared root fills it once and
            // still provides Docker's bind mounts (volumes, /etc/hosts...).
            mount_shared_root(start, SHARED)?;
            let disk = start
                .disks
                .iter()
                .find(|d| d.id == rd.id)
                .context("the rootdisk is not among the disks")?;
            mount_disk(disk, &devices[&disk.id], ROOT)?;
            if !Path::new(&format!("{ROOT}{ROOTDISK_MARK}")).exists() {
                copy_tree(SHARED, ROOT, &rd.exclude)?;
                fs::write(format!("{ROOT}{ROOTDISK_MARK}"), "")
                    .context("marking the rootdisk as filled")?;
            }
            for b in &start.binds {
                bind_from_shared(b)?;
            }
        }
    }
    let r = in_root;
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    // /proc is mounted by the workload itself, inside its PID namespace.
    fs::create_dir_all(r("/proc")?).context("creating /proc in the root")?;
    mount_fs(
        "sysfs",
        &r("/sys")?,
        "sysfs",
        nosuid | MsFlags::MS_RDONLY,
        None,
    )?;
    let staged = stage_binds(&start.binds, &r)?;
    mount_fs(
        "tmpfs",
        &r("/dev")?,
        "tmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=755,size=65536k"),
    )?;
    populate_dev(&r("/dev")?)?;
    for d in &start.devices {
        make_device(d, &r(&d.path)?)?;
    }
    if start.privileged {
        // --privileged: every device of the guest, as runc gives every
        // device of the host.
        copy_device_nodes(Path::new("/dev"), Path::new(&r("/dev")?))?;
    }
    mount_fs(
        "devpts",
        &r("/dev/pts")?,
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = format!("mode=1777,size={}", start.shm_size.unwrap_or(64 << 20));
    mount_fs("shm", &r("/dev/shm")?, "tmpfs", nosuid, Some(&shm))?;
    mount_fs("mqueue", &r("/dev/mqueue")?, "mqueue", nosuid, None)?;
    for t in &start.tmpfs {
        let (flags, data) = tmpfs_options(&t.options);
        mount_fs("tmpfs", &r(&t.dest)?, "tmpfs", flags, Some(&data))?;
    }
    // Docker's bind mounts, staged before /dev and the tmpfs mounts hid
    // them, now each a mount point of its own where runc puts it
    // (`/dev/termination-log`, `/run/x` under `--tmpfs /run` too),
    // read-only where asked (the host refuses writes anyway).
    for (b, target, stage) in &staged {
        place_bind(stage, target)?;
        if start.readonly_binds.contains(b) {
            remount_readonly(target)?;
        }
    }
    // Only a workload that may load modules needs them (CAP_SYS_MODULE,
    // bit 16, in its bounding set); others get no mount point created.
    let may_load_modules = start
        .process
        .capabilities
        .is_none_or(|c| c.bounding & (1 << 16) != 0);
    if may_load_modules {
        share_kernel_modules(&r)?;
    }
    link_disks(&start.disks, &devices, &r("/dev")?)?;
    for d in &start.disks {
        let is_root = start.rootdisk.as_ref().is_some_and(|rd| rd.id == d.id);
        if let (Some(mnt), false) = (&d.mountpoint, is_root) {
            mount_disk(d, &devices[&d.id], &r(mnt)?)?;
        }
    }
    if let Some(text) = &start.resolv_conf {
        // Over Docker's file, in init's namespace (the workload's copies
        // it): Docker's own stays untouched on the host.
        let generated = "/resolv.conf";
        fs::write(generated, text).context("writing the generated resolv.conf")?;
        let target = r("/etc/resolv.conf")?;
        if !Path::new(&target).exists() {
            fs::create_dir_all(r("/etc")?)?;
            fs::write(&target, "")?;
        }
        mount(
            Some(generated),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .context("mounting the generated resolv.conf")?;
    }
    if start.runqenv {
        // As the Go runq: readable by the workload's user alone (the
        // environment holds secrets).
        use std::os::unix::fs::OpenOptionsExt;
        // Not resolved: an image's /.runqenv symlink must not send the
        // secrets elsewhere (remove_file takes the link itself).
        let path = format!("{ROOT}/.runqenv");
        let _ = fs::remove_file(&path);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .context("writing /.runqenv")?;
        std::io::Write::write_all(&mut f, runqenv(&start.process.env).as_bytes())
            .context("writing /.runqenv")?;
        nix::unistd::fchown(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            Some(nix::unistd::Uid::from_raw(start.process.uid)),
            Some(nix::unistd::Gid::from_raw(start.process.gid)),
        )
        .context("chown /.runqenv")?;
    }
    if start.readonly_root {
        // Mount points exist now; from here on the root is read-only, as
        // runc does it.
        mount(
            None::<&str>,
            ROOT,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .context("remounting the root read-only")?;
    }
    Ok(())
}

/// The guest kernel's modules (shipped in the initrd) at
/// /lib/modules/<release> in the container, read-only, so that a workload
/// with CAP_SYS_MODULE can modprobe them. Skipped where the image's root
/// cannot take the mount point (read-only image without the directory).
fn share_kernel_modules(r: &dyn Fn(&str) -> Result<String>) -> Result<()> {
    let release = nix::sys::utsname::uname()?
        .release()
        .to_string_lossy()
        .into_owned();
    let src = format!("/lib/modules/{release}");
    let target = r(&src)?;
    if !Path::new(&src).is_dir() || fs::create_dir_all(&target).is_err() {
        return Ok(());
    }
    mount(
        Some(src.as_str()),
        target.as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("binding {src}"))?;
    remount_readonly(&target)
}

/// Where runq disks are mounted in init's namespace, the rootdisk last.
pub fn disk_mount_points(start: &StartRequest) -> Vec<String> {
    let mut v: Vec<String> = start
        .disks
        .iter()
        .filter(|d| start.rootdisk.as_ref().is_none_or(|rd| rd.id != d.id))
        .filter_map(|d| {
            d.mountpoint
                .as_ref()
                .map(|m| in_root(m).unwrap_or_else(|_| format!("{ROOT}{m}")))
        })
        .collect();
    if start.rootdisk.is_some() {
        v.push(ROOT.to_string());
    }
    v
}

/// Unmount the disks (detaching the root's submounts with it), so that
/// their filesystems are written back and marked clean.
pub fn release_disks(targets: &[String]) {
    for t in targets.iter().rev() {
        if let Err(e) = nix::mount::umount2(t.as_str(), nix::mount::MntFlags::MNT_DETACH) {
            crate::log(&format!("unmounting disk at {t}: {e}"));
        }
    }
}

/// Each disk's block device name (`vdb`...), by disk id, found by the
/// virtio serial the proxy derived from the id.
fn disk_devices(disks: &[GuestDisk]) -> Result<std::collections::HashMap<String, String>> {
    let mut found = std::collections::HashMap::new();
    if disks.is_empty() {
        return Ok(found);
    }
    for entry in fs::read_dir("/sys/block").context("reading /sys/block")? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Ok(serial) = fs::read_to_string(format!("/sys/block/{name}/serial")) {
            found.insert(serial.trim().to_string(), name);
        }
    }
    let mut by_id = std::collections::HashMap::new();
    for d in disks {
        let serial = runq_protocol::spec::disk_serial(&d.id);
        let Some(name) = found.remove(&serial) else {
            anyhow::bail!(
                "runq disk {:?}: no virtio block device with serial {serial:?}",
                d.id
            );
        };
        by_id.insert(d.id.clone(), name);
    }
    Ok(by_id)
}

/// The device node in the container's /dev and the
/// `/dev/disk/by-runq-id/<id> -> ../../vdX` link.
fn link_disks(
    disks: &[GuestDisk],
    devices: &std::collections::HashMap<String, String>,
    dev: &str,
) -> Result<()> {
    for d in disks {
        let name = &devices[&d.id];
        let node = format!("{dev}/{name}");
        if !Path::new(&node).exists() {
            let (major, minor) = block_dev_numbers(name)?;
            mknod(
                node.as_str(),
                SFlag::S_IFBLK,
                Mode::from_bits_truncate(0o660),
                makedev(major, minor),
            )
            .with_context(|| format!("creating {node}"))?;
        }
        let dir = format!("{dev}/disk/by-runq-id");
        fs::create_dir_all(&dir).with_context(|| format!("creating {dir}"))?;
        symlink(format!("../../{name}"), format!("{dir}/{}", d.id))
            .with_context(|| format!("linking {dir}/{}", d.id))?;
    }
    Ok(())
}

fn block_dev_numbers(name: &str) -> Result<(u64, u64)> {
    let text = fs::read_to_string(format!("/sys/block/{name}/dev"))
        .with_context(|| format!("reading /sys/block/{name}/dev"))?;
    let (ma, mi) = text.trim().split_once(':').context("malformed dev file")?;
    Ok((ma.parse()?, mi.parse()?))
}

/// Mount disk `d` (device `name`) at `target` with its filesystem; the
/// filesystem's modules are loaded first where the kernel has them as
/// modules (Debian's).
fn mount_disk(d: &GuestDisk, name: &str, target: &str) -> Result<()> {
    let fs_type =
        d.fs.context("a disk without filesystem cannot be mounted")?;
    let group = match fs_type {
        DiskFs::Ext2 | DiskFs::Ext3 | DiskFs::Ext4 => "ext4",
        other => other.as_str(),
    };
    crate::modules::load_all(&format!("/modules.{group}.list"))?;
    // The device node in init's own /dev (devtmpfs).
    let source = format!("/dev/{name}");
    let flags = if d.readonly {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    mount_fs(&source, target, fs_type.as_str(), flags, None)
        .with_context(|| format!("runq disk {:?}", d.id))
}

/// First boot of a rootdisk: the image's content, minus `exclude`, onto
/// the disk (busybox cp -a keeps owners, modes, links and devices).
fn copy_tree(from: &str, to: &str, exclude: &[String]) -> Result<()> {
    for entry in fs::read_dir(from).with_context(|| format!("reading {from}"))? {
        let name = entry?.file_name();
        let rel = format!("/{}", name.to_string_lossy());
        if exclude.contains(&rel) {
            continue;
        }
        let status = std::process::Command::new("/bin/busybox")
            .args(["cp", "-a", &format!("{from}{rel}"), to])
            .status()
            .context("running busybox cp")?;
        if !status.success() {
            anyhow::bail!("copying {rel} onto the rootdisk failed ({status})");
        }
    }
    // Deeper exclusions: copied with their parent, removed again.
    for x in exclude.iter().filter(|x| x[1..].contains('/')) {
        let p = format!("{to}{x}");
        if let Ok(meta) = fs::symlink_metadata(&p) {
            let r = if meta.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.with_context(|| format!("removing excluded {x}"))?;
        }
    }
    Ok(())
}

/// A Docker bind mount (volume, /etc/hosts...) from the shared root onto
/// the rootdisk, at the same place.
fn bind_from_shared(dest: &str) -> Result<()> {
    let src = format!("{SHARED}{dest}");
    let target = format!("{ROOT}{dest}");
    let meta = fs::metadata(&src).with_context(|| format!("bind mount source {src}"))?;
    if !Path::new(&target).exists() {
        if meta.is_dir() {
            fs::create_dir_all(&target)?;
        } else {
            if let Some(parent) = Path::new(&target).parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(&target, "")?;
        }
    }
    mount(
        Some(src.as_str()),
        target.as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("binding {dest} from the shared root"))
}

/// Recreate the device nodes under `from` (init's devtmpfs) in `to`,
/// keeping what is there already.
fn copy_device_nodes(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = fs::symlink_metadata(&src)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&dst)?;
            copy_device_nodes(&src, &dst)?;
            continue;
        }
        let kind = if ft.is_block_device() {
            SFlag::S_IFBLK
        } else if ft.is_char_device() {
            SFlag::S_IFCHR
        } else {
            continue;
        };
        if dst.symlink_metadata().is_ok() {
            continue;
        }
        node(&dst, kind, meta.mode() & 0o7777, meta.rdev())?;
    }
    Ok(())
}

/// Where binds wait, in init's initramfs, while /dev and the tmpfs
/// mounts go up.
const BIND_STAGE: &str = "/.runq-binds";

/// Each bind's content (a file or directory in the shared root, or a
/// rootdisk's mount of it) bound to a staging place: (destination, its
/// path in the root, the staging path). A destination the host did not
/// deliver is left out with a log line.
fn stage_binds(
    binds: &[String],
    r: &dyn Fn(&str) -> Result<String>,
) -> Result<Vec<(String, String, String)>> {
    let mut staged = Vec::new();
    for (i, b) in binds.iter().enumerate() {
        let target = r(b)?;
        let Ok(meta) = fs::metadata(&target) else {
            crate::log(&format!("bind mount {b}: not in the shared root, left out"));
            continue;
        };
        let stage = format!("{BIND_STAGE}/{i}");
        fs::create_dir_all(BIND_STAGE).context("creating the bind staging directory")?;
        if meta.is_dir() {
            fs::create_dir(&stage)
        } else {
            fs::File::create(&stage).map(drop)
        }
        .with_context(|| format!("creating {stage}"))?;
        nix::mount::mount(
            Some(target.as_str()),
            stage.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("bind mount {b}"))?;
        staged.push((b.clone(), target, stage));
    }
    Ok(staged)
}

/// Move a staged bind to its destination, making the mount point (a file
/// or directory, as the bind is) where a tmpfs or /dev now hides it.
fn place_bind(stage: &str, target: &str) -> Result<()> {
    if fs::symlink_metadata(target).is_err() {
        if let Some(parent) = Path::new(target).parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        if Path::new(stage).is_dir() {
            fs::create_dir(target)
        } else {
            fs::File::create(target).map(drop)
        }
        .with_context(|| format!("creating mount point {target}"))?;
    }
    nix::mount::mount(
        Some(stage),
        target,
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .with_context(|| format!("moving the bind mount to {target}"))
}

/// Read-only, keeping the mount's nosuid/nodev/noexec (a bind remount
/// that drops a locked flag is refused).
fn remount_readonly(target: &str) -> Result<()> {
    let st = nix::sys::statvfs::statvfs(target).with_context(|| format!("statvfs {target}"))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (f, m) in [
        (nix::sys::statvfs::FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (nix::sys::statvfs::FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (nix::sys::statvfs::FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if st.flags().contains(f) {
            flags |= m;
        }
    }
    nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .with_context(|| format!("remounting {target} read-only"))
}

/// A device node with exactly `mode` (mknod's is cut by the umask).
fn node(path: &Path, kind: SFlag, mode: u32, dev: u64) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    mknod(path, kind, Mode::from_bits_truncate(mode), dev)
        .with_context(|| format!("mknod {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// One of Docker's `--device` nodes at `path` (resolved in the root): the
/// guest's device of those numbers, with the spec's mode and owner.
fn make_device(d: &runq_protocol::spec::DeviceNode, path: &str) -> Result<()> {
    let path = Path::new(path);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let _ = fs::remove_file(path); // runc replaces what is there too
    let kind = if d.block {
        SFlag::S_IFBLK
    } else {
        SFlag::S_IFCHR
    };
    let (major, minor) = (
        u64::try_from(d.major).context("device major")?,
        u64::try_from(d.minor).context("device minor")?,
    );
    node(path, kind, d.mode, makedev(major, minor))?;
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(d.uid)),
        Some(nix::unistd::Gid::from_raw(d.gid)),
    )
    .with_context(|| format!("chown {}", path.display()))
}

/// The device nodes and links runc creates in a container's /dev.
fn populate_dev(dev: &str) -> Result<()> {
    const NODES: &[(&str, u64, u64)] = &[
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ];
    for (name, major, minor) in NODES {
        let path = Path::new(dev).join(name);
        node(&path, SFlag::S_IFCHR, 0o666, makedev(*major, *minor))?;
    }
    let links = [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (name, target) in links {
        symlink(target, Path::new(dev).join(name))
            .with_context(|| format!("linking /dev/{name}"))?;
    }
    Ok(())
}

/// Docker's tmpfs options split into mount flags and tmpfs data.
fn tmpfs_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "ro" => flags |= MsFlags::MS_RDONLY,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "dirsync" => flags |= MsFlags::MS_DIRSYNC,
            // runc/crun extension: copy the image's content up; the guest
            // sees an empty tmpfs, like runc without it.
            "rw" | "suid" | "dev" | "exec" | "tmpcopyup" => {}
            // Propagation flags mean nothing inside the guest.
            p if p.ends_with("private") || p.ends_with("shared") || p.ends_with("slave") => {}
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// `/.runqenv`: the environment as shell `export KEY="value"` lines.
fn runqenv(env: &[String]) -> String {
    let mut out = String::new();
    for kv in env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let mut quoted = String::with_capacity(v.len());
        for c in v.chars() {
            if matches!(c, '\\' | '"' | '$' | '`') {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        out.push_str(&format!("export {k}=\"{quoted}\"\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{runqenv, tmpfs_options};
    use nix::mount::MsFlags;

    #[test]
    fn tmpfs_options_split_into_flags_and_data() {
        let o: Vec<String> = [
            "rw",
            "nosuid",
            "nodev",
            "noexec",
            "rprivate",
            "size=65536k",
            "strictatime",
            "mode=1770",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (flags, data) = tmpfs_options(&o);
        let want =
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_STRICTATIME;
        assert_eq!(flags, want);
        assert_eq!(data, "size=65536k,mode=1770");
    }

    #[test]
    fn runqenv_quotes_for_the_shell() {
        let env = vec![
            "PATH=/bin".to_string(),
            "TRICKY=a \"b\" $HOME `x` \\".to_string(),
            "EMPTY=".to_string(),
        ];
        assert_eq!(
            runqenv(&env),
            "export PATH=\"/bin\"\nexport TRICKY=\"a \\\"b\\\" \\$HOME \\`x\\` \\\\\"\nexport EMPTY=\"\"\n"
        );
    }
}
