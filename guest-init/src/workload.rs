//! Starting the workload the way runc starts a container process: its own
//! mount namespace rooted at the container root, cwd, groups, gid, uid,
//! environment, and a terminal or three pipes.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{chdir, chroot, fchdir, setgid, setgroups, setsid, setuid, Gid, Pid, Uid};
use runq_protocol::{CapSets, ProcessSpec};

use crate::mounts::ROOT_C;

pub struct Workload {
    pub pid: Pid,
    /// Where the workload reads its input: a pipe, or the pty master.
    pub stdin: Option<File>,
    pub stdout: File,
    /// `None` with a terminal: stderr shares the pty with stdout.
    pub stderr: Option<File>,
    /// The pty master, for window size changes.
    pub pty: Option<OwnedFd>,
}

/// A workload that could not start, with the status runc users see.
#[derive(Debug)]
pub struct SpawnError {
    pub code: i32,
    pub message: String,
}

impl From<SpawnError> for runq_protocol::Msg {
    fn from(e: SpawnError) -> Self {
        runq_protocol::Msg::Failed {
            code: e.code,
            message: e.message,
        }
    }
}

fn spawn_error(program: &str, e: &io::Error) -> SpawnError {
    let (code, what) = match e.raw_os_error() {
        Some(libc::ENOENT) => (127, "executable file not found in $PATH".to_string()),
        Some(libc::EACCES) | Some(libc::EISDIR) | Some(libc::ENOEXEC) | Some(libc::EPERM) => {
            (126, format!("permission denied or not executable ({e})"))
        }
        _ => (126, e.to_string()),
    };
    SpawnError {
        code,
        message: format!("runq: exec {program:?}: {what}"),
    }
}

/// The image's /etc/passwd, read as a running workload may have left it:
/// a regular file only (not a FIFO that blocks, not a link out of the
/// root, not /dev/zero), and at most 1 MiB of it.
fn read_passwd(path: &str) -> io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let mut text = String::new();
    f.take(1 << 20).read_to_string(&mut text)?;
    Ok(text)
}

/// The home directory of `uid` in an /etc/passwd, else "/".
fn home_of(passwd: &str, uid: u32) -> &str {
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && f[2].parse() == Ok(uid))
        .map(|f| f[5])
        .filter(|h| !h.is_empty())
        .unwrap_or("/")
}

/// Where a process starts.
pub enum Target<'a> {
    /// The workload: new PID and mount namespaces rooted at the container,
    /// with OCI's masked and read-only paths applied (as runc does).
    NewNamespaces(&'a Confinement),
    /// An exec: the namespaces and root of this (workload) process.
    Join(Pid),
}

/// OCI `linux.maskedPaths` / `linux.readonlyPaths`.
#[derive(Debug, Default)]
pub struct Confinement {
    pub masked: Vec<String>,
    pub readonly: Vec<String>,
    /// `--privileged`: the cgroup hierarchy is writable, as under runc.
    pub privileged: bool,
}

/// Apply masked and read-only paths in the current (new) mount namespace;
/// between fork and exec: system calls on prepared C strings only. Paths
/// that do not exist are skipped, as runc does.
fn confine(masked: &[CString], readonly: &[CString]) -> nix::Result<()> {
    for p in masked {
        // SAFETY: an all-zero `stat` is a valid value; `p` is a C string.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
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
        // SAFETY: an all-zero `statvfs` is a valid value; `p` is a C
        // string (glibc answers from statfs(2), no allocation).
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let mut keep = MsFlags::empty();
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

pub fn spawn(
    p: &ProcessSpec,
    winsize: Option<(u16, u16)>,
    seccomp: &[Vec<u64>],
    target: Target,
) -> Result<Workload, SpawnError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| SpawnError {
        code: 1,
        message: format!("runq: {what}: {e}"),
    };
    let program = p.args.first().ok_or_else(|| fail("start", &"no command"))?;
    let mut cmd = Command::new(program);
    cmd.args(&p.args[1..]).env_clear();
    for kv in &p.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        cmd.env(k, v);
    }
    if !p.env.iter().any(|kv| kv.starts_with("HOME=")) {
        // As runc: HOME from the image's /etc/passwd, else "/".
        let root = match &target {
            Target::NewNamespaces(_) => crate::mounts::ROOT.to_string(),
            Target::Join(w) => format!("/proc/{w}/root"),
        };
        let passwd = read_passwd(&format!("{root}/etc/passwd")).unwrap_or_default();
        cmd.env("HOME", home_of(&passwd, p.uid));
    }

    let mut pty = None;
    // The terminal's /dev/pts/N as the workload's root names it.
    let mut console: Option<CString> = None;
    if p.terminal {
        let pair = open_container_pty().map_err(|e| fail("allocating a terminal", &e))?;
        // As runc: the terminal belongs to the process's user (its group
        // stays tty, from devpts).
        nix::unistd::fchown(pair.slave.as_raw_fd(), Some(Uid::from_raw(p.uid)), None)
            .map_err(|e| fail("allocating a terminal", &e))?;
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| fail("allocating a terminal", &e))
        };
        cmd.stdin(Stdio::from(dup(&pair.slave)?))
            .stdout(Stdio::from(dup(&pair.slave)?))
            .stderr(Stdio::from(pair.slave));
        if let Some((rows, cols)) = winsize {
            set_winsize(&pair.master, rows, cols);
        }
        console =
            Some(pty_slave_path(&pair.master).map_err(|e| fail("allocating a terminal", &e))?);
        pty = Some(pair.master);
    } else {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }

    // Everything the child needs, prepared before fork: the closure below
    // runs between fork and exec and must not allocate.
    let cwd = CString::new(p.cwd.as_str()).map_err(|e| fail("cwd", &e))?;
    let c_paths = |v: &[String]| -> Result<Vec<CString>, SpawnError> {
        v.iter()
            .map(|s| CString::new(s.as_str()).map_err(|e| fail("masked/readonly path", &e)))
            .collect()
    };
    // BPF programs unpacked, before the fork.
    let filters: Vec<Vec<libc::sock_filter>> = seccomp
        .iter()
        .map(|p| runq_protocol::bpf::unpack(p))
        .collect();
    let (masked, readonly, cgroup_flags) = match &target {
        Target::NewNamespaces(c) => {
            let mut f = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            if !c.privileged {
                f |= MsFlags::MS_RDONLY;
            }
            (c_paths(&c.masked)?, c_paths(&c.readonly)?, f)
        }
        Target::Join(_) => (Vec::new(), Vec::new(), MsFlags::empty()),
    };
    // The container's cgroup (the workload's and every exec's), entered by
    // the child itself: one write of "0" to this descriptor. An exec joins
    // the workload's own cgroup (a workload that delegated the container's
    // cgroup, systemd or dind, left no processes in it).
    let cgroup_procs = match &target {
        Target::NewNamespaces(_) => crate::cgroup::procs(),
        Target::Join(w) => crate::cgroup::procs_of(*w).or_else(crate::cgroup::procs),
    };
    let cgroup_join_is_fatal = matches!(target, Target::NewNamespaces(_));
    let groups: Vec<Gid> = p
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    let (uid, gid) = (Uid::from_raw(p.uid), Gid::from_raw(p.gid));
    let terminal = p.terminal;
    let (caps, no_new_privs) = (p.capabilities, p.no_new_privileges);
    let rlimits: Vec<(u32, libc::rlimit)> = p
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
        .collect();
    // The workload becomes PID 1 of its own PID namespace, as under runc:
    // it cannot see or signal runq-init, and the namespace ends with it.
    // After unshare the kernel refuses new threads in init until it is
    // back in its own namespace for children, hence the setns below.
    // An exec joins the workload's PID namespace the same way: this
    // thread's children go there until the setns back.
    let own_pid_ns =
        File::open("/proc/self/ns/pid").map_err(|e| fail("opening init's PID namespace", &e))?;
    let join = match target {
        Target::NewNamespaces(_) => {
            unshare(CloneFlags::CLONE_NEWPID)
                .map_err(|e| fail("creating the PID namespace", &e))?;
            None
        }
        Target::Join(w) => {
            let open = |what: &str| {
                File::open(format!("/proc/{w}/{what}"))
                    .map_err(|e| fail("joining the workload (has it exited?)", &e))
            };
            let (pid_ns, mnt_ns, root) = (open("ns/pid")?, open("ns/mnt")?, open("root")?);
            let cgroup_ns = open("ns/cgroup")?;
            setns(&pid_ns, CloneFlags::CLONE_NEWPID)
                .map_err(|e| fail("joining the workload's PID namespace", &e))?;
            Some((mnt_ns, root, cgroup_ns))
        }
    };
    // SAFETY: the closure only makes async-signal-safe system calls on
    // data prepared above (other init threads may run; nothing here takes
    // a lock or allocates).
    unsafe {
        cmd.pre_exec(move || {
            setsid()?;
            if terminal && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(procs) = &cgroup_procs {
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1
                    && cgroup_join_is_fatal
                {
                    return Err(io::Error::last_os_error());
                }
            }
            match &join {
                None => {
                    if cgroup_procs.is_some() {
                        unshare(CloneFlags::CLONE_NEWCGROUP)?;
                    }
                    enter_root()?;
                    if let Some(src) = &console {
                        // As runc: the terminal is also /dev/console.
                        let fd = libc::open(
                            c"/dev/console".as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                            0o600,
                        );
                        if fd >= 0 {
                            libc::close(fd);
                        }
                        mount(
                            Some(src.as_c_str()),
                            c"/dev/console",
                            None::<&CStr>,
                            MsFlags::MS_BIND,
                            None::<&CStr>,
                        )?;
                    }
                    if cgroup_procs.is_some() {
                        // Mounted from inside the new cgroup namespace: its
                        // root is the container's cgroup.
                        mount(
                            Some(c"cgroup2"),
                            c"/sys/fs/cgroup",
                            Some(c"cgroup2"),
                            cgroup_flags,
                            None::<&CStr>,
                        )?;
                    }
                    confine(&masked, &readonly)?;
                }
                Some((mnt_ns, root, cgroup_ns)) => {
                    if cgroup_procs.is_some() {
                        setns(cgroup_ns, CloneFlags::CLONE_NEWCGROUP)?;
                    }
                    setns(mnt_ns, CloneFlags::CLONE_NEWNS)?;
                    fchdir(root.as_raw_fd())?;
                    chroot(c".")?;
                }
            }
            for (res, lim) in &rlimits {
                // The resource type differs between libc flavours.
                if libc::setrlimit(*res as _, lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // runc creates a missing cwd; best effort, chdir reports.
            libc::mkdir(cwd.as_ptr(), 0o755);
            chdir(cwd.as_c_str())?;
            if let Some(c) = &caps {
                drop_bounding(c.bounding)?;
                // Keep the permitted set across the uid change; capset
                // below brings back the effective one, as runc does.
                if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // As runc: without no_new_privs the filters must go in while
            // the process still has CAP_SYS_ADMIN; with it, last.
            if !no_new_privs {
                install_seccomp(&filters)?;
            }
            setgroups(&groups)?;
            setgid(gid)?;
            setuid(uid)?;
            if let Some(c) = &caps {
                set_caps(c)?;
            }
            if no_new_privs {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                install_seccomp(&filters)?;
            }
            Ok(())
        });
    }
    let spawned = {
        let _reaper_waits = crate::reaper::spawning();
        cmd.spawn()
    };
    setns(&own_pid_ns, CloneFlags::CLONE_NEWPID)
        .map_err(|e| fail("returning to init's PID namespace", &e))?;
    let mut child = spawned.map_err(|e| spawn_error(program, &e))?;
    let pid = Pid::from_raw(child.id() as i32);
    let w = match pty {
        Some(master) => {
            let dup = |fd: &OwnedFd| {
                fd.try_clone()
                    .map(File::from)
                    .map_err(|e| fail("terminal", &e))
            };
            Workload {
                pid,
                stdin: Some(dup(&master)?),
                stdout: dup(&master)?,
                stderr: None,
                pty: Some(master),
            }
        }
        None => Workload {
            pid,
            stdin: child.stdin.take().map(|s| File::from(OwnedFd::from(s))),
            stdout: child
                .stdout
                .take()
                .map(|s| File::from(OwnedFd::from(s)))
                .ok_or_else(|| fail("stdout", &"no pipe"))?,
            stderr: child.stderr.take().map(|s| File::from(OwnedFd::from(s))),
            pty: None,
        },
    };
    Ok(w)
}

/// Install seccomp filters; between fork and exec: system calls only.
fn install_seccomp(filters: &[Vec<libc::sock_filter>]) -> io::Result<()> {
    for f in filters {
        runq_protocol::bpf::install(f)?;
    }
    Ok(())
}

/// Drop every capability outside `bounding` from the bounding set.
/// Between fork and exec: system calls only.
fn drop_bounding(bounding: u64) -> io::Result<()> {
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
fn set_caps(c: &CapSets) -> io::Result<()> {
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
fn enter_root() -> nix::Result<()> {
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

pub struct PtyPair {
    master: OwnedFd,
    slave: OwnedFd,
}

/// A pty from the container's own devpts instance, so that the slave's
/// name (`tty`) resolves inside the container.
/// `/dev/pts/N` of a pty master, as a C string made before the fork.
fn pty_slave_path(master: &OwnedFd) -> io::Result<CString> {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes the pty's number into an unsigned int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } != 0 {
        return Err(io::Error::last_os_error());
    }
    CString::new(format!("/dev/pts/{n}")).map_err(|_| io::ErrorKind::InvalidInput.into())
}

fn open_container_pty() -> io::Result<PtyPair> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_comes_from_passwd_else_root() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\nbad:line\nempty:x:7:7:::\n";
        assert_eq!(home_of(passwd, 0), "/root");
        assert_eq!(home_of(passwd, 65534), "/home");
        assert_eq!(home_of(passwd, 7), "/");
        assert_eq!(home_of(passwd, 1000), "/");
        assert_eq!(home_of("", 0), "/");
    }
}
