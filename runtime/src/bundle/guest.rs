//! What the guest is told, from the OCI spec: its process (credentials,
//! capabilities, limits), mounts beyond the root, sysctls, devices.

use super::*;

/// What the guest is told, from the OCI spec and the settings (mounts,
/// disks and devices are added as the bundle is rewritten).
pub(super) fn guest_config(
    spec: &Spec,
    process: &oci_spec::runtime::Process,
    readonly_root: bool,
    settings: &Settings,
) -> Result<GuestConfig, BundleError> {
    let linux = linux_of(spec);
    let sysctls: std::collections::BTreeMap<String, String> = linux
        .and_then(|l| l.sysctl().clone())
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    if let Some(bad) = sysctls.keys().find(|k| !is_sysctl_name(k)) {
        return Err(BundleError::BadSysctl(bad.clone()));
    }
    let arch = settings.guest_arch.unwrap_or(GuestArch::host());
    Ok(GuestConfig {
        process: process_spec(process)?,
        hostname: spec.hostname().clone(),
        root: RootConfig {
            share: settings.share,
            ninep_cache: settings.ninep_cache,
            readonly: readonly_root,
            rootdisk: settings.rootdisk.clone(),
        },
        mounts: MountConfig {
            binds: Vec::new(),
            readonly_binds: Vec::new(),
            tmpfs: settings
                .tmpfs
                .iter()
                .map(|dest| TmpfsMount {
                    dest: dest.clone(),
                    options: vec!["nosuid".into(), "nodev".into(), "mode=1777".into()],
                })
                .collect(),
            shm_size: shm_size(spec),
            masked_paths: linux
                .and_then(|l| l.masked_paths().clone())
                .unwrap_or_default(),
            readonly_paths: linux
                .and_then(|l| l.readonly_paths().clone())
                .unwrap_or_default(),
        },
        disks: Vec::new(),
        devices: Vec::new(),
        privileged: is_privileged(spec),
        sysctls: sysctls.into_iter().collect(),
        seccomp: match linux.and_then(|l| l.seccomp().as_ref()) {
            None => Vec::new(),
            Some(profile) => crate::seccomp::compile(profile, arch)?,
        },
        memory_bytes: u64::from(settings.mem_mib) << 20,
        init: InitOptions {
            systemd: settings.systemd,
            runqenv: settings.runqenv,
            sigusr: settings.sigusr,
        },
        resolv_conf: settings.resolv_conf.clone(),
    })
}

/// `net.ipv4.ip_forward`: dot-separated, no empty or path-like parts.
pub(super) fn is_sysctl_name(k: &str) -> bool {
    k.split('.').all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// Docker's `--privileged` as it shows in the spec: a device rule that
/// allows every device.
pub(super) fn is_privileged(spec: &Spec) -> bool {
    linux_of(spec)
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().as_ref())
        .is_some_and(|rules| {
            rules.iter().any(|r| {
                r.allow()
                    && matches!(r.typ(), None | Some(LinuxDeviceType::A))
                    && r.major().is_none()
                    && r.minor().is_none()
            })
        })
}

/// Docker's `--shm-size`, from the /dev/shm tmpfs it asks for.
pub(super) fn shm_size(spec: &Spec) -> Option<u64> {
    let m = spec
        .mounts()
        .as_ref()?
        .iter()
        .find(|m| m.destination() == Path::new("/dev/shm"))?;
    m.options()
        .iter()
        .flatten()
        .find_map(|o| o.strip_prefix("size="))
        .and_then(parse_size)
}

/// `100663296`, `64k`, `96m`, `1g` (mount(8) size syntax) in bytes.
pub(super) fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()?.to_ascii_lowercase() {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// An OCI process (the container's, or an exec'd one) as the guest runs it.
pub fn process_spec(process: &oci_spec::runtime::Process) -> Result<ProcessSpec, BundleError> {
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(BundleError::NoArgs);
    }
    if !process.cwd().is_absolute() {
        return Err(BundleError::BadCwd(process.cwd().clone()));
    }
    Ok(ProcessSpec {
        args,
        env: process.env().clone().unwrap_or_default(),
        cwd: process.cwd().to_string_lossy().into_owned(),
        uid: process.user().uid(),
        gid: process.user().gid(),
        additional_gids: process.user().additional_gids().clone().unwrap_or_default(),
        terminal: process.terminal().unwrap_or(false),
        rlimits: guest_rlimits(process)?,
        capabilities: process.capabilities().as_ref().map(cap_sets).transpose()?,
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
    })
}

/// OCI capability sets as bit masks for the guest (an absent set is
/// empty, as runc treats it).
pub(super) fn cap_sets(
    c: &oci_spec::runtime::LinuxCapabilities,
) -> Result<runq_protocol::CapSets, BundleError> {
    let mask = |set: &Option<oci_spec::runtime::Capabilities>| -> Result<u64, BundleError> {
        let mut m = 0u64;
        for cap in set.iter().flatten() {
            // oci-spec names it without the prefix (`CHOWN`), as its
            // strum Display; the caps crate knows the kernel's number.
            let name = format!("CAP_{cap}");
            let parsed: caps::Capability =
                name.parse().map_err(|_| BundleError::BadCapability(name))?;
            m |= parsed.bitmask();
        }
        Ok(m)
    };
    Ok(runq_protocol::CapSets {
        bounding: mask(c.bounding())?,
        effective: mask(c.effective())?,
        permitted: mask(c.permitted())?,
        inheritable: mask(c.inheritable())?,
        ambient: mask(c.ambient())?,
    })
}

/// The workload's rlimits, for the guest (the proxy keeps the shim's).
pub(super) fn guest_rlimits(
    p: &oci_spec::runtime::Process,
) -> Result<Vec<(u32, u64, u64)>, BundleError> {
    p.rlimits()
        .iter()
        .flatten()
        .map(|r| {
            let name = serde_json::to_value(r.typ())
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let res = runq_protocol::rlimit_resource(&name).ok_or(BundleError::BadRlimit(name))?;
            Ok((res, r.soft(), r.hard()))
        })
        .collect()
}

/// A character or block device of the spec as the guest makes it (FIFOs
/// and other types are left out: Docker's --device does not make them).
pub(super) fn guest_device(
    d: &oci_spec::runtime::LinuxDevice,
) -> Option<runq_protocol::spec::DeviceNode> {
    let block = match d.typ() {
        LinuxDeviceType::B => true,
        LinuxDeviceType::C | LinuxDeviceType::U => false,
        _ => return None,
    };
    Some(runq_protocol::spec::DeviceNode {
        path: d.path().to_string_lossy().into_owned(),
        block,
        major: d.major(),
        minor: d.minor(),
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

/// Disk ids are unique, and a rootdisk names one with a filesystem.
pub(super) fn check_disks(disks: &[Disk], rootdisk: Option<&RootDisk>) -> Result<(), BundleError> {
    disks::check_unique(disks.iter().map(|d| d.guest.id.as_str()))?;
    if let Some(root) = rootdisk {
        match disks.iter().find(|d| d.guest.id == root.id) {
            None => return Err(BundleError::RootDiskUnknown(root.id.clone())),
            Some(d) if d.guest.fs.is_none() => {
                return Err(BundleError::RootDiskNoFs(root.id.clone()))
            }
            Some(_) => {}
        }
    }
    Ok(())
}
