//! The pre-exec plan: everything the child needs between fork and exec,
//! built before the fork (the child must not allocate: other init threads
//! may hold the allocator's lock), then run as named steps in the order
//! runc runs them.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{chdir, chroot, fchdir, setgid, setgroups, setsid, setuid, Gid, Uid};
use runq_protocol::{CapSets, ProcessSpec};

use super::confine;

/// How the child reaches its root.
pub enum Entry {
    /// The workload: a new mount namespace rooted at the container, the
    /// terminal also as /dev/console, cgroup2 at /sys/fs/cgroup, OCI's
    /// masked and read-only paths.
    NewRoot {
        console: Option<CString>,
        cgroup_flags: MsFlags,
        masked: Vec<CString>,
        readonly: Vec<CString>,
    },
    /// An exec: the workload's mount and cgroup namespaces and its root.
    Join {
        mnt_ns: File,
        root: File,
        cgroup_ns: File,
    },
}

/// The child's steps, prepared.
pub struct Plan {
    pub terminal: bool,
    /// The cgroup's `cgroup.procs`, joined by writing "0"; a workload
    /// must get in, an exec tries.
    pub cgroup_procs: Option<File>,
    pub cgroup_join_is_fatal: bool,
    pub entry: Entry,
    pub rlimits: Vec<(u32, libc::rlimit)>,
    pub cwd: CString,
    pub caps: Option<CapSets>,
    pub no_new_privs: bool,
    pub filters: Vec<Vec<libc::sock_filter>>,
    pub groups: Vec<Gid>,
    pub uid: Uid,
    pub gid: Gid,
}

/// The parts of a plan that come from the process alone.
pub struct Credentials {
    pub rlimits: Vec<(u32, libc::rlimit)>,
    pub groups: Vec<Gid>,
    pub uid: Uid,
    pub gid: Gid,
}

impl Credentials {
    pub fn of(p: &ProcessSpec) -> Self {
        Credentials {
            rlimits: p
                .rlimits
                .iter()
                .map(|&(res, soft, hard)| {
                    (
                        res,
                        libc::rlimit {
                            rlim_cur: soft,
                            rlim_max: hard,
                        },
                    )
                })
                .collect(),
            groups: p
                .additional_gids
                .iter()
                .map(|g| Gid::from_raw(*g))
                .collect(),
            uid: Uid::from_raw(p.uid),
            gid: Gid::from_raw(p.gid),
        }
    }
}

/// The container's cgroup hierarchy as the workload mounts it: read-only
/// unless privileged, as under runc.
pub fn cgroup_mount_flags(privileged: bool) -> MsFlags {
    let mut f = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if !privileged {
        f |= MsFlags::MS_RDONLY;
    }
    f
}

impl Plan {
    /// Between fork and exec.
    pub fn run(&self) -> io::Result<()> {
        self.new_session()?;
        self.join_cgroup()?;
        self.enter_root()?;
        self.set_rlimits()?;
        self.enter_cwd()?;
        self.keep_caps_across_setuid()?;
        // As runc: without no_new_privs the filters must go in while the
        // process still has CAP_SYS_ADMIN; with it, last.
        if !self.no_new_privs {
            confine::install_seccomp(&self.filters)?;
        }
        self.set_ids()?;
        if let Some(c) = &self.caps {
            confine::set_caps(c)?;
        }
        if self.no_new_privs {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
            confine::install_seccomp(&self.filters)?;
        }
        Ok(())
    }

    /// Its own session, with the terminal (if any) as controlling tty.
    fn new_session(&self) -> io::Result<()> {
        setsid()?;
        // SAFETY: TIOCSCTTY on stdin with an integer argument.
        if self.terminal && unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn join_cgroup(&self) -> io::Result<()> {
        if let Some(procs) = &self.cgroup_procs {
            // SAFETY: write(2) of one static byte to an open descriptor.
            let n = unsafe { libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if n != 1 && self.cgroup_join_is_fatal {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    fn enter_root(&self) -> io::Result<()> {
        let cgroup = self.cgroup_procs.is_some();
        match &self.entry {
            Entry::NewRoot {
                console,
                cgroup_flags,
                masked,
                readonly,
            } => {
                if cgroup {
                    unshare(CloneFlags::CLONE_NEWCGROUP)?;
                }
                confine::enter_root()?;
                if let Some(src) = console {
                    bind_console(src)?;
                }
                if cgroup {
                    // Mounted from inside the new cgroup namespace: its
                    // root is the container's cgroup.
                    mount(
                        Some(c"cgroup2"),
                        c"/sys/fs/cgroup",
                        Some(c"cgroup2"),
                        *cgroup_flags,
                        None::<&CStr>,
                    )?;
                }
                confine::masked_and_readonly(masked, readonly)?;
            }
            Entry::Join {
                mnt_ns,
                root,
                cgroup_ns,
            } => {
                if cgroup {
                    setns(cgroup_ns, CloneFlags::CLONE_NEWCGROUP)?;
                }
                setns(mnt_ns, CloneFlags::CLONE_NEWNS)?;
                fchdir(root.as_raw_fd())?;
                chroot(c".")?;
            }
        }
        Ok(())
    }

    fn set_rlimits(&self) -> io::Result<()> {
        for (res, lim) in &self.rlimits {
            // SAFETY: setrlimit reads one rlimit; the resource type
            // differs between libc flavours.
            if unsafe { libc::setrlimit(*res as _, lim) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// runc creates a missing cwd; best effort, chdir reports.
    fn enter_cwd(&self) -> io::Result<()> {
        // SAFETY: mkdir(2) on a prepared C string.
        unsafe { libc::mkdir(self.cwd.as_ptr(), 0o755) };
        chdir(self.cwd.as_c_str())?;
        Ok(())
    }

    /// The bounding set cut, the permitted set kept across the uid change
    /// (capset brings back the effective one, as runc does).
    fn keep_caps_across_setuid(&self) -> io::Result<()> {
        if let Some(c) = &self.caps {
            confine::drop_bounding(c.bounding)?;
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    fn set_ids(&self) -> io::Result<()> {
        setgroups(&self.groups)?;
        setgid(self.gid)?;
        setuid(self.uid)?;
        Ok(())
    }
}

/// As runc: the terminal is also /dev/console.
fn bind_console(src: &CStr) -> io::Result<()> {
    // SAFETY: open(2) of a static C string; the descriptor is closed here.
    let fd = unsafe {
        libc::open(
            c"/dev/console".as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd >= 0 {
        // SAFETY: closing the descriptor just opened.
        unsafe { libc::close(fd) };
    }
    mount(
        Some(src),
        c"/dev/console",
        None::<&CStr>,
        MsFlags::MS_BIND,
        None::<&CStr>,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_carry_ids_groups_and_limits() {
        let p = ProcessSpec {
            uid: 1000,
            gid: 100,
            additional_gids: vec![10, 20],
            rlimits: vec![(7, 1024, 4096)],
            ..Default::default()
        };
        let c = Credentials::of(&p);
        assert_eq!((c.uid.as_raw(), c.gid.as_raw()), (1000, 100));
        assert_eq!(c.groups, [Gid::from_raw(10), Gid::from_raw(20)]);
        assert_eq!(c.rlimits.len(), 1);
        let (res, lim) = c.rlimits[0];
        assert_eq!((res, lim.rlim_cur, lim.rlim_max), (7, 1024, 4096));
    }

    #[test]
    fn the_cgroup_tree_is_read_only_unless_privileged() {
        assert!(cgroup_mount_flags(false).contains(MsFlags::MS_RDONLY));
        assert!(!cgroup_mount_flags(true).contains(MsFlags::MS_RDONLY));
        for f in [MsFlags::MS_NOSUID, MsFlags::MS_NODEV, MsFlags::MS_NOEXEC] {
            assert!(cgroup_mount_flags(true).contains(f));
        }
    }
}
