//! PID 1 reaps every child; the workload's and each exec'd process's
//! status must reach whoever waits for it, whichever of the two (the exit
//! or the wait) comes first.
//!
//! One child is not ours to reap: when `Command::spawn` cannot exec (a
//! `docker exec` of a missing binary), std's parent side reaps the failed
//! child itself and asserts that it could. A `waitpid(-1)` that took the
//! child first made that assertion fail, and PID 1 abort (the kernel's
//! "Attempted to kill init", on 2 or more vCPUs). So the reaper first
//! waits without reaping (`WNOWAIT`), then reaps only while no spawn is in
//! progress ([`spawning`]).

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use nix::errno::Errno;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use runq_protocol::ExitStatus;

/// Shared by every spawn in progress, exclusive while the reaper reaps.
static SPAWNS: RwLock<()> = RwLock::new(());

/// Hold this across `Command::spawn` (and nothing longer): the reaper
/// leaves the children alone meanwhile.
pub fn spawning() -> RwLockReadGuard<'static, ()> {
    SPAWNS.read().unwrap_or_else(|e| e.into_inner())
}

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
            // A child has ended: which one, without reaping it yet.
            let ended = match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(s) => s.pid(),
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    crate::log(&format!("waitid: {e}"));
                    return ExitStatus::Exited(255);
                }
            };
            let Some(ended) = ended else { continue };
            let reaped = {
                let _no_spawn = SPAWNS.write().unwrap_or_else(|e| e.into_inner());
                waitpid(ended, Some(WaitPidFlag::WNOHANG))
            };
            let (pid, status) = match reaped {
                Ok(WaitStatus::Exited(p, code)) => (p, ExitStatus::Exited(code)),
                Ok(WaitStatus::Signaled(p, sig, _)) => (p, ExitStatus::Signaled(sig as i32)),
                // Reaped by the spawn that was in progress (its exec failed).
                Ok(_) | Err(Errno::EINTR) | Err(Errno::ECHILD) => continue,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A child the reaper under test reaps (not `Child::wait`).
    #[allow(clippy::zombie_processes)]
    fn sh(code: i32) -> Pid {
        let _spawn = spawning();
        let child = Command::new("sh")
            .args(["-c", &format!("exit {code}")])
            .spawn()
            .unwrap();
        Pid::from_raw(child.id() as i32)
    }

    #[test]
    fn a_status_reaches_its_watcher_whichever_comes_first() {
        let r = Reaper::default();
        let early = r.watch(Pid::from_raw(100));
        r.deliver(Pid::from_raw(100), ExitStatus::Exited(1));
        assert_eq!(early.recv().unwrap(), ExitStatus::Exited(1));
        r.deliver(Pid::from_raw(200), ExitStatus::Signaled(9));
        let late = r.watch(Pid::from_raw(200));
        assert_eq!(late.recv().unwrap(), ExitStatus::Signaled(9));
    }

    /// Real children: the workload's status is returned, the others'
    /// delivered, each exactly to its own watcher.
    #[test]
    fn reaping_returns_the_workload_and_delivers_the_rest() {
        let r = Reaper::default();
        let other = sh(5);
        let watched = r.watch(other);
        let workload = sh(3);
        // The other child has ended (its status stays until reaped)
        // before the reaper starts: it must be delivered, not lost.
        waitid(Id::Pid(other), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).unwrap();
        assert_eq!(r.reap_until(workload), ExitStatus::Exited(3));
        assert_eq!(watched.recv().unwrap(), ExitStatus::Exited(5));
    }
}
