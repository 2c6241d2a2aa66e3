//! Filesystems: the initramfs basics for init itself, then the container's
//! root (shared from the host) with the mounts runc would give it.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use runq_protocol::{wire::StartRequest, ROOTFS_TAG};

pub const ROOT: &str = "/rootfs";
pub const ROOT_C: &std::ffi::CStr = c"/rootfs";

fn mount_fs(
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

/// Mount the container root at [`ROOT`] and what runc would mount in it.
pub fn mount_container_root(start: &StartRequest) -> Result<()> {
    mount_fs(ROOTFS_TAG, ROOT, "virtiofs", MsFlags::empty(), None)?;
    let r = |p: &str| format!("{ROOT}{p}");
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    // /proc is mounted by the workload itself, inside its PID namespace.
    fs::create_dir_all(r("/proc")).context("creating /proc in the root")?;
    mount_fs(
        "sysfs",
        &r("/sys"),
        "sysfs",
        nosuid | MsFlags::MS_RDONLY,
        None,
    )?;
    mount_fs(
        "tmpfs",
        &r("/dev"),
        "tmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=755,size=65536k"),
    )?;
    populate_dev(&r("/dev"))?;
    mount_fs(
        "devpts",
        &r("/dev/pts"),
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = format!("mode=1777,size={}", start.shm_size.unwrap_or(64 << 20));
    mount_fs("shm", &r("/dev/shm"), "tmpfs", nosuid, Some(&shm))?;
    mount_fs("mqueue", &r("/dev/mqueue"), "mqueue", nosuid, None)?;
    for t in &start.tmpfs {
        let (flags, data) = tmpfs_options(&t.options);
        mount_fs("tmpfs", &r(&t.dest), "tmpfs", flags, Some(&data))?;
    }
    if let Some(text) = &start.resolv_conf {
        // Over Docker's file, in init's namespace (the workload's copies
        // it): Docker's own stays untouched on the host.
        let generated = "/resolv.conf";
        fs::write(generated, text).context("writing the generated resolv.conf")?;
        let target = r("/etc/resolv.conf");
        if !Path::new(&target).exists() {
            fs::create_dir_all(r("/etc"))?;
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
        fs::write(r("/.runqenv"), runqenv(&start.process.env)).context("writing /.runqenv")?;
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
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(*major, *minor),
        )
        .with_context(|| format!("mknod {}", path.display()))?;
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
