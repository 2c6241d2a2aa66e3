//! PID 1 reaps every child; the workload's and each exec'd process's
//! status must reach whoever waits for it, whichever of the two (the exit
//! or the wait) comes first.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use runq_protocol::ExitStatus;

enum Slot {
    Waiting(Sender<ExitStatus>),
    Exited(ExitStatus),
}

#[derive(Default)]
pub struct Reaper {
    slots: Mutex<HashMap<i32, Slot>>,
}

impl Reaper {
    /// A receiver for `pid`'s status (already there if it has exited).
    pub fn watch(&self, pid: Pid) -> Receiver<ExitStatus> {
        let (tx, rx) = channel();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.remove(&pid.as_raw()) {
            Some(Slot::Exited(status)) => {
                let _ = tx.send(status);
            }
            _ => {
                slots.insert(pid.as_raw(), Slot::Waiting(tx));
            }
        }
        rx
    }

    fn deliver(&self, pid: Pid, status: ExitStatus) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.remove(&pid.as_raw()) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(status);
            }
            // Orphans adopted by init are reaped and forgotten; an exec'd
            // process may exit before its handler watches it: keep that.
            _ => {
                slots.insert(pid.as_raw(), Slot::Exited(status));
            }
        }
    }

    /// Reap until `workload` ends; deliver every other status.
    pub fn reap_until(&self, workload: Pid) -> ExitStatus {
        loop {
            let (pid, status) = match waitpid(None, None) {
                Ok(WaitStatus::Exited(p, code)) => (p, ExitStatus::Exited(code)),
                Ok(WaitStatus::Signaled(p, sig, _)) => (p, ExitStatus::Signaled(sig as i32)),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    crate::log(&format!("waitpid: {e}"));
                    return ExitStatus::Exited(255);
                }
            };
            if pid == workload {
                return status;
            }
            self.deliver(pid, status);
        }
    }
}
