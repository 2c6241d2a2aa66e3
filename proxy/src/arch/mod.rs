//! Everything that differs between guest architectures, behind one
//! interface: the QEMU binary and machine, device model names, console and
//! kernel command line. [`crate::qemu`] builds the rest the same for all.

mod s390x;
mod x86_64;

use runq_protocol::{Accel, GuestArch};

use crate::qemu::HostInfo;

/// The pieces for a guest arch.
pub fn ops(arch: GuestArch) -> &'static dyn ArchOps {
    match arch {
        GuestArch::X86_64 => &x86_64::X86_64,
        GuestArch::S390x => &s390x::S390x,
    }
}

/// The template machine: `-machine` and `-bios` values.
pub struct TemplateMachine {
    pub machine: &'static str,
    pub bios: &'static str,
}

/// Per-arch pieces of the QEMU command line.
pub trait ArchOps {
    fn qemu_binary(&self) -> &'static str;
    fn machine(&self, accel: Accel) -> String;
    /// The machine a VM template runs on: one with device hot-plug, as
    /// every container device is added after the restore, and its
    /// firmware (`None`: this arch boots every VM).
    fn template_machine(&self) -> Option<TemplateMachine> {
        None
    }
    fn cpu(&self, accel: Accel) -> &'static str;
    /// Suffix of virtio device models: `device` (mmio), `pci`, `ccw`.
    fn virtio_bus(&self) -> &'static str;
    /// The `-device` value passing vfio-ap mediated device `uuid`, where
    /// the arch has AP (s390x only).
    fn ap_device(&self, _uuid: &str) -> Option<String> {
        None
    }
    /// Arguments that connect the guest console to `chardev`.
    fn console(&self, chardev: &str) -> Vec<String>;
    /// Kernel command line entries specific to this arch and accelerator.
    /// The vhost-user vsock device model.
    fn vsock_device(&self) -> &'static str;
    /// `template`: for the template machine.
    fn cmdline(&self, accel: Accel, host: &HostInfo, template: bool) -> Vec<String>;
}
