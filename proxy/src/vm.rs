//! Bringing the VM up: helpers, QEMU, and the guest's first call.

use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use runq_protocol::wire::{self, StartRequest};
use runq_protocol::{Cap, Drive, Share, VmSpec, CONTAINER_ROOTFS, CONTAINER_RUN_DIR, CONTROL_PORT};

use crate::caps;
use crate::dns;
use crate::helpers;
use crate::net;
use crate::qemu::{self, FdLayout, HostInfo, Qemu};
use crate::relay;

/// How long the guest may take from QEMU start to runq-init's call. TCG
/// boots take ~2 s alone, far longer on a loaded host.
pub const GUEST_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// vhost-device-vsock's host-side socket: guest ports are dialed here.
pub const VSOCK_UDS: &str = "/run/vm.vsock";

/// Serving the guest's file operations with the guest's owners and modes
/// (no DAC_READ_SEARCH: no file handles, so no open_by_handle_at).
const FILE_SERVER_CAPS: u64 = Cap::mask(&[
    Cap::Chown,
    Cap::DacOverride,
    Cap::Fowner,
    Cap::Fsetid,
    Cap::Setgid,
    Cap::Setuid,
    Cap::Mknod,
    Cap::Setfcap,
]);
/// virtiofsd also syncs its capability sets (SETPCAP) and chroots into
/// the shared directory (SYS_CHROOT).
const VIRTIOFSD_CAPS: u64 = FILE_SERVER_CAPS | Cap::mask(&[Cap::Setpcap, Cap::SysChroot]);

fn run_path(name: &str) -> PathBuf {
    Path::new(CONTAINER_RUN_DIR).join(name)
}

pub fn run(vm: VmSpec) -> Result<i32> {
    if vm.machine.debug {
        crate::trace_to(&run_path("proxy-trace.log"));
        crate::trace("proxy started");
    }
    if let Some(w) = &vm.host.warning {
        eprintln!("runq: {w}");
    }
    let vsock_uds = PathBuf::from(VSOCK_UDS);
    let control = UnixListener::bind(format!("{}_{CONTROL_PORT}", vsock_uds.display()))
        .context("binding the control socket")?;
    // The vsock backend takes longest to come up (~25 ms): started
    // first and waited for last; a clone's RAM is filled from the
    // template meanwhile, on a thread of its own.
    let vsock = start_vsock_backend(&vm, &vsock_uds)?;
    let ram = vm.machine.template.then(|| {
        let mib = vm.machine.mem_mib;
        std::thread::spawn(move || crate::template::ram_copy(mib))
    });
    let (nics, routes) = net::attach_all(vm.host.lasting_netns)?;
    crate::trace("network attached");
    dns::serve(VSOCK_UDS)?;
    let _helpers = Helpers {
        _virtiofsd: start_virtiofsd(&vm)?,
        _vsock: vsock.ready(HELPER_TIMEOUT)?,
    };
    crate::trace("helpers ready");
    let files = VmFiles::open(&vm)?;
    let seed = vm.machine.template.then(host_seed).transpose()?;
    let ram = ram
        .map(|copy| {
            copy.join()
                .map_err(|_| anyhow::anyhow!("the thread filling the guest's RAM panicked"))?
        })
        .transpose()?;
    if ram.is_some() {
        crate::trace("template RAM copied");
    }
    let qemu = start_qemu(&vm, &nics, files, ram)?;
    // From here on the proxy only relays and, at the end, kills QEMU
    // (another uid): CAP_KILL is all it keeps.
    caps::keep_only(Cap::Kill.bit()).context("dropping the proxy's capabilities")?;
    runq_protocol::bpf::install_all_threads(&runq_protocol::bpf::unpack(&vm.host.filters.strict))
        .context("installing the proxy's seccomp filter")?;
    crate::trace("qemu started");

    let mut conn = wait_for_guest(&control, &qemu)?;
    crate::trace("guest connected");
    wire::host_handshake(&mut conn).context("control handshake with runq-init")?;
    let terminal = vm.guest.process.terminal;
    let systemd = vm.guest.init.systemd;
    let mut guest = vm.guest;
    inherit_rlimits(&mut guest.process.rlimits);
    guest.sysctls = with_inherited_sysctls(&guest.sysctls);
    let start = StartRequest {
        guest,
        winsize: if terminal { relay::window_size() } else { None },
        nics: nics.into_iter().map(|n| n.config).collect(),
        routes,
        restored: seed.map(|seed| wire::Restored {
            wall_clock: wall_clock(),
            seed,
        }),
    };
    wire::write_msg(&mut conn, &start)?;
    crate::trace("start sent");
    relay::run(
        conn,
        relay::Relay {
            terminal,
            systemd,
            qemu: Some(qemu),
        },
    )
}

/// 64 bytes of the host's randomness for a guest restored from the
/// template (drawn before the proxy's seccomp filter is in place).
fn host_seed() -> Result<Vec<u8>> {
    let mut seed = vec![0u8; 64];
    // SAFETY: getrandom writes at most seed.len() bytes into seed.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if n != seed.len() as isize {
        bail!(
            "getrandom for the restored guest's seed: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(seed)
}

/// The host's wall clock, for a guest restored from the template.
fn wall_clock() -> (i64, u32) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_secs() as i64, now.subsec_nanos())
}

/// How long a helper may take to listen on its socket.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// The helpers next to QEMU, ended with the proxy.
struct Helpers {
    _virtiofsd: Option<Child>,
    _vsock: Child,
}

/// virtiofsd (for a virtiofs root: 9p is served by QEMU itself), which
/// keeps a file server's capabilities and its own seccomp filter.
fn start_virtiofsd(vm: &VmSpec) -> Result<Option<Child>> {
    match vm.guest.root.share {
        Share::Virtiofs => helpers::virtiofsd(
            CONTAINER_ROOTFS,
            &run_path("virtiofs.sock"),
            false,
            &run_path("virtiofsd.log"),
            helpers::Confine {
                caps: VIRTIOFSD_CAPS,
                ..Default::default()
            },
        )
        .map(Some),
        Share::NineP => Ok(None),
    }
}

/// The vsock backend, under the strict filter.
fn start_vsock_backend(vm: &VmSpec, vsock_uds: &Path) -> Result<helpers::Starting> {
    helpers::vsock_backend(
        &run_path("vsock.sock"),
        vsock_uds,
        &run_path("vsock.log"),
        helpers::Confine {
            filter: runq_protocol::bpf::unpack(&vm.host.filters.strict),
            ..Default::default()
        },
    )
}

/// Everything QEMU uses of the container, opened here and handed over.
struct VmFiles {
    console: OwnedFd,
    vsock: OwnedFd,
    virtiofs: Option<OwnedFd>,
    /// Per drive: read-only, then (unless read-only) read-write.
    drives: Vec<Vec<OwnedFd>>,
}

impl VmFiles {
    fn open(vm: &VmSpec) -> Result<Self> {
        let console = OwnedFd::from(
            std::fs::File::create(run_path("console.log")).context("creating the console log")?,
        );
        let vsock = OwnedFd::from(
            UnixStream::connect(run_path("vsock.sock"))
                .context("connecting to the vsock backend")?,
        );
        let virtiofs = match vm.guest.root.share {
            Share::Virtiofs => Some(OwnedFd::from(
                UnixStream::connect(run_path("virtiofs.sock"))
                    .context("connecting to virtiofsd")?,
            )),
            Share::NineP => None,
        };
        let drives = vm
            .drives
            .iter()
            .map(open_drive)
            .collect::<Result<Vec<_>>>()?;
        Ok(VmFiles {
            console,
            vsock,
            virtiofs,
            drives,
        })
    }
}

fn open_drive(d: &Drive) -> Result<Vec<OwnedFd>> {
    let open = |write: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(&d.path)
            .map(OwnedFd::from)
            .with_context(|| format!("opening runq disk {:?} ({})", d.id, d.path))
    };
    let mut fds = vec![open(false)?];
    if d.format == runq_protocol::DiskFormat::Qcow2 {
        check_qcow2(&fds[0], d)?;
    }
    if !d.readonly {
        fds.push(open(true)?);
    }
    Ok(fds)
}

/// QEMU with the taps and `files` as descriptors 3.. in
/// [`FdLayout`]'s order; our copies close once it has them.
fn start_qemu(
    vm: &VmSpec,
    nics: &[net::Nic],
    files: VmFiles,
    ram: Option<OwnedFd>,
) -> Result<Qemu> {
    let macs: Vec<String> = nics.iter().map(|n| n.config.mac.clone()).collect();
    let share = vm.guest.root.share;
    let template = vm.machine.template;
    let mut layout = FdLayout::new(&vm.machine.kernel, share, &vm.drives, &macs);
    let mut fds: Vec<&OwnedFd> = nics.iter().map(|n| &n.tap).collect();
    fds.push(&files.console);
    fds.push(&files.vsock);
    fds.extend(files.virtiofs.as_ref());
    fds.extend(files.drives.iter().flatten());
    let clone = if let Some(ram) = ram {
        layout = layout.with_template(true);
        let (host_end, qemu_end) = UnixStream::pair().context("QMP socket pair")?;
        let state = Path::new(runq_protocol::TEMPLATE_DIR).join(runq_protocol::TEMPLATE_STATE);
        let state = std::fs::File::open(&state)
            .with_context(|| format!("opening the VM template {}", state.display()))?;
        Some((
            host_end,
            [OwnedFd::from(qemu_end), ram, OwnedFd::from(state)],
        ))
    } else {
        None
    };
    if let Some((_, qemu_fds)) = &clone {
        fds.extend(qemu_fds);
    }
    let shape = if template {
        qemu::Shape::Clone
    } else {
        qemu::Shape::Full
    };
    let host = HostInfo::probe();
    let mut cmd = Command::new(qemu::binary(vm.machine.arch));
    cmd.args(qemu::command_line(
        &vm.machine,
        share,
        &vm.drives,
        &host,
        &layout,
        shape,
    ));
    let filter = runq_protocol::bpf::unpack(&vm.host.filters.qemu);
    let confine = match share {
        // No capabilities, not root: everything it needs is open already.
        Share::Virtiofs => helpers::Confine {
            ids: Some((runq_protocol::QEMU_UID, runq_protocol::QEMU_GID)),
            caps: 0,
            filter,
        },
        // QEMU is the 9p file server: root with a file server's
        // capabilities.
        Share::NineP => helpers::Confine {
            ids: None,
            caps: FILE_SERVER_CAPS,
            filter,
        },
    };
    let child = helpers::spawn(&mut cmd, &run_path("qemu.log"), &fds, confine)?;
    let qemu = Qemu {
        child,
        console: run_path("console.log"),
    };
    if let (Some((qmp, _)), Some(state_fd)) = (clone, layout.state_fd) {
        let devices = qemu::hotplug_devices(&vm.machine, share, &vm.drives, &host, &layout);
        crate::template::restore(qmp, state_fd, &devices).with_context(|| {
            format!(
                "starting from the VM template: {}",
                last_line("qemu.log").unwrap_or_else(|| "no message from QEMU".into())
            )
        })?;
    }
    Ok(qemu)
}

/// A qcow2 disk's header again, on the descriptor QEMU gets: another
/// container sharing the image may have written a backing or data file
/// into it since `runq create` looked.
fn check_qcow2(fd: &OwnedFd, d: &Drive) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(fd.try_clone()?);
    let mut header = [0u8; runq_protocol::image::HEADER_LEN];
    let n = file.read_at(&mut header, 0)?;
    match runq_protocol::image::format_from_header(&header[..n]) {
        Ok(runq_protocol::DiskFormat::Qcow2) => Ok(()),
        Ok(_) => bail!("runq disk {:?} ({}): no longer a qcow2 image", d.id, d.path),
        Err(why) => bail!("runq disk {:?} ({}) is refused: {why}", d.id, d.path),
    }
}

/// Under runc a workload inherits every limit its spec does not set from
/// the shim (through runc); the guest kernel's defaults would differ, so
/// the proxy, which inherited the same limits, passes them on.
fn inherit_rlimits(limits: &mut Vec<(u32, u64, u64)>) {
    for res in 0..runq_protocol::RLIMIT_NAMES.len() as u32 {
        if limits.iter().any(|(r, _, _)| *r == res) {
            continue;
        }
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit struct on our stack.
        if unsafe { libc::getrlimit(res as _, &mut lim) } == 0 {
            limits.push((res, lim.rlim_cur, lim.rlim_max));
        }
    }
}

/// Accept runq-init's call, or fail naming the stage: QEMU died, or the
/// guest never got as far as dialing.
fn wait_for_guest(listener: &UnixListener, qemu: &Qemu) -> Result<UnixStream> {
    let deadline = Instant::now() + GUEST_CONNECT_TIMEOUT;
    let qemu_fd = helpers::pidfd_open(qemu.child.id())?;
    use std::os::fd::AsFd;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "the guest did not call back within {}s (stage: kernel boot to runq-init){}",
                GUEST_CONNECT_TIMEOUT.as_secs(),
                qemu.console_tail()
            );
        }
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(qemu_fd.as_fd(), PollFlags::POLLIN),
        ];
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => r.context("waiting for the guest")?,
        };
        if fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
        {
            let (conn, _) = listener.accept().context("accepting the guest's call")?;
            return Ok(conn);
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            bail!(
                "QEMU exited before the guest started: {}{}{}",
                last_line("qemu.log").unwrap_or_else(|| "no message".into()),
                last_line("virtiofsd.log")
                    .map(|l| format!("; virtiofsd: {l}"))
                    .unwrap_or_default(),
                qemu.console_tail()
            );
        }
    }
}

/// The last line a helper logged in the container's /run.
fn last_line(log: &str) -> Option<String> {
    helpers::last_line(&run_path(log))
}

/// Sysctls a runc container inherits from its network namespace, which
/// the guest's kernel would otherwise start at its own defaults: the
/// container's values (the proxy lives in its namespace), unless Docker's
/// `--sysctl` sets them.
fn with_inherited_sysctls(set: &[(String, String)]) -> Vec<(String, String)> {
    let mut all = set.to_vec();
    for key in ["net.ipv4.ip_forward"] {
        if set.iter().any(|(k, _)| k == key) {
            continue;
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        if let Ok(v) = std::fs::read_to_string(path) {
            all.push((key.to_string(), v.trim().to_string()));
        }
    }
    all
}
