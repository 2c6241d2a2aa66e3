//! One workload session over the control connection: relay stdio and
//! signals, reap, report the exit status.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{sethostname, Pid};
use runq_protocol::wire::{self, StartRequest, MAX_DATA_CHUNK};
use runq_protocol::{ExitStatus, Msg};
use vsock::VsockStream;

use crate::{log, mounts, workload};

type Writer = Arc<Mutex<VsockStream>>;

fn send(w: &Writer, msg: &Msg) -> Result<()> {
    let mut conn = w
        .lock()
        .map_err(|_| anyhow::anyhow!("control writer poisoned"))?;
    wire::write_msg(&mut *conn, msg)?;
    Ok(())
}

pub fn run(conn: VsockStream, start: StartRequest) -> Result<()> {
    let writer: Writer = Arc::new(Mutex::new(conn.try_clone().context("cloning vsock")?));
    let setup = (|| -> Result<()> {
        mounts::mount_container_root(&start)?;
        if let Some(h) = &start.hostname {
            sethostname(h).context("setting the hostname")?;
        }
        Ok(())
    })();
    if let Err(e) = setup {
        let message = format!("runq: preparing the guest: {e:#}");
        return send(&writer, &Msg::Failed { code: 1, message });
    }
    let w = match workload::spawn(&start.process, start.winsize) {
        Ok(w) => w,
        Err(e) => {
            return send(
                &writer,
                &Msg::Failed {
                    code: e.code,
                    message: e.message,
                },
            );
        }
    };
    let out = pump(w.stdout, writer.clone(), Msg::Stdout);
    let err = w.stderr.map(|e| pump(e, writer.clone(), Msg::Stderr));
    let pid = w.pid;
    let (mut stdin, pty) = (w.stdin, w.pty);
    let mut reader = conn;
    thread::spawn(move || loop {
        match wire::read_msg(&mut reader) {
            Ok(Some(Msg::Stdin(data))) => {
                // A workload that closed its stdin just stops reading.
                if let Some(s) = stdin.as_mut() {
                    if s.write_all(&data).is_err() {
                        stdin = None;
                    }
                }
            }
            Ok(Some(Msg::StdinEof)) => {
                if pty.is_none() {
                    stdin = None;
                }
            }
            Ok(Some(Msg::Signal(n))) => {
                // Raw numbers: nix's Signal has no realtime signals, and
                // SIGRTMIN+4 (systemd's poweroff) must get through.
                // SAFETY: kill(2) with a pid and a signal number.
                unsafe { libc::kill(pid.as_raw(), n) };
            }
            Ok(Some(Msg::Resize { rows, cols })) => {
                if let Some(p) = &pty {
                    workload::set_winsize(p, rows, cols);
                }
            }
            Ok(Some(other)) => log(&format!("ignoring unexpected {other:?}")),
            Ok(None) | Err(_) => {
                // The proxy is gone: nobody can see the workload any more.
                let _ = kill(pid, Signal::SIGKILL);
                return;
            }
        }
    });

    let mut status = reap(pid);
    if start.systemd {
        // reboot(2) in a PID namespace ends its init: poweroff and halt
        // with SIGINT. That is a clean shutdown; anything else is not.
        status = match status {
            ExitStatus::Signaled(s) if s == libc::SIGINT => ExitStatus::Exited(0),
            _ => ExitStatus::Exited(1),
        };
    }
    // The container ends with its first process, as a PID namespace does.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    for h in [Some(out), err].into_iter().flatten() {
        let _ = h.join();
    }
    nix::unistd::sync();
    send(&writer, &Msg::Exit(status))
}

/// Forward one output stream as frames until EOF (EIO on a pty master
/// whose slave side is closed is EOF too).
fn pump(mut src: File, w: Writer, wrap: fn(Vec<u8>) -> Msg) -> JoinHandle<()> {
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

/// Reap every child (init adopts orphans) until the workload itself ends.
fn reap(workload: Pid) -> ExitStatus {
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == workload => return ExitStatus::Exited(code),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == workload => {
                return ExitStatus::Signaled(sig as i32)
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                log(&format!("waitpid: {e}"));
                return ExitStatus::Exited(255);
            }
        }
    }
}
