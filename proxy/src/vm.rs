//! Bringing the VM up: helpers, QEMU, and the guest's first call.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use runq_protocol::wire::{self, StartRequest};
use runq_protocol::{Msg, Share, VmSpec, CONTAINER_ROOTFS, CONTAINER_RUN_DIR, CONTROL_PORT};

use crate::arch::{self, Accel, HostInfo, NicArg, TargetArch, VmPaths};
use crate::dns;
use crate::helpers;
use crate::net;
use crate::relay;

/// How long the guest may take from QEMU start to runq-init's call. TCG
/// boots take ~2 s alone, far longer on a loaded host.
const GUEST_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// vhost-device-vsock's host-side socket: guest ports are dialed here.
pub const VSOCK_UDS: &str = "/run/vm.vsock";

fn run_path(name: &str) -> PathBuf {
    Path::new(CONTAINER_RUN_DIR).join(name)
}

pub fn run(vm: VmSpec) -> Result<i32> {
    if vm.debug {
        crate::trace_to(&run_path("proxy-trace.log"));
        crate::trace("proxy started");
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
    let (nics, routes) = net::attach_all()?;
    crate::trace("network attached");
    dns::serve(VSOCK_UDS)?;
    let paths = VmPaths {
        kernel: format!("/kernels/{}/kernel", vm.kernel),
        initrd: format!("/kernels/{}/initrd", vm.kernel),
        console_log: run_path("console.log").to_string_lossy().into_owned(),
        vsock_socket: run_path("vsock.sock").to_string_lossy().into_owned(),
        virtiofs_socket: run_path("virtiofs.sock").to_string_lossy().into_owned(),
        nics: nics
            .iter()
            .enumerate()
            .map(|(i, n)| NicArg {
                fd: 3 + i as i32,
                mac: n.config.mac.clone(),
            })
            .collect(),
    };
    // 9p is served by QEMU itself; virtiofs needs its daemon.
    let _virtiofsd = match vm.share {
        Share::Virtiofs => Some(helpers::virtiofsd(
            CONTAINER_ROOTFS,
            Path::new(&paths.virtiofs_socket),
            false,
            &run_path("virtiofsd.log"),
        )?),
        Share::NineP => None,
    };
    let _vsock = helpers::vsock_backend(
        Path::new(&paths.vsock_socket),
        &vsock_uds,
        &run_path("vsock.log"),
    )?;
    crate::trace("helpers ready");

    let arch = TargetArch::of_guest(vm.guest_arch);
    let host = HostInfo {
        tsc_khz: tsc_khz(),
        vhost_net: Path::new("/dev/vhost-net").exists(),
    };
    let mut qemu_cmd = Command::new(arch::qemu_binary(arch));
    qemu_cmd.args(arch::qemu_args(&vm, arch, accel, &host, &paths));
    let taps: Vec<&std::os::fd::OwnedFd> = nics.iter().map(|n| &n.tap).collect();
    let qemu = helpers::spawn(&mut qemu_cmd, &run_path("qemu.log"), &taps)?;
    crate::trace("qemu started");

    let mut conn = wait_for_guest(&control, &qemu, &paths.console_log)?;
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
        sysctls: vm.sysctls.clone(),
        masked_paths: vm.masked_paths.clone(),
        readonly_paths: vm.readonly_paths.clone(),
        seccomp: vm.seccomp.clone(),
        privileged: vm.privileged,
    };
    wire::write_msg(&mut conn, &Msg::Start(Box::new(start)))?;
    crate::trace("start sent");
    relay::run(
        conn,
        relay::Relay {
            terminal: vm.process.terminal,
            systemd: vm.systemd,
            qemu: Some((qemu, paths.console_log.clone())),
        },
    )
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
    let text = std::fs::read_to_string(run_path(log)).ok()?;
    text.trim().lines().last().map(str::to_string)
}

/// The last lines of the guest console, for error messages.
pub fn console_tail(console: &str) -> String {
    let text = std::fs::read_to_string(console).unwrap_or_default();
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
