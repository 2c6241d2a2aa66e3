//! Bringing the VM up: helpers, QEMU, and the guest's first call.

use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use runq_protocol::wire::{self, StartRequest};
use runq_protocol::{Msg, Share, VmSpec, CONTAINER_ROOTFS, CONTAINER_RUN_DIR, CONTROL_PORT};

use crate::arch::{self, Accel, HostInfo, NicArg, TargetArch, VmPaths};
use crate::caps;
use crate::dns;
use crate::helpers;
use crate::net;
use crate::relay;

/// How long the guest may take from QEMU start to runq-init's call. TCG
/// boots take ~2 s alone, far longer on a loaded host.
const GUEST_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// vhost-device-vsock's host-side socket: guest ports are dialed here.
pub const VSOCK_UDS: &str = "/run/vm.vsock";

/// CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETGID, SETUID, MKNOD, SETFCAP:
/// serving the guest's file operations with the guest's owners and modes
/// (no DAC_READ_SEARCH: no file handles, so no open_by_handle_at).
const FILE_SERVER_CAPS: u64 =
    (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 6) | (1 << 7) | (1 << 27) | (1 << 31);
/// virtiofsd also syncs its capability sets (SETPCAP) and chroots into
/// the shared directory (SYS_CHROOT).
const VIRTIOFSD_CAPS: u64 = FILE_SERVER_CAPS | (1 << 8) | (1 << 18);
const CAP_KILL: u32 = 5;

fn run_path(name: &str) -> PathBuf {
    Path::new(CONTAINER_RUN_DIR).join(name)
}

pub fn run(vm: VmSpec) -> Result<i32> {
    if vm.debug {
        crate::trace_to(&run_path("proxy-trace.log"));
        crate::trace("proxy started");
    }
    if let Some(w) = &vm.warning {
        eprintln!("runq: {w}");
    }
    let accel = match vm.accel {
        runq_protocol::Accel::Kvm => Accel::Kvm,
        runq_protocol::Accel::Tcg => Accel::Tcg,
        runq_protocol::Accel::Auto => {
            bail!("vm.json: the accelerator was not resolved by runq create")
        }
    };
    let vsock_uds = PathBuf::from(VSOCK_UDS);
    let control = UnixListener::bind(format!("{}_{CONTROL_PORT}", vsock_uds.display()))
        .context("binding the control socket")?;
    let (nics, routes) = net::attach_all(vm.lasting_netns)?;
    crate::trace("network attached");
    dns::serve(VSOCK_UDS)?;
    let console_log = run_path("console.log");
    let vsock_socket = run_path("vsock.sock");
    let virtiofs_socket = run_path("virtiofs.sock");
    // 9p is served by QEMU itself; virtiofs needs its daemon, which keeps
    // the capabilities of a file server and its own seccomp filter.
    let _virtiofsd = match vm.share {
        Share::Virtiofs => Some(helpers::virtiofsd(
            CONTAINER_ROOTFS,
            &virtiofs_socket,
            false,
            &run_path("virtiofsd.log"),
            helpers::Confine {
                caps: VIRTIOFSD_CAPS,
                ..Default::default()
            },
        )?),
        Share::NineP => None,
    };
    let _vsock = helpers::vsock_backend(
        &vsock_socket,
        &vsock_uds,
        &run_path("vsock.log"),
        helpers::Confine {
            filter: runq_protocol::bpf::unpack(&vm.host_filters.strict),
            ..Default::default()
        },
    )?;
    crate::trace("helpers ready");

    // Everything QEMU uses of the container, opened here and handed over:
    // the taps as 3.., then the console, the vhost-user sockets, the disks.
    let console =
        OwnedFd::from(std::fs::File::create(&console_log).context("creating the console log")?);
    let vsock_conn = OwnedFd::from(
        UnixStream::connect(&vsock_socket).context("connecting to the vsock backend")?,
    );
    let virtiofs_conn = match vm.share {
        Share::Virtiofs => Some(OwnedFd::from(
            UnixStream::connect(&virtiofs_socket).context("connecting to virtiofsd")?,
        )),
        Share::NineP => None,
    };
    let disks = vm
        .disks
        .iter()
        .map(|d| {
            let open = |write: bool| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(write)
                    .open(&d.path)
                    .map(OwnedFd::from)
                    .with_context(|| format!("opening runq disk {:?} ({})", d.guest.id, d.path))
            };
            let mut fds = vec![open(false)?];
            if d.format == runq_protocol::DiskFormat::Qcow2 {
                check_qcow2(&fds[0], d)?;
            }
            if !d.guest.readonly {
                fds.push(open(true)?);
            }
            Ok(fds)
        })
        .collect::<Result<Vec<Vec<_>>>>()?;
    let mut fds: Vec<&OwnedFd> = nics.iter().map(|n| &n.tap).collect();
    let mut paths = VmPaths {
        kernel: format!("/kernels/{}/kernel", vm.kernel),
        initrd: format!("/kernels/{}/initrd", vm.kernel),
        nics: nics
            .iter()
            .enumerate()
            .map(|(i, n)| NicArg {
                fd: 3 + i as i32,
                mac: n.config.mac.clone(),
            })
            .collect(),
        console_fd: hand(&mut fds, &console),
        vsock_fd: hand(&mut fds, &vsock_conn),
        virtiofs_fd: -1,
        disk_fds: Vec::new(),
    };
    if let Some(c) = &virtiofs_conn {
        paths.virtiofs_fd = hand(&mut fds, c);
    }
    for d in &disks {
        let numbers = d.iter().map(|fd| hand(&mut fds, fd)).collect();
        paths.disk_fds.push(numbers);
    }

    let arch = TargetArch::of_guest(vm.guest_arch);
    let host = HostInfo {
        tsc_khz: tsc_khz(),
        vhost_net: Path::new("/dev/vhost-net").exists(),
    };
    let mut qemu_cmd = Command::new(arch::qemu_binary(arch));
    qemu_cmd.args(arch::qemu_args(&vm, arch, accel, &host, &paths));
    let qemu_confine = match vm.share {
        // No capabilities, not root: everything it needs is open already.
        Share::Virtiofs => helpers::Confine {
            ids: Some((runq_protocol::QEMU_UID, runq_protocol::QEMU_GID)),
            caps: 0,
            filter: runq_protocol::bpf::unpack(&vm.host_filters.qemu),
        },
        // QEMU is the 9p file server: root with a file server's
        // capabilities.
        Share::NineP => helpers::Confine {
            ids: None,
            caps: FILE_SERVER_CAPS,
            filter: runq_protocol::bpf::unpack(&vm.host_filters.qemu),
        },
    };
    let qemu = helpers::spawn(&mut qemu_cmd, &run_path("qemu.log"), &fds, qemu_confine)?;
    drop(fds);
    drop((console, vsock_conn, virtiofs_conn, disks));
    // From here on the proxy only relays and, at the end, kills QEMU
    // (another uid): CAP_KILL is all it keeps.
    caps::keep_only(1 << CAP_KILL).context("dropping the proxy's capabilities")?;
    runq_protocol::bpf::install_all_threads(&runq_protocol::bpf::unpack(&vm.host_filters.strict))
        .context("installing the proxy's seccomp filter")?;
    crate::trace("qemu started");

    let console_log = console_log.to_string_lossy().into_owned();
    let mut conn = wait_for_guest(&control, &qemu, &console_log)?;
    crate::trace("guest connected");
    wire::handshake(&mut conn).context("control handshake with runq-init")?;
    let mut process = vm.process.clone();
    inherit_rlimits(&mut process.rlimits);
    let start = StartRequest {
        process,
        hostname: vm.hostname.clone(),
        readonly_root: vm.readonly_root,
        tmpfs: vm.tmpfs.clone(),
        shm_size: vm.shm_size,
        winsize: if vm.process.terminal {
            relay::window_size()
        } else {
            None
        },
        systemd: vm.systemd,
        runqenv: vm.runqenv,
        sigusr: vm.sigusr,
        nics: nics.into_iter().map(|n| n.config).collect(),
        routes,
        resolv_conf: vm.resolv_conf.clone(),
        share: vm.share,
        ninep_cache: vm.ninep_cache,
        disks: vm.disks.iter().map(|d| d.guest.clone()).collect(),
        rootdisk: vm.rootdisk.clone(),
        binds: vm.binds.clone(),
        readonly_binds: vm.readonly_binds.clone(),
        sysctls: with_inherited_sysctls(&vm.sysctls),
        masked_paths: vm.masked_paths.clone(),
        readonly_paths: vm.readonly_paths.clone(),
        seccomp: vm.seccomp.clone(),
        privileged: vm.privileged,
        devices: vm.devices.clone(),
        memory_bytes: u64::from(vm.mem_mib) << 20,
    };
    wire::write_msg(&mut conn, &Msg::Start(Box::new(start)))?;
    crate::trace("start sent");
    relay::run(
        conn,
        relay::Relay {
            terminal: vm.process.terminal,
            systemd: vm.systemd,
            qemu: Some((qemu, console_log.clone())),
        },
    )
}

/// A qcow2 disk's header again, on the descriptor QEMU gets: another
/// container sharing the image may have written a backing or data file
/// into it since `runq create` looked.
fn check_qcow2(fd: &OwnedFd, d: &runq_protocol::Disk) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(fd.try_clone()?);
    let mut header = [0u8; runq_protocol::image::HEADER_LEN];
    let n = file.read_at(&mut header, 0)?;
    match runq_protocol::image::format_from_header(&header[..n]) {
        Ok(runq_protocol::DiskFormat::Qcow2) => Ok(()),
        Ok(_) => bail!(
            "runq disk {:?} ({}): no longer a qcow2 image",
            d.guest.id,
            d.path
        ),
        Err(why) => bail!("runq disk {:?} ({}) is refused: {why}", d.guest.id, d.path),
    }
}

/// Adds `fd` to those QEMU gets; the number it will have there.
fn hand<'a>(fds: &mut Vec<&'a OwnedFd>, fd: &'a OwnedFd) -> i32 {
    fds.push(fd);
    2 + fds.len() as i32
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
fn wait_for_guest(listener: &UnixListener, qemu: &Child, console: &str) -> Result<UnixStream> {
    let deadline = Instant::now() + GUEST_CONNECT_TIMEOUT;
    let qemu_fd = helpers::pidfd_open(qemu.id())?;
    use std::os::fd::AsFd;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "the guest did not call back within {}s (stage: kernel boot to runq-init){}",
                GUEST_CONNECT_TIMEOUT.as_secs(),
                console_tail(console)
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
                console_tail(console)
            );
        }
    }
}

/// The last line a helper logged in the container's /run.
fn last_line(log: &str) -> Option<String> {
    let text = std::fs::read(run_path(log)).ok()?;
    let text = String::from_utf8_lossy(&text);
    text.trim().lines().last().map(str::to_string)
}

/// The last lines of the guest console, for error messages.
pub fn console_tail(console: &str) -> String {
    // The guest writes the console: a byte that is no UTF-8 must not
    // hide the rest.
    let text = std::fs::read(console).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    // A panic's own line says more than the register dump after it.
    if let Some(panic) = lines.iter().find(|l| l.contains("Kernel panic")) {
        return format!("; guest console: {}", panic.trim());
    }
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(3)..];
    format!("; guest console: {}", tail.join(" | "))
}

/// Host TSC frequency for `tsc_early_khz` (TCG on microvm).
fn tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0).round() as u64)
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
