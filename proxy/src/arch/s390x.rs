//! s390x: `s390-ccw-virtio` with channel-attached virtio devices and the
//! SCLP console.

use runq_protocol::Accel;

use super::ArchOps;
use crate::qemu::HostInfo;

pub struct S390x;

impl ArchOps for S390x {
    fn qemu_binary(&self) -> &'static str {
        "qemu-system-s390x"
    }

    fn machine(&self, _accel: Accel) -> String {
        "s390-ccw-virtio".into()
    }

    fn cpu(&self, accel: Accel) -> &'static str {
        match accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        }
    }

    fn virtio_bus(&self) -> &'static str {
        "ccw"
    }

    /// QEMU (7.2) has no vhost-user-vsock-ccw; the PCI model works on
    /// s390x through zPCI (the guest loads virtio_pci).
    fn vsock_device(&self) -> &'static str {
        "vhost-user-vsock-pci"
    }

    /// AP (crypto) passthrough: a vfio-ap mediated device made by the
    /// administrator (`/sys/devices/vfio_ap/matrix/<uuid>`).
    fn ap_device(&self, uuid: &str) -> Option<String> {
        Some(format!(
            "vfio-ap,sysfsdev=/sys/devices/vfio_ap/matrix/{uuid}"
        ))
    }

    fn console(&self, chardev: &str) -> Vec<String> {
        vec!["-device".into(), format!("sclpconsole,chardev={chardev}")]
    }

    fn cmdline(&self, _accel: Accel, _host: &HostInfo, _template: bool) -> Vec<String> {
        vec!["console=ttysclp0".into()]
    }
}
