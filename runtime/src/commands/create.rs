//! `runq create` / `runq run`: rewrite the bundle, then let the lower
//! runtime create the container around the proxy.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use oci_spec::runtime::Spec;

use super::{lower::exec_lower, verb_args};
use crate::accel;
use crate::bundle::{self, HostDevice, HostFacts, PROXY_PATH};
use crate::cli::{Cli, CreateArgs, RunArgs};
use crate::disks::ImageRefusal;
use crate::log::Logger;
use crate::options;

pub fn create(cli: &Cli, log: &Logger, verb: &[OsString]) -> Result<i32> {
    let c = CreateArgs::try_parse_from(verb_args(verb))?.create;
    prepare_bundle(cli, log, &c.bundle, &c.container_id)?;
    exec_lower(cli, verb)
}

pub fn run(cli: &Cli, log: &Logger, verb: &[OsString]) -> Result<i32> {
    let r = RunArgs::try_parse_from(verb_args(verb))?.run;
    prepare_bundle(cli, log, &r.bundle, &r.container_id)?;
    exec_lower(cli, verb)
}

/// Check that the tree has the proxy and the chosen kernel, and that the
/// kernel can mount the root the way `settings` asks.
fn check_tree(tree: &Path, settings: &options::Settings) -> Result<()> {
    let incomplete = |p: &Path| {
        anyhow!(
            "{} is missing: the QEMU tree is incomplete (run `make install`)",
            p.display()
        )
    };
    let proxy = tree.join(PROXY_PATH.trim_start_matches('/'));
    if !proxy.is_file() {
        return Err(incomplete(&proxy));
    }
    let kdir = tree.join("kernels").join(&settings.kernel);
    for f in ["kernel", "initrd"] {
        let p = kdir.join(f);
        if p.is_file() {
            continue;
        }
        if settings.kernel != runq_protocol::DEFAULT_KERNEL && !kdir.is_dir() {
            let installed: Vec<String> = fs::read_dir(tree.join("kernels"))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n != runq_protocol::DEFAULT_KERNEL)
                        .collect()
                })
                .unwrap_or_default();
            bail!(
                "guest kernel {:?} is not installed in {}/kernels (installed: {})",
                settings.kernel,
                tree.display(),
                installed.join(", ")
            );
        }
        return Err(incomplete(&p));
    }
    if settings.share == runq_protocol::Share::NineP {
        let features = fs::read_to_string(kdir.join("features")).unwrap_or_default();
        if !features.split_whitespace().any(|f| f == "9p") {
            let version = fs::read_to_string(kdir.join("version")).unwrap_or_default();
            bail!(
                "share 9p: guest kernel {:?} ({}) has no 9p; use virtiofs, or a kernel with 9p (--kernel runq)",
                settings.kernel,
                version.trim()
            );
        }
    }
    Ok(())
}

/// Rewrite `<bundle>/config.json` in place; Docker's original and the VM
/// description go to `<bundle>/runq/`, which vanishes with the bundle.
fn prepare_bundle(cli: &Cli, log: &Logger, bundle: &Path, id: &str) -> Result<()> {
    let bundle =
        fs::canonicalize(bundle).with_context(|| format!("bundle {}", bundle.display()))?;
    let config = bundle.join("config.json");
    let runq_dir = bundle.join("runq");
    if runq_dir.exists() {
        bail!("bundle {} was already prepared by runq", bundle.display());
    }
    let spec = Spec::load(&config).with_context(|| format!("{}", config.display()))?;
    if bundle::is_cri_sandbox(&spec, id)? {
        return Ok(()); // the pause container: runc runs it unchanged
    }
    let env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    let mut settings = options::resolve(&cli.opts, &env, bundle::docker_sizing(&spec))?;
    check_tree(&cli.opts.qemu_tree, &settings)?;
    let (accel, warning) = accel::choose(settings.accel)?;
    settings.accel = accel;
    // The Go runq's example daemon.json says --cpuargs host: QEMU would
    // refuse it after start under TCG; here it fails with one line.
    if accel == runq_protocol::Accel::Tcg
        && settings
            .cpu_model
            .as_deref()
            .is_some_and(|m| m == "host" || m.starts_with("host,"))
    {
        bail!(
            "--cpuargs host needs KVM, and guests run under TCG here: use --cpuargs max, or none"
        );
    }
    if cli.opts.nestedvm {
        settings.cpu_model = Some(accel::nested_cpu_model(
            accel,
            settings.cpu_model.as_deref(),
            accel::NestedHost::probe(),
        )?);
    }
    if let Some(w) = &warning {
        log.warn(&format!("runq: {id}: {w}"));
    }
    let host = host_facts(&cli.opts.qemu_tree, accel, settings.apuuid.as_deref())?;
    let mut rewritten = bundle::rewrite(
        spec,
        id,
        &bundle,
        &cli.opts.qemu_tree,
        &settings,
        &host,
        // runc's --debug, or RUNQ_DEBUG=1 for one container: guest kernel
        // messages and runq-init's progress on the console.
        cli.global.debug || options::env_lookup(&env, "RUNQ_DEBUG") == Some("1"),
    )?;

    // The same line on the container's stderr, where `docker run` shows it.
    rewritten.vm.warning = warning.map(|w| {
        format!("{w} (an emulated guest, with no hardware isolation boundary; runtime option --accel tcg accepts this silently, --accel kvm refuses it)")
    });
    fs::create_dir(&runq_dir).with_context(|| format!("creating {}", runq_dir.display()))?;
    let written = (|| -> Result<()> {
        // The proxy's root: only mount points, all filled by runc.
        let root = bundle.join(bundle::PROXY_ROOT);
        fs::create_dir(&root)?;
        for d in bundle::proxy_root_dirs(&host.tree_dirs) {
            fs::create_dir(root.join(d))?;
        }
        fs::copy(&config, runq_dir.join("config.orig.json"))?;
        fs::write(
            runq_dir.join(runq_protocol::VM_SPEC_FILE),
            rewritten.vm.to_json()?,
        )?;
        let tmp = bundle.join("config.json.runq-tmp");
        rewritten.spec.save(&tmp)?;
        fs::rename(&tmp, &config)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&runq_dir);
        let _ = fs::remove_file(bundle.join("config.json.runq-tmp"));
        return Err(e.context(format!(
            "writing the rewritten bundle in {}",
            bundle.display()
        )));
    }
    Ok(())
}

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

fn host_facts(tree: &Path, accel: runq_protocol::Accel, apuuid: Option<&str>) -> Result<HostFacts> {
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
        bounding_caps,
        devices,
        is_host_netns,
        netns_users,
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

/// How many processes have a thread in the network namespace at `path`
/// (every task, not only thread-group leaders: a thread may have joined
/// it with setns); unreadable paths count as `usize::MAX`: refused rather
/// than guessed.
fn netns_users(path: &Path) -> usize {
    let Ok(procs) = fs::read_dir("/proc") else {
        return usize::MAX;
    };
    if fs::metadata(path).is_err() {
        return usize::MAX;
    }
    let numeric = |e: &fs::DirEntry| {
        e.file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
    };
    procs
        .flatten()
        .filter(numeric)
        .filter(|p| {
            let Ok(tasks) = fs::read_dir(p.path().join("task")) else {
                return false; // gone meanwhile
            };
            tasks
                .flatten()
                .any(|t| same_file(&t.path().join("ns/net"), path))
        })
        .count()
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
