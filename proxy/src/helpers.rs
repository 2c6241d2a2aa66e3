//! The processes the proxy runs next to QEMU: virtiofsd and the vhost-user
//! vsock backend. Each dies with the proxy (PR_SET_PDEATHSIG), and each
//! logs into the container's private /run, never into the workload's
//! output.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// What a helper keeps of the proxy's privileges (after Firecracker's
/// jailer: its own uid, only the capabilities it uses, a seccomp
/// allow-list; no_new_privs is the proxy's already and is inherited).
#[derive(Default)]
pub struct Confine {
    /// Run as this uid and gid, with no supplementary groups (leaving uid
    /// 0 clears every capability); `None`: stay root.
    pub ids: Option<(u32, u32)>,
    /// Capabilities the helper may keep (bit mask): the bounding set is
    /// cut to them, so exec gives a root helper these and no more.
    pub caps: u64,
    /// A seccomp filter installed right before exec (empty: none of ours).
    pub filter: Vec<libc::sock_filter>,
}

/// The last line a helper (or QEMU) logged in `log`.
pub fn last_line(log: &Path) -> Option<String> {
    let text = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(&text);
    text.trim().lines().last().map(str::to_string)
}

/// Start `cmd` so that it dies with the proxy, logs to `log` and runs as
/// `confine` says; `fds` are handed over as 3, 4, ... Must be called from
/// the main thread: PDEATHSIG follows the thread that forked.
pub fn spawn(cmd: &mut Command, log: &Path, fds: &[&OwnedFd], confine: Confine) -> Result<Child> {
    let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    // Copies above any target number first, so that no dup2 below
    // overwrites a source not yet moved (they close with `high`).
    let high: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| {
            nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100))
                // SAFETY: F_DUPFD_CLOEXEC returned a new fd that we own.
                .map(|n| unsafe { OwnedFd::from_raw_fd(n) })
        })
        .collect::<Result<_, _>>()
        .context("duplicating descriptors for a helper")?;
    let raw: Vec<i32> = high.iter().map(|fd| fd.as_raw_fd()).collect();
    let parent = std::process::id() as libc::pid_t;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: between fork and exec only async-signal-safe system calls
    // run (dup2, prctl, setgroups, setres[ug]id, getppid); they touch no
    // memory of the parent, and the filter was unpacked before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc != 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            // dup2 clears CLOEXEC on the targets; the sources are >= 100.
            for (i, fd) in raw.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for cap in 0..64 {
                // EINVAL: past the kernel's last capability.
                if confine.caps & (1u64 << cap) == 0
                    && libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                    && *libc::__errno_location() != libc::EINVAL
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some((uid, gid)) = confine.ids {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setresgid(gid, gid, gid))?;
                check(libc::setresuid(uid, uid, uid))?;
            }
            // After the uid change, which clears it; and the proxy may
            // have died before it was set.
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            if !confine.filter.is_empty() {
                runq_protocol::bpf::install(&confine.filter)?;
            }
            Ok(())
        });
    }
    let name = cmd.get_program().to_string_lossy().into_owned();
    cmd.spawn().with_context(|| format!("starting {name}"))
}

/// virtiofsd serving `dir`, listening on a socket we bind ourselves and
/// pass as fd 3, so QEMU can connect at once (no start-up race).
pub fn virtiofsd(
    dir: &str,
    socket: &Path,
    readonly: bool,
    log: &Path,
    confine: Confine,
) -> Result<Child> {
    let listener =
        UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    let fd = OwnedFd::from(listener);
    let mut cmd = Command::new("virtiofsd");
    cmd.args([
        "--fd=3",
        "--shared-dir",
        dir,
        "--cache=auto",
        // Inside the container's namespaces, chrooted into the shared
        // directory (a mount namespace of its own would need
        // CAP_SYS_ADMIN), with O_PATH descriptors instead of file handles:
        // no CAP_DAC_READ_SEARCH, so no open_by_handle_at onto the host's
        // filesystem. Its own seccomp allow-list stays on.
        "--sandbox=chroot",
        "--inode-file-handles=never",
        "--modcaps=-dac_read_search",
        "--announce-submounts",
        "--log-level=error",
    ]);
    if readonly {
        cmd.arg("--readonly");
    }
    spawn(&mut cmd, log, &[&fd], confine)
}

/// vhost-device-vsock for guest CID 3, started: guest connections to host
/// port P arrive on `<uds>_P`. It binds its socket itself, a few tens of
/// ms later; [`Starting::ready`] waits for that, so the proxy's other
/// steps run meanwhile.
pub fn vsock_backend(socket: &Path, uds: &Path, log: &Path, confine: Confine) -> Result<Starting> {
    let mut cmd = Command::new("vhost-device-vsock");
    cmd.arg("--guest-cid=3")
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--uds-path={}", uds.display()));
    let watch = SocketWatch::new(socket)?;
    let child = spawn(&mut cmd, log, &[], confine)?;
    Ok(Starting { child, watch })
}

/// A helper started, its listening socket not yet checked for.
pub struct Starting {
    child: Child,
    watch: SocketWatch,
}

impl Starting {
    /// The helper, once its socket listens (at most `timeout`).
    pub fn ready(self, timeout: Duration) -> Result<Child> {
        self.watch.wait(&self.child, timeout)?;
        Ok(self.child)
    }
}

/// Waits for a helper's listening socket to appear: an inotify watch on
/// its directory, set up before the helper starts.
struct SocketWatch {
    inotify: Inotify,
    path: std::path::PathBuf,
}

impl SocketWatch {
    fn new(path: &Path) -> Result<Self> {
        let dir = path.parent().context("socket path has no directory")?;
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
        inotify.add_watch(dir, AddWatchFlags::IN_CREATE)?;
        Ok(SocketWatch {
            inotify,
            path: path.to_path_buf(),
        })
    }

    fn wait(&self, child: &Child, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let pidfd = pidfd_open(child.id())?;
        loop {
            if is_listening(&self.path) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "{} did not appear within {}s",
                    self.path.display(),
                    timeout.as_secs()
                );
            }
            use std::os::fd::AsFd;
            let mut fds = [
                PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN),
                PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            ];
            // The IN_CREATE of the socket's name marks bind(); listen()
            // follows within microseconds but raises no event of its own,
            // so only that state is re-checked, every millisecond. (A
            // 1 s re-check here made 2 starts in 5 wait a whole second:
            // `make bench`, start profile.)
            let tick = if self.path.exists() {
                left.min(Duration::from_millis(1))
            } else {
                left
            };
            let ms = PollTimeout::try_from(tick.as_millis().max(1).min(i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX);
            poll(&mut fds, ms)?;
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                bail!(
                    "{} exited before creating {}",
                    "the vsock backend",
                    self.path.display()
                );
            }
            let _ = self.inotify.read_events();
        }
    }
}

/// Is there a listening unix socket bound at `path`? bind() creates the
/// file an instant before listen(): checking the kernel's socket table
/// closes that window.
fn is_listening(path: &Path) -> bool {
    const ACCEPTCON: u32 = 0x10000;
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let want = path.to_string_lossy();
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 8
            && f[7] == want
            && u32::from_str_radix(f[3], 16).is_ok_and(|flags| flags & ACCEPTCON != 0)
    })
}

pub struct PidFd(OwnedFd);

impl PidFd {
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }
}

/// A pollable handle that becomes readable when the process exits.
pub fn pidfd_open(pid: u32) -> Result<PidFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("pidfd_open");
    }
    // SAFETY: the kernel just returned this fd to us; we own it.
    Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}
