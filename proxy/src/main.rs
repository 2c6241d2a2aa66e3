//! `runq-proxy`: PID 1 of a runq container. It starts QEMU and its
//! helpers, waits for `runq-init` to dial in over vsock, relays the
//! workload's stdio and signals, and exits with the workload's status.

mod arch;
mod dns;
mod exec;
mod helpers;
mod net;
mod relay;
mod vm;

use std::path::Path;

use runq_protocol::{VmSpec, CONTAINER_RUNQ_DIR, VM_SPEC_FILE};

/// Exit status when the VM itself failed (not the workload).
pub const VM_FAILED: i32 = 255;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("exec") => exec::run(&args[1..]),
        _ => load_spec().and_then(vm::run),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("runq: {e:#}");
            VM_FAILED
        }
    };
    std::process::exit(code);
}

fn load_spec() -> anyhow::Result<VmSpec> {
    let path = Path::new(CONTAINER_RUNQ_DIR).join(VM_SPEC_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    VmSpec::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
