//! The container root: the shared one (virtiofs or 9p), or a rootdisk
//! filled once from it, which then takes Docker's bind mounts from it.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};
use runq_protocol::{GuestConfig, Share, ROOTFS_TAG};

use super::{disks, mount_fs, ROOT};

/// Where the shared root goes when a rootdisk takes [`ROOT`]'s place.
const SHARED: &str = "/shared";

/// Marks a rootdisk that already holds the image's content.
const ROOTDISK_MARK: &str = "/.runq-rootdisk";

/// The root at [`ROOT`]: shared, or the rootdisk (filled at its first
/// boot) with the shared root at [`SHARED`] for Docker's bind mounts.
pub(super) fn mount_root(g: &GuestConfig, devices: &HashMap<String, String>) -> Result<()> {
    let Some(rd) = &g.root.rootdisk else {
        return mount_shared_root(g, ROOT);
    };
    mount_shared_root(g, SHARED)?;
    let disk = g
        .disks
        .iter()
        .find(|d| d.id == rd.id)
        .context("the rootdisk is not among the disks")?;
    disks::mount_disk(disk, &devices[&disk.id], ROOT)?;
    if !Path::new(&format!("{ROOT}{ROOTDISK_MARK}")).exists() {
        copy_tree(SHARED, ROOT, &rd.exclude)?;
        fs::write(format!("{ROOT}{ROOTDISK_MARK}"), "")
            .context("marking the rootdisk as filled")?;
    }
    for bind in &g.mounts.binds {
        bind_from_shared(bind)?;
    }
    Ok(())
}

/// The shared container root (virtiofs or 9p) at `target`.
fn mount_shared_root(g: &GuestConfig, target: &str) -> Result<()> {
    match g.root.share {
        Share::Virtiofs => mount_fs(ROOTFS_TAG, target, "virtiofs", MsFlags::empty(), None),
        Share::NineP => {
            let data = format!(
                "trans=virtio,version=9p2000.L,msize=512000,cache={},posixacl",
                g.root.ninep_cache.as_str()
            );
            mount_fs(ROOTFS_TAG, target, "9p", MsFlags::empty(), Some(&data))
        }
    }
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
