//! A guest booted to be a VM template: it is saved (QEMU migration) while
//! it waits for a vsock device, and every container's VM restored from it
//! continues here once the proxy has hot-plugged its devices.

use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;
use runq_protocol::wire::Restored;
use runq_protocol::{CONTROL_PORT, TEMPLATE_READY};
use vsock::{VsockAddr, VsockStream, VMADDR_CID_HOST};

/// Say the template is ready, then dial the proxy as soon as a vsock
/// device is there: each kernel uevent (the hot-plugged PCI devices, the
/// vsock transport binding) is a reason to try again. Without a vsock
/// transport, connect fails at once with ENODEV; the template is saved
/// while this waits, so a restored VM continues in this loop.
pub fn dial_when_plugged() -> Result<VsockStream> {
    let uevents = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkKObjectUEvent,
    )
    .context("opening the uevent socket")?;
    bind(uevents.as_raw_fd(), &NetlinkAddr::new(0, 1)).context("binding the uevent socket")?;
    // A missed uevent costs at most this, never a hang.
    setsockopt(&uevents, sockopt::ReceiveTimeout, &TimeVal::new(1, 0))
        .context("setting the uevent timeout")?;
    zero_free_memory();
    crate::log(TEMPLATE_READY.trim_start_matches("runq-init: "));
    let addr = VsockAddr::new(VMADDR_CID_HOST, CONTROL_PORT);
    let mut buf = [0u8; 4096];
    loop {
        match VsockStream::connect(&addr) {
            Ok(conn) => return Ok(conn),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
            Err(e) => return Err(e).context("dialing the proxy on vsock (host CID 2)"),
        }
        match recv(uevents.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(_) | Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("waiting for a uevent"),
        }
    }
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
