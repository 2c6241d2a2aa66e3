//! Sessions over vsock: the workload's (control connection) and one per
//! exec. Each relays stdio and signals, then reports the exit status.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{sethostname, Pid};
use runq_protocol::wire::{self, ExecRequest, StartRequest, MAX_DATA_CHUNK};
use runq_protocol::{ExitStatus, GuestMsg, HostMsg, EXEC_PORT};
use vsock::{VsockListener, VsockStream, VMADDR_CID_ANY};

use crate::reaper::Reaper;
use crate::workload::{self, Target, Workload};
use crate::{dns, log, mounts, net};

type Writer = Arc<Mutex<VsockStream>>;

fn send(w: &Writer, msg: &GuestMsg) -> Result<()> {
    let mut conn = w
        .lock()
        .map_err(|_| anyhow::anyhow!("control writer poisoned"))?;
    wire::write_msg(&mut *conn, msg)?;
    Ok(())
}

/// The workload's session: set up the root, start, relay, report.
pub fn run(conn: VsockStream, start: StartRequest) -> Result<()> {
    let writer: Writer = Arc::new(Mutex::new(conn.try_clone().context("cloning vsock")?));
    let setup = (|| -> Result<()> {
        mounts::mount_container_root(&start.guest)?;
        crate::debug("root mounted");
        net::configure(&start.nics, &start.routes).context("configuring the network")?;
        crate::debug("network configured");
        dns::serve_if_used(&format!("{}/etc/resolv.conf", mounts::ROOT))
            .context("starting the embedded-DNS relay")?;
        crate::debug("dns relay up");
        if let Err(e) = crate::cgroup::prepare(start.guest.memory_bytes) {
            log(&format!("no cgroup for the container: {e:#}"));
        }
        if let Some(h) = &start.guest.hostname {
            sethostname(h).context("setting the hostname")?;
        }
        // The guest is the container's alone: its sysctls are the
        // container's namespaced ones (Docker only passes those).
        for (key, value) in &start.guest.sysctls {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            std::fs::write(&path, value).with_context(|| format!("sysctl {key}={value}"))?;
        }
        Ok(())
    })();
    if let Err(e) = setup {
        let message = format!("runq: preparing the guest: {e:#}");
        return send(&writer, &GuestMsg::Failed { code: 1, message });
    }
    let confinement = workload::Confinement {
        masked: start.guest.mounts.masked_paths.clone(),
        readonly: start.guest.mounts.readonly_paths.clone(),
        privileged: start.guest.privileged,
    };
    let seccomp = Arc::new(start.guest.seccomp.clone());
    let w = match workload::spawn(
        &start.guest.process,
        start.winsize,
        &seccomp,
        Target::NewNamespaces(&confinement),
    ) {
        Ok(w) => w,
        Err(e) => return send(&writer, &e.into()),
    };
    let pid = w.pid;
    crate::debug(&format!("workload started (pid {pid})"));
    let reaper = Arc::new(Reaper::default());
    if let Err(e) = serve_execs(pid, reaper.clone(), seccomp) {
        log(&format!("exec is unavailable: {e:#}"));
    }
    let systemd = start.guest.init.systemd;
    let disk_mounts = mounts::disk_mount_points(&start.guest);
    let hook = start.guest.init.sigusr.then(|| {
        sigusr_hook(
            pid,
            start.guest.process.env.clone(),
            writer.clone(),
            reaper.clone(),
        )
    });
    relay(conn, writer, w, hook, move || {
        let status = reaper.reap_until(pid);
        crate::debug(&format!("workload ended: {status:?}"));
        // The container ends with its first process, as a PID namespace
        // does: exec'd processes and daemons included.
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        // The workload's PID namespace is gone (its init's exit waits for
        // every member): nothing uses the disks now. Unmount them so their
        // filesystems are clean when the VM is killed.
        mounts::release_disks(&disk_mounts);
        if !systemd {
            return status;
        }
        // reboot(2) in a PID namespace ends its init: poweroff and halt
        // with SIGINT. That is a clean shutdown; anything else is not.
        match status {
            ExitStatus::Signaled(s) if s == libc::SIGINT => ExitStatus::Exited(0),
            _ => ExitStatus::Exited(1),
        }
    })
}

/// Accept exec connections for as long as the workload runs.
/// Every exec gets the workload's seccomp filters, as under runc.
fn serve_execs(workload: Pid, reaper: Arc<Reaper>, seccomp: Arc<Vec<Vec<u64>>>) -> Result<()> {
    let listener = VsockListener::bind_with_cid_port(VMADDR_CID_ANY, EXEC_PORT)
        .with_context(|| format!("listening on vsock port {EXEC_PORT}"))?;
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let reaper = reaper.clone();
            let seccomp = seccomp.clone();
            thread::spawn(move || {
                if let Err(e) = exec_session(conn, workload, &reaper, &seccomp) {
                    log(&format!("exec: {e:#}"));
                }
            });
        }
    });
    Ok(())
}

fn exec_session(
    mut conn: VsockStream,
    workload: Pid,
    reaper: &Reaper,
    seccomp: &[Vec<u64>],
) -> Result<()> {
    wire::guest_handshake(&mut conn)?;
    let req: ExecRequest =
        wire::read_msg(&mut conn)?.context("the exec connection closed before its request")?;
    let writer: Writer = Arc::new(Mutex::new(conn.try_clone()?));
    let w = match workload::spawn(&req.process, req.winsize, seccomp, Target::Join(workload)) {
        Ok(w) => w,
        // Docker reports an exec that could not start as 126, whatever
        // the cause (not found included); `docker run` says 127 for that.
        Err(mut e) => {
            e.code = 126;
            return send(&writer, &e.into());
        }
    };
    let status = reaper.watch(w.pid);
    relay(conn, writer, w, None, move || {
        status.recv().unwrap_or(ExitStatus::Exited(255))
    })
}

/// Takes a signal before the workload does; `true` when it handled it.
type SignalHook = Box<dyn Fn(i32) -> bool + Send>;

/// `--sigusr`: SIGUSR1/2 run `/.runq/SIGUSR1`/`SIGUSR2` as root in the
/// workload's namespaces, with the workload's environment; their output
/// joins the container's.
fn sigusr_hook(workload: Pid, env: Vec<String>, writer: Writer, reaper: Arc<Reaper>) -> SignalHook {
    Box::new(move |sig| {
        let name = match sig {
            libc::SIGUSR1 => "SIGUSR1",
            libc::SIGUSR2 => "SIGUSR2",
            _ => return false,
        };
        let p = runq_protocol::ProcessSpec {
            args: vec![format!("/.runq/{name}")],
            env: env.clone(),
            cwd: "/".into(),
            ..Default::default()
        };
        // The operator's hook scripts, not the workload: no seccomp.
        match workload::spawn(&p, None, &[], Target::Join(workload)) {
            Ok(h) => {
                // Reap it like any exec'd process; nobody waits.
                drop(reaper.watch(h.pid));
                drop(h.stdin);
                pump(h.stdout, writer.clone(), GuestMsg::Stdout);
                if let Some(e) = h.stderr {
                    pump(e, writer.clone(), GuestMsg::Stderr);
                }
            }
            Err(e) => log(&format!("{name}: {}", e.message)),
        }
        true
    })
}

/// Relay one process: output pumps, an input/signal reader, then the
/// status once `wait` returns and all output is out.
fn relay(
    conn: VsockStream,
    writer: Writer,
    w: Workload,
    hook: Option<SignalHook>,
    wait: impl FnOnce() -> ExitStatus,
) -> Result<()> {
    let out = pump(w.stdout, writer.clone(), GuestMsg::Stdout);
    let err = w.stderr.map(|e| pump(e, writer.clone(), GuestMsg::Stderr));
    let pid = w.pid;
    forward_input(conn.try_clone()?, pid, w.stdin, w.pty, hook);
    let status = wait();
    for h in [Some(out), err].into_iter().flatten() {
        let _ = h.join();
    }
    nix::unistd::sync();
    crate::debug("output drained, synced; sending Exit");
    send(&writer, &GuestMsg::Exit(status))?;
    // The host ends the connection (the proxy kills the VM after the
    // workload's Exit): wait for that rather than race it.
    let mut rest = conn;
    let _ = rest.read(&mut [0u8; 1]);
    Ok(())
}

fn forward_input(
    mut reader: VsockStream,
    pid: Pid,
    mut stdin: Option<File>,
    pty: Option<OwnedFd>,
    hook: Option<SignalHook>,
) {
    thread::spawn(move || loop {
        match wire::read_msg(&mut reader) {
            Ok(Some(HostMsg::Stdin(data))) => {
                // A process that closed its stdin just stops reading.
                if let Some(s) = stdin.as_mut() {
                    if s.write_all(&data).is_err() {
                        stdin = None;
                    }
                }
            }
            Ok(Some(HostMsg::StdinEof)) => {
                if pty.is_none() {
                    stdin = None;
                }
            }
            Ok(Some(HostMsg::Signal(n))) if hook.as_ref().is_some_and(|h| h(n)) => {}
            Ok(Some(HostMsg::Signal(n))) => {
                // Raw numbers: nix's Signal has no realtime signals, and
                // SIGRTMIN+4 (systemd's poweroff) must get through.
                // SAFETY: kill(2) with a pid and a signal number.
                unsafe { libc::kill(pid.as_raw(), n) };
            }
            Ok(Some(HostMsg::Resize { rows, cols })) => {
                if let Some(p) = &pty {
                    workload::set_winsize(p, rows, cols);
                }
            }
            Ok(None) | Err(_) => {
                // The other side is gone: nobody can see this process.
                let _ = kill(pid, Signal::SIGKILL);
                return;
            }
        }
    });
}

/// Forward one output stream as frames until EOF (EIO on a pty master
/// whose slave side is closed is EOF too).
fn pump(mut src: File, w: Writer, wrap: fn(Vec<u8>) -> GuestMsg) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = vec![0u8; MAX_DATA_CHUNK];
        loop {
            match src.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if send(&w, &wrap(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    })
}
