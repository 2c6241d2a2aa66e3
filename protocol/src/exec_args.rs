//! How `runq exec` hands an exec'd process to `runq-proxy exec` without
//! writing files: the process's environment becomes the proxy's own
//! environment, everything else goes on its command line.
//!
//! `runq-proxy exec --uid=N --gid=N [--groups=a,b] --cwd=DIR [--tty]
//!  [--rlimit=RES:SOFT:HARD]... -- ARGS...`

use thiserror::Error;

use crate::spec::ProcessSpec;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ExecArgsError {
    #[error("runq-proxy exec: missing '--' before the command")]
    NoSeparator,
    #[error("runq-proxy exec: empty command")]
    NoCommand,
    #[error("runq-proxy exec: bad argument {0:?}")]
    Bad(String),
}

/// The proxy's arguments after the binary name, starting with `exec`.
pub fn to_argv(p: &ProcessSpec) -> Vec<String> {
    let mut v = vec![
        "exec".to_string(),
        format!("--uid={}", p.uid),
        format!("--gid={}", p.gid),
        format!("--cwd={}", p.cwd),
    ];
    if !p.additional_gids.is_empty() {
        let g: Vec<String> = p.additional_gids.iter().map(u32::to_string).collect();
        v.push(format!("--groups={}", g.join(",")));
    }
    if p.terminal {
        v.push("--tty".into());
    }
    for (r, s, h) in &p.rlimits {
        v.push(format!("--rlimit={r}:{s}:{h}"));
    }
    if let Some(c) = &p.capabilities {
        v.push(format!(
            "--caps={:x}:{:x}:{:x}:{:x}:{:x}",
            c.bounding, c.effective, c.permitted, c.inheritable, c.ambient
        ));
    }
    if p.no_new_privileges {
        v.push("--no-new-privs".into());
    }
    v.push("--".into());
    v.extend(p.args.iter().cloned());
    v
}

/// Inverse of [`to_argv`] (without the leading `exec`), with the
/// environment the proxy was started with.
pub fn from_argv(args: &[String], env: Vec<String>) -> Result<ProcessSpec, ExecArgsError> {
    let sep = args
        .iter()
        .position(|a| a == "--")
        .ok_or(ExecArgsError::NoSeparator)?;
    let mut p = ProcessSpec {
        args: args[sep + 1..].to_vec(),
        env,
        cwd: "/".into(),
        ..Default::default()
    };
    if p.args.is_empty() {
        return Err(ExecArgsError::NoCommand);
    }
    let bad = |a: &str| ExecArgsError::Bad(a.to_string());
    let num = |v: &str, a: &str| v.parse::<u32>().map_err(|_| bad(a));
    for a in &args[..sep] {
        match a.split_once('=') {
            Some(("--uid", v)) => p.uid = num(v, a)?,
            Some(("--gid", v)) => p.gid = num(v, a)?,
            Some(("--cwd", v)) => p.cwd = v.to_string(),
            Some(("--groups", v)) => {
                p.additional_gids = v.split(',').map(|g| num(g, a)).collect::<Result<_, _>>()?
            }
            Some(("--rlimit", v)) => {
                let f: Vec<&str> = v.split(':').collect();
                let [r, s, h] = f[..] else { return Err(bad(a)) };
                let n64 = |x: &str| x.parse::<u64>().map_err(|_| bad(a));
                p.rlimits.push((num(r, a)?, n64(s)?, n64(h)?));
            }
            Some(("--caps", v)) => {
                let hex = |x: &str| u64::from_str_radix(x, 16).map_err(|_| bad(a));
                let f: Vec<&str> = v.split(':').collect();
                let [b, e, pm, i, am] = f[..] else {
                    return Err(bad(a));
                };
                p.capabilities = Some(crate::spec::CapSets {
                    bounding: hex(b)?,
                    effective: hex(e)?,
                    permitted: hex(pm)?,
                    inheritable: hex(i)?,
                    ambient: hex(am)?,
                });
            }
            None if a == "--no-new-privs" => p.no_new_privileges = true,
            None if a == "--tty" => p.terminal = true,
            _ => return Err(bad(a)),
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = ProcessSpec {
            args: vec!["sh".into(), "-c".into(), "echo -- \"$X\"".into()],
            env: vec!["X=1".into(), "PATH=/bin".into()],
            cwd: "/tmp/a b".into(),
            uid: 65534,
            gid: 60,
            additional_gids: vec![1, 2],
            terminal: true,
            rlimits: vec![(7, 1024, 4096)],
            capabilities: Some(crate::spec::CapSets {
                bounding: 0xa80425fb,
                effective: 0xa80425fb,
                permitted: 0xa80425fb,
                inheritable: 0,
                ambient: 1 << 10,
            }),
            no_new_privileges: true,
        };
        let argv = to_argv(&p);
        assert_eq!(argv[0], "exec");
        assert_eq!(from_argv(&argv[1..], p.env.clone()).unwrap(), p);
    }

    #[test]
    fn refuses_what_it_did_not_write() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            from_argv(&s(&["--uid=0"]), vec![]),
            Err(ExecArgsError::NoSeparator)
        );
        assert_eq!(
            from_argv(&s(&["--"]), vec![]),
            Err(ExecArgsError::NoCommand)
        );
        assert!(matches!(
            from_argv(&s(&["--uid=x", "--", "id"]), vec![]),
            Err(ExecArgsError::Bad(_))
        ));
        assert!(matches!(
            from_argv(&s(&["--rlimit=1:2", "--", "id"]), vec![]),
            Err(ExecArgsError::Bad(_))
        ));
        assert!(matches!(
            from_argv(&s(&["--evil", "--", "id"]), vec![]),
            Err(ExecArgsError::Bad(_))
        ));
    }
}
