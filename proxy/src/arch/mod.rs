//! Everything that differs between host architectures, behind one
//! interface: the QEMU binary and machine, device model names, console and
//! kernel command line. The rest of the proxy never branches on the arch.

mod s390x;
mod x86_64;

use runq_protocol::{Disk, DiskCache, DiskFormat, Share, VmSpec};

/// The accelerator actually used (after probing for `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetArch {
    // Each variant is constructed on its own arch's builds and in tests.
    #[cfg_attr(target_arch = "s390x", allow(dead_code))]
    X86_64,
    #[cfg_attr(not(target_arch = "s390x"), allow(dead_code))]
    S390x,
}

impl TargetArch {
    /// The architecture this proxy was built for.
    pub const fn host() -> Self {
        #[cfg(target_arch = "s390x")]
        {
            TargetArch::S390x
        }
        #[cfg(not(target_arch = "s390x"))]
        {
            TargetArch::X86_64
        }
    }

    /// The guest's architecture: the host's unless the VM description
    /// asks to emulate another.
    pub fn of_guest(guest: Option<runq_protocol::GuestArch>) -> Self {
        match guest {
            None => Self::host(),
            Some(runq_protocol::GuestArch::X86_64) => TargetArch::X86_64,
            Some(runq_protocol::GuestArch::S390x) => TargetArch::S390x,
        }
    }

    fn ops(self) -> &'static dyn ArchOps {
        match self {
            TargetArch::X86_64 => &x86_64::X86_64,
            TargetArch::S390x => &s390x::S390x,
        }
    }
}

/// Per-arch pieces of the QEMU command line.
trait ArchOps {
    fn qemu_binary(&self) -> &'static str;
    fn machine(&self, accel: Accel) -> String;
    fn cpu(&self, accel: Accel) -> &'static str;
    /// Suffix of virtio device models: `device` (mmio), `pci`, `ccw`.
    fn virtio_bus(&self) -> &'static str;
    /// The vhost-user vsock device model.
    fn vsock_device(&self) -> &'static str;
    /// The `-device` value passing vfio-ap mediated device `uuid`, where
    /// the arch has AP (s390x only).
    fn ap_device(&self, _uuid: &str) -> Option<String> {
        None
    }
    /// Arguments that connect the guest console to `chardev`.
    fn console(&self, chardev: &str) -> Vec<String>;
    /// Kernel command line entries specific to this arch and accelerator.
    fn cmdline(&self, accel: Accel, host: &HostInfo) -> Vec<String>;
}

/// Host facts the arguments depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// Host TSC frequency in kHz, where known (x86).
    pub tsc_khz: Option<u64>,
    /// `/dev/vhost-net` is usable: virtio-net in the host kernel.
    pub vhost_net: bool,
}

/// A NIC: the macvtap's tap fd as QEMU will see it, and the MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicArg {
    pub fd: i32,
    pub mac: String,
}

/// Files and sockets the VM is assembled from: the kernel and initrd by
/// path (the tree is world-readable), everything else as descriptors the
/// proxy opened, so QEMU, running as an unprivileged uid, needs to open
/// nothing of the container's.
#[derive(Debug, Clone)]
pub struct VmPaths {
    pub kernel: String,
    pub initrd: String,
    /// The console log, open for writing.
    pub console_fd: i32,
    /// Connected to vhost-device-vsock's socket.
    pub vsock_fd: i32,
    /// Connected to virtiofsd's socket (unused with 9p).
    pub virtiofs_fd: i32,
    /// Each runq disk open read-only (QEMU probes with that) and, unless
    /// the disk is read-only, read-write.
    pub disk_fds: Vec<Vec<i32>>,
    pub nics: Vec<NicArg>,
}

/// QEMU's fd set of the console (`/dev/fdset/N`); disk `i` uses
/// `DISK_FDSET + i`.
const CONSOLE_FDSET: usize = 1;
const DISK_FDSET: usize = 10;

/// The QEMU binary for `arch`.
pub fn qemu_binary(arch: TargetArch) -> &'static str {
    arch.ops().qemu_binary()
}

/// The full QEMU argument list (without the binary): a pure function of
/// the VM description, the arch, the accelerator and host facts.
pub fn qemu_args(
    vm: &VmSpec,
    arch: TargetArch,
    accel: Accel,
    host: &HostInfo,
    paths: &VmPaths,
) -> Vec<String> {
    let ops = arch.ops();
    let bus = ops.virtio_bus();
    let mem = vm.mem_mib;
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));

    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        // QEMU's own seccomp filter: no obsolete calls, no setuid, no
        // fork/exec, no scheduler/NUMA/rlimit changes.
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    ]);
    push(&["-machine", &ops.machine(accel)]);
    let accel_arg = match accel {
        Accel::Kvm => "kvm".to_string(),
        Accel::Tcg => format!("tcg,tb-size={}", runq_protocol::TCG_TB_MIB),
    };
    push(&["-accel", &accel_arg]);
    let cpu = vm
        .cpu_model
        .clone()
        .unwrap_or_else(|| ops.cpu(accel).to_string());
    push(&["-cpu", &cpu]);
    push(&["-smp", &vm.cpus.to_string()]);
    // vhost-user devices need guest RAM in a shareable memfd; pages are
    // only allocated when the guest touches them.
    push(&["-m", &format!("{mem}M")]);
    push(&[
        "-object",
        &format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
        "-machine",
        "memory-backend=mem",
    ]);
    push(&["-kernel", &paths.kernel, "-initrd", &paths.initrd]);

    let mut cmdline: Vec<String> = vec![
        "panic=-1".into(),
        "rdinit=/init".into(),
        "random.trust_cpu=on".into(),
        // Expedited RCU grace periods do not wait on the timer-driven
        // grace-period kthread: under TCG with 20 VMs on 2 cores, 1-2
        // guests in 100 never finished synchronize_rcu() (in a NIC rename)
        // with normal grace periods, QEMU idle, tickless or not.
        "rcupdate.rcu_expedited=1".into(),
    ];
    cmdline.extend(ops.cmdline(accel, host));
    if vm.debug {
        cmdline.extend(["loglevel=7".into(), "runq.debug".into()]);
    } else {
        cmdline.push("quiet".into());
    }
    push(&["-append", &cmdline.join(" ")]);

    push(&[
        "-add-fd",
        &format!("fd={},set={CONSOLE_FDSET}", paths.console_fd),
        "-chardev",
        &format!("file,id=console,path=/dev/fdset/{CONSOLE_FDSET}"),
    ]);
    a.extend(ops.console("console"));
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&[
        "-chardev",
        &format!("socket,id=vsock,fd={}", paths.vsock_fd),
    ]);
    push(&["-device", &format!("{},chardev=vsock", ops.vsock_device())]);
    match vm.share {
        Share::Virtiofs => {
            push(&[
                "-chardev",
                &format!("socket,id=rootfs,fd={}", paths.virtiofs_fd),
            ]);
            push(&[
                "-device",
                &format!(
                    "vhost-user-fs-{bus},chardev=rootfs,tag={}",
                    runq_protocol::ROOTFS_TAG
                ),
            ]);
        }
        Share::NineP => {
            // passthrough: files carry the guest's owners and modes;
            // remap: bind mounts under the root keep distinct inodes.
            push(&[
                "-fsdev",
                &format!(
                    "local,id=rootfs,path={},security_model=passthrough,multidevs=remap",
                    runq_protocol::CONTAINER_ROOTFS
                ),
            ]);
            push(&[
                "-device",
                &format!(
                    "virtio-9p-{bus},fsdev=rootfs,mount_tag={}",
                    runq_protocol::ROOTFS_TAG
                ),
            ]);
        }
    }
    for (i, (d, fds)) in vm.disks.iter().zip(&paths.disk_fds).enumerate() {
        for fd in fds {
            push(&["-add-fd", &format!("fd={fd},set={}", DISK_FDSET + i)]);
        }
        push(&["-drive", &drive_arg(i, d)]);
        push(&[
            "-device",
            &format!(
                "virtio-blk-{bus},drive=disk{i},serial={}",
                runq_protocol::spec::disk_serial(&d.guest.id)
            ),
        ]);
    }
    for (i, nic) in paths.nics.iter().enumerate() {
        let vhost = if host.vhost_net { ",vhost=on" } else { "" };
        push(&["-netdev", &format!("tap,id=net{i},fd={}{vhost}", nic.fd)]);
        push(&[
            "-device",
            &format!("virtio-net-{bus},netdev=net{i},mac={}", nic.mac),
        ]);
    }
    if let Some(dev) = vm.apuuid.as_deref().and_then(|u| ops.ap_device(u)) {
        push(&["-device", &dev]);
    }
    // Guests boot without waiting for entropy (hosts like these run low).
    push(&["-object", "rng-random,id=rng,filename=/dev/urandom"]);
    push(&["-device", &format!("virtio-rng-{bus},rng=rng")]);
    a
}

/// `-drive` for runq disk `i` (its descriptor in fd set DISK_FDSET + i):
/// the image format detected by runq create, the cache mode asked for
/// (none: O_DIRECT with native AIO).
fn drive_arg(i: usize, d: &Disk) -> String {
    let format = match d.format {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
    };
    let mut a = format!(
        "file=/dev/fdset/{},if=none,id=disk{i},format={format},cache={}",
        DISK_FDSET + i,
        d.cache.as_str()
    );
    if d.cache == DiskCache::None {
        a += ",aio=native";
    }
    if d.format == DiskFormat::Qcow2 {
        // No backing file, whatever the header says (runq create refused
        // one it saw; the guest may have written one since).
        a += ",backing=";
    }
    if d.guest.readonly {
        a += ",readonly=on";
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use runq_protocol::{ProcessSpec, Share};

    fn vm() -> VmSpec {
        VmSpec {
            id: "c".into(),
            cpus: 2,
            mem_mib: 300,
            accel: runq_protocol::Accel::Auto,
            share: Share::Virtiofs,
            ninep_cache: runq_protocol::NinePCache::Mmap,
            guest_arch: None,
            apuuid: None,
            kernel: "runq".into(),
            disks: vec![],
            rootdisk: None,
            binds: vec![],
            readonly_binds: vec![],
            sysctls: vec![],
            masked_paths: vec![],
            readonly_paths: vec![],
            cpu_model: None,
            hostname: None,
            process: ProcessSpec::default(),
            readonly_root: false,
            tmpfs: vec![],
            shm_size: None,
            seccomp: vec![],
            privileged: false,
            devices: vec![],
            debug: false,
            systemd: false,
            runqenv: false,
            noexec: false,
            sigusr: false,
            resolv_conf: None,
            host_filters: Default::default(),
            warning: None,
            lasting_netns: false,
        }
    }

    fn paths() -> VmPaths {
        VmPaths {
            kernel: "/kernel".into(),
            initrd: "/initrd".into(),
            console_fd: 5,
            vsock_fd: 6,
            virtiofs_fd: 7,
            disk_fds: vec![vec![8, 9], vec![10]],
            nics: vec![],
        }
    }

    /// The value following `flag`, for each occurrence.
    fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    fn host() -> HostInfo {
        HostInfo {
            tsc_khz: Some(2_999_998),
            vhost_net: false,
        }
    }

    struct Case {
        arch: TargetArch,
        accel: Accel,
        binary: &'static str,
        machine: &'static str,
        cpu: &'static str,
        devices: [&'static str; 3],
        console: &'static str,
        cmdline_has: &'static [&'static str],
        cmdline_lacks: &'static [&'static str],
    }

    const CASES: &[Case] = &[
        Case {
            arch: TargetArch::X86_64,
            accel: Accel::Tcg,
            binary: "qemu-system-x86_64",
            machine: "microvm,x-option-roms=off,isa-serial=on,rtc=on",
            cpu: "max",
            devices: [
                "vhost-user-vsock-device,chardev=vsock",
                "vhost-user-fs-device,chardev=rootfs,tag=rootfs",
                "virtio-rng-device,rng=rng",
            ],
            console: "-serial chardev:console",
            cmdline_has: &[
                "console=ttyS0",
                "tsc_early_khz=2999998",
                "tsc=reliable",
                "rcupdate.rcu_expedited=1",
                "quiet",
            ],
            cmdline_lacks: &[],
        },
        Case {
            arch: TargetArch::X86_64,
            accel: Accel::Kvm,
            binary: "qemu-system-x86_64",
            machine: "microvm,x-option-roms=off,isa-serial=on,rtc=on",
            cpu: "host",
            devices: [
                "vhost-user-vsock-device,chardev=vsock",
                "vhost-user-fs-device,chardev=rootfs,tag=rootfs",
                "virtio-rng-device,rng=rng",
            ],
            console: "-serial chardev:console",
            cmdline_has: &["console=ttyS0"],
            cmdline_lacks: &["tsc_early_khz"],
        },
        Case {
            arch: TargetArch::S390x,
            accel: Accel::Tcg,
            binary: "qemu-system-s390x",
            machine: "s390-ccw-virtio",
            cpu: "max",
            devices: [
                "vhost-user-vsock-pci,chardev=vsock",
                "vhost-user-fs-ccw,chardev=rootfs,tag=rootfs",
                "virtio-rng-ccw,rng=rng",
            ],
            console: "-device sclpconsole,chardev=console",
            cmdline_has: &["console=ttysclp0"],
            cmdline_lacks: &["tsc_early_khz", "ttyS0"],
        },
        Case {
            arch: TargetArch::S390x,
            accel: Accel::Kvm,
            binary: "qemu-system-s390x",
            machine: "s390-ccw-virtio",
            cpu: "host",
            devices: [
                "vhost-user-vsock-pci,chardev=vsock",
                "vhost-user-fs-ccw,chardev=rootfs,tag=rootfs",
                "virtio-rng-ccw,rng=rng",
            ],
            console: "-device sclpconsole,chardev=console",
            cmdline_has: &["console=ttysclp0"],
            cmdline_lacks: &["tsc_early_khz"],
        },
    ];

    #[test]
    fn arguments_per_arch_and_accelerator() {
        for c in CASES {
            let args = qemu_args(&vm(), c.arch, c.accel, &host(), &paths());
            let ctx = format!("{:?}/{:?}", c.arch, c.accel);
            assert_eq!(qemu_binary(c.arch), c.binary, "{ctx}");
            assert_eq!(values(&args, "-machine")[0], c.machine, "{ctx}");
            assert_eq!(values(&args, "-cpu"), [c.cpu], "{ctx}");
            assert_eq!(
                values(&args, "-device")[values(&args, "-device").len() - 3..],
                c.devices,
                "{ctx}"
            );
            assert!(
                args.join(" ").contains(c.console),
                "{ctx}: console {}",
                c.console
            );
            let cmdline = values(&args, "-append")[0];
            for want in c.cmdline_has {
                assert!(
                    cmdline.split(' ').any(|w| w == *want),
                    "{ctx}: {want} in {cmdline}"
                );
            }
            for bad in c.cmdline_lacks {
                assert!(!cmdline.contains(bad), "{ctx}: {bad} in {cmdline}");
            }
        }
    }

    #[test]
    fn nics_per_arch_with_and_without_vhost() {
        let mut p = paths();
        p.nics = vec![
            NicArg {
                fd: 3,
                mac: "02:42:ac:11:00:02".into(),
            },
            NicArg {
                fd: 4,
                mac: "02:42:ac:12:00:05".into(),
            },
        ];
        let args = qemu_args(&vm(), TargetArch::X86_64, Accel::Tcg, &host(), &p);
        assert_eq!(
            values(&args, "-netdev"),
            ["tap,id=net0,fd=3", "tap,id=net1,fd=4"]
        );
        let devices = values(&args, "-device");
        assert!(devices.contains(&"virtio-net-device,netdev=net0,mac=02:42:ac:11:00:02"));
        assert!(devices.contains(&"virtio-net-device,netdev=net1,mac=02:42:ac:12:00:05"));
        let vhost = HostInfo {
            vhost_net: true,
            ..host()
        };
        let args = qemu_args(&vm(), TargetArch::S390x, Accel::Kvm, &vhost, &p);
        assert_eq!(values(&args, "-netdev")[0], "tap,id=net0,fd=3,vhost=on");
        assert!(
            values(&args, "-device").contains(&"virtio-net-ccw,netdev=net0,mac=02:42:ac:11:00:02")
        );
        let none = qemu_args(&vm(), TargetArch::X86_64, Accel::Tcg, &host(), &paths());
        assert!(
            values(&none, "-netdev").is_empty(),
            "--network none: no NIC"
        );
    }

    #[test]
    fn ninep_root_is_served_by_qemu_per_arch() {
        let mut v = vm();
        v.share = Share::NineP;
        for (arch, dev) in [
            (
                TargetArch::X86_64,
                "virtio-9p-device,fsdev=rootfs,mount_tag=rootfs",
            ),
            (
                TargetArch::S390x,
                "virtio-9p-ccw,fsdev=rootfs,mount_tag=rootfs",
            ),
        ] {
            let args = qemu_args(&v, arch, Accel::Tcg, &host(), &paths());
            assert_eq!(
                values(&args, "-fsdev"),
                ["local,id=rootfs,path=/rootfs,security_model=passthrough,multidevs=remap"]
            );
            assert!(values(&args, "-device").contains(&dev), "{arch:?}");
            assert!(
                !args.join(" ").contains("vhost-user-fs"),
                "{arch:?}: no virtiofs device with 9p"
            );
        }
    }

    #[test]
    fn disks_get_format_cache_and_serial_per_arch() {
        use runq_protocol::{DiskFs, GuestDisk};
        let disk = |id: &str, path: &str, cache, format, readonly| Disk {
            guest: GuestDisk {
                id: id.into(),
                fs: Some(DiskFs::Ext4),
                mountpoint: None,
                readonly,
            },
            path: path.into(),
            cache,
            format,
        };
        let mut v = vm();
        v.disks = vec![
            disk(
                "a",
                "/dev/runq/a/none",
                DiskCache::None,
                DiskFormat::Raw,
                false,
            ),
            disk(
                "b-2",
                "/dev/runq/b,x",
                DiskCache::Writeback,
                DiskFormat::Qcow2,
                true,
            ),
        ];
        let args = qemu_args(&v, TargetArch::X86_64, Accel::Tcg, &host(), &paths());
        assert_eq!(
            values(&args, "-drive"),
            [
                "file=/dev/fdset/10,if=none,id=disk0,format=raw,cache=none,aio=native",
                "file=/dev/fdset/11,if=none,id=disk1,format=qcow2,cache=writeback,backing=,readonly=on",
            ]
        );
        // The proxy's descriptors: read-only and read-write for disk0,
        // read-only only for the read-only disk1; the console's first.
        assert_eq!(
            values(&args, "-add-fd"),
            ["fd=5,set=1", "fd=8,set=10", "fd=9,set=10", "fd=10,set=11"]
        );
        let devices = values(&args, "-device");
        assert!(devices.contains(&"virtio-blk-device,drive=disk0,serial=a"));
        assert!(devices.contains(&"virtio-blk-device,drive=disk1,serial=b-2"));
        let args = qemu_args(&v, TargetArch::S390x, Accel::Tcg, &host(), &paths());
        assert!(values(&args, "-device").contains(&"virtio-blk-ccw,drive=disk0,serial=a"));
    }

    #[test]
    fn ap_passthrough_only_on_s390x() {
        let mut v = vm();
        v.apuuid = Some("e2a4c3b0-4f6a-4c3e-9a52-1d0b1c2d3e4f".into());
        let args = qemu_args(&v, TargetArch::S390x, Accel::Kvm, &host(), &paths());
        assert!(values(&args, "-device").contains(
            &"vfio-ap,sysfsdev=/sys/devices/vfio_ap/matrix/e2a4c3b0-4f6a-4c3e-9a52-1d0b1c2d3e4f"
        ));
        let args = qemu_args(&v, TargetArch::X86_64, Accel::Kvm, &host(), &paths());
        assert!(!args.join(" ").contains("vfio-ap"));
    }

    #[test]
    fn tcg_translation_cache_is_capped() {
        let args = qemu_args(&vm(), TargetArch::X86_64, Accel::Tcg, &host(), &paths());
        assert_eq!(values(&args, "-accel"), ["tcg,tb-size=32"]);
        let args = qemu_args(&vm(), TargetArch::X86_64, Accel::Kvm, &host(), &paths());
        assert_eq!(values(&args, "-accel"), ["kvm"]);
    }

    #[test]
    fn sizing_memory_backend_and_boot_files() {
        let args = qemu_args(&vm(), TargetArch::X86_64, Accel::Tcg, &host(), &paths());
        assert_eq!(values(&args, "-smp"), ["2"]);
        assert_eq!(values(&args, "-m"), ["300M"]);
        assert!(
            values(&args, "-object").contains(&"memory-backend-memfd,id=mem,size=300M,share=on")
        );
        assert_eq!(values(&args, "-machine")[1], "memory-backend=mem");
        assert_eq!(values(&args, "-kernel"), ["/kernel"]);
        assert_eq!(values(&args, "-initrd"), ["/initrd"]);
        assert!(args.contains(&"-nodefaults".to_string()));
        assert_eq!(
            values(&args, "-sandbox"),
            ["on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
        );
        assert!(
            args.contains(&"-no-reboot".to_string()),
            "a guest panic must end QEMU"
        );
    }

    #[test]
    fn cpu_model_and_debug_are_honoured() {
        let mut v = vm();
        v.cpu_model = Some("Skylake-Client,-hle".into());
        v.debug = true;
        let args = qemu_args(&v, TargetArch::X86_64, Accel::Tcg, &host(), &paths());
        assert_eq!(values(&args, "-cpu"), ["Skylake-Client,-hle"]);
        let cmdline = values(&args, "-append")[0];
        assert!(cmdline.contains("loglevel=7") && !cmdline.contains("quiet"));
    }

    #[test]
    fn unknown_tsc_frequency_leaves_it_to_the_kernel() {
        let args = qemu_args(
            &vm(),
            TargetArch::X86_64,
            Accel::Tcg,
            &HostInfo::default(),
            &paths(),
        );
        assert!(!values(&args, "-append")[0].contains("tsc_early_khz"));
    }
}
