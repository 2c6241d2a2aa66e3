//! The workload's terminal: a pty of the container's own devpts.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

pub struct PtyPair {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// A pty from the container's own devpts instance, so that the slave's
/// name (`tty`) resolves inside the container.
/// `/dev/pts/N` of a pty master, as a C string made before the fork.
pub fn pty_slave_path(master: &OwnedFd) -> io::Result<CString> {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes the pty's number into an unsigned int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } != 0 {
        return Err(io::Error::last_os_error());
    }
    CString::new(format!("/dev/pts/{n}")).map_err(|_| io::ErrorKind::InvalidInput.into())
}

pub fn open_container_pty() -> io::Result<PtyPair> {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(format!("{}/dev/pts/ptmx", crate::mounts::ROOT))?
        .into();
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int; TIOCGPTPEER returns a new fd for
    // the slave side of this master, which we then own.
    unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PtyPair {
            master,
            slave: OwnedFd::from_raw_fd(fd),
        })
    }
}

/// Apply a terminal size to the pty master.
pub fn set_winsize(pty: &OwnedFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives on our stack
    // for the duration of the call; the fd is a valid pty master.
    unsafe {
        libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws);
    }
}
