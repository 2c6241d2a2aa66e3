//! The OCI seccomp profile Docker passes, compiled to BPF for the guest.
//!
//! libseccomp builds the program, as it does for runc, so a profile means
//! in the guest exactly what it means under runc: the same rule merging,
//! the same argument comparisons, the profile's secondary architectures
//! (x86 and x32 beside x86_64, s390 beside s390x). libseccomp generates
//! for any architecture it knows, not only the host's, so an x86_64 host
//! compiles the filter of an s390x guest (big-endian argument words
//! included) and the guest only installs the program.
//!
//! What cannot be enforced in the guest (user notification: there is no
//! listener in the VM) is refused: never a weaker filter.

use std::io::{Read, Seek};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, LinuxSyscall,
};
use runq_protocol::GuestArch;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SeccompError {
    #[error("seccomp: action {0} cannot be enforced in the guest (no notify listener there)")]
    Unsupported(String),
    #[error("seccomp: rule for {name}: {message}")]
    Rule { name: String, message: String },
    #[error("seccomp: {0}")]
    Filter(String),
}

fn filter_error(what: &str) -> impl Fn(libseccomp::error::SeccompError) -> SeccompError + '_ {
    move |e| SeccompError::Filter(format!("{what}: {e}"))
}

const EPERM: i32 = 1;

/// The profile as packed BPF programs for a guest of `arch` (one program;
/// a list so that the wire format does not fix the count).
pub fn compile(profile: &LinuxSeccomp, arch: GuestArch) -> Result<Vec<Vec<u64>>, SeccompError> {
    if profile.listener_path().is_some() {
        return Err(SeccompError::Unsupported("a notify listener".into()));
    }
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(filter_error("new filter"))?;
    set_arches(
        &mut ctx,
        profile.architectures().as_deref().unwrap_or(&[]),
        arch,
    )?;
    for s in profile.syscalls().as_deref().unwrap_or(&[]) {
        let act = rule_action(profile, s)?;
        if act == default {
            continue; // libseccomp refuses such rules; the default gives it already
        }
        for name in s.names() {
            // A name libseccomp does not know cannot be called: skip it, as runc does.
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                continue;
            };
            add_rule(&mut ctx, act, nr, s, name)?;
        }
    }
    let mut program = export(&ctx, arch)?;
    if arch.big_endian() != GuestArch::host().big_endian() {
        repair_cross_endian(&mut program, profile, arch, default)?;
    }
    Ok(vec![program])
}

/// The allow-list of the host-side helpers (see the file's header).
const HOST_SYSCALLS: &str = include_str!("host_syscalls.txt");

/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
const CLONE_NAMESPACES: u64 = 0x7e02_0000;
const ENOSYS: i32 = 38;

/// The seccomp allow-list the proxy puts on QEMU and vhost-device-vsock,
/// for the host's arch (packed); `extra` names calls allowed on top.
pub fn host_filter(extra: &[&str]) -> Result<Vec<u64>, SeccompError> {
    let mut ctx =
        ScmpFilterContext::new(ScmpAction::Errno(EPERM)).map_err(filter_error("new filter"))?;
    let names = HOST_SYSCALLS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .chain(extra.iter().copied());
    for name in names {
        // A name this arch does not have (or libseccomp does not know).
        let Ok(nr) = ScmpSyscall::from_name(name) else {
            continue;
        };
        ctx.add_rule(ScmpAction::Allow, nr)
            .map_err(filter_error(name))?;
    }
    let clone = ScmpSyscall::from_name("clone").map_err(filter_error("clone"))?;
    ctx.add_rule_conditional(
        ScmpAction::Allow,
        clone,
        &[libseccomp::ScmpArgCompare::new(
            0,
            libseccomp::ScmpCompareOp::MaskedEqual(CLONE_NAMESPACES),
            0,
        )],
    )
    .map_err(filter_error("clone"))?;
    if let Ok(clone3) = ScmpSyscall::from_name("clone3") {
        ctx.add_rule(ScmpAction::Errno(ENOSYS), clone3)
            .map_err(filter_error("clone3"))?;
    }
    export(&ctx, GuestArch::host())
}

/// The action word the kernel sees for `a` (`SECCOMP_RET_*` | data).
fn action_word(a: ScmpAction) -> u32 {
    match a {
        ScmpAction::KillProcess => 0x8000_0000,
        ScmpAction::KillThread => 0,
        ScmpAction::Trap => 0x0003_0000,
        ScmpAction::Errno(e) => 0x0005_0000 | (e as u32 & 0xffff),
        ScmpAction::Trace(t) => 0x7ff0_0000 | u32::from(t),
        ScmpAction::Log => 0x7ffc_0000,
        ScmpAction::Notify => 0x7fc0_0000,
        // Allow, and any action a later libseccomp adds (never emitted:
        // action() maps only the OCI actions above)
        _ => 0x7fff_0000,
    }
}

/// libseccomp 2.5.4 (Debian 12), generating a big-endian filter on a
/// little-endian host, leaves one shared action block in host byte order
/// (measured with Docker's default profile for s390x: the common ALLOW
/// return read 0x0000ff7f, a kill). A same-endian build, as on an s390x
/// host, is not affected. The repair: a return value that is not one of
/// the profile's actions but whose byte swap is becomes that action; then
/// the whole program is run against the profile (each unconditional rule
/// and the default) and any disagreement refuses the profile.
fn repair_cross_endian(
    program: &mut [u64],
    profile: &LinuxSeccomp,
    arch: GuestArch,
    default: ScmpAction,
) -> Result<(), SeccompError> {
    let rules = profile.syscalls().as_deref().unwrap_or(&[]);
    let mut expected = vec![action_word(default), action_word(ScmpAction::KillThread)];
    for s in rules {
        expected.push(action_word(rule_action(profile, s)?));
    }
    for w in program.iter_mut() {
        if bpf::is_return(*w) {
            let k = *w as u32;
            if !expected.contains(&k) {
                if !expected.contains(&k.swap_bytes()) {
                    return Err(SeccompError::Filter(format!(
                        "{} filter returns {k:#x}, not an action of the profile",
                        arch.as_str()
                    )));
                }
                *w = (*w & !0xffff_ffff) | u64::from(k.swap_bytes());
            }
        }
    }
    let scmp_arch = scmp_arch(arch);
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    for s in rules {
        for n in s.names() {
            *seen.entry(n.as_str()).or_default() += 1;
        }
    }
    let check = |nr: i32, want: u32, what: &str| {
        let got = bpf::run(program, &bpf::seccomp_data(arch, nr, [0; 6]))
            .map_err(|e| SeccompError::Filter(format!("{} filter: {e}", arch.as_str())))?;
        if got != want {
            return Err(SeccompError::Filter(format!(
                "{} filter gives {what} {got:#x}, the profile {want:#x}",
                arch.as_str()
            )));
        }
        Ok(())
    };
    for s in rules
        .iter()
        .filter(|s| s.args().as_deref().unwrap_or(&[]).is_empty())
    {
        let want = action_word(rule_action(profile, s)?);
        for name in s
            .names()
            .iter()
            .filter(|n| seen.get(n.as_str()) == Some(&1))
        {
            match ScmpSyscall::from_name_by_arch(name, scmp_arch).map(|s| s.as_raw_syscall()) {
                Ok(nr) if nr >= 0 => check(nr, want, name)?,
                _ => {} // not a system call of this arch (or multiplexed)
            }
        }
    }
    // a number no profile names
    check(0xfff, action_word(default), "an unknown call")
}

fn scmp_arch(arch: GuestArch) -> ScmpArch {
    match arch {
        GuestArch::X86_64 => ScmpArch::X8664,
        GuestArch::S390x => ScmpArch::S390X,
    }
}

/// The action of one of the profile's rules (its errno, else the profile's).
fn rule_action(profile: &LinuxSeccomp, s: &LinuxSyscall) -> Result<ScmpAction, SeccompError> {
    action(s.action(), s.errno_ret().or(profile.default_errno_ret()))
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, SeccompError> {
    let errno = errno.map_or(EPERM, |e| i32::try_from(e).unwrap_or(EPERM));
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(u16::try_from(errno).unwrap_or(1)),
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Unsupported("SCMP_ACT_NOTIFY".into()))
        }
    })
}

/// The guest's own architecture and those of the profile's list that
/// run on the guest's kernel (its compat ABIs); the host's architecture
/// is removed unless it is one of them (an s390x guest of an x86_64 host).
fn set_arches(
    ctx: &mut ScmpFilterContext,
    listed: &[Arch],
    guest: GuestArch,
) -> Result<(), SeccompError> {
    let compat: &[(Arch, ScmpArch)] = match guest {
        GuestArch::X86_64 => &[
            (Arch::ScmpArchX86, ScmpArch::X86),
            (Arch::ScmpArchX32, ScmpArch::X32),
        ],
        GuestArch::S390x => &[(Arch::ScmpArchS390, ScmpArch::S390)],
    };
    let mut arches = vec![scmp_arch(guest)];
    arches.extend(
        compat
            .iter()
            .filter(|(a, _)| listed.contains(a))
            .map(|(_, s)| *s),
    );
    // The host's architecture is removed before any other is added:
    // libseccomp keeps one byte order per filter, set by its first.
    let native = ScmpArch::native();
    if !arches.contains(&native) {
        ctx.remove_arch(native)
            .map_err(filter_error("remove the host's architecture"))?;
    }
    for a in &arches {
        let present = ctx
            .is_arch_present(*a)
            .map_err(filter_error("architecture"))?;
        if !present {
            ctx.add_arch(*a).map_err(filter_error("add architecture"))?;
        }
    }
    Ok(())
}

/// One OCI rule for one syscall. As runc: all conditions in one rule
/// (they must all hold), except when two test the same argument, which
/// libseccomp cannot AND: then one rule per condition.
fn add_rule(
    ctx: &mut ScmpFilterContext,
    act: ScmpAction,
    nr: ScmpSyscall,
    s: &LinuxSyscall,
    name: &str,
) -> Result<(), SeccompError> {
    let wrap = |e: libseccomp::error::SeccompError| SeccompError::Rule {
        name: name.to_string(),
        message: e.to_string(),
    };
    let args = s.args().as_deref().unwrap_or(&[]);
    if args.is_empty() {
        return ctx.add_rule(act, nr).map(|_| ()).map_err(wrap);
    }
    let conditions: Vec<ScmpArgCompare> = args
        .iter()
        .map(|a| {
            let index = u32::try_from(a.index()).unwrap_or(u32::MAX);
            let (op, datum) = match a.op() {
                LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, a.value()),
                LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, a.value()),
                LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, a.value()),
                LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, a.value()),
                LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, a.value()),
                LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, a.value()),
                // OCI: value is the mask, valueTwo what the masked arg must equal.
                LinuxSeccompOperator::ScmpCmpMaskedEq => (
                    ScmpCompareOp::MaskedEqual(a.value()),
                    a.value_two().unwrap_or(0),
                ),
            };
            ScmpArgCompare::new(index, op, datum)
        })
        .collect();
    let mut indices: Vec<usize> = args.iter().map(|a| a.index()).collect();
    indices.sort_unstable();
    indices.dedup();
    if indices.len() == args.len() {
        ctx.add_rule_conditional(act, nr, &conditions)
            .map(|_| ())
            .map_err(wrap)
    } else {
        for c in &conditions {
            ctx.add_rule_conditional(act, nr, std::slice::from_ref(c))
                .map_err(wrap)?;
        }
        Ok(())
    }
}

/// The program as the wire carries it: each `sock_filter` packed in a u64,
/// code, jt, jf, k from the high bits down, so that the guest rebuilds it
/// in its own byte order. libseccomp exports in the filter's byte order
/// (the guest's), not the host's.
fn export(ctx: &ScmpFilterContext, arch: GuestArch) -> Result<Vec<u64>, SeccompError> {
    let io = |e: std::io::Error| SeccompError::Filter(format!("reading the exported program: {e}"));
    let fd = nix::sys::memfd::memfd_create(
        c"runq-seccomp",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(|e| SeccompError::Filter(format!("memfd_create: {e}")))?;
    let mut file = std::fs::File::from(fd);
    ctx.export_bpf(&file).map_err(filter_error("export"))?;
    let mut bytes = Vec::new();
    file.rewind().map_err(io)?;
    file.read_to_end(&mut bytes).map_err(io)?;
    match runq_protocol::bpf::pack_native(&bytes, arch.big_endian()) {
        Some(words) if !words.is_empty() => Ok(words),
        _ => Err(SeccompError::Filter(format!(
            "exported program of {} bytes",
            bytes.len()
        ))),
    }
}

/// A classic-BPF interpreter for the instructions libseccomp emits, on
/// packed programs: runq checks cross-endian programs with it, and the
/// tests run every program through it.
mod bpf {
    use runq_protocol::GuestArch;

    const RET_K: u16 = 0x06;

    pub fn is_return(w: u64) -> bool {
        runq_protocol::bpf::unpack_one(w).code == RET_K
    }

    /// `struct seccomp_data` as 32-bit words the way the guest's kernel
    /// lays it out: nr, arch, ip, then the arguments in its byte order.
    pub fn seccomp_data(arch: GuestArch, nr: i32, args: [u64; 6]) -> [u32; 16] {
        let audit_arch = match arch {
            GuestArch::X86_64 => 0xc000_003e,
            GuestArch::S390x => 0x8000_0016,
        };
        let mut data = [0u32; 16];
        data[0] = nr as u32;
        data[1] = audit_arch;
        for (i, a) in args.iter().enumerate() {
            let (lo, hi) = (*a as u32, (*a >> 32) as u32);
            (data[4 + 2 * i], data[5 + 2 * i]) = if arch.big_endian() {
                (hi, lo)
            } else {
                (lo, hi)
            };
        }
        data
    }

    /// The action word `program` returns for `data`.
    pub fn run(program: &[u64], data: &[u32; 16]) -> Result<u32, String> {
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let w = *program.get(pc).ok_or("ran off the end of the program")?;
            let libc::sock_filter { code, jt, jf, k } = runq_protocol::bpf::unpack_one(w);
            pc += 1;
            match code {
                0x20 => {
                    acc = *data.get(k as usize / 4).ok_or("load beyond seccomp_data")?;
                    // LD|W|ABS
                }
                RET_K => return Ok(k),
                0x54 => acc &= k,         // ALU|AND|K
                0x05 => pc += k as usize, // JMP|JA
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let taken = match code {
                        0x15 => acc == k,
                        0x25 => acc > k,
                        0x35 => acc >= k,
                        _ => acc & k != 0,
                    };
                    pc += usize::from(if taken { jt } else { jf });
                }
                _ => return Err(format!("instruction {code:#x} at {}", pc - 1)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    fn eval(programs: &[Vec<u64>], arch: GuestArch, nr: i32, args: [u64; 6]) -> u32 {
        assert_eq!(programs.len(), 1);
        bpf::run(&programs[0], &bpf::seccomp_data(arch, nr, args)).unwrap()
    }

    fn eval_abi(programs: &[Vec<u64>], audit_arch: u32, big_endian: bool, nr: i32) -> u32 {
        let mut data = bpf::seccomp_data(GuestArch::X86_64, nr, [0; 6]);
        data[1] = audit_arch;
        let _ = big_endian; // all-zero arguments read the same either way
        bpf::run(&programs[0], &data).unwrap()
    }

    const ALLOW: u32 = 0x7fff_0000;
    const KILL_PROCESS: u32 = 0x8000_0000;
    const fn errno(e: u32) -> u32 {
        0x0005_0000 | e
    }
    fn nr(name: &str, arch: GuestArch) -> i32 {
        let a = match arch {
            GuestArch::X86_64 => ScmpArch::X8664,
            GuestArch::S390x => ScmpArch::S390X,
        };
        ScmpSyscall::from_name_by_arch(name, a)
            .unwrap()
            .as_raw_syscall()
    }

    const DOCKERISH: &str = r#"{
    "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": [
      {"names": ["read", "write", "exit_group", "no_such_call"], "action": "SCMP_ACT_ALLOW"},
      {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
       "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
      {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
       "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
      {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
       "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
      {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
      {"names": ["ptrace"], "action": "SCMP_ACT_KILL_PROCESS"},
      {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
       "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_NE"},
                {"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]}
    ]}"#;

    /// Docker's profile means the same on both guest architectures; on
    /// s390x the 64-bit argument words are big-endian.
    #[test]
    fn docker_style_profile_keeps_its_meaning_on_every_guest_arch() {
        for arch in [GuestArch::X86_64, GuestArch::S390x] {
            let p = compile(&profile(DOCKERISH), arch).unwrap();
            let n = |name| nr(name, arch);
            let zero = [0u64; 6];
            let arg0 = |v: u64| [v, 0, 0, 0, 0, 0];
            assert_eq!(eval(&p, arch, n("read"), zero), ALLOW, "{arch:?}");
            assert_eq!(
                eval(&p, arch, n("unshare"), zero),
                errno(1),
                "default, {arch:?}"
            );
            assert_eq!(eval(&p, arch, n("personality"), arg0(8)), ALLOW, "{arch:?}");
            assert_eq!(
                eval(&p, arch, n("personality"), arg0(9)),
                errno(1),
                "{arch:?}"
            );
            // the high word decides too (a 64-bit comparison)
            assert_eq!(
                eval(&p, arch, n("personality"), arg0(8 | 1 << 32)),
                errno(1),
                "{arch:?}"
            );
            // CLONE_NEWUSER (0x10000000) is inside the mask: refused.
            assert_eq!(eval(&p, arch, n("clone"), arg0(0x11)), ALLOW, "{arch:?}");
            assert_eq!(
                eval(&p, arch, n("clone"), arg0(0x1000_0011)),
                errno(1),
                "{arch:?}"
            );
            assert_eq!(
                eval(&p, arch, n("clone3"), zero),
                errno(38),
                "rule's errno, {arch:?}"
            );
            assert_eq!(eval(&p, arch, n("ptrace"), zero), KILL_PROCESS, "{arch:?}");
            // Two conditions on one argument: either rule allows (runc's
            // reading). The kernel's number: libseccomp names s390x's
            // socket by its socketcall multiplexer.
            let socket = match arch {
                GuestArch::X86_64 => 41,
                GuestArch::S390x => 359,
            };
            assert_eq!(eval(&p, arch, socket, arg0(2)), ALLOW, "{arch:?}");
        }
    }

    /// The profile's secondary architectures are filtered as runc does:
    /// i386 calls of an x86_64 guest get the profile's rules, not a kill.
    #[test]
    fn listed_compat_architectures_follow_the_profile() {
        let p = compile(&profile(DOCKERISH), GuestArch::X86_64).unwrap();
        const AUDIT_ARCH_I386: u32 = 0x4000_0003;
        let (read, unshare) = (3, 310); // i386 numbers
        assert_eq!(eval_abi(&p, AUDIT_ARCH_I386, false, read), ALLOW);
        assert_eq!(eval_abi(&p, AUDIT_ARCH_I386, false, unshare), errno(1));
        // not listed: an s390 (31-bit) call in an s390x guest is not allowed
        let p = compile(&profile(DOCKERISH), GuestArch::S390x).unwrap();
        assert_ne!(eval_abi(&p, 0x0000_0016, true, 3), ALLOW);
    }

    /// Docker 20.10's default profile as dockerd passes it (amd64 host),
    /// for both guests. The s390x case is the cross-endian repair's test:
    /// before it, every allowed call of the s390x guest was killed.
    #[test]
    fn dockers_own_default_profile_on_every_guest_arch() {
        let p = profile(include_str!(
            "../testdata/docker-20.10-default-seccomp.json"
        ));
        for arch in [GuestArch::X86_64, GuestArch::S390x] {
            let prog = compile(&p, arch).unwrap();
            let n = |name| nr(name, arch);
            for call in [
                "execve",
                "read",
                "write",
                "mmap",
                "exit_group",
                "openat",
                "clone",
            ] {
                assert_eq!(eval(&prog, arch, n(call), [0; 6]), ALLOW, "{call} {arch:?}");
            }
            for call in ["unshare", "mount", "kexec_load", "init_module"] {
                assert_eq!(
                    eval(&prog, arch, n(call), [0; 6]),
                    errno(1),
                    "{call} {arch:?}"
                );
            }
            // clone with CLONE_NEWUSER in its first argument: refused
            // (dockerd wrote this profile for amd64; on an s390x host it
            // writes the rule for s390's order, flags second)
            let args = [0x1000_0000, 0, 0, 0, 0, 0];
            assert_eq!(eval(&prog, arch, n("clone"), args), errno(1), "{arch:?}");
        }
    }

    #[test]
    fn a_foreign_architecture_is_refused_by_the_arch_check() {
        let p = compile(&profile(DOCKERISH), GuestArch::S390x).unwrap();
        // an x86_64 read (nr 0) on an s390x filter: not the guest's ABI
        let kill = eval(&p, GuestArch::X86_64, 0, [0; 6]);
        assert_ne!(kill, ALLOW);
        assert_ne!(kill & 0xffff_0000, 0x0005_0000, "bad arch is not an errno");
    }

    #[test]
    fn allow_by_default_profile_only_blocks_its_rules() {
        let arch = GuestArch::X86_64;
        let p = compile(
            &profile(
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
            ),
            arch,
        )
        .unwrap();
        assert_eq!(eval(&p, arch, nr("unshare", arch), [0; 6]), errno(13));
        assert_eq!(eval(&p, arch, nr("mount", arch), [0; 6]), ALLOW);
    }

    #[test]
    fn host_helpers_filter_allows_their_calls_and_refuses_the_reaching_ones() {
        let host = GuestArch::host();
        let strict = vec![host_filter(&[]).unwrap()];
        let nine_p = vec![host_filter(&["mknod", "mknodat"]).unwrap()];
        for call in ["read", "ioctl", "mmap", "memfd_create", "execve", "seccomp"] {
            assert_eq!(eval(&strict, host, nr(call, host), [0; 6]), ALLOW, "{call}");
        }
        for call in [
            "open_by_handle_at",
            "mknodat",
            "mount",
            "ptrace",
            "unshare",
            "setns",
            "chroot",
        ] {
            assert_eq!(
                eval(&strict, host, nr(call, host), [0; 6]),
                errno(1),
                "{call}"
            );
        }
        assert_eq!(eval(&nine_p, host, nr("mknodat", host), [0; 6]), ALLOW);
        assert_eq!(eval(&nine_p, host, nr("mount", host), [0; 6]), errno(1));
        // A thread, but no new namespace.
        let clone = nr("clone", host);
        assert_eq!(
            eval(&strict, host, clone, [0x003d_0f00, 0, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            eval(&strict, host, clone, [0x1000_0000, 0, 0, 0, 0, 0]),
            errno(1)
        );
        assert_eq!(eval(&strict, host, nr("clone3", host), [0; 6]), errno(38));
    }

    #[test]
    fn notify_is_refused() {
        let notify = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]}"#,
        );
        for arch in [GuestArch::X86_64, GuestArch::S390x] {
            assert!(matches!(
                compile(&notify, arch),
                Err(SeccompError::Unsupported(_))
            ));
        }
    }
}
