//! Command line: runc's global flags, runq's runtime options (from
//! daemon.json `runtimeArgs`, which Docker places before runc's flags), and
//! the verb with its arguments kept verbatim for the lower runtime.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "runq",
    version,
    about = "OCI runtime running each container in its own QEMU/KVM microVM"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: liboci_cli::GlobalOpts,
    /// path to the criu binary (passed to the lower runtime)
    #[arg(long)]
    pub criu: Option<String>,
    /// rootless mode of the lower runtime: true|false|auto
    #[arg(long)]
    pub rootless: Option<String>,
    #[command(flatten)]
    pub opts: RuntimeOpts,
    #[command(subcommand)]
    pub verb: Verb,
}

/// runq's runtime options: global defaults, overridden per container by
/// Docker's own flags and then by `RUNQ_*` variables.
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct RuntimeOpts {
    /// vCPUs per VM
    #[arg(long)]
    pub cpu: Option<String>,
    /// most vCPUs a container may ask for (RUNQ_CPU, --cpus)
    #[arg(long)]
    pub max_cpu: Option<String>,
    /// most guest RAM in MiB a container may ask for (RUNQ_MEM, --memory)
    #[arg(long)]
    pub max_mem: Option<String>,
    /// operator-only RUNQ_* variables a container may set after all,
    /// comma separated (RUNQ_ACCEL, RUNQ_SHARE, RUNQ_KERNEL, ...)
    #[arg(long)]
    pub allow_env: Option<String>,
    /// guest RAM in MiB (minimum 64)
    #[arg(long)]
    pub mem: Option<String>,
    /// accelerator: auto|kvm|tcg
    #[arg(long)]
    pub accel: Option<String>,
    /// root filesystem transport: virtiofs|9p
    #[arg(long)]
    pub share: Option<String>,
    /// 9p cache mode: none|loose|fscache|mmap
    #[arg(long = "9pcache")]
    pub ninep_cache: Option<String>,
    /// guest kernel: a name under the QEMU tree's kernels/ (runq, debian)
    #[arg(long)]
    pub kernel: Option<String>,
    /// emulate another architecture under TCG: x86_64|s390x (with a kernel
    /// of that arch in the tree; the cross-arch boot test uses it)
    #[arg(long)]
    pub guest_arch: Option<String>,
    /// QEMU -cpu value
    #[arg(long)]
    pub cpuargs: Option<String>,
    /// expose hardware virtualisation (VMX/SVM) to the guest: KVM hosts
    /// with nested virtualisation only (the Go runq's option)
    #[arg(long)]
    pub nestedvm: bool,
    /// tmpfs mount points in every guest, comma separated
    #[arg(long)]
    pub tmpfs: Option<String>,
    /// write the workload's environment to /.runqenv in the guest
    #[arg(long)]
    pub runqenv: bool,
    /// refuse exec into containers
    #[arg(long)]
    pub noexec: bool,
    /// start each VM from a saved VM template instead of booting it
    /// (x86_64; built on first use in /var/cache/runq/templates)
    #[arg(long)]
    pub template: bool,
    /// nameservers for a generated /etc/resolv.conf, comma separated
    #[arg(long)]
    pub dns: Option<String>,
    /// resolv.conf options, comma separated
    #[arg(long)]
    pub dns_opts: Option<String>,
    /// resolv.conf search domains, comma separated
    #[arg(long)]
    pub dns_search: Option<String>,
    /// never generate /etc/resolv.conf
    #[arg(long)]
    pub dns_preserve: bool,
    /// SIGUSR1/SIGUSR2 run /.runq/SIGUSR1 and /.runq/SIGUSR2 in the guest
    #[arg(long)]
    pub sigusr: bool,
    /// lower OCI runtime that runs the container around the VM
    #[arg(long = "runtime", default_value = "runc")]
    pub lower_runtime: String,
    /// directory holding the QEMU tree (kernel, initrd, QEMU, proxy)
    #[arg(long, default_value = "/var/lib/runq/qemu")]
    pub qemu_tree: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Any runc verb: create, run and exec are handled by runq, the rest
    /// pass through to the lower runtime unchanged.
    #[command(external_subcommand)]
    Other(Vec<OsString>),
}

impl Cli {
    /// runc's global flags, as they must precede the verb for the lower
    /// runtime.
    pub fn lower_global_args(&self) -> Vec<OsString> {
        let g = &self.global;
        let mut v: Vec<OsString> = Vec::new();
        let mut push = |flag: &str, val: Option<OsString>| {
            v.push(flag.into());
            if let Some(val) = val {
                v.push(val);
            }
        };
        if let Some(root) = &g.root {
            push("--root", Some(root.into()));
        }
        if let Some(log) = &g.log {
            push("--log", Some(log.into()));
        }
        if let Some(f) = &g.log_format {
            push("--log-format", Some(f.into()));
        }
        if g.debug {
            push("--debug", None);
        }
        if g.systemd_cgroup {
            push("--systemd-cgroup", None);
        }
        if let Some(c) = &self.criu {
            push("--criu", Some(c.into()));
        }
        if let Some(r) = &self.rootless {
            push("--rootless", Some(r.into()));
        }
        v
    }
}

/// `create` as the shim calls it, parsed with liboci-cli's definition.
#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
pub struct CreateArgs {
    #[command(flatten)]
    pub create: liboci_cli::Create,
}

/// `exec` as the shim calls it.
#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
pub struct ExecArgs {
    #[command(flatten)]
    pub exec: liboci_cli::Exec,
}

/// `run`, which is create + start.
#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
pub struct RunArgs {
    #[command(flatten)]
    pub run: liboci_cli::Run,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap()
    }

    #[test]
    fn docker_shim_invocation_with_runtime_args() {
        // What dockerd's wrapper + containerd-shim-runc-v2 produce.
        let cli = parse(&[
            "runq",
            "--cpu",
            "2",
            "--mem",
            "512",
            "--root",
            "/run/containerd/runc/moby",
            "--log",
            "/x/log.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "abc",
        ]);
        assert_eq!(cli.opts.cpu.as_deref(), Some("2"));
        assert_eq!(cli.opts.mem.as_deref(), Some("512"));
        assert_eq!(
            cli.lower_global_args(),
            [
                "--root",
                "/run/containerd/runc/moby",
                "--log",
                "/x/log.json",
                "--log-format",
                "json"
            ]
            .map(OsString::from)
            .to_vec()
        );
        let Verb::Other(verb) = cli.verb;
        assert_eq!(verb[0], "create");
        let c = CreateArgs::try_parse_from(&verb[1..]).unwrap().create;
        assert_eq!(c.bundle, PathBuf::from("/b"));
        assert_eq!(c.container_id, "abc");
    }

    #[test]
    fn other_verbs_keep_their_arguments_verbatim() {
        let cli = parse(&["runq", "--root", "/r", "kill", "--all", "abc", "KILL"]);
        let Verb::Other(verb) = cli.verb;
        assert_eq!(
            verb,
            ["kill", "--all", "abc", "KILL"]
                .map(OsString::from)
                .to_vec()
        );
        assert_eq!(cli.opts.lower_runtime, "runc");
    }

    #[test]
    fn unknown_runtime_option_is_refused() {
        assert!(Cli::try_parse_from(["runq", "--bogus", "1", "state", "x"]).is_err());
    }
}
