//! seccomp BPF programs as they travel in `vm.json` (each `sock_filter`
//! packed in a u64: code << 48 | jt << 40 | jf << 32 | k) and as the
//! kernel takes them. Packed by `runq create`, installed by the proxy (for
//! its helpers) and by runq-init (for the workload), both between fork and
//! exec.

/// Packed words -> `sock_filter`s; done before the fork (it allocates).
pub fn unpack(words: &[u64]) -> Vec<libc::sock_filter> {
    words.iter().map(|w| unpack_one(*w)).collect()
}

/// One packed word -> its `sock_filter`.
pub fn unpack_one(w: u64) -> libc::sock_filter {
    libc::sock_filter {
        code: (w >> 48) as u16,
        jt: (w >> 40) as u8,
        jf: (w >> 32) as u8,
        k: w as u32,
    }
}

/// A program as the kernel of a (big- or little-endian) machine holds it,
/// 8 bytes per instruction (libseccomp's export), -> packed words; `None`
/// when the length is no whole number of instructions.
pub fn pack_native(bytes: &[u8], big_endian: bool) -> Option<Vec<u64>> {
    let chunks = bytes.chunks_exact(8);
    if !chunks.remainder().is_empty() {
        return None;
    }
    let words = chunks.map(|f| {
        let (code, k) = ([f[0], f[1]], [f[4], f[5], f[6], f[7]]);
        let (code, k) = if big_endian {
            (u16::from_be_bytes(code), u32::from_be_bytes(k))
        } else {
            (u16::from_le_bytes(code), u32::from_le_bytes(k))
        };
        pack(&libc::sock_filter {
            code,
            jt: f[2],
            jf: f[3],
            k,
        })
    });
    Some(words.collect())
}

/// `sock_filter` -> its packed word.
pub fn pack(f: &libc::sock_filter) -> u64 {
    (u64::from(f.code) << 48) | (u64::from(f.jt) << 40) | (u64::from(f.jf) << 32) | u64::from(f.k)
}

/// The kernel's descriptor of `filter` (valid while `filter` is).
fn fprog(filter: &[libc::sock_filter]) -> libc::sock_fprog {
    libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    }
}

/// Install `filter` on the calling thread (no_new_privs or
/// CAP_SYS_ADMIN needed). Async-signal-safe: one system call, the
/// descriptor on the stack; safe between fork and exec.
pub fn install(filter: &[libc::sock_filter]) -> std::io::Result<()> {
    let prog = fprog(filter);
    // SAFETY: `prog` describes `filter`, alive for the call; the kernel
    // copies the program.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Install `filter` on every thread of the process (SECCOMP_FILTER_FLAG_TSYNC).
pub fn install_all_threads(filter: &[libc::sock_filter]) -> std::io::Result<()> {
    const SECCOMP_SET_MODE_FILTER: libc::c_long = 1;
    const SECCOMP_FILTER_FLAG_TSYNC: libc::c_long = 1;
    let prog = fprog(filter);
    // SAFETY: `prog` describes `filter`, alive for the call; the kernel
    // copies the program. A positive return names a thread that could
    // not be synchronised.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_TSYNC,
            &prog as *const libc::sock_fprog,
        )
    };
    match rc {
        0 => Ok(()),
        r if r > 0 => Err(std::io::Error::other(format!(
            "seccomp: thread {r} could not take the filter"
        ))),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_programs_of_either_byte_order_pack_alike() {
        let le = [0x20, 0x00, 0x01, 0x02, 0x04, 0x00, 0x00, 0x00];
        let be = [0x00, 0x20, 0x01, 0x02, 0x00, 0x00, 0x00, 0x04];
        let want = pack(&libc::sock_filter {
            code: 0x20,
            jt: 1,
            jf: 2,
            k: 4,
        });
        assert_eq!(pack_native(&le, false), Some(vec![want]));
        assert_eq!(pack_native(&be, true), Some(vec![want]));
        assert_eq!(pack_native(&le[..7], false), None);
    }

    #[test]
    fn pack_and_unpack_are_inverse() {
        let words = [
            0x0020_0000_0000_0004u64,
            0x0015_0102_c000_003e,
            0x0006_0000_7fff_0000,
        ];
        let filters = unpack(&words);
        assert_eq!(filters[1].code, 0x15);
        assert_eq!((filters[1].jt, filters[1].jf), (1, 2));
        assert_eq!(filters[1].k, 0xc000_003e);
        let back: Vec<u64> = filters.iter().map(pack).collect();
        assert_eq!(back, words);
    }
}
