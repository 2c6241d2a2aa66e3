//! A hostile config.json through the whole pure path of `runq create`:
//! OCI parsing, option precedence from its RUNQ_* env, the bundle rewrite
//! (mounts, disks, sysctls, devices, capabilities). Errors are fine;
//! panics are not, and neither is a rewritten mount outside the image's
//! view: the image here is all symlinks (every name starting with `l` is
//! one, to a target the name chooses), so any destination the resolver
//! let through unresolved could land on the tree.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use runq::bundle::{self, HostDevice, HostFacts};
use runq::cli::RuntimeOpts;
use runq::options;
use runq_protocol::resolve::{Fs, Node};

/// Every name starting with `l` is a symlink: `la` -> `/usr/bin`, `lb` ->
/// `../../..`, `lc` -> `/lc` (a loop), `ld` -> `x/../../lib`, others ->
/// the rest of the name as a relative path.
#[derive(Debug)]
struct HostileImage;

impl Fs for HostileImage {
    fn node(&self, _base: &Path, rel: &Path) -> Node {
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        match name.strip_prefix('l') {
            None => Node::Other,
            Some("a") => Node::Symlink("/usr/bin".into()),
            Some("b") => Node::Symlink("../../..".into()),
            Some("c") => Node::Symlink("/lc".into()),
            Some("d") => Node::Symlink("x/../../lib".into()),
            Some(rest) => Node::Symlink(rest.replace('_', "/").into()),
        }
    }
}

/// Where the rewrite may put a mount in the proxy's container: the
/// image's view; outside it only runq's own mounts (pseudo filesystems,
/// the tree /t, the bundle's runq directory) and runq disks in /dev/runq.
fn allowed(m: &oci_spec::runtime::Mount) -> bool {
    let dest = m.destination();
    let src = m.source().clone().unwrap_or_default();
    dest.starts_with("/rootfs")
        || dest.starts_with("/dev/runq/")
        || ["proc", "tmpfs", "devpts", "sysfs"].contains(&src.to_string_lossy().as_ref())
        || src.starts_with("/t/")
        || src == Path::new("/b/runq")
}

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<oci_spec::runtime::Spec>(data) else {
        return;
    };
    let env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    let sizing = bundle::docker_sizing(&spec);
    let docker_limit = sizing.memory_limit.filter(|l| *l > 0);
    let Ok(settings) = options::resolve(&RuntimeOpts::default(), &env, sizing) else {
        return;
    };
    // A ceiling: whatever the image's RUNQ_MEM says, the guest is no
    // bigger than Docker's --memory.
    if let Some(limit) = docker_limit {
        assert!(
            (i64::from(settings.mem_mib) << 20) <= limit.max(1 << 20),
            "guest of {} MiB above docker's limit of {limit} bytes",
            settings.mem_mib
        );
    }
    let host = HostFacts {
        accel: runq_protocol::Accel::Tcg,
        bounding_caps: u64::MAX >> 23,
        devices: vec![HostDevice {
            path: "/dev/kvm".into(),
            major: 10,
            minor: 232,
        }],
        is_host_netns: |p| p == Path::new("/proc/1/ns/net"),
        netns_pids: |p| Some(if p.starts_with("/proc/") { vec![1] } else { vec![] }),
        cri_sandbox_pid: None,
        disk_format: |_| Ok(runq_protocol::DiskFormat::Raw),
        fs: &HostileImage,
        tree_dirs: vec!["usr".into()],
    };
    if let Ok(r) = bundle::rewrite(
        spec,
        "fuzz",
        Path::new("/b"),
        Path::new("/t"),
        &settings,
        &host,
        false,
    ) {
        for m in r.spec.mounts().iter().flatten() {
            let d = m.destination();
            assert!(allowed(m), "mount at {d:?} is outside the image's view");
            if d.starts_with("/rootfs") {
                assert!(
                    !d.components().any(|c| matches!(c, std::path::Component::ParentDir)),
                    "unclean destination {d:?}"
                );
            }
        }
        // The container's cgroup: Docker's limit, or the VM's size plus the
        // documented overhead, never more.
        if let Some(limit) = docker_limit {
            let got = r
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.resources().as_ref())
                .and_then(|res| res.memory().as_ref())
                .and_then(|m| m.limit())
                .unwrap_or(limit);
            let overhead = bundle::vm_overhead_mib(host.accel) << 20;
            let vm = i64::from(settings.mem_mib) << 20;
            assert!(
                got <= limit.max(vm + overhead),
                "cgroup limit {got} above docker's {limit} and the VM's {vm} + {overhead}"
            );
        }
        let _ = r.vm.to_json();
    }
});
