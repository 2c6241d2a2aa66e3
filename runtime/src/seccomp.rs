//! The OCI seccomp profile Docker passes, compiled to BPF for the guest
//! (`seccompiler` builds the programs, `syscalls` names the numbers).
//!
//! seccompiler gives one filter a single match action and a single
//! mismatch action; an OCI profile has a default action and rules with
//! actions of their own. The kernel runs every installed filter and keeps
//! the most restrictive result, so the profile becomes:
//! - one filter whose mismatch is the default action and which matches
//!   (allows) every rule of the profile, with the rule's conditions: a
//!   syscall no rule matches gets the default action;
//! - one filter per non-allow action, matching that action's rules and
//!   allowing everything else.
//!
//! A call matching a rule thus gets the rule's action, anything else the
//! default. What cannot be expressed (user notification, an s390x guest,
//! which seccompiler lacks) is refused: never a weaker filter.

use oci_spec::runtime::LinuxSeccomp;
use runq_protocol::GuestArch;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SeccompError {
    #[error("seccomp: action {0} cannot be enforced in the guest (no notify listener there)")]
    Unsupported(String),
    #[error("seccomp: profiles for {0} guests cannot be compiled yet (seccompiler has no {0}); use --security-opt seccomp=unconfined")]
    Arch(&'static str),
    #[error("seccomp: rule for {name}: {message}")]
    Rule { name: String, message: String },
    #[error("seccomp: {0}")]
    Filter(String),
}

/// The profile as packed BPF programs for `arch` (see [`pack`]).
pub fn compile(profile: &LinuxSeccomp, arch: GuestArch) -> Result<Vec<Vec<u64>>, SeccompError> {
    #[cfg(target_arch = "x86_64")]
    {
        imp::compile(profile, arch).map(|ps| ps.iter().map(imp::pack).collect())
    }
    // seccompiler and the syscall tables are built for x86_64 hosts here.
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = profile;
        Err(SeccompError::Arch(arch.as_str()))
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::collections::BTreeMap;
    use std::str::FromStr;

    use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, LinuxSyscall};
    use runq_protocol::GuestArch;
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };

    use super::SeccompError;

    const EPERM: u32 = 1;

    fn backend(e: seccompiler::BackendError) -> SeccompError {
        SeccompError::Filter(e.to_string())
    }

    fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction, SeccompError> {
        Ok(match a {
            LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
            LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(EPERM)),
            LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
                SeccompAction::KillThread
            }
            LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
            LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
            LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
            LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(EPERM)),
            LinuxSeccompAction::ScmpActNotify => {
                return Err(SeccompError::Unsupported("SCMP_ACT_NOTIFY".into()))
            }
        })
    }

    /// A syscall number on the guest arch; `None` for a name the arch does not
    /// have (libseccomp skips those too: such a call cannot be made).
    fn syscall_number(name: &str) -> Option<i64> {
        syscalls::x86_64::Sysno::from_str(name)
            .ok()
            .map(|s| s.id() as i64)
    }

    /// One OCI rule's conditions (all must hold), as a seccompiler rule;
    /// `None` for an unconditional rule.
    fn rule(s: &LinuxSyscall, name: &str) -> Result<Option<SeccompRule>, SeccompError> {
        let args = s.args().clone().unwrap_or_default();
        if args.is_empty() {
            return Ok(None);
        }
        let wrap = |e: seccompiler::BackendError| SeccompError::Rule {
            name: name.to_string(),
            message: e.to_string(),
        };
        let mut conditions = Vec::new();
        for a in args {
            let (op, value) = match a.op() {
                LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, a.value()),
                LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, a.value()),
                LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, a.value()),
                LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, a.value()),
                LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, a.value()),
                LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, a.value()),
                // OCI: value is the mask, valueTwo what the masked arg must equal.
                LinuxSeccompOperator::ScmpCmpMaskedEq => (
                    SeccompCmpOp::MaskedEq(a.value()),
                    a.value_two().unwrap_or(0),
                ),
            };
            let index = u8::try_from(a.index()).unwrap_or(u8::MAX);
            conditions.push(
                SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value).map_err(wrap)?,
            );
        }
        Ok(Some(SeccompRule::new(conditions).map_err(wrap)?))
    }

    /// Rules per syscall number; an empty list matches unconditionally.
    type Rules = BTreeMap<i64, Vec<SeccompRule>>;

    /// The BPF programs (to be installed together) for `profile` on `arch`.
    pub(super) fn compile(
        profile: &LinuxSeccomp,
        arch: GuestArch,
    ) -> Result<Vec<BpfProgram>, SeccompError> {
        if arch != GuestArch::X86_64 {
            return Err(SeccompError::Arch(arch.as_str()));
        }
        if profile.listener_path().is_some() {
            return Err(SeccompError::Unsupported("a notify listener".into()));
        }
        let default = action(profile.default_action(), profile.default_errno_ret())?;
        let mut matched: Rules = BTreeMap::new();
        let mut unconditional: Vec<i64> = Vec::new();
        let mut by_action: Vec<(SeccompAction, Rules, Vec<i64>)> = Vec::new();
        for s in profile.syscalls().clone().unwrap_or_default() {
            let act = action(s.action(), s.errno_ret().or(profile.default_errno_ret()))?;
            for name in s.names() {
                let Some(nr) = syscall_number(name) else {
                    continue;
                };
                if act == default {
                    continue; // the default filter gives it already
                }
                let r = rule(&s, name)?;
                if r.is_none() {
                    unconditional.push(nr);
                }
                matched.entry(nr).or_default().extend(r.clone());
                if act != SeccompAction::Allow {
                    let group = match by_action.iter_mut().find(|(a, _, _)| *a == act) {
                        Some(g) => g,
                        None => {
                            by_action.push((act.clone(), BTreeMap::new(), Vec::new()));
                            by_action.last_mut().expect("just pushed")
                        }
                    };
                    if r.is_none() {
                        group.2.push(nr);
                    }
                    group.1.entry(nr).or_default().extend(r);
                }
            }
        }
        let unconditional_wins = |rules: &mut Rules, u: &[i64]| {
            for nr in u {
                if let Some(v) = rules.get_mut(nr) {
                    v.clear();
                }
            }
        };
        unconditional_wins(&mut matched, &unconditional);
        let mut programs = Vec::new();
        if default != SeccompAction::Allow {
            let f = SeccompFilter::new(matched, default, SeccompAction::Allow, TargetArch::x86_64)
                .map_err(backend)?;
            programs.push(f.try_into().map_err(backend)?);
        }
        for (act, mut rules, u) in by_action {
            unconditional_wins(&mut rules, &u);
            let f = SeccompFilter::new(rules, SeccompAction::Allow, act, TargetArch::x86_64)
                .map_err(backend)?;
            programs.push(f.try_into().map_err(backend)?);
        }
        Ok(programs)
    }

    /// A program as the wire carries it: each `sock_filter` packed in a u64
    /// (code, jt, jf, k from the high bits down).
    pub(super) fn pack(p: &BpfProgram) -> Vec<u64> {
        p.iter()
            .map(|f| {
                (u64::from(f.code) << 48)
                    | (u64::from(f.jt) << 40)
                    | (u64::from(f.jf) << 32)
                    | u64::from(f.k)
            })
            .collect()
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::seccomp::SeccompError;

        fn profile(json: &str) -> LinuxSeccomp {
            serde_json::from_str(json).unwrap()
        }

        /// Run `programs` on one syscall the way the kernel would (all
        /// filters, most restrictive action wins) with seccompiler's own
        /// layout of `seccomp_data`; returns the action word.
        fn eval(programs: &[BpfProgram], nr: i64, args: [u64; 6]) -> u32 {
            let mut data = [0u32; 16];
            data[0] = nr as u32;
            data[1] = 0xc000003e; // AUDIT_ARCH_X86_64
            for (i, a) in args.iter().enumerate() {
                data[4 + 2 * i] = *a as u32;
                data[5 + 2 * i] = (*a >> 32) as u32;
            }
            let run = |p: &BpfProgram| -> u32 {
                let (mut acc, mut pc) = (0u32, 0usize);
                loop {
                    let f = &p[pc];
                    let (class, k) = (f.code & 0x07, f.k);
                    match class {
                        0x00 => acc = data[(k / 4) as usize], // BPF_LD|BPF_W|BPF_ABS
                        0x06 => return k,                     // BPF_RET
                        0x04 => acc &= k,                     // BPF_ALU (and)
                        0x05 => {
                            let op = f.code & 0xf0;
                            let taken = match op {
                                0x00 => {
                                    pc += k as usize + 1;
                                    continue;
                                }
                                0x10 => acc == k,
                                0x20 => acc > k,
                                0x30 => acc >= k,
                                0x40 => acc & k != 0,
                                _ => panic!("jump op {op:#x}"),
                            };
                            pc += 1 + if taken { f.jt } else { f.jf } as usize;
                            continue;
                        }
                        _ => panic!("class {class:#x}"),
                    }
                    pc += 1;
                }
            };
            let precedence = |r: u32| match r & 0xffff_0000 {
                0x8000_0000 => 0, // KILL_PROCESS
                0x0000_0000 => 1, // KILL_THREAD
                0x0003_0000 => 2, // TRAP
                0x0005_0000 => 3, // ERRNO
                0x7ff0_0000 => 4, // TRACE
                0x7ffc_0000 => 5, // LOG
                _ => 6,           // ALLOW
            };
            programs
                .iter()
                .map(run)
                .min_by_key(|r| precedence(*r))
                .unwrap_or(0x7fff_0000)
        }

        const ALLOW: u32 = 0x7fff_0000;
        const fn errno(e: u32) -> u32 {
            0x0005_0000 | e
        }
        fn nr(name: &str) -> i64 {
            syscall_number(name).unwrap()
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
          {"names": ["ptrace"], "action": "SCMP_ACT_KILL_PROCESS"}
        ]}"#;

        #[test]
        fn docker_style_profile_keeps_its_meaning() {
            let p = compile(&profile(DOCKERISH), GuestArch::X86_64).unwrap();
            let zero = [0u64; 6];
            assert_eq!(eval(&p, nr("read"), zero), ALLOW);
            assert_eq!(eval(&p, nr("unshare"), zero), errno(1), "default action");
            assert_eq!(eval(&p, nr("personality"), zero), ALLOW);
            assert_eq!(eval(&p, nr("personality"), [8, 0, 0, 0, 0, 0]), ALLOW);
            assert_eq!(eval(&p, nr("personality"), [9, 0, 0, 0, 0, 0]), errno(1));
            // CLONE_NEWUSER (0x10000000) is inside the mask: refused.
            assert_eq!(eval(&p, nr("clone"), [0x11, 0, 0, 0, 0, 0]), ALLOW);
            assert_eq!(
                eval(&p, nr("clone"), [0x1000_0011, 0, 0, 0, 0, 0]),
                errno(1)
            );
            assert_eq!(
                eval(&p, nr("clone3"), zero),
                errno(38),
                "the rule's own errno"
            );
            assert_eq!(eval(&p, nr("ptrace"), zero), 0x8000_0000);
        }

        #[test]
        fn allow_by_default_profile_only_blocks_its_rules() {
            let p = compile(
                &profile(
                    r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                    {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
                ),
                GuestArch::X86_64,
            )
            .unwrap();
            assert_eq!(p.len(), 1);
            assert_eq!(eval(&p, nr("unshare"), [0; 6]), errno(13));
            assert_eq!(eval(&p, nr("mount"), [0; 6]), ALLOW);
        }

        #[test]
        fn what_cannot_be_enforced_is_refused() {
            let notify = profile(
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]}"#,
            );
            assert!(matches!(
                compile(&notify, GuestArch::X86_64),
                Err(SeccompError::Unsupported(_))
            ));
            assert!(matches!(
                compile(&profile(DOCKERISH), GuestArch::S390x),
                Err(SeccompError::Arch("s390x"))
            ));
        }

        #[test]
        fn programs_pack_losslessly() {
            let p = compile(&profile(DOCKERISH), GuestArch::X86_64).unwrap();
            let packed = pack(&p[0]);
            assert_eq!(packed.len(), p[0].len());
            let f = &p[0][1];
            let w = packed[1];
            assert_eq!(
                ((w >> 48) as u16, (w >> 40) as u8, (w >> 32) as u8, w as u32),
                (f.code, f.jt, f.jf, f.k)
            );
        }
    }
}
