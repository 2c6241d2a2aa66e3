//! A hostile config.json through the whole pure path of `runq create`:
//! OCI parsing, option precedence from its RUNQ_* env, the bundle rewrite
//! (mounts, disks, sysctls, devices, capabilities). Errors are fine;
//! panics are not.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use runq::bundle::{self, HostDevice, HostFacts};
use runq::cli::RuntimeOpts;
use runq::options;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<oci_spec::runtime::Spec>(data) else {
        return;
    };
    let env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    let Ok(settings) =
        options::resolve(&RuntimeOpts::default(), &env, bundle::docker_sizing(&spec))
    else {
        return;
    };
    let host = HostFacts {
        bounding_caps: u64::MAX >> 23,
        devices: vec![HostDevice {
            path: "/dev/kvm".into(),
            major: 10,
            minor: 232,
        }],
        macvtap_major: Some(246),
        is_host_netns: |p| p == Path::new("/proc/1/ns/net"),
        disk_format: |_| Some(runq_protocol::DiskFormat::Raw),
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
        let _ = r.vm.to_json();
    }
});
