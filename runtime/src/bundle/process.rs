//! The proxy's process and root: runq-proxy as PID 1 with the capability
//! set it needs, the workload's identity kept for the guest.

use super::*;

/// What the proxy needs, and why:
/// - CHOWN, DAC_OVERRIDE, FOWNER, FSETID, MKNOD, SETFCAP, SETGID, SETUID,
///   SETPCAP: virtiofsd performs the guest's file operations on the shared
///   root with the guest's credentials (without SETPCAP its capability
///   sync takes a path its own seccomp filter kills); SETPCAP also cuts
///   the helpers' bounding sets;
/// - NET_ADMIN: joining the container's interfaces to taps (tc);
/// - KILL: ending QEMU, which runs as another uid;
/// - SYS_CHROOT: virtiofsd's chroot sandbox.
///
/// The proxy drops all but KILL once QEMU runs; virtiofsd keeps the file
/// serving ones, QEMU and vhost-device-vsock get none.
///
/// Anything the host's bounding set lacks is left out rather than asked
/// for (runc fails the start otherwise).
pub const PROXY_CAPS: &[(runq_protocol::Cap, Capability)] = {
    use runq_protocol::Cap;
    &[
        (Cap::Chown, Capability::Chown),
        (Cap::DacOverride, Capability::DacOverride),
        (Cap::Fowner, Capability::Fowner),
        (Cap::Fsetid, Capability::Fsetid),
        (Cap::Kill, Capability::Kill),
        (Cap::Setgid, Capability::Setgid),
        (Cap::Setuid, Capability::Setuid),
        (Cap::Setpcap, Capability::Setpcap),
        (Cap::NetAdmin, Capability::NetAdmin),
        (Cap::SysChroot, Capability::SysChroot),
        (Cap::Mknod, Capability::Mknod),
        (Cap::Setfcap, Capability::Setfcap),
    ]
};

pub(super) fn proxy_root(bundle: &Path) -> Result<Root, BundleError> {
    Ok(RootBuilder::default()
        .path(bundle.join(PROXY_ROOT))
        .readonly(true)
        .build()?)
}

pub(super) fn proxy_process(
    original: &oci_spec::runtime::Process,
    bounding: u64,
) -> Result<oci_spec::runtime::Process, BundleError> {
    let caps: HashSet<Capability> = PROXY_CAPS
        .iter()
        .filter(|(cap, _)| bounding & cap.bit() != 0)
        .map(|(_, c)| *c)
        .collect();
    let mut p = container_process(
        original,
        vec![PROXY_PATH.to_string()],
        // The tree's programs are all in /usr/bin.
        vec!["PATH=/usr/bin".to_string()],
        caps,
    )?;
    p.set_oom_score_adj(original.oom_score_adj());
    Ok(p)
}

/// A process run as root in the container (the proxy, or its exec form)
/// on behalf of `original`: same terminal and AppArmor profile, the given
/// capabilities as its only ones, no_new_privs, and the shim's rlimits
/// (the builder's default RLIMIT_NOFILE is dropped: virtiofsd wants many
/// descriptors).
pub(super) fn container_process(
    original: &oci_spec::runtime::Process,
    args: Vec<String>,
    env: Vec<String>,
    caps: HashSet<Capability>,
) -> Result<oci_spec::runtime::Process, BundleError> {
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?;
    let mut b = ProcessBuilder::default()
        .terminal(original.terminal().unwrap_or(false))
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .args(args)
        .env(env)
        .cwd("/")
        .capabilities(capabilities)
        .no_new_privileges(true);
    if let Some(size) = original.console_size() {
        b = b.console_size(size);
    }
    if let Some(a) = original.apparmor_profile() {
        b = b.apparmor_profile(a.clone());
    }
    let mut p = b.build()?;
    p.set_rlimits(None);
    Ok(p)
}

/// The process that runs in the container for an exec: `runq-proxy exec`
/// carrying the real process to the guest. It needs no capabilities: it
/// only talks to the vsock backend's socket.
pub fn exec_proxy_process(
    original: &oci_spec::runtime::Process,
) -> Result<oci_spec::runtime::Process, BundleError> {
    let guest = process_spec(original)?;
    let mut args = vec![PROXY_PATH.to_string()];
    args.extend(runq_protocol::exec_args::to_argv(&guest));
    // The workload's environment travels as the proxy's own.
    container_process(original, args, guest.env, HashSet::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// runq's own capability numbers are the kernel's, as the caps crate
    /// (and oci-spec's names) know them.
    #[test]
    fn capability_numbers_match_their_names() {
        for (cap, named) in PROXY_CAPS {
            let known: caps::Capability = format!("CAP_{named}").parse().unwrap();
            assert_eq!(cap.bit(), known.bitmask(), "{named}");
        }
        let module: caps::Capability = "CAP_SYS_MODULE".parse().unwrap();
        assert_eq!(runq_protocol::Cap::SysModule.bit(), module.bitmask());
    }
}
