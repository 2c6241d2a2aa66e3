//! QEMU: its command line built from small typed parts (after Kata's
//! `cmdline_generator.rs`), and the running QEMU with its console.
//!
//! Every part is a value that knows its own arguments; [`command_line`]
//! lays them out in order, a pure function of the VM description, the
//! host facts and the descriptor layout, so that `runq-proxy qemu-args
//! VM.json` prints exactly what the proxy runs. What differs per arch
//! comes from [`crate::arch`].

use std::path::{Path, PathBuf};
use std::process::Child;

use runq_protocol::{tree, Accel, DiskCache, DiskFormat, Drive, GuestArch, Machine, Share};

use crate::arch::{self, ArchOps};

/// Host facts the arguments depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// Host TSC frequency in kHz, where known (x86).
    pub tsc_khz: Option<u64>,
    /// `/dev/vhost-net` is usable: virtio-net in the host kernel.
    pub vhost_net: bool,
}

impl HostInfo {
    /// This host's.
    pub fn probe() -> Self {
        HostInfo {
            tsc_khz: tsc_khz(),
            vhost_net: Path::new("/dev/vhost-net").exists(),
        }
    }
}

/// A NIC: the tap's fd as QEMU will see it, and the MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicArg {
    pub fd: i32,
    pub mac: String,
}

/// Where QEMU finds what the VM is assembled from: the kernel and initrd
/// by path (the tree is world-readable), everything else as descriptors
/// the proxy opened, so QEMU, unprivileged, opens nothing of the
/// container's. [`FdLayout::new`] numbers them; the proxy hands its open
/// files over in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdLayout {
    pub kernel: String,
    pub initrd: String,
    pub nics: Vec<NicArg>,
    /// The console log, open for writing.
    pub console_fd: i32,
    /// Connected to vhost-device-vsock's socket.
    pub vsock_fd: i32,
    /// Connected to virtiofsd's socket (virtiofs only).
    pub virtiofs_fd: Option<i32>,
    /// Each drive open read-only (QEMU probes with that) and, unless the
    /// drive is read-only, read-write.
    pub drive_fds: Vec<Vec<i32>>,
    /// QMP, one end of a socket pair (template and clone shapes).
    pub qmp_fd: Option<i32>,
    /// Guest RAM as a file QEMU maps shared (template and clone shapes):
    /// the template's `ram`, or a clone's memfd filled from it.
    pub ram_fd: Option<i32>,
    /// The template's device state, open for reading (clone shape).
    pub state_fd: Option<i32>,
}

/// The first descriptor QEMU gets beyond stdio.
const FIRST_FD: i32 = 3;

impl FdLayout {
    /// The layout for a VM with these NICs (MACs, in order): taps first,
    /// then the console, the vsock backend, virtiofsd, the drives.
    pub fn new(kernel: &str, share: Share, drives: &[Drive], macs: &[String]) -> Self {
        let mut next = FIRST_FD;
        let mut take = || {
            next += 1;
            next - 1
        };
        let nics = macs
            .iter()
            .map(|mac| NicArg {
                fd: take(),
                mac: mac.clone(),
            })
            .collect();
        let console_fd = take();
        let vsock_fd = take();
        let virtiofs_fd = (share == Share::Virtiofs).then(&mut take);
        let drive_fds = drives
            .iter()
            .map(|d| {
                let mut fds = vec![take()];
                if !d.readonly {
                    fds.push(take());
                }
                fds
            })
            .collect();
        FdLayout {
            kernel: format!("/{}", tree::kernel_file(kernel, tree::KERNEL)),
            initrd: format!("/{}", tree::kernel_file(kernel, tree::INITRD)),
            nics,
            console_fd,
            vsock_fd,
            virtiofs_fd,
            drive_fds,
            qmp_fd: None,
            ram_fd: None,
            state_fd: None,
        }
    }

    /// The same, then QMP, guest RAM and (for a clone) the template's
    /// device state.
    pub fn with_template(mut self, clone: bool) -> Self {
        let next = self.last_fd() + 1;
        self.qmp_fd = Some(next);
        self.ram_fd = Some(next + 1);
        if clone {
            self.state_fd = Some(next + 2);
        }
        self
    }

    fn last_fd(&self) -> i32 {
        let drives = self.drive_fds.iter().flatten().copied();
        drives
            .chain(self.virtiofs_fd)
            .chain([self.console_fd, self.vsock_fd])
            .max()
            .unwrap_or(FIRST_FD - 1)
    }
}

/// What [`command_line`] leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The VM as the proxy runs it.
    Full,
    /// The same machine, kernel and command line with no device that
    /// needs a helper or a descriptor (vsock, root share, drives, NICs;
    /// the console to nowhere), booting to a guest that powers off at
    /// once: `make bench`'s bare-QEMU floor.
    Floor,
    /// The template machine (hot-plug capable) booting to a guest that
    /// waits for its devices, with QMP and the console on descriptors:
    /// what is saved as the VM template.
    Template,
    /// The template machine again, paused and waiting for the template's
    /// state (`-incoming defer`), with every backend (helpers' sockets,
    /// taps, drives) but no device of its own: [`hotplug_devices`] are
    /// added through QMP once the state is in.
    Clone,
}

impl Shape {
    fn is_template(self) -> bool {
        matches!(self, Shape::Template | Shape::Clone)
    }
}

/// The full QEMU argument list (without the binary).
pub fn command_line(
    machine: &Machine,
    share: Share,
    drives: &[Drive],
    host: &HostInfo,
    fds: &FdLayout,
    shape: Shape,
) -> Vec<String> {
    let ops = arch::ops(machine.arch);
    let bus = bus(ops, shape);
    let mut parts: Vec<Box<dyn Part>> = vec![
        Box::new(Base),
        Box::new(MachinePart {
            machine,
            ops,
            template: shape.is_template(),
        }),
        Box::new(MemoryBackend {
            mib: machine.mem_mib,
            file_fd: fds.ram_fd.filter(|_| shape.is_template()),
        }),
        Box::new(KernelPayload {
            fds,
            cmdline: kernel_cmdline(machine, ops, host, shape),
        }),
    ];
    match shape {
        Shape::Full | Shape::Clone => {
            parts.push(Box::new(AddFd {
                fd: fds.console_fd,
                set: CONSOLE_FDSET,
            }));
            parts.push(Box::new(Chardev::FdsetFile {
                id: "console",
                set: CONSOLE_FDSET,
            }));
        }
        Shape::Template => parts.push(Box::new(Chardev::Socket {
            id: "console",
            fd: fds.console_fd,
        })),
        Shape::Floor => parts.push(Box::new(Chardev::Null { id: "console" })),
    }
    parts.push(Box::new(Console { ops }));
    let devices = device_parts(machine, share, drives, host, fds, bus);
    match shape {
        Shape::Full => parts.extend(devices.into_iter().map(|d| Box::new(d) as Box<dyn Part>)),
        Shape::Clone => parts.extend(
            devices
                .into_iter()
                .map(|d| Box::new(Backends(d)) as Box<dyn Part>),
        ),
        Shape::Floor | Shape::Template => {}
    }
    parts.push(Box::new(Rng { bus }));
    if let Some(fd) = fds.qmp_fd.filter(|_| shape.is_template()) {
        parts.push(Box::new(Qmp { fd }));
    }
    if shape == Shape::Clone {
        parts.push(Box::new(Incoming));
    }
    parts.iter().flat_map(|p| p.args()).collect()
}

/// The devices a [`Shape::Clone`] gets through QMP once the template's
/// state is in, in the order they are added: the vsock device last, so
/// that the guest (which dials the moment it appears) finds the others
/// probed before it (the guest's ACPI hot-plug handler probes slots in
/// order, and each device takes the next free slot).
pub fn hotplug_devices(
    machine: &Machine,
    share: Share,
    drives: &[Drive],
    host: &HostInfo,
    fds: &FdLayout,
) -> Vec<Props> {
    let ops = arch::ops(machine.arch);
    let mut devices: Vec<Props> =
        device_parts(machine, share, drives, host, fds, bus(ops, Shape::Clone))
            .iter()
            .filter_map(DevicePart::device)
            .collect();
    devices.rotate_left(1);
    devices
}

/// The virtio bus: the arch's, or PCI on the template machine.
fn bus(ops: &dyn ArchOps, shape: Shape) -> &'static str {
    if shape.is_template() {
        "pci"
    } else {
        ops.virtio_bus()
    }
}

/// Every device of the container's VM, each with its backend: vsock, the
/// root share, drives, NICs, an AP device.
fn device_parts<'a>(
    machine: &'a Machine,
    share: Share,
    drives: &'a [Drive],
    host: &HostInfo,
    fds: &'a FdLayout,
    bus: &'a str,
) -> Vec<DevicePart<'a>> {
    let ops = arch::ops(machine.arch);
    // The template machine is PCI whatever the arch's own bus.
    let vsock = if bus == ops.virtio_bus() {
        ops.vsock_device()
    } else {
        "vhost-user-vsock-pci"
    };
    let mut parts = vec![DevicePart::Vsock {
        fd: fds.vsock_fd,
        model: vsock,
    }];
    parts.push(DevicePart::Root(RootShare { share, fds, bus }));
    for (i, (d, set_fds)) in drives.iter().zip(&fds.drive_fds).enumerate() {
        parts.push(DevicePart::Drive(DrivePart {
            index: i,
            drive: d,
            fds: set_fds,
            bus,
        }));
    }
    for (i, nic) in fds.nics.iter().enumerate() {
        parts.push(DevicePart::Nic(NicPart {
            index: i,
            nic,
            vhost: host.vhost_net,
            bus,
        }));
    }
    if let Some(dev) = machine.apuuid.as_deref().and_then(|u| ops.ap_device(u)) {
        parts.push(DevicePart::Bare(dev));
    }
    parts
}

/// A device and what it needs on the host side.
enum DevicePart<'a> {
    Vsock {
        fd: i32,
        model: &'static str,
    },
    Root(RootShare<'a>),
    Drive(DrivePart<'a>),
    Nic(NicPart<'a>),
    /// A device given whole, needing no backend.
    Bare(String),
}

impl DevicePart<'_> {
    /// The backend's arguments (`-chardev`, `-netdev`, `-drive`...).
    fn backend(&self) -> Vec<String> {
        match self {
            DevicePart::Vsock { fd, .. } => Chardev::Socket {
                id: "vsock",
                fd: *fd,
            }
            .args(),
            DevicePart::Root(r) => r.backend(),
            DevicePart::Drive(d) => d.backend(),
            DevicePart::Nic(n) => n.backend(),
            DevicePart::Bare(_) => vec![],
        }
    }

    /// The device itself (`None`: a whole `-device` string, no props).
    fn device(&self) -> Option<Props> {
        match self {
            DevicePart::Vsock { model, .. } => Some(Props::new(model).with("chardev", "vsock")),
            DevicePart::Root(r) => Some(r.device()),
            DevicePart::Drive(d) => Some(d.device()),
            DevicePart::Nic(n) => Some(n.device()),
            DevicePart::Bare(_) => None,
        }
    }
}

impl Part for DevicePart<'_> {
    fn args(&self) -> Vec<String> {
        let mut a = self.backend();
        match (self, self.device()) {
            (_, Some(d)) => a.extend(Device(d).args()),
            (DevicePart::Bare(d), None) => a.extend(Device(d).args()),
            _ => {}
        }
        a
    }
}

/// Only the backends of a device, for a clone to hot-plug it.
struct Backends<'a>(DevicePart<'a>);

impl Part for Backends<'_> {
    fn args(&self) -> Vec<String> {
        self.0.backend()
    }
}

/// QMP on a descriptor.
struct Qmp {
    fd: i32,
}

impl Part for Qmp {
    fn args(&self) -> Vec<String> {
        let mut a = Chardev::Socket {
            id: "qmp",
            fd: self.fd,
        }
        .args();
        a.extend(args(&["-mon", "chardev=qmp,mode=control"]));
        a
    }
}

/// Paused, waiting for the template's state through QMP.
struct Incoming;

impl Part for Incoming {
    fn args(&self) -> Vec<String> {
        args(&["-S", "-incoming", "defer"])
    }
}

/// The QEMU binary for a guest arch.
pub fn binary(arch: GuestArch) -> &'static str {
    arch::ops(arch).qemu_binary()
}

/// QEMU's fd set of the console (`/dev/fdset/N`); drive `i` uses
/// `DRIVE_FDSET + i`.
const CONSOLE_FDSET: usize = 1;
const DRIVE_FDSET: usize = 10;

fn kernel_cmdline(
    machine: &Machine,
    ops: &dyn ArchOps,
    host: &HostInfo,
    shape: Shape,
) -> Vec<String> {
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
    cmdline.extend(ops.cmdline(machine.accel, host, shape.is_template()));
    if machine.debug {
        cmdline.extend(["loglevel=7".into(), "runq.debug".into()]);
    } else {
        cmdline.push("quiet".into());
    }
    match shape {
        Shape::Floor => cmdline.push("runq.poweroff".into()),
        Shape::Template | Shape::Clone => cmdline.push("runq.template".into()),
        Shape::Full => {}
    }
    cmdline
}

/// A piece of the command line.
trait Part {
    fn args(&self) -> Vec<String>;
}

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A `-device`/`-object`/`-chardev`/`-drive` value: a model (or
/// backend), then `key=value` properties. Values are escaped as QEMU's
/// option parser wants (`,` doubled), so no value can add a property of
/// its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    model: Option<String>,
    props: Vec<(String, String)>,
}

impl Props {
    pub fn new(model: &str) -> Self {
        Props {
            model: Some(model.to_string()),
            props: vec![],
        }
    }

    pub fn with(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        self.props.push((key.to_string(), value.to_string()));
        self
    }

    /// The same device as QMP's `device_add` arguments (no escaping: JSON
    /// strings carry any value).
    pub fn to_qmp(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        if let Some(model) = &self.model {
            m.insert("driver".into(), model.clone().into());
        }
        for (k, v) in &self.props {
            m.insert(k.clone(), v.clone().into());
        }
        serde_json::Value::Object(m)
    }
}

impl std::fmt::Display for Props {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items = self.model.iter().cloned().chain(
            self.props
                .iter()
                .map(|(k, v)| format!("{k}={}", v.replace(',', ",,"))),
        );
        f.write_str(&items.collect::<Vec<_>>().join(","))
    }
}

/// No defaults, no display, no reboot, and QEMU's own seccomp filter: no
/// obsolete calls, no setuid, no fork/exec, no scheduler/NUMA/rlimit
/// changes.
struct Base;

impl Part for Base {
    fn args(&self) -> Vec<String> {
        args(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        ])
    }
}

/// Machine type, accelerator, CPU model and count.
struct MachinePart<'a> {
    machine: &'a Machine,
    ops: &'a dyn ArchOps,
    /// The arch's template machine rather than its fastest-booting one.
    template: bool,
}

impl Part for MachinePart<'_> {
    fn args(&self) -> Vec<String> {
        let m = self.machine;
        let accel = match m.accel {
            Accel::Kvm => "kvm".to_string(),
            Accel::Tcg => format!("tcg,tb-size={}", runq_protocol::TCG_TB_MIB),
        };
        // A CPU model is QEMU's own option string (`Skylake-Client,-hle`).
        let cpu = m
            .cpu_model
            .clone()
            .unwrap_or_else(|| self.ops.cpu(m.accel).to_string());
        let (machine, bios) = match self.ops.template_machine().filter(|_| self.template) {
            Some(t) => (
                t.machine.to_string(),
                vec!["-bios".to_string(), t.bios.to_string()],
            ),
            None => (self.ops.machine(m.accel), vec![]),
        };
        let mut a = bios;
        a.extend(args(&[
            "-machine",
            &machine,
            "-accel",
            &accel,
            "-cpu",
            &cpu,
            "-smp",
            &m.cpus.to_string(),
        ]));
        a
    }
}

/// Guest RAM in a shareable memfd (vhost-user devices map it); pages are
/// only allocated when the guest touches them. A template's and a
/// clone's RAM is a file QEMU got as a descriptor instead: the template's
/// RAM lands in the cache as a file (not in the migration stream, with
/// `x-ignore-shared`), a clone maps a memfd the proxy filled from it.
struct MemoryBackend {
    mib: u32,
    file_fd: Option<i32>,
}

impl Part for MemoryBackend {
    fn args(&self) -> Vec<String> {
        let size = format!("{}M", self.mib);
        let backend = match self.file_fd {
            None => Props::new("memory-backend-memfd"),
            Some(fd) => {
                Props::new("memory-backend-file").with("mem-path", format!("/proc/self/fd/{fd}"))
            }
        };
        let backend = backend
            .with("id", "mem")
            .with("size", &size)
            .with("share", "on");
        args(&[
            "-m",
            &size,
            "-object",
            &backend.to_string(),
            "-machine",
            "memory-backend=mem",
        ])
    }
}

/// Direct kernel boot.
struct KernelPayload<'a> {
    fds: &'a FdLayout,
    cmdline: Vec<String>,
}

impl Part for KernelPayload<'_> {
    fn args(&self) -> Vec<String> {
        args(&[
            "-kernel",
            &self.fds.kernel,
            "-initrd",
            &self.fds.initrd,
            "-append",
            &self.cmdline.join(" "),
        ])
    }
}

/// A descriptor QEMU reaches as `/dev/fdset/<set>`.
struct AddFd {
    fd: i32,
    set: usize,
}

impl Part for AddFd {
    fn args(&self) -> Vec<String> {
        args(&["-add-fd", &format!("fd={},set={}", self.fd, self.set)])
    }
}

enum Chardev {
    /// Written to a file QEMU got as a descriptor.
    FdsetFile { id: &'static str, set: usize },
    /// A connected socket QEMU got as a descriptor.
    Socket { id: &'static str, fd: i32 },
    /// Discarded.
    Null { id: &'static str },
}

impl Part for Chardev {
    fn args(&self) -> Vec<String> {
        let props = match self {
            Chardev::FdsetFile { id, set } => Props::new("file")
                .with("id", id)
                .with("path", format!("/dev/fdset/{set}")),
            Chardev::Socket { id, fd } => Props::new("socket").with("id", id).with("fd", fd),
            Chardev::Null { id } => Props::new("null").with("id", id),
        };
        args(&["-chardev", &props.to_string()])
    }
}

/// The guest console on chardev `console`, as the arch attaches it.
struct Console<'a> {
    ops: &'a dyn ArchOps,
}

impl Part for Console<'_> {
    fn args(&self) -> Vec<String> {
        self.ops.console("console")
    }
}

/// A virtio device model on the arch's bus (`virtio-blk-` + `ccw`...).
fn on_bus(model: &str, bus: &str) -> Props {
    Props::new(&format!("{model}-{bus}"))
}

/// A `-device` given whole.
struct Device<T: std::fmt::Display>(T);

impl<T: std::fmt::Display> Part for Device<T> {
    fn args(&self) -> Vec<String> {
        args(&["-device", &self.0.to_string()])
    }
}

/// The container root: virtiofsd's socket, or QEMU's own 9p server.
struct RootShare<'a> {
    share: Share,
    fds: &'a FdLayout,
    bus: &'a str,
}

impl RootShare<'_> {
    fn backend(&self) -> Vec<String> {
        match (self.share, self.fds.virtiofs_fd) {
            (Share::Virtiofs, Some(fd)) => Chardev::Socket { id: "rootfs", fd }.args(),
            // passthrough: files carry the guest's owners and modes;
            // remap: bind mounts under the root keep distinct inodes.
            _ => {
                let fsdev = Props::new("local")
                    .with("id", "rootfs")
                    .with("path", runq_protocol::CONTAINER_ROOTFS)
                    .with("security_model", "passthrough")
                    .with("multidevs", "remap");
                args(&["-fsdev", &fsdev.to_string()])
            }
        }
    }

    fn device(&self) -> Props {
        let tag = runq_protocol::ROOTFS_TAG;
        match (self.share, self.fds.virtiofs_fd) {
            (Share::Virtiofs, Some(_)) => on_bus("vhost-user-fs", self.bus)
                .with("chardev", "rootfs")
                .with("tag", tag),
            _ => on_bus("virtio-9p", self.bus)
                .with("fsdev", "rootfs")
                .with("mount_tag", tag),
        }
    }
}

/// A runq disk: its descriptors in fd set `DRIVE_FDSET + index`, the
/// image format runq create detected, the cache mode asked for (none:
/// O_DIRECT with native AIO), a virtio-blk device with the id's serial.
struct DrivePart<'a> {
    index: usize,
    drive: &'a Drive,
    fds: &'a [i32],
    bus: &'a str,
}

impl DrivePart<'_> {
    fn backend(&self) -> Vec<String> {
        let (i, d) = (self.index, self.drive);
        let set = DRIVE_FDSET + i;
        let mut a: Vec<String> = self
            .fds
            .iter()
            .flat_map(|&fd| AddFd { fd, set }.args())
            .collect();
        let format = match d.format {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        };
        let mut drive = Props::default()
            .with("file", format!("/dev/fdset/{set}"))
            .with("if", "none")
            .with("id", format!("disk{i}"))
            .with("format", format)
            .with("cache", d.cache.as_str());
        if d.cache == DiskCache::None {
            drive = drive.with("aio", "native");
        }
        if d.format == DiskFormat::Qcow2 {
            // No backing file, whatever the header says (runq create
            // refused one it saw; the guest may have written one since).
            drive = drive.with("backing", "");
        }
        if d.readonly {
            drive = drive.with("readonly", "on");
        }
        a.extend(args(&["-drive", &drive.to_string()]));
        a
    }

    fn device(&self) -> Props {
        on_bus("virtio-blk", self.bus)
            .with("drive", format!("disk{}", self.index))
            .with("serial", runq_protocol::spec::disk_serial(&self.drive.id))
    }
}

/// A container interface: its tap's descriptor and MAC.
struct NicPart<'a> {
    index: usize,
    nic: &'a NicArg,
    vhost: bool,
    bus: &'a str,
}

impl NicPart<'_> {
    fn id(&self) -> String {
        format!("net{}", self.index)
    }

    fn backend(&self) -> Vec<String> {
        let mut netdev = Props::new("tap")
            .with("id", self.id())
            .with("fd", self.nic.fd);
        if self.vhost {
            netdev = netdev.with("vhost", "on");
        }
        args(&["-netdev", &netdev.to_string()])
    }

    fn device(&self) -> Props {
        let nic = on_bus("virtio-net", self.bus)
            .with("netdev", self.id())
            .with("mac", &self.nic.mac);
        // No boot ROM (iPXE) on PCI: the kernel is booted directly.
        if self.bus == "pci" {
            nic.with("romfile", "")
        } else {
            nic
        }
    }
}

/// Guests boot without waiting for entropy (hosts like these run low).
struct Rng<'a> {
    bus: &'a str,
}

impl Part for Rng<'_> {
    fn args(&self) -> Vec<String> {
        let mut a = args(&["-object", "rng-random,id=rng,filename=/dev/urandom"]);
        a.extend(Device(on_bus("virtio-rng", self.bus).with("rng", "rng")).args());
        a
    }
}

/// Host TSC frequency for `tsc_early_khz` (TCG on microvm).
fn tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0).round() as u64)
}

/// A running QEMU and the console log its guest writes.
pub struct Qemu {
    pub child: Child,
    pub console: PathBuf,
}

impl Qemu {
    /// The last lines of the guest console, for error messages.
    pub fn console_tail(&self) -> String {
        console_tail(&self.console)
    }
}

/// The last lines of a guest console log, for error messages.
pub fn console_tail(console: &Path) -> String {
    // The guest writes the console: a byte that is no UTF-8 must not
    // hide the rest.
    let text = std::fs::read(console).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    // A panic's own line says more than the register dump after it.
    if let Some(panic) = lines.iter().find(|l| l.contains("Kernel panic")) {
        return format!("; guest console: {}", panic.trim());
    }
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(3)..];
    format!("; guest console: {}", tail.join(" | "))
}
#[cfg(test)]
mod tests {
    use super::*;

    fn machine(arch: GuestArch, accel: Accel) -> Machine {
        Machine {
            arch,
            accel,
            cpus: 2,
            mem_mib: 300,
            cpu_model: None,
            kernel: "runq".into(),
            apuuid: None,
            debug: false,
            template: false,
        }
    }

    fn x86_tcg() -> Machine {
        machine(GuestArch::X86_64, Accel::Tcg)
    }

    /// The arguments for `m` with a virtiofs root, no drives, no NICs.
    fn line(m: &Machine) -> Vec<String> {
        line_with(m, Share::Virtiofs, &[], &host(), &[])
    }

    fn line_with(
        m: &Machine,
        share: Share,
        drives: &[Drive],
        host: &HostInfo,
        macs: &[String],
    ) -> Vec<String> {
        let fds = FdLayout::new(&m.kernel, share, drives, macs);
        command_line(m, share, drives, host, &fds, Shape::Full)
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
        arch: GuestArch,
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
            arch: GuestArch::X86_64,
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
            arch: GuestArch::X86_64,
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
            arch: GuestArch::S390x,
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
            arch: GuestArch::S390x,
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
            let args = line(&machine(c.arch, c.accel));
            let ctx = format!("{:?}/{:?}", c.arch, c.accel);
            assert_eq!(binary(c.arch), c.binary, "{ctx}");
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
        let macs = ["02:42:ac:11:00:02".to_string(), "02:42:ac:12:00:05".into()];
        let args = line_with(&x86_tcg(), Share::Virtiofs, &[], &host(), &macs);
        assert_eq!(
            values(&args, "-netdev"),
            ["tap,id=net0,fd=3", "tap,id=net1,fd=4"]
        );
        let devices = values(&args, "-device");
        assert!(devices.contains(&"virtio-net-device,netdev=net0,mac=02:42:ac:11:00:02"));
        assert!(devices.contains(&"virtio-net-device,netdev=net1,mac=02:42:ac:12:00:05"));
        // The console, vsock and virtiofs descriptors follow the taps.
        assert_eq!(values(&args, "-add-fd"), ["fd=5,set=1"]);
        assert!(values(&args, "-chardev").contains(&"socket,id=vsock,fd=6"));
        assert!(values(&args, "-chardev").contains(&"socket,id=rootfs,fd=7"));
        let vhost = HostInfo {
            vhost_net: true,
            ..host()
        };
        let s390 = machine(GuestArch::S390x, Accel::Kvm);
        let args = line_with(&s390, Share::Virtiofs, &[], &vhost, &macs);
        assert_eq!(values(&args, "-netdev")[0], "tap,id=net0,fd=3,vhost=on");
        assert!(
            values(&args, "-device").contains(&"virtio-net-ccw,netdev=net0,mac=02:42:ac:11:00:02")
        );
        let none = line(&x86_tcg());
        assert!(
            values(&none, "-netdev").is_empty(),
            "--network none: no NIC"
        );
    }

    #[test]
    fn ninep_root_is_served_by_qemu_per_arch() {
        for (arch, dev) in [
            (
                GuestArch::X86_64,
                "virtio-9p-device,fsdev=rootfs,mount_tag=rootfs",
            ),
            (
                GuestArch::S390x,
                "virtio-9p-ccw,fsdev=rootfs,mount_tag=rootfs",
            ),
        ] {
            let args = line_with(&machine(arch, Accel::Tcg), Share::NineP, &[], &host(), &[]);
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
        let drive = |id: &str, path: &str, cache, format, readonly| Drive {
            id: id.into(),
            path: path.into(),
            cache,
            format,
            readonly,
        };
        let drives = [
            drive(
                "a",
                "/dev/runq/a/none",
                DiskCache::None,
                DiskFormat::Raw,
                false,
            ),
            drive(
                "b-2",
                "/dev/runq/b,x",
                DiskCache::Writeback,
                DiskFormat::Qcow2,
                true,
            ),
        ];
        let args = line_with(&x86_tcg(), Share::Virtiofs, &drives, &host(), &[]);
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
            ["fd=3,set=1", "fd=6,set=10", "fd=7,set=10", "fd=8,set=11"]
        );
        let devices = values(&args, "-device");
        assert!(devices.contains(&"virtio-blk-device,drive=disk0,serial=a"));
        assert!(devices.contains(&"virtio-blk-device,drive=disk1,serial=b-2"));
        let s390 = machine(GuestArch::S390x, Accel::Tcg);
        let args = line_with(&s390, Share::Virtiofs, &drives, &host(), &[]);
        assert!(values(&args, "-device").contains(&"virtio-blk-ccw,drive=disk0,serial=a"));
    }

    #[test]
    fn ap_passthrough_only_on_s390x() {
        let mut v = machine(GuestArch::S390x, Accel::Kvm);
        v.apuuid = Some("e2a4c3b0-4f6a-4c3e-9a52-1d0b1c2d3e4f".into());
        let args = line(&v);
        assert!(values(&args, "-device").contains(
            &"vfio-ap,sysfsdev=/sys/devices/vfio_ap/matrix/e2a4c3b0-4f6a-4c3e-9a52-1d0b1c2d3e4f"
        ));
        v.arch = GuestArch::X86_64;
        let args = line(&v);
        assert!(!args.join(" ").contains("vfio-ap"));
    }

    #[test]
    fn tcg_translation_cache_is_capped() {
        let args = line(&x86_tcg());
        assert_eq!(values(&args, "-accel"), ["tcg,tb-size=32"]);
        let args = line(&machine(GuestArch::X86_64, Accel::Kvm));
        assert_eq!(values(&args, "-accel"), ["kvm"]);
    }

    #[test]
    fn sizing_memory_backend_and_boot_files() {
        let args = line(&x86_tcg());
        assert_eq!(values(&args, "-smp"), ["2"]);
        assert_eq!(values(&args, "-m"), ["300M"]);
        assert!(
            values(&args, "-object").contains(&"memory-backend-memfd,id=mem,size=300M,share=on")
        );
        assert_eq!(values(&args, "-machine")[1], "memory-backend=mem");
        assert_eq!(values(&args, "-kernel"), ["/kernels/runq/kernel"]);
        assert_eq!(values(&args, "-initrd"), ["/kernels/runq/initrd"]);
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
        let mut v = x86_tcg();
        v.cpu_model = Some("Skylake-Client,-hle".into());
        v.debug = true;
        let args = line(&v);
        assert_eq!(values(&args, "-cpu"), ["Skylake-Client,-hle"]);
        let cmdline = values(&args, "-append")[0];
        assert!(cmdline.contains("loglevel=7") && !cmdline.contains("quiet"));
    }

    #[test]
    fn unknown_tsc_frequency_leaves_it_to_the_kernel() {
        let args = line_with(&x86_tcg(), Share::Virtiofs, &[], &HostInfo::default(), &[]);
        assert!(!values(&args, "-append")[0].contains("tsc_early_khz"));
    }

    #[test]
    fn a_clone_has_the_templates_machine_and_every_backend_but_no_device() {
        let m = x86_tcg();
        let drives = [Drive {
            id: "data".into(),
            path: "/dev/runq/data".into(),
            cache: DiskCache::None,
            format: DiskFormat::Raw,
            readonly: false,
        }];
        let macs = ["02:42:ac:11:00:02".to_string()];
        let fds = FdLayout::new(&m.kernel, Share::Virtiofs, &drives, &macs).with_template(false);
        let template = command_line(&m, Share::Virtiofs, &drives, &host(), &fds, Shape::Template);
        let fds = FdLayout::new(&m.kernel, Share::Virtiofs, &drives, &macs).with_template(true);
        let clone = command_line(&m, Share::Virtiofs, &drives, &host(), &fds, Shape::Clone);
        // The saved state fits only the same machine, firmware, CPUs, RAM,
        // kernel and command line.
        for flag in [
            "-machine", "-bios", "-accel", "-cpu", "-smp", "-m", "-kernel", "-initrd", "-append",
            "-sandbox", "-device",
        ] {
            assert_eq!(values(&clone, flag), values(&template, flag), "{flag}");
        }
        assert_eq!(values(&clone, "-machine")[0], "pc,vmport=off,smbus=off");
        let cmdline = values(&clone, "-append")[0];
        assert!(cmdline.ends_with(" runq.template") && cmdline.contains(" acpi=noirq"));
        assert!(!cmdline.contains("tsc_early_khz"), "{cmdline}");
        // The template's devices are the console and rng only.
        assert_eq!(values(&clone, "-device"), ["virtio-rng-pci,rng=rng"]);
        assert_eq!(values(&template, "-chardev")[0], "socket,id=console,fd=4");
        // The clone has every backend: console file, vsock and virtiofs
        // sockets, the drive, the tap; QMP after them, then the state.
        assert_eq!(
            values(&clone, "-chardev"),
            [
                "file,id=console,path=/dev/fdset/1",
                "socket,id=vsock,fd=5",
                "socket,id=rootfs,fd=6",
                "socket,id=qmp,fd=9"
            ]
        );
        assert_eq!(values(&clone, "-netdev"), ["tap,id=net0,fd=3"]);
        assert_eq!(values(&clone, "-drive").len(), 1);
        assert_eq!(values(&clone, "-incoming"), ["defer"]);
        assert!(clone.contains(&"-S".to_string()));
        assert_eq!((fds.ram_fd, fds.state_fd), (Some(10), Some(11)));
        assert_eq!(
            values(&clone, "-object")[0],
            "memory-backend-file,mem-path=/proc/self/fd/10,id=mem,size=300M,share=on"
        );
        assert!(values(&template, "-incoming").is_empty());
        // What is plugged in afterwards, vsock last (the guest dials the
        // moment it appears, the others probed by then).
        let plugged: Vec<String> = hotplug_devices(&m, Share::Virtiofs, &drives, &host(), &fds)
            .iter()
            .map(|d| d.to_qmp()["driver"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(
            plugged,
            [
                "vhost-user-fs-pci",
                "virtio-blk-pci",
                "virtio-net-pci",
                "vhost-user-vsock-pci"
            ]
        );
    }

    #[test]
    fn qmp_device_arguments_carry_values_unescaped() {
        let d = Props::new("virtio-blk-pci")
            .with("serial", "a,b")
            .with("romfile", "");
        assert_eq!(d.to_string(), "virtio-blk-pci,serial=a,,b,romfile=");
        assert_eq!(
            d.to_qmp(),
            serde_json::json!({"driver": "virtio-blk-pci", "serial": "a,b", "romfile": ""})
        );
    }

    #[test]
    fn the_floor_is_the_same_machine_without_helpers() {
        let m = x86_tcg();
        let full = line(&m);
        let fds = FdLayout::new(&m.kernel, Share::Virtiofs, &[], &[]);
        let floor = command_line(&m, Share::Virtiofs, &[], &host(), &fds, Shape::Floor);
        for flag in [
            "-machine", "-accel", "-cpu", "-smp", "-m", "-kernel", "-initrd", "-sandbox",
        ] {
            assert_eq!(values(&floor, flag), values(&full, flag), "{flag}");
        }
        let cmdline = values(&floor, "-append")[0];
        assert_eq!(
            cmdline,
            format!("{} runq.poweroff", values(&full, "-append")[0])
        );
        assert!(values(&floor, "-add-fd").is_empty());
        assert_eq!(values(&floor, "-chardev"), ["null,id=console"]);
        assert_eq!(values(&floor, "-device"), ["virtio-rng-device,rng=rng"]);
    }

    #[test]
    fn property_values_cannot_add_properties() {
        let p = Props::new("virtio-blk-device").with("serial", "a,drive=other");
        assert_eq!(p.to_string(), "virtio-blk-device,serial=a,,drive=other");
    }
}
