//! Disk destinations and RUNQ_* values: every line of the input is tried
//! as a /dev/runq destination and as a KEY=value environment entry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runq::cli::RuntimeOpts;
use runq::{disks, options};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = disks::parse_dest(line);
        let _ = disks::parse_dest(&format!("/dev/runq/{line}"));
    }
    let env: Vec<String> = text.lines().map(str::to_string).collect();
    let _ = options::resolve(
        &RuntimeOpts::default(),
        &env,
        options::DockerSizing::default(),
    );
    let _ = disks::format_from_header(data);
});
