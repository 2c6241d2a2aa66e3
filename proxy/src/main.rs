//! `runq-proxy`: PID 1 of a runq container. It starts QEMU and its
//! helpers, waits for `runq-init` to dial in over vsock, relays the
//! workload's stdio and signals, and exits with the workload's status.

mod arch;
mod caps;
mod dns;
mod exec;
mod helpers;
mod net;
mod qemu;
mod qmp;
mod relay;
mod template;
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
        Some("qemu-args") => qemu_args(&args[1..]),
        Some("template-build") => template::build(&args[1..]),
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
    load_spec_from(&Path::new(CONTAINER_RUNQ_DIR).join(VM_SPEC_FILE))
}

fn load_spec_from(path: &Path) -> anyhow::Result<VmSpec> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    VmSpec::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// `runq-proxy qemu-args [--floor] VM.json`: the QEMU command line the
/// proxy runs for this VM description on this host (its descriptors
/// numbered as the proxy hands them over, no NICs: those come from the
/// container's namespace), shell-quoted on one line. `--floor`: the same
/// machine with no device that needs a helper, booting to a guest that
/// powers off at once (`make bench`'s bare-QEMU floor).
fn qemu_args(args: &[String]) -> anyhow::Result<i32> {
    let (shape, path) = match args {
        [flag, path] if flag == "--floor" => (qemu::Shape::Floor, path),
        [path] => (qemu::Shape::Full, path),
        _ => anyhow::bail!("usage: runq-proxy qemu-args [--floor] VM.json"),
    };
    let vm = load_spec_from(Path::new(path))?;
    let share = vm.guest.root.share;
    let fds = qemu::FdLayout::new(&vm.machine.kernel, share, &vm.drives, &[]);
    let line = qemu::command_line(
        &vm.machine,
        share,
        &vm.drives,
        &qemu::HostInfo::probe(),
        &fds,
        shape,
    );
    let words: Vec<String> = std::iter::once(qemu::binary(vm.machine.arch).to_string())
        .chain(line)
        .map(|w| shell_quote(&w))
        .collect();
    println!("{}", words.join(" "));
    Ok(0)
}

/// `w` as one word for a POSIX shell.
fn shell_quote(w: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !w.is_empty() && w.chars().all(plain) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}
