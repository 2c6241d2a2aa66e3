//! x86_64: `-M microvm` (virtio-mmio, no PCI, no firmware menus), the
//! fastest-booting QEMU machine for direct kernel boot; `-M pc` for VM
//! templates, whose devices are hot-plugged (ACPI PCI hot-plug on the
//! root bus) after the restore.

use runq_protocol::Accel;

use super::{ArchOps, TemplateMachine};
use crate::qemu::HostInfo;

pub struct X86_64;

impl ArchOps for X86_64 {
    fn qemu_binary(&self) -> &'static str {
        "qemu-system-x86_64"
    }

    fn machine(&self, _accel: Accel) -> String {
        // ACPI stays on: the guest finds the virtio-mmio devices through it
        // and can power off.
        "microvm,x-option-roms=off,isa-serial=on,rtc=on".into()
    }

    fn template_machine(&self) -> Option<TemplateMachine> {
        // qboot (QEMU's bios-microvm.bin), not SeaBIOS: it boots the
        // kernel from fw_cfg at once, and it is in the tree already.
        Some(TemplateMachine {
            machine: "pc,vmport=off,smbus=off",
            bios: "bios-microvm.bin",
        })
    }

    fn cpu(&self, accel: Accel) -> &'static str {
        match accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        }
    }

    fn virtio_bus(&self) -> &'static str {
        "device"
    }

    fn vsock_device(&self) -> &'static str {
        "vhost-user-vsock-device"
    }

    fn console(&self, chardev: &str) -> Vec<String> {
        vec!["-serial".into(), format!("chardev:{chardev}")]
    }

    fn cmdline(&self, accel: Accel, host: &HostInfo, template: bool) -> Vec<String> {
        let mut c = vec!["console=ttyS0".to_string(), "reboot=t".to_string()];
        // Under TCG, microvm has no HPET/PM timer to calibrate the TSC
        // against and can hang after "Marking TSC unstable"; telling the
        // kernel the frequency avoids the calibration (pc has both).
        if let (Accel::Tcg, Some(khz), false) = (accel, host.tsc_khz, template) {
            c.push(format!("tsc_early_khz={khz}"));
        }
        // Each hot-plugged PCI device would have its INTx link routed
        // through ACPI first (~180 ms each under TCG, measured); virtio-pci
        // uses MSI-X, and ACPI still delivers the hot-plug events.
        if template {
            c.push("acpi=noirq".to_string());
        }
        // TCG's TSC follows the host clock: no clocksource watchdog.
        if accel == Accel::Tcg {
            c.push("tsc=reliable".to_string());
        }
        c
    }
}
