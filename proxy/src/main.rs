//! `runq-proxy`: PID 1 of a runq container. It starts QEMU and its
//! helpers, waits for `runq-init` to dial in over vsock, relays the
//! workload's stdio and signals, and exits with the workload's status.

mod arch;
mod caps;
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

static TRACE: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> = std::sync::OnceLock::new();

/// Start the progress trace (`runq --debug`, `RUNQ_DEBUG=1`): one line per
/// step, host CLOCK_MONOTONIC seconds, in the container's /run, so that a
/// start can be laid out against the host's other clocks (`make bench`).
pub fn trace_to(path: &Path) {
    if let Ok(f) = std::fs::File::create(path) {
        let _ = TRACE.set(std::sync::Mutex::new(f));
    }
}

/// A progress line, when tracing.
pub fn trace(msg: &str) {
    if let Some(f) = TRACE.get() {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
            .unwrap_or(0.0);
        if let Ok(mut f) = f.lock() {
            use std::io::Write;
            let _ = writeln!(f, "[{t:.3}] {msg}");
        }
    }
}

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
