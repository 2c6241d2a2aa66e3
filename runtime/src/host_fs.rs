//! The host's filesystem as the mount-destination resolver reads it:
//! every lookup stays below its base directory (an image's rootfs, a
//! volume's source) even if what is below changes while it looks.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use runq_protocol::resolve::{Fs, Node};

/// `openat2(RESOLVE_IN_ROOT)` below the base: a symlink or `..` met on the
/// way (a volume changed by another container meanwhile) cannot reach out.
#[derive(Debug)]
pub struct HostFs;

impl Fs for HostFs {
    fn node(&self, base: &Path, rel: &Path) -> Node {
        let Some(fd) = open_below(base, rel) else {
            return Node::Missing;
        };
        use std::os::fd::AsRawFd;
        let raw = fd.as_raw_fd();
        match fstatat(
            Some(raw),
            "",
            nix::fcntl::AtFlags::AT_EMPTY_PATH | nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => {
                match nix::fcntl::readlinkat(Some(raw), "") {
                    Ok(t) => {
                        Node::Symlink(PathBuf::from(std::ffi::OsString::from_vec(t.into_vec())))
                    }
                    Err(_) => Node::Missing,
                }
            }
            Ok(_) => Node::Other,
            Err(_) => Node::Missing,
        }
    }
}

fn open_below(base: &Path, rel: &Path) -> Option<OwnedFd> {
    let dir = nix::fcntl::open(
        base,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    let dir = unsafe { OwnedFd::from_raw_fd(dir) };
    use std::os::fd::AsRawFd;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(dir.as_raw_fd(), rel, how).ok()?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_stay_below_the_base() {
        let dir = std::env::temp_dir().join(format!("runq-hostfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root/usr/bin")).unwrap();
        std::os::unix::fs::symlink("/usr/bin", dir.join("root/abs")).unwrap();
        std::os::unix::fs::symlink("../../..", dir.join("root/up")).unwrap();
        let root = dir.join("root");
        assert_eq!(
            HostFs.node(&root, Path::new("abs")),
            Node::Symlink("/usr/bin".into())
        );
        assert_eq!(HostFs.node(&root, Path::new("usr/bin")), Node::Other);
        assert_eq!(HostFs.node(&root, Path::new("nothing")), Node::Missing);
        // Through a link met on the way: resolved inside the base, never
        // in the host's / (which has no /usr/bin/nothing-here either way).
        assert_eq!(HostFs.node(&root, Path::new("up/usr/bin")), Node::Other);
        assert_eq!(HostFs.node(&root, Path::new("up/tmp")), Node::Missing);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
