//! Filesystems: the initramfs basics for init itself, then the container's
//! root (shared from the host, or a rootdisk) with the mounts runc would
//! give it, after youki's `rootfs/`: the root ([`root`]), /dev ([`dev`]),
//! Docker's binds ([`binds`]), runq disks ([`disks`]).

mod binds;
mod dev;
mod disks;
mod root;

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};
use runq_protocol::resolve::{MountView, StdFs};
use runq_protocol::{GuestConfig, ProcessSpec};

pub use disks::{disk_mount_points, release_disks};

pub const ROOT: &str = "/rootfs";
pub const ROOT_C: &std::ffi::CStr = c"/rootfs";

const NOSUID_NOEXEC_NODEV: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NODEV);

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

/// Mount the container root at [`ROOT`] and what runc would mount in it.
pub fn mount_container_root(g: &GuestConfig) -> Result<()> {
    let devices = disks::disk_devices(&g.disks)?;
    root::mount_root(g, &devices)?;
    let r = in_root;
    // /proc is mounted by the workload itself, inside its PID namespace.
    fs::create_dir_all(r("/proc")?).context("creating /proc in the root")?;
    mount_fs(
        "sysfs",
        &r("/sys")?,
        "sysfs",
        NOSUID_NOEXEC_NODEV | MsFlags::MS_RDONLY,
        None,
    )?;
    let staged = binds::stage_binds(&g.mounts.binds, &r)?;
    dev::mount_dev(g, &r("/dev")?, &r)?;
    for t in &g.mounts.tmpfs {
        let (flags, data) = tmpfs_options(&t.options);
        mount_fs("tmpfs", &r(&t.dest)?, "tmpfs", flags, Some(&data))?;
    }
    binds::place_all(&staged, &g.mounts.readonly_binds)?;
    if may_load_modules(&g.process) {
        share_kernel_modules(&r)?;
    }
    disks::link_and_mount(g, &devices, &r)?;
    if let Some(text) = &g.resolv_conf {
        bind_resolv_conf(text, &r)?;
    }
    if g.init.runqenv {
        write_runqenv(&g.process)?;
    }
    if g.root.readonly {
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

/// Only a workload that may load modules needs them (CAP_SYS_MODULE in
/// its bounding set); others get no mount point created.
fn may_load_modules(p: &ProcessSpec) -> bool {
    p.capabilities
        .is_none_or(|c| c.bounding & runq_protocol::Cap::SysModule.bit() != 0)
}

/// runq's generated resolv.conf over Docker's file, in init's namespace
/// (the workload's copies it): Docker's own stays untouched on the host.
fn bind_resolv_conf(text: &str, r: &dyn Fn(&str) -> Result<String>) -> Result<()> {
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
    .context("mounting the generated resolv.conf")
}

/// `/.runqenv`, as the Go runq: readable by the workload's user alone
/// (the environment holds secrets). Not resolved: an image's /.runqenv
/// symlink must not send the secrets elsewhere (remove_file takes the
/// link itself).
fn write_runqenv(p: &ProcessSpec) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("{ROOT}/.runqenv");
    let _ = fs::remove_file(&path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(&path)
        .context("writing /.runqenv")?;
    std::io::Write::write_all(&mut f, runqenv(&p.env).as_bytes()).context("writing /.runqenv")?;
    nix::unistd::fchown(
        std::os::fd::AsRawFd::as_raw_fd(&f),
        Some(nix::unistd::Uid::from_raw(p.uid)),
        Some(nix::unistd::Gid::from_raw(p.gid)),
    )
    .context("chown /.runqenv")
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
    binds::remount_readonly(&target)
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
