//! The container side of a running workload: stdin and signals go to the
//! guest, stdout/stderr and the exit status come back.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::sys::termios;
use nix::unistd::Pid;
use runq_protocol::wire::{self, MAX_DATA_CHUNK};
use runq_protocol::{GuestMsg, HostMsg};
use signal_hook::consts::signal::*;
use signal_hook::iterator::Signals;

use crate::qemu::Qemu;
use crate::VM_FAILED;

type Writer = Arc<Mutex<UnixStream>>;

fn send(w: &Writer, msg: &HostMsg) -> bool {
    match w.lock() {
        Ok(mut conn) => wire::write_msg(&mut *conn, msg).is_ok(),
        Err(_) => false,
    }
}

/// Set once the workload's status is in: QEMU ending after that is us.
static FINISHED: AtomicBool = AtomicBool::new(false);

/// One relayed process: the workload (with QEMU to watch) or an exec.
pub struct Relay {
    pub terminal: bool,
    pub systemd: bool,
    /// QEMU, for the workload's relay.
    pub qemu: Option<Qemu>,
}

pub fn run(conn: UnixStream, r: Relay) -> Result<i32> {
    let terminal = r.terminal;
    let writer: Writer = Arc::new(Mutex::new(
        conn.try_clone().context("cloning the control socket")?,
    ));
    let qemu_pid = r.qemu.as_ref().map(|q| Pid::from_raw(q.child.id() as i32));
    let watching_qemu = r.qemu.is_some();
    if terminal {
        make_raw();
    }
    forward_stdin(writer.clone());
    forward_signals(writer.clone(), terminal, r.systemd)?;
    if let Some(qemu) = r.qemu {
        watch_qemu(qemu);
    }

    let mut reader = conn;
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    let code = loop {
        match wire::read_msg_max(&mut reader, wire::MAX_GUEST_FRAME) {
            Ok(Some(GuestMsg::Stdout(d))) => {
                // A closed stdout (nobody attached) must not stop the VM.
                let _ = stdout.write_all(&d).and_then(|()| stdout.flush());
            }
            Ok(Some(GuestMsg::Stderr(d))) => {
                let _ = stderr.write_all(&d);
            }
            Ok(Some(GuestMsg::Exit(status))) => break status.code(),
            Ok(Some(GuestMsg::Failed { code, message })) => {
                let _ = writeln!(stderr, "{message}");
                break code;
            }
            Err(
                e @ (wire::WireError::TooLarge { .. }
                | wire::WireError::Decode(_)
                | wire::WireError::Trailing(_)),
            ) => {
                anyhow::bail!("the guest broke the control protocol: {e}")
            }
            Ok(None) | Err(_) if watching_qemu => {
                // The guest vanished; the QEMU watcher reports why.
                thread::park();
            }
            Ok(None) | Err(_) => {
                anyhow::bail!("the VM closed the connection before the process ended")
            }
        }
    };
    FINISHED.store(true, Ordering::SeqCst);
    // The guest has synced and reported: nothing left to lose in it.
    if let Some(pid) = qemu_pid {
        let _ = kill(pid, Signal::SIGKILL);
    }
    Ok(code)
}

/// With `-t` runc hands us a pty: make it raw, the guest's pty does the
/// line discipline (echo, ^C -> SIGINT).
fn make_raw() {
    let stdin = std::io::stdin();
    if let Ok(mut t) = termios::tcgetattr(&stdin) {
        termios::cfmakeraw(&mut t);
        let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &t);
    }
}

/// The size of the terminal runc gave us, if any.
pub fn window_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct on our stack.
    let ok = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

fn send_window_size(w: &Writer) {
    if let Some((rows, cols)) = window_size() {
        send(w, &HostMsg::Resize { rows, cols });
    }
}

fn forward_stdin(w: Writer) {
    thread::spawn(move || {
        let mut buf = vec![0u8; MAX_DATA_CHUNK];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if !send(&w, &HostMsg::Stdin(buf[..n].to_vec())) {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        send(&w, &HostMsg::StdinEof);
    });
}

/// Every signal the container receives (`docker kill -s`, `docker stop`)
/// goes to the workload; SIGWINCH becomes a resize; for an init system
/// (`RUNQ_SYSTEMD`) SIGTERM becomes SIGRTMIN+4, systemd's "power off".
fn forward_signals(w: Writer, terminal: bool, systemd: bool) -> Result<()> {
    let mut list: Vec<i32> = (1..=31)
        .filter(|s| !signal_hook::consts::FORBIDDEN.contains(s) && *s != SIGCHLD)
        .collect();
    list.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
    let mut signals = Signals::new(&list).context("installing signal handlers")?;
    thread::spawn(move || {
        for sig in signals.forever() {
            let sig = if systemd && sig == SIGTERM {
                libc::SIGRTMIN() + 4
            } else {
                sig
            };
            if sig == SIGWINCH && terminal {
                send_window_size(&w);
            } else if !send(&w, &HostMsg::Signal(sig)) {
                return;
            }
        }
    });
    Ok(())
}

/// QEMU ending before the workload reported is a VM failure (killed,
/// guest panic): say so and end the container.
fn watch_qemu(mut qemu: Qemu) {
    thread::spawn(move || {
        let status = qemu.child.wait();
        if FINISHED.load(Ordering::SeqCst) {
            return;
        }
        let how = match status {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        };
        eprintln!(
            "runq: the VM stopped before the workload ended (QEMU {how}){}",
            qemu.console_tail()
        );
        std::process::exit(VM_FAILED);
    });
}
