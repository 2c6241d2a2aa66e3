//! `runq-init`: PID 1 of the guest. Boot the basics, dial the proxy over
//! vsock, mount the container's root, run the workload, report how it
//! ended, power off. Its own messages go to the console (a log file on the
//! host side), never into the workload's stdout/stderr.

mod cgroup;
mod dns;
mod modules;
mod mounts;
mod net;
mod reaper;
mod session;
mod template;
mod workload;

use std::io::Write;

use anyhow::{Context, Result};
use nix::sys::reboot::{reboot, RebootMode};
use runq_protocol::wire::{self, StartRequest};
use runq_protocol::CONTROL_PORT;
use vsock::{VsockAddr, VsockStream, VMADDR_CID_HOST};

fn main() {
    // PID 1 must never just die (the kernel panics with "Attempted to kill
    // init" and the user learns nothing): a panic in any thread is said on
    // the console, whose last lines the host shows, and the VM powers off.
    std::panic::set_hook(Box::new(|info| {
        log(&format!("internal error, the VM stops: {info}"));
        power_off();
    }));
    if let Err(e) = boot() {
        log(&format!("fatal: {e:#}"));
    }
    power_off();
}

pub fn log(msg: &str) {
    let _ = writeln!(std::io::stderr(), "runq-init: {msg}");
}

static DEBUG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A progress line on the console when the VM runs with debug on
/// (`runq --debug`, `RUNQ_DEBUG=1`).
pub fn debug(msg: &str) {
    if DEBUG.load(std::sync::atomic::Ordering::Relaxed) {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
            .unwrap_or(0.0);
        log(&format!("[{t:.3}] {msg}"));
    }
}

fn power_off() -> ! {
    nix::unistd::sync();
    let _ = reboot(RebootMode::RB_POWER_OFF);
    // reboot() only returns on failure; PID 1 must not exit (panic).
    loop {
        nix::unistd::pause();
    }
}

fn boot() -> Result<()> {
    mounts::mount_initramfs_basics()?;
    // `make bench` boots this same kernel and initrd bare to measure the
    // floor: reaching init is all it asks for.
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline.split_whitespace().any(|w| w == "runq.poweroff") {
        return Ok(());
    }
    if cmdline.split_whitespace().any(|w| w == "runq.debug") {
        DEBUG.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    debug("init started");
    modules::load_all(runq_protocol::tree::MODULES_LIST)?;
    debug("modules loaded");
    let mut conn = if cmdline.split_whitespace().any(|w| w == "runq.template") {
        template::dial_when_plugged()?
    } else {
        VsockStream::connect(&VsockAddr::new(VMADDR_CID_HOST, CONTROL_PORT))
            .context("dialing the proxy on vsock (host CID 2)")?
    };
    debug("connected to the proxy");
    wire::guest_handshake(&mut conn).context("control handshake")?;
    let start: StartRequest = wire::read_msg(&mut conn)
        .context("reading the start request")?
        .context("the proxy closed the connection before the start request")?;
    debug("start received");
    if let Some(r) = &start.restored {
        template::renew(r)?;
        debug("clock and entropy renewed");
    }
    session::run(conn, start)
}
