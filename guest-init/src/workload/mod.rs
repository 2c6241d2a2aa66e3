//! Starting the workload the way runc starts a container process: its own
//! PID and mount namespaces rooted at the container root, cwd, groups,
//! gid, uid, environment, and a terminal or three pipes. After the Kata
//! agent's `rustjail`: the plan is built before the fork ([`plan`]), the
//! child runs its steps ([`plan::Plan::run`], [`confine`]).

mod confine;
mod passwd;
mod plan;
mod pty;

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{Pid, Uid};
use runq_protocol::ProcessSpec;

use plan::{Credentials, Entry, Plan};
pub use pty::set_winsize;

pub struct Workload {
    pub pid: Pid,
    /// Where the workload reads its input: a pipe, or the pty master.
    pub stdin: Option<File>,
    pub stdout: File,
    /// `None` with a terminal: stderr shares the pty with stdout.
    pub stderr: Option<File>,
    /// The pty master, for window size changes.
    pub pty: Option<OwnedFd>,
}

/// A workload that could not start, with the status runc users see.
#[derive(Debug)]
pub struct SpawnError {
    pub code: i32,
    pub message: String,
}

impl From<SpawnError> for runq_protocol::GuestMsg {
    fn from(e: SpawnError) -> Self {
        runq_protocol::GuestMsg::Failed {
            code: e.code,
            message: e.message,
        }
    }
}

fn spawn_error(program: &str, e: &io::Error) -> SpawnError {
    let (code, what) = match e.raw_os_error() {
        Some(libc::ENOENT) => (127, "executable file not found in $PATH".to_string()),
        Some(libc::EACCES) | Some(libc::EISDIR) | Some(libc::ENOEXEC) | Some(libc::EPERM) => {
            (126, format!("permission denied or not executable ({e})"))
        }
        _ => (126, e.to_string()),
    };
    SpawnError {
        code,
        message: format!("runq: exec {program:?}: {what}"),
    }
}

/// Where a process starts.
pub enum Target<'a> {
    /// The workload: new PID and mount namespaces rooted at the container,
    /// with OCI's masked and read-only paths applied (as runc does).
    NewNamespaces(&'a Confinement),
    /// An exec: the namespaces and root of this (workload) process.
    Join(Pid),
}

/// OCI `linux.maskedPaths` / `linux.readonlyPaths`.
#[derive(Debug, Default)]
pub struct Confinement {
    pub masked: Vec<String>,
    pub readonly: Vec<String>,
    /// `--privileged`: the cgroup hierarchy is writable, as under runc.
    pub privileged: bool,
}

/// Start `p` where `target` says, with `seccomp`'s programs installed.
pub fn spawn(
    p: &ProcessSpec,
    winsize: Option<(u16, u16)>,
    seccomp: &[Vec<u64>],
    target: Target,
) -> Result<Workload, SpawnError> {
    let program = p.args.first().ok_or_else(|| fail("start", &"no command"))?;
    let mut cmd = Command::new(program);
    cmd.args(&p.args[1..]).env_clear();
    set_env(&mut cmd, p, &target);
    let (pty, console) = set_stdio(&mut cmd, p, winsize)?;
    let plan = build_plan(p, seccomp, &target, console)?;
    // The workload becomes PID 1 of its own PID namespace, as under runc:
    // it cannot see or signal runq-init, and the namespace ends with it.
    // After unshare the kernel refuses new threads in init until it is
    // back in its own namespace for children, hence the setns below.
    // An exec joins the workload's PID namespace the same way: this
    // thread's children go there until the setns back.
    let own_pid_ns =
        File::open("/proc/self/ns/pid").map_err(|e| fail("opening init's PID namespace", &e))?;
    match &target {
        Target::NewNamespaces(_) => {
            unshare(CloneFlags::CLONE_NEWPID).map_err(|e| fail("creating the PID namespace", &e))?
        }
        Target::Join(w) => setns(&open_of(*w, "ns/pid")?, CloneFlags::CLONE_NEWPID)
            .map_err(|e| fail("joining the workload's PID namespace", &e))?,
    }
    // SAFETY: the plan's steps only make async-signal-safe system calls
    // on data prepared above (other init threads may run; nothing there
    // takes a lock or allocates).
    unsafe {
        cmd.pre_exec(move || plan.run());
    }
    let spawned = {
        let _reaper_waits = crate::reaper::spawning();
        cmd.spawn()
    };
    setns(&own_pid_ns, CloneFlags::CLONE_NEWPID)
        .map_err(|e| fail("returning to init's PID namespace", &e))?;
    let child = spawned.map_err(|e| spawn_error(program, &e))?;
    workload_of(child, pty)
}

fn fail(what: &str, e: &dyn std::fmt::Display) -> SpawnError {
    SpawnError {
        code: 1,
        message: format!("runq: {what}: {e}"),
    }
}

/// The process's environment; HOME as runc sets it when it has none:
/// from the image's /etc/passwd, else "/".
fn set_env(cmd: &mut Command, p: &ProcessSpec, target: &Target) {
    for kv in &p.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        cmd.env(k, v);
    }
    if !p.env.iter().any(|kv| kv.starts_with("HOME=")) {
        let root = match target {
            Target::NewNamespaces(_) => crate::mounts::ROOT.to_string(),
            Target::Join(w) => format!("/proc/{w}/root"),
        };
        let passwd = passwd::read_passwd(&format!("{root}/etc/passwd")).unwrap_or_default();
        cmd.env("HOME", passwd::home_of(&passwd, p.uid));
    }
}

/// A terminal (the pty master, and its /dev/pts/N as the workload's root
/// names it) or three pipes.
fn set_stdio(
    cmd: &mut Command,
    p: &ProcessSpec,
    winsize: Option<(u16, u16)>,
) -> Result<(Option<OwnedFd>, Option<CString>), SpawnError> {
    if !p.terminal {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        return Ok((None, None));
    }
    let tty = |e: &dyn std::fmt::Display| fail("allocating a terminal", e);
    let pair = pty::open_container_pty().map_err(|e| tty(&e))?;
    // As runc: the terminal belongs to the process's user (its group
    // stays tty, from devpts).
    nix::unistd::fchown(pair.slave.as_raw_fd(), Some(Uid::from_raw(p.uid)), None)
        .map_err(|e| tty(&e))?;
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| tty(&e));
    cmd.stdin(Stdio::from(dup(&pair.slave)?))
        .stdout(Stdio::from(dup(&pair.slave)?))
        .stderr(Stdio::from(pair.slave));
    if let Some((rows, cols)) = winsize {
        set_winsize(&pair.master, rows, cols);
    }
    let console = pty::pty_slave_path(&pair.master).map_err(|e| tty(&e))?;
    Ok((Some(pair.master), Some(console)))
}

/// `/proc/<workload>/<what>`, for an exec joining it.
fn open_of(w: Pid, what: &str) -> Result<File, SpawnError> {
    File::open(format!("/proc/{w}/{what}"))
        .map_err(|e| fail("joining the workload (has it exited?)", &e))
}

/// Everything the child needs, prepared before the fork.
fn build_plan(
    p: &ProcessSpec,
    seccomp: &[Vec<u64>],
    target: &Target,
    console: Option<CString>,
) -> Result<Plan, SpawnError> {
    let c_paths = |v: &[String]| -> Result<Vec<CString>, SpawnError> {
        v.iter()
            .map(|s| CString::new(s.as_str()).map_err(|e| fail("masked/readonly path", &e)))
            .collect()
    };
    let entry = match target {
        Target::NewNamespaces(c) => Entry::NewRoot {
            console,
            cgroup_flags: plan::cgroup_mount_flags(c.privileged),
            masked: c_paths(&c.masked)?,
            readonly: c_paths(&c.readonly)?,
        },
        Target::Join(w) => Entry::Join {
            mnt_ns: open_of(*w, "ns/mnt")?,
            root: open_of(*w, "root")?,
            cgroup_ns: open_of(*w, "ns/cgroup")?,
        },
    };
    // The container's cgroup (the workload's and every exec's), entered by
    // the child itself. An exec joins the workload's own cgroup (a
    // workload that delegated the container's cgroup, systemd or dind,
    // left no processes in it).
    let cgroup_procs = match target {
        Target::NewNamespaces(_) => crate::cgroup::procs(),
        Target::Join(w) => crate::cgroup::procs_of(*w).or_else(crate::cgroup::procs),
    };
    let Credentials {
        rlimits,
        groups,
        uid,
        gid,
    } = Credentials::of(p);
    Ok(Plan {
        terminal: p.terminal,
        cgroup_procs,
        cgroup_join_is_fatal: matches!(target, Target::NewNamespaces(_)),
        entry,
        rlimits,
        cwd: CString::new(p.cwd.as_str()).map_err(|e| fail("cwd", &e))?,
        caps: p.capabilities,
        no_new_privs: p.no_new_privileges,
        // BPF programs unpacked, before the fork.
        filters: seccomp
            .iter()
            .map(|p| runq_protocol::bpf::unpack(p))
            .collect(),
        groups,
        uid,
        gid,
    })
}

/// The started child as the session relays it.
fn workload_of(mut child: Child, pty: Option<OwnedFd>) -> Result<Workload, SpawnError> {
    let pid = Pid::from_raw(child.id() as i32);
    let file = |fd: OwnedFd| File::from(fd);
    Ok(match pty {
        Some(master) => {
            let dup = |fd: &OwnedFd| fd.try_clone().map(file).map_err(|e| fail("terminal", &e));
            Workload {
                pid,
                stdin: Some(dup(&master)?),
                stdout: dup(&master)?,
                stderr: None,
                pty: Some(master),
            }
        }
        None => Workload {
            pid,
            stdin: child.stdin.take().map(|s| file(OwnedFd::from(s))),
            stdout: child
                .stdout
                .take()
                .map(|s| file(OwnedFd::from(s)))
                .ok_or_else(|| fail("stdout", &"no pipe"))?,
            stderr: child.stderr.take().map(|s| file(OwnedFd::from(s))),
            pty: None,
        },
    })
}
