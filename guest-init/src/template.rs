//! A guest booted to be a VM template: it is saved (QEMU migration) while
//! it waits on its control port (virtio-serial, which migrates) for the
//! proxy's Hello. A container's VM restored from it takes its start
//! request at once, while the kernel probes the devices the proxy
//! hot-plugged; runq-init waits for each where it needs it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;
use runq_protocol::wire::Restored;
use runq_protocol::{CONTROL_SERIAL_PORT, TEMPLATE_READY};

/// How long a hot-plugged device may take to be probed (~20-50 ms each
/// under TCG here; far more on a loaded host).
const DEVICE_TIMEOUT: Duration = Duration::from_secs(60);

/// Open the control port, say the template is ready, and hand the port
/// over: the template is saved while runq-init waits on it. The uevent
/// listener is saved with it, so a clone hears of every device the proxy
/// plugs in.
pub fn open_control() -> Result<(File, Hotplug)> {
    let mut hotplug = Hotplug::listen()?;
    // The port is added after the virtio-serial device is probed, and
    // named, each on a message from QEMU: it may not be there yet.
    let mut port = None;
    hotplug.wait_until(
        &format!("the virtio-serial port {CONTROL_SERIAL_PORT:?}"),
        || {
            port = control_port();
            port.is_some()
        },
    )?;
    let dev = port.context("the control port vanished")?;
    let conn = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
        .with_context(|| format!("opening the control port {dev}"))?;
    hotplug.drain();
    zero_free_memory();
    crate::log(TEMPLATE_READY.trim_start_matches("runq-init: "));
    Ok((conn, hotplug))
}

/// `/dev/vportNpM` of the port named [`CONTROL_SERIAL_PORT`].
fn control_port() -> Option<String> {
    std::fs::read_dir("/sys/class/virtio-ports")
        .ok()?
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("name"))
                .is_ok_and(|n| n.trim_end() == CONTROL_SERIAL_PORT)
        })
        .map(|e| format!("/dev/{}", e.file_name().to_string_lossy()))
}

/// The kernel's uevents, from before the template was saved: which
/// virtio drivers have finished probing a device since.
pub struct Hotplug {
    socket: std::os::fd::OwnedFd,
    /// Driver name -> devices bound (`bind` uevents: sent once a probe
    /// has returned; a driver's sysfs link appears before its probe runs).
    bound: std::collections::HashMap<String, usize>,
}

impl Hotplug {
    fn listen() -> Result<Self> {
        let socket = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )
        .context("opening the uevent socket")?;
        // Room for a burst of hot-plug events (a device is ~10 of them).
        let _ = setsockopt(&socket, sockopt::RcvBufForce, &(1 << 20));
        bind(socket.as_raw_fd(), &NetlinkAddr::new(0, 1)).context("binding the uevent socket")?;
        // The deadline is checked at least this often.
        setsockopt(&socket, sockopt::ReceiveTimeout, &TimeVal::new(0, 100_000))
            .context("setting the uevent timeout")?;
        Ok(Hotplug {
            socket,
            bound: Default::default(),
        })
    }

    /// Forget what the template's own boot did: a clone counts only the
    /// devices plugged into it.
    fn drain(&mut self) {
        let mut buf = [0u8; 8192];
        while recv(self.socket.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).is_ok() {}
        self.bound.clear();
    }

    /// Return once a device bound to virtio driver `driver` has been
    /// probed (at most [`DEVICE_TIMEOUT`]).
    pub fn wait_bound(&mut self, driver: &str, what: &str) -> Result<()> {
        let deadline = Instant::now() + DEVICE_TIMEOUT;
        while !self.bound.contains_key(driver) {
            self.next_event(deadline, what)?;
        }
        Ok(())
    }

    /// Return once `ready()` holds, checking again on every uevent.
    pub fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + DEVICE_TIMEOUT;
        while !ready() {
            self.next_event(deadline, what)?;
        }
        Ok(())
    }

    /// Take the next uevent (or a timeout's worth of none).
    fn next_event(&mut self, deadline: Instant, what: &str) -> Result<()> {
        if Instant::now() > deadline {
            bail!(
                "waited {}s for {what} (hot-plugged by the proxy)",
                DEVICE_TIMEOUT.as_secs()
            );
        }
        let mut buf = [0u8; 8192];
        match recv(self.socket.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => {
                if let Some(driver) = bound_driver(&buf[..n]) {
                    *self.bound.entry(driver).or_default() += 1;
                }
                Ok(())
            }
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(nix::errno::Errno::ENOBUFS) => {
                bail!("uevents were lost while waiting for {what}")
            }
            Err(e) => Err(e).context("waiting for a uevent"),
        }
    }
}

/// The driver of a virtio `bind` uevent (`ACTION=bind`, `SUBSYSTEM=virtio`,
/// `DRIVER=...`, NUL-separated after the `bind@path` header).
fn bound_driver(event: &[u8]) -> Option<String> {
    let mut fields = event.split(|&b| b == 0).skip(1);
    let (mut bind, mut virtio, mut driver) = (false, false, None);
    for f in fields.by_ref() {
        match f {
            b"ACTION=bind" => bind = true,
            b"SUBSYSTEM=virtio" => virtio = true,
            _ => {
                if let Some(d) = f.strip_prefix(b"DRIVER=") {
                    driver = Some(String::from_utf8_lossy(d).into_owned());
                }
            }
        }
    }
    driver.filter(|_| bind && virtio)
}

/// Leave the guest's free memory zeroed before it is saved: what the boot
/// wrote and freed (the initrd's image, init sections, page cache) would
/// otherwise be copied into every clone's RAM. Allocating it all (the
/// kernel hands out zeroed pages) and freeing it again does that; the
/// proxy skips zero pages when it fills a clone's RAM.
fn zero_free_memory() {
    let free_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemFree:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<usize>().ok())
        })
        .unwrap_or(0);
    // Room for the kernel's own reserves and this process.
    let len = free_kib.saturating_sub(16 << 10) << 10;
    if len == 0 {
        return;
    }
    use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
    let Some(size) = std::num::NonZeroUsize::new(len) else {
        return;
    };
    // SAFETY: a fresh private anonymous mapping, never read or handed out;
    // unmapped right away.
    unsafe {
        if let Ok(p) = mmap_anonymous(
            None,
            size,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_POPULATE,
        ) {
            let _ = munmap(p, len);
        }
    }
}

/// A restored guest's clock is the template's, stopped while it was
/// saved, and its random state is the template's, the same in every
/// clone: set the one, reseed the other.
pub fn renew(r: &Restored) -> Result<()> {
    let (secs, nanos) = r.wall_clock;
    let ts = nix::sys::time::TimeSpec::new(secs, nanos as _);
    nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts)
        .context("setting the restored guest's clock")?;
    add_entropy(&r.seed).context("reseeding the restored guest's RNG")
}

/// `RNDADDENTROPY` with full credit, then `RNDRESEEDCRNG`: the kernel's
/// RNG (and every per-CPU state derived from it) is rekeyed from the
/// host's bytes before the workload draws anything.
fn add_entropy(seed: &[u8]) -> Result<()> {
    #[repr(C)]
    struct PoolInfo<const N: usize> {
        entropy_count: libc::c_int,
        buf_size: libc::c_int,
        buf: [u8; N],
    }
    const N: usize = 64;
    let mut info = PoolInfo::<N> {
        entropy_count: 0,
        buf_size: 0,
        buf: [0; N],
    };
    let n = seed.len().min(N);
    info.buf[..n].copy_from_slice(&seed[..n]);
    info.entropy_count = (n * 8) as libc::c_int;
    info.buf_size = n as libc::c_int;
    let random = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/random")
        .context("opening /dev/random")?;
    // RNDADDENTROPY = _IOW('R', 0x03, int[2]); RNDRESEEDCRNG = _IO('R', 0x07).
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
    // SAFETY: RNDADDENTROPY reads a struct rand_pool_info (two ints, then
    // buf_size bytes) from `info`, which lives for the call and holds
    // buf_size <= N bytes; RNDRESEEDCRNG takes no argument.
    unsafe {
        if libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, &info) != 0 {
            return Err(std::io::Error::last_os_error()).context("RNDADDENTROPY");
        }
        if libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG) != 0 {
            return Err(std::io::Error::last_os_error()).context("RNDRESEEDCRNG");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::bound_driver;

    #[test]
    fn bind_uevents_of_virtio_devices_name_their_driver() {
        let ev = |s: &str| s.replace(' ', "\0").into_bytes();
        assert_eq!(
            bound_driver(&ev("bind@/devices/pci0000:00/0000:00:04.0/virtio3 ACTION=bind DEVPATH=/devices/pci0000:00/0000:00:04.0/virtio3 SUBSYSTEM=virtio DRIVER=virtiofs MODALIAS=virtio:d0000001Av00001AF4 SEQNUM=812")).as_deref(),
            Some("virtiofs")
        );
        assert_eq!(
            bound_driver(&ev(
                "add@/devices/x/virtio3 ACTION=add SUBSYSTEM=virtio DRIVER=virtiofs"
            )),
            None,
            "not a bind"
        );
        assert_eq!(
            bound_driver(&ev(
                "bind@/devices/pci0000:00/0000:00:04.0 ACTION=bind SUBSYSTEM=pci DRIVER=virtio-pci"
            )),
            None,
            "the PCI function, not the virtio device"
        );
        assert_eq!(bound_driver(b"libudev\0garbage"), None);
    }
}
