//! The steps between fork and exec that confine the workload as runc
//! does: its root, masked and read-only paths, capabilities, seccomp.
//! Each makes system calls on data prepared before the fork only.

use std::ffi::{CStr, CString};
use std::io;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{chdir, chroot};
use runq_protocol::CapSets;

use crate::mounts::ROOT_C;

/// Apply masked and read-only paths in the current (new) mount namespace;
/// between fork and exec: system calls on prepared C strings only. Paths
/// that do not exist are skipped, as runc does.
pub fn masked_and_readonly(masked: &[CString], readonly: &[CString]) -> nix::Result<()> {
    for p in masked {
        // SAFETY: an all-zero `stat` is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `p` is a C string; stat(2) writes one `stat` into `st`.
        if unsafe { libc::stat(p.as_ptr(), &mut st) } != 0 {
            continue;
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            mount(
                Some(c"tmpfs"),
                p.as_c_str(),
                Some(c"tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&CStr>,
            )?;
        } else {
            mount(
                Some(c"/dev/null"),
                p.as_c_str(),
                None::<&CStr>,
                MsFlags::MS_BIND,
                None::<&CStr>,
            )?;
        }
    }
    for p in readonly {
        match mount(
            Some(p.as_c_str()),
            p.as_c_str(),
            None::<&CStr>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&CStr>,
        ) {
            Err(nix::errno::Errno::ENOENT) => continue,
            r => r?,
        }
        // As runc: the flags the mount has (nosuid, nodev, noexec on
        // /proc) are kept.
        // SAFETY: an all-zero `statvfs` is a valid value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let mut keep = MsFlags::empty();
        // SAFETY: `p` is a C string; glibc answers from statfs(2) into
        // `st`, with no allocation (we are between fork and exec).
        if unsafe { libc::statvfs(p.as_ptr(), &mut st) } == 0 {
            for (f, m) in [
                (libc::ST_NOSUID, MsFlags::MS_NOSUID),
                (libc::ST_NODEV, MsFlags::MS_NODEV),
                (libc::ST_NOEXEC, MsFlags::MS_NOEXEC),
            ] {
                if st.f_flag & f != 0 {
                    keep |= m;
                }
            }
        }
        mount(
            None::<&CStr>,
            p.as_c_str(),
            None::<&CStr>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC | keep,
            None::<&CStr>,
        )?;
    }
    Ok(())
}

/// Install seccomp filters; between fork and exec: system calls only.
pub fn install_seccomp(filters: &[Vec<libc::sock_filter>]) -> io::Result<()> {
    for f in filters {
        runq_protocol::bpf::install(f)?;
    }
    Ok(())
}

/// Drop every capability outside `bounding` from the bounding set.
/// Between fork and exec: system calls only.
pub fn drop_bounding(bounding: u64) -> io::Result<()> {
    for cap in 0..64 {
        if bounding & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let e = io::Error::last_os_error();
            // Numbers beyond the kernel's last capability do not exist.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Effective, permitted and inheritable sets (capset v3), then ambient.
pub fn set_caps(c: &CapSets) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let half = |m: u64, hi: bool| if hi { (m >> 32) as u32 } else { m as u32 };
    let data = [false, true].map(|hi| Data {
        effective: half(c.effective, hi),
        permitted: half(c.permitted, hi),
        inheritable: half(c.inheritable, hi),
    });
    // SAFETY: capset reads one header and two data structs (v3), all on
    // our stack for the duration of the call.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for cap in 0..64u64 {
        if c.ambient & (1 << cap) != 0 {
            // SAFETY: prctl with integer arguments.
            let r =
                unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap, 0, 0) };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// A private mount namespace whose root is the container root.
pub fn enter_root() -> nix::Result<()> {
    // C string literals: no allocation between fork and exec.
    unshare(CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&CStr>,
        c"/",
        None::<&CStr>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&CStr>,
    )?;
    chdir(ROOT_C)?;
    // The initramfs cannot be pivot_root'ed away; moving the container
    // root over it inside this namespace is what switch_root does.
    mount(
        Some(c"."),
        c"/",
        None::<&CStr>,
        MsFlags::MS_MOVE,
        None::<&CStr>,
    )?;
    chroot(c".")?;
    chdir(c"/")?;
    // Mounted from inside the new PID namespace, so it shows that one.
    mount(
        Some(c"proc"),
        c"/proc",
        Some(c"proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
        None::<&CStr>,
    )
}
