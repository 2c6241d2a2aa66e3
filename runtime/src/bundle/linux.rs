//! The proxy container's `linux` section: no workload seccomp or sysctls,
//! Docker's default masked paths, QEMU's devices only, memory room for
//! the VM, the helpers' seccomp filters.

use super::*;

/// Docker's default masked and read-only paths, for the proxy's container.
pub(super) const PROXY_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

pub(super) const PROXY_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The proxy's container: no seccomp profile or sysctls (QEMU needs
/// syscalls the workload's profile forbids, which the guest enforces; the
/// sysctls are the guest's too), Docker's default masked and read-only
/// paths whatever Docker asked (`--privileged` asks for none), runq
/// disks and QEMU's devices only, memory room for the VM. Returns
/// Docker's `--device` nodes for the guest, which makes them with the
/// same numbers (naming the guest kernel's device); `--privileged` gives
/// the guest all of its own instead.
pub(super) fn confine_proxy_linux(
    linux: &mut oci_spec::runtime::Linux,
    guest: &GuestConfig,
    disks: &[Disk],
    settings: &Settings,
    host: &HostFacts,
) -> Result<Vec<runq_protocol::spec::DeviceNode>, BundleError> {
    linux.set_seccomp(None);
    linux.set_sysctl(None);
    linux.set_masked_paths(Some(
        PROXY_MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
    ));
    linux.set_readonly_paths(Some(
        PROXY_READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
    ));
    let mut devices = linux.devices().clone().unwrap_or_default();
    let guest_devices = if guest.privileged {
        Vec::new()
    } else {
        devices
            .iter()
            .filter(|d| !d.path().starts_with(disks::DISK_PREFIX))
            .filter_map(guest_device)
            .collect()
    };
    devices.retain(|d| d.path().starts_with(disks::DISK_PREFIX));
    devices.extend(
        host.devices
            .iter()
            .map(device_node)
            .collect::<Result<Vec<_>, _>>()?,
    );
    linux.set_devices(Some(devices.clone()));
    if let Some(res) = linux.resources_mut() {
        if let Some(mem) = res.memory_mut() {
            make_room_for_the_vm(mem, settings.mem_mib, host.accel);
        }
        let mut rules = res.devices().clone().unwrap_or_default();
        if guest.privileged {
            rules = privileged_disk_rules(disks, &devices)?;
        }
        rules.extend(
            host.devices
                .iter()
                .map(device_rule)
                .collect::<Result<Vec<_>, _>>()?,
        );
        res.set_devices(Some(rules));
    }
    Ok(guest_devices)
}

/// `--privileged` allows every device: the proxy's container gets only
/// its runq disks' (block) devices.
pub(super) fn privileged_disk_rules(
    disks: &[Disk],
    devices: &[oci_spec::runtime::LinuxDevice],
) -> Result<Vec<oci_spec::runtime::LinuxDeviceCgroup>, BundleError> {
    let mut rules = vec![LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()?];
    for d in disks.iter().filter_map(|d| {
        devices
            .iter()
            .find(|n| n.path().to_string_lossy() == d.path)
    }) {
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::B)
                .major(d.major())
                .minor(d.minor())
                .access("rwm")
                .build()?,
        );
    }
    Ok(rules)
}

/// QEMU's devices (/dev/kvm, /dev/vhost-net...): the proxy opens them as
/// root, QEMU through its group.
pub(super) fn device_node(d: &HostDevice) -> Result<LinuxDevice, BundleError> {
    Ok(LinuxDeviceBuilder::default()
        .path(d.path.clone())
        .typ(LinuxDeviceType::C)
        .major(d.major)
        .minor(d.minor)
        .file_mode(0o660u32)
        .uid(0u32)
        .gid(runq_protocol::QEMU_GID)
        .build()?)
}

pub(super) fn device_rule(d: &HostDevice) -> Result<LinuxDeviceCgroup, BundleError> {
    Ok(LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(LinuxDeviceType::C)
        .major(d.major)
        .minor(d.minor)
        .access("rwm")
        .build()?)
}

/// The helpers' filters, each compiled once per container (QEMU's 9p
/// server also creates the guest's device nodes).
pub(super) fn host_filters(
    share: runq_protocol::Share,
) -> Result<runq_protocol::HostFilters, BundleError> {
    let strict = crate::seccomp::host_filter(&[])?;
    let qemu = match share {
        runq_protocol::Share::NineP => crate::seccomp::host_filter(&["mknod", "mknodat"])?,
        runq_protocol::Share::Virtiofs => strict.clone(),
    };
    Ok(runq_protocol::HostFilters { qemu, strict })
}

/// Host memory a VM needs beyond its guest RAM: QEMU itself and the
/// helpers (~60 MiB measured), plus under TCG the translation cache,
/// which QEMU is told to cap at [`runq_protocol::TCG_TB_MIB`].
pub fn vm_overhead_mib(accel: runq_protocol::Accel) -> i64 {
    match accel {
        runq_protocol::Accel::Kvm => 128,
        runq_protocol::Accel::Tcg => 128 + i64::from(runq_protocol::TCG_TB_MIB),
    }
}

/// Docker's `--memory` sized the guest; the container's cgroup, which
/// also holds QEMU, gets the VM's overhead on top so that the VM is not
/// OOM-killed when the guest uses what it was given.
pub(super) fn make_room_for_the_vm(
    mem: &mut oci_spec::runtime::LinuxMemory,
    mem_mib: u32,
    accel: runq_protocol::Accel,
) {
    let Some(limit) = mem.limit().filter(|l| *l > 0) else {
        return;
    };
    let needed = (i64::from(mem_mib) + vm_overhead_mib(accel)) << 20;
    let new_limit = limit.max(needed);
    mem.set_limit(Some(new_limit));
    if let Some(swap) = mem.swap().filter(|s| *s > 0) {
        mem.set_swap(Some(swap.max(new_limit)));
    }
}
