//! Docker's bind mounts (volumes, /etc/hosts...): staged before /dev and
//! the tmpfs mounts would hide them, then each placed where runc puts it.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::MsFlags;

/// Where binds wait, in init's initramfs, while /dev and the tmpfs
/// mounts go up.
const BIND_STAGE: &str = "/.runq-binds";

/// Each bind's content (a file or directory in the shared root, or a
/// rootdisk's mount of it) bound to a staging place: (destination, its
/// path in the root, the staging path). A destination the host did not
/// deliver is left out with a log line.
pub(super) fn stage_binds(
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

/// The staged binds at their targets (`/dev/termination-log`, `/run/x`
/// under `--tmpfs /run` too), each a mount point of its own, read-only
/// where asked (the host refuses writes anyway).
pub(super) fn place_all(staged: &[(String, String, String)], readonly: &[String]) -> Result<()> {
    for (bind, target, stage) in staged {
        place_bind(stage, target)?;
        if readonly.contains(bind) {
            remount_readonly(target)?;
        }
    }
    Ok(())
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
pub(super) fn remount_readonly(target: &str) -> Result<()> {
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
