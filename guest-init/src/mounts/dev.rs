//! The container's /dev as runc makes it: a tmpfs with the standard
//! nodes, Docker's `--device` nodes (all the guest's with
//! `--privileged`), devpts, /dev/shm, /dev/mqueue.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::MsFlags;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use runq_protocol::GuestConfig;

use super::{mount_fs, NOSUID_NOEXEC_NODEV};

/// /dev of the root (`dev`, resolved by the caller) and its submounts.
pub(super) fn mount_dev(
    g: &GuestConfig,
    dev: &str,
    r: &dyn Fn(&str) -> Result<String>,
) -> Result<()> {
    mount_fs(
        "tmpfs",
        dev,
        "tmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=755,size=65536k"),
    )?;
    populate_dev(dev)?;
    for d in &g.devices {
        make_device(d, &r(&d.path)?)?;
    }
    if g.privileged {
        // --privileged: every device of the guest, as runc gives every
        // device of the host.
        copy_device_nodes(Path::new("/dev"), Path::new(dev))?;
    }
    mount_fs(
        "devpts",
        &r("/dev/pts")?,
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = format!("mode=1777,size={}", g.mounts.shm_size.unwrap_or(64 << 20));
    mount_fs(
        "shm",
        &r("/dev/shm")?,
        "tmpfs",
        NOSUID_NOEXEC_NODEV,
        Some(&shm),
    )?;
    mount_fs(
        "mqueue",
        &r("/dev/mqueue")?,
        "mqueue",
        NOSUID_NOEXEC_NODEV,
        None,
    )
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
