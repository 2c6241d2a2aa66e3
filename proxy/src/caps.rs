//! The proxy's own capabilities, dropped once QEMU runs.

/// Keep only the capabilities in `mask` (bit = capability number): the
/// bounding set first (that needs CAP_SETPCAP, dropped just after), then
/// effective and permitted; inheritable and ambient are emptied.
pub fn keep_only(mask: u64) -> std::io::Result<()> {
    for cap in (0..64).filter(|c| mask & (1u64 << c) == 0) {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: past the kernel's last capability.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
        }
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3: two words
        pid: 0,
    };
    let word = |i: u32| Data {
        effective: (mask >> (32 * i)) as u32,
        permitted: (mask >> (32 * i)) as u32,
        inheritable: 0,
    };
    let data = [word(0), word(1)];
    // SAFETY: capset reads one header and two data structs, both alive.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
