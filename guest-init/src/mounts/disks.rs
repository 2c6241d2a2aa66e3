//! runq disks in the guest: found by their virtio serial, linked under
//! /dev/disk/by-runq-id, mounted where asked, released at the end.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::MsFlags;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use runq_protocol::{DiskFs, GuestConfig, GuestDisk};

use super::{in_root, mount_fs, ROOT};

/// Where runq disks are mounted in init's namespace, the rootdisk last.
pub fn disk_mount_points(g: &GuestConfig) -> Vec<String> {
    let mut v: Vec<String> = g
        .disks
        .iter()
        .filter(|d| g.root.rootdisk.as_ref().is_none_or(|rd| rd.id != d.id))
        .filter_map(|d| {
            d.mountpoint
                .as_ref()
                .map(|m| in_root(m).unwrap_or_else(|_| format!("{ROOT}{m}")))
        })
        .collect();
    if g.root.rootdisk.is_some() {
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
pub(super) fn disk_devices(disks: &[GuestDisk]) -> Result<HashMap<String, String>> {
    let mut found = HashMap::new();
    if disks.is_empty() {
        return Ok(found);
    }
    for entry in fs::read_dir("/sys/block").context("reading /sys/block")? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Ok(serial) = fs::read_to_string(format!("/sys/block/{name}/serial")) {
            found.insert(serial.trim().to_string(), name);
        }
    }
    let mut by_id = HashMap::new();
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

/// Every disk linked in the container's /dev; those with a mount point
/// (but the rootdisk, already the root) mounted there.
pub(super) fn link_and_mount(
    g: &GuestConfig,
    devices: &HashMap<String, String>,
    r: &dyn Fn(&str) -> Result<String>,
) -> Result<()> {
    link_disks(&g.disks, devices, &r("/dev")?)?;
    for d in &g.disks {
        let is_root = g.root.rootdisk.as_ref().is_some_and(|rd| rd.id == d.id);
        if let (Some(mnt), false) = (&d.mountpoint, is_root) {
            mount_disk(d, &devices[&d.id], &r(mnt)?)?;
        }
    }
    Ok(())
}

/// The device node in the container's /dev and the
/// `/dev/disk/by-runq-id/<id> -> ../../vdX` link.
fn link_disks(disks: &[GuestDisk], devices: &HashMap<String, String>, dev: &str) -> Result<()> {
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
pub(super) fn mount_disk(d: &GuestDisk, name: &str, target: &str) -> Result<()> {
    let fs_type =
        d.fs.context("a disk without filesystem cannot be mounted")?;
    let group = match fs_type {
        DiskFs::Ext2 | DiskFs::Ext3 | DiskFs::Ext4 => "ext4",
        other => other.as_str(),
    };
    crate::modules::load_all(&runq_protocol::tree::fs_modules_list(group))?;
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
