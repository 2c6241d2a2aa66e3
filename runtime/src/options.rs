//! Configuration precedence (design decision 10): per-container `RUNQ_*`
//! environment > Docker's own flags (`--cpus`, `--memory`) > runtime options
//! from daemon.json > built-in defaults. An empty `RUNQ_*` value clears the
//! runtime option, so the next level down applies.

use runq_protocol::{GuestArch, NinePCache, RootDisk, Share, DEFAULT_KERNEL};
use thiserror::Error;

use crate::cli::RuntimeOpts;

pub const DEFAULT_CPUS: u32 = 1;
pub const DEFAULT_MEM_MIB: u32 = 256;
pub const MIN_MEM_MIB: u32 = 64;
/// QEMU's microvm and q35 both take 255 vCPUs at most without x2apic
/// tricks; more is never what a container wants.
pub const MAX_CPUS: u32 = 255;
/// 1 TiB: anything beyond is a typo, not a container.
pub const MAX_MEM_MIB: u32 = 1 << 20;

/// Variables only the operator may set (runtime options in daemon.json):
/// each one can lower the isolation (TCG, QEMU's in-process 9p server,
/// free-form CPU properties, another kernel, another arch's emulator, a
/// host device), and an image's `ENV` sets them as easily as the user.
/// `--allow-env` lets containers set them anyway.
pub const OPERATOR_ONLY: &[&str] = &[
    "RUNQ_ACCEL",
    "RUNQ_SHARE",
    "RUNQ_CPUARGS",
    "RUNQ_KERNEL",
    "RUNQ_GUEST_ARCH",
    "RUNQ_APUUID",
];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum OptionError {
    #[error("{0} may only be set by the operator (the runtime's options in daemon.json; --allow-env {0} lets containers set it)")]
    OperatorOnly(String),
    #[error("--allow-env {0:?}: not one of the operator-only variables ({list})", list = OPERATOR_ONLY.join(", "))]
    AllowEnv(String),
    #[error("{setting}={value}: above the container's limit of {limit} ({by})")]
    AboveLimit {
        setting: String,
        value: u32,
        limit: u32,
        by: String,
    },
    #[error("{setting}={value:?}: not a number of vCPUs between 1 and {MAX_CPUS}")]
    Cpus { setting: String, value: String },
    #[error("{setting}={value:?}: not a number of MiB between {MIN_MEM_MIB} and {MAX_MEM_MIB}")]
    Mem { setting: String, value: String },
    #[error("{setting}={value:?}: accelerator must be auto, kvm or tcg")]
    Accel { setting: String, value: String },
    #[error("{setting}={value:?}: share must be virtiofs or 9p")]
    Share { setting: String, value: String },
    #[error("{setting}={value:?}: 9p cache must be none, loose, fscache or mmap")]
    NinePCache { setting: String, value: String },
    #[error("{setting}={value:?}: a 9p cache mode, but the container's root is shared with virtiofs (9p is the operator's choice: runtime option --share 9p or --9pcache)")]
    NinePCacheNeeds9p { setting: String, value: String },
    #[error("{setting}={value:?}: guest architecture must be x86_64 or s390x")]
    GuestArch { setting: String, value: String },
    #[error(
        "{setting}={value:?}: another architecture can only be emulated (TCG), not run with KVM"
    )]
    ForeignArchNeedsTcg { setting: String, value: String },
    #[error("{setting}={value:?}: a kernel name is letters, digits, '.', '_' and '-'")]
    Kernel { setting: String, value: String },
    #[error("RUNQ_APUUID={0:?}: not a UUID (8-4-4-4-12 hex digits)")]
    ApUuid(String),
    #[error("RUNQ_APUUID: AP passthrough (vfio-ap) exists only for s390x guests")]
    ApNotS390x,
    #[error("RUNQ_ROOTDISK={0:?}: not a runq disk id (1 to 36 of a-z A-Z 0-9 _ -)")]
    RootDisk(String),
    #[error("RUNQ_ROOTDISK_EXCLUDE={0:?}: paths must be absolute, without '..', and not /")]
    RootDiskExclude(String),
    #[error("{setting}={value:?}: tmpfs mount points must be absolute paths without '..'")]
    Tmpfs { setting: String, value: String },
    #[error("{setting}={value:?}: must be 1/true or 0/false")]
    Bool { setting: String, value: String },
    #[error("{setting}={value:?}: not a comma-separated list of IP addresses")]
    Nameserver { setting: String, value: String },
}

/// The accelerator asked for (design decision 3); `runq create` resolves
/// `Auto` to a [`runq_protocol::Accel`] by probing KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// KVM when a probe proves it can run a guest, TCG otherwise.
    #[default]
    Auto,
    Kvm,
    Tcg,
}
runq_protocol::named!(AccelChoice { Auto => "auto", Kvm => "kvm", Tcg => "tcg" });

/// The per-container settings after precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub cpus: u32,
    pub mem_mib: u32,
    pub accel: AccelChoice,
    pub share: Share,
    pub ninep_cache: NinePCache,
    /// `None`: the host's architecture.
    pub guest_arch: Option<GuestArch>,
    /// `RUNQ_APUUID`: vfio-ap mediated device for an s390x guest.
    pub apuuid: Option<String>,
    /// Guest kernel name (a directory under the tree's `kernels/`).
    pub kernel: String,
    pub rootdisk: Option<RootDisk>,
    pub cpu_model: Option<String>,
    pub tmpfs: Vec<String>,
    pub systemd: bool,
    pub runqenv: bool,
    pub noexec: bool,
    /// Restore the VM from a template (`--template`, `RUNQ_TEMPLATE`).
    pub template: bool,
    pub sigusr: bool,
    /// A generated /etc/resolv.conf, when runq's DNS options ask for one.
    pub resolv_conf: Option<String>,
}

/// Docker's own sizing flags, as they arrive in the OCI spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DockerSizing {
    /// `--cpus`: CFS quota and period.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// `--memory`, bytes.
    pub memory_limit: Option<i64>,
}

impl DockerSizing {
    /// vCPUs for `--cpus` (rounded up: 1.5 CPUs of time need 2 vCPUs).
    fn cpus(&self) -> Option<u32> {
        let quota = u64::try_from(self.cpu_quota?).ok().filter(|q| *q > 0)?;
        let period = self.cpu_period.filter(|p| *p > 0).unwrap_or(100_000);
        Some(u32::try_from(quota.div_ceil(period)).unwrap_or(u32::MAX))
    }

    fn mem_mib(&self) -> Option<u32> {
        let bytes = u64::try_from(self.memory_limit?).ok().filter(|b| *b > 0)?;
        Some(u32::try_from(bytes >> 20).unwrap_or(u32::MAX))
    }
}

/// Look up `key` in an OCI `KEY=value` environment; the last one wins, as
/// in a shell.
pub fn env_lookup<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// One setting's value and the name to blame if it is wrong.
#[derive(Clone)]
struct Chosen {
    setting: String,
    value: String,
}

/// Pick the highest-precedence non-empty value among RUNQ_* env and the
/// runtime option; `None` when neither applies (or the env cleared it).
fn choose(env: &[String], var: &str, opt_name: &str, opt: &Option<String>) -> Option<Chosen> {
    match env_lookup(env, var) {
        Some("") => None,
        Some(v) => Some(Chosen {
            setting: var.to_string(),
            value: v.to_string(),
        }),
        None => opt.as_ref().filter(|v| !v.is_empty()).map(|v| Chosen {
            setting: format!("--{opt_name}"),
            value: v.clone(),
        }),
    }
}

/// Three levels: RUNQ_* env > Docker's flag > runtime option. An empty env
/// value clears the runtime option but not Docker's own flag.
fn layered(
    env: &[String],
    var: &str,
    docker: Option<Chosen>,
    opt_name: &str,
    opt: &Option<String>,
) -> Option<Chosen> {
    match env_lookup(env, var) {
        Some("") => docker,
        Some(_) => choose(env, var, opt_name, opt),
        None => docker.or_else(|| choose(env, var, opt_name, opt)),
    }
}

/// runq's DNS options (`--dns*`, `RUNQ_DNS*`) as a resolv.conf, unless
/// none is given or `--dns-preserve`/`RUNQ_DNS_PRESERVE` keeps Docker's.
/// Given but all empty (`RUNQ_DNS=` over `--dns`...), the generated file
/// is written with no lines, as the Go runq does.
fn resolv_conf_setting(opts: &RuntimeOpts, env: &[String]) -> Result<Option<String>, OptionError> {
    if layered_bool(env, "RUNQ_DNS_PRESERVE", opts.dns_preserve)? {
        return Ok(None);
    }
    let items = |c: Option<Chosen>| -> Vec<String> {
        c.map(|c| {
            c.value
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
    };
    let servers = choose(env, "RUNQ_DNS", "dns", &opts.dns);
    if let Some(c) = &servers {
        if c.value
            .split(',')
            .any(|s| s.trim().parse::<std::net::IpAddr>().is_err())
        {
            return Err(OptionError::Nameserver {
                setting: c.setting.clone(),
                value: c.value.clone(),
            });
        }
    }
    let given = ["RUNQ_DNS", "RUNQ_DNS_OPTS", "RUNQ_DNS_SEARCH"]
        .iter()
        .any(|v| env_lookup(env, v).is_some())
        || [&opts.dns, &opts.dns_opts, &opts.dns_search]
            .iter()
            .any(|o| o.is_some());
    if !given {
        return Ok(None);
    }
    Ok(Some(resolv_conf(
        &items(servers),
        &items(choose(env, "RUNQ_DNS_OPTS", "dns-opts", &opts.dns_opts)),
        &items(choose(
            env,
            "RUNQ_DNS_SEARCH",
            "dns-search",
            &opts.dns_search,
        )),
    )))
}

/// The resolv.conf the Go runq generates, byte for byte: lines only for
/// what is set.
pub fn resolv_conf(nameservers: &[String], options: &[String], search: &[String]) -> String {
    let mut s = String::from("# Generated by RunQ\n");
    if !options.is_empty() {
        s += &format!("options {}\n", options.join(" "));
    }
    if !search.is_empty() {
        s += &format!("search {}\n", search.join(" "));
    }
    for n in nameservers {
        s += &format!("nameserver {n}\n");
    }
    s
}

/// A boolean `RUNQ_*` variable over a runtime flag (empty clears it).
fn layered_bool(env: &[String], var: &str, flag: bool) -> Result<bool, OptionError> {
    match env_lookup(env, var) {
        None => Ok(flag),
        Some("") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        Some("0") | Some("false") => Ok(false),
        Some(v) => Err(OptionError::Bool {
            setting: var.to_string(),
            value: v.to_string(),
        }),
    }
}

/// `RUNQ_APUUID=<uuid>` (env only, as in the Go runq), s390x guests only.
fn apuuid_setting(env: &[String], guest: Option<GuestArch>) -> Result<Option<String>, OptionError> {
    let Some(u) = env_lookup(env, "RUNQ_APUUID").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let groups: Vec<&str> = u.split('-').collect();
    let shape = [8, 4, 4, 4, 12];
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip(shape)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(OptionError::ApUuid(u.to_string()));
    }
    if guest.unwrap_or(GuestArch::host()) != GuestArch::S390x {
        return Err(OptionError::ApNotS390x);
    }
    Ok(Some(u.to_ascii_lowercase()))
}

/// `RUNQ_ROOTDISK=<id>` and `RUNQ_ROOTDISK_EXCLUDE=/a,/b` (env only, as in
/// the Go runq); whether the id names a disk is checked with the mounts.
fn rootdisk_setting(env: &[String]) -> Result<Option<RootDisk>, OptionError> {
    let Some(id) = env_lookup(env, "RUNQ_ROOTDISK").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if !crate::disks::valid_id(id) {
        return Err(OptionError::RootDisk(id.to_string()));
    }
    let exclude_s = env_lookup(env, "RUNQ_ROOTDISK_EXCLUDE").unwrap_or("");
    let exclude: Vec<String> = exclude_s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.trim_end_matches('/').to_string())
        .collect();
    if exclude
        .iter()
        .any(|p| !p.starts_with('/') || p.split('/').any(|s| s == ".." || s == "."))
    {
        return Err(OptionError::RootDiskExclude(exclude_s.to_string()));
    }
    Ok(Some(RootDisk {
        id: id.to_string(),
        exclude,
    }))
}

fn parse_in_range(v: &str, lo: u32, hi: u32) -> Option<u32> {
    v.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (lo..=hi).contains(n))
}

/// Refuse operator-only variables in the container's environment (even
/// empty: clearing one would undo the operator's option) unless allowed.
fn check_operator_only(opts: &RuntimeOpts, env: &[String]) -> Result<(), OptionError> {
    let allowed: Vec<&str> = opts
        .allow_env
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if let Some(bad) = allowed.iter().find(|v| !OPERATOR_ONLY.contains(v)) {
        return Err(OptionError::AllowEnv(bad.to_string()));
    }
    match OPERATOR_ONLY
        .iter()
        .find(|v| !allowed.contains(v) && env_lookup(env, v).is_some())
    {
        Some(v) => Err(OptionError::OperatorOnly(v.to_string())),
        None => Ok(()),
    }
}

/// The ceiling of a size: Docker's own limit of the container, and the
/// operator's `--max-*` option; the lower one, with who set it.
fn ceiling(
    docker: Option<u32>,
    docker_flag: &str,
    opt: &Option<String>,
    opt_name: &str,
    lo: u32,
    hi: u32,
    bad: impl Fn(String, String) -> OptionError,
) -> Result<Option<(u32, String)>, OptionError> {
    let operator = match opt.as_deref().filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some((
            parse_in_range(v, lo, hi).ok_or_else(|| bad(format!("--{opt_name}"), v.into()))?,
            format!("--{opt_name}"),
        )),
    };
    let docker = docker.map(|d| (d, format!("docker's {docker_flag}")));
    Ok(match (docker, operator) {
        (Some(d), Some(o)) => Some(if d.0 <= o.0 { d } else { o }),
        (d, o) => d.or(o),
    })
}

fn within(setting: &str, value: u32, limit: Option<(u32, String)>) -> Result<u32, OptionError> {
    match limit {
        Some((limit, by)) if value > limit => Err(OptionError::AboveLimit {
            setting: setting.to_string(),
            value,
            limit,
            by,
        }),
        _ => Ok(value),
    }
}

/// An option enum's value as chosen (its default when nothing chose it),
/// or `bad`'s error naming the setting.
fn named<T: std::str::FromStr + Default>(
    chosen: &Option<Chosen>,
    bad: fn(String, String) -> OptionError,
) -> Result<T, OptionError> {
    match chosen {
        None => Ok(T::default()),
        Some(c) => c
            .value
            .parse()
            .map_err(|_| bad(c.setting.clone(), c.value.clone())),
    }
}

pub fn resolve(
    opts: &RuntimeOpts,
    env: &[String],
    docker: DockerSizing,
) -> Result<Settings, OptionError> {
    check_operator_only(opts, env)?;
    let (cpus, mem_mib) = sizing(opts, env, docker)?;
    let accel_chosen = choose(env, "RUNQ_ACCEL", "accel", &opts.accel);
    let accel = named(&accel_chosen, |setting, value| OptionError::Accel {
        setting,
        value,
    })?;
    let share_chosen = choose(env, "RUNQ_SHARE", "share", &opts.share);
    // Whether the chosen kernel has 9p is checked against the tree.
    let mut share = named(&share_chosen, |setting, value| OptionError::Share {
        setting,
        value,
    })?;
    let ninep_chosen = choose(env, "RUNQ_9PCACHE", "9pcache", &opts.ninep_cache);
    let ninep_cache = named(&ninep_chosen, |setting, value| OptionError::NinePCache {
        setting,
        value,
    })?;
    // A 9p cache mode means 9p: the operator's --9pcache (the Go runq's
    // daemon.json, where 9p was the only share) selects it; a container's
    // RUNQ_9PCACHE, or one beside an explicit virtiofs, is refused rather
    // than ignored (the share transport is the operator's choice).
    if let Some(c) = &ninep_chosen {
        if share == Share::Virtiofs {
            if c.setting.starts_with("--") && share_chosen.is_none() {
                share = Share::NineP;
            } else {
                return Err(OptionError::NinePCacheNeeds9p {
                    setting: c.setting.clone(),
                    value: c.value.clone(),
                });
            }
        }
    }

    let kernel = kernel_setting(env, opts)?;
    let rootdisk = rootdisk_setting(env)?;

    let (guest_arch, accel) = guest_arch_setting(env, opts, accel)?;
    let cpu_model = choose(env, "RUNQ_CPUARGS", "cpuargs", &opts.cpuargs).map(|c| c.value);

    let tmpfs = tmpfs_setting(env, opts)?;
    Ok(Settings {
        cpus,
        mem_mib,
        accel,
        share,
        ninep_cache,
        guest_arch,
        apuuid: apuuid_setting(env, guest_arch)?,
        kernel,
        rootdisk,
        cpu_model,
        tmpfs,
        systemd: layered_bool(env, "RUNQ_SYSTEMD", false)?,
        runqenv: layered_bool(env, "RUNQ_RUNQENV", opts.runqenv)?,
        noexec: layered_bool(env, "RUNQ_NOEXEC", opts.noexec)?,
        template: layered_bool(env, "RUNQ_TEMPLATE", opts.template)?,
        sigusr: opts.sigusr,
        resolv_conf: resolv_conf_setting(opts, env)?,
    })
}

/// The VM's CPUs and MiB: runq's settings over Docker's `--cpus` and
/// `--memory`, within the ceilings Docker and the operator set.
fn sizing(
    opts: &RuntimeOpts,
    env: &[String],
    docker: DockerSizing,
) -> Result<(u32, u32), OptionError> {
    let docker_cpus = docker.cpus().map(|n| Chosen {
        setting: "--cpus".into(),
        value: n.to_string(),
    });
    let cpu_limit = ceiling(
        docker.cpus(),
        "--cpus",
        &opts.max_cpu,
        "max-cpu",
        1,
        MAX_CPUS,
        |setting, value| OptionError::Cpus { setting, value },
    )?;
    let cpus = match layered(env, "RUNQ_CPU", docker_cpus, "cpu", &opts.cpu) {
        Some(c) => {
            let n = parse_in_range(&c.value, 1, MAX_CPUS).ok_or(OptionError::Cpus {
                setting: c.setting.clone(),
                value: c.value,
            })?;
            within(&c.setting, n, cpu_limit)?
        }
        None => DEFAULT_CPUS, // every ceiling is 1 or more
    };

    let docker_mem = docker.mem_mib().map(|n| Chosen {
        setting: "--memory".into(),
        value: n.to_string(),
    });
    let mem_limit = ceiling(
        docker.mem_mib(),
        "--memory",
        &opts.max_mem,
        "max-mem",
        MIN_MEM_MIB,
        MAX_MEM_MIB,
        |setting, value| OptionError::Mem { setting, value },
    )?;
    let mem_mib = match layered(env, "RUNQ_MEM", docker_mem, "mem", &opts.mem) {
        Some(m) => {
            let n = parse_in_range(&m.value, MIN_MEM_MIB, MAX_MEM_MIB).ok_or(OptionError::Mem {
                setting: m.setting.clone(),
                value: m.value,
            })?;
            within(&m.setting, n, mem_limit)?
        }
        // Below a ceiling, the default shrinks to it.
        None => mem_limit.map_or(DEFAULT_MEM_MIB, |(l, _)| DEFAULT_MEM_MIB.min(l)),
    };
    Ok((cpus, mem_mib))
}

/// `--kernel`/`RUNQ_KERNEL`: a directory name under the tree's kernels/.
fn kernel_setting(env: &[String], opts: &RuntimeOpts) -> Result<String, OptionError> {
    match choose(env, "RUNQ_KERNEL", "kernel", &opts.kernel) {
        None => Ok(DEFAULT_KERNEL.to_string()),
        Some(c) => {
            let ok = !c.value.starts_with('.')
                && c.value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(OptionError::Kernel {
                    setting: c.setting,
                    value: c.value,
                });
            }
            Ok(c.value)
        }
    }
}

/// `--guest-arch`/`RUNQ_GUEST_ARCH`: `None` for the host's; another
/// arch forces TCG (only TCG runs another architecture's code).
fn guest_arch_setting(
    env: &[String],
    opts: &RuntimeOpts,
    accel: AccelChoice,
) -> Result<(Option<GuestArch>, AccelChoice), OptionError> {
    let mut accel = accel;
    let guest_arch = match choose(env, "RUNQ_GUEST_ARCH", "guest-arch", &opts.guest_arch) {
        None => None,
        Some(c) => {
            let arch = c
                .value
                .parse::<GuestArch>()
                .map_err(|_| OptionError::GuestArch {
                    setting: c.setting.clone(),
                    value: c.value.clone(),
                })?;
            if arch == GuestArch::host() {
                None
            } else {
                // Only TCG can run another architecture's code.
                match accel {
                    AccelChoice::Kvm => {
                        return Err(OptionError::ForeignArchNeedsTcg {
                            setting: c.setting,
                            value: c.value,
                        })
                    }
                    _ => accel = AccelChoice::Tcg,
                }
                Some(arch)
            }
        }
    };
    Ok((guest_arch, accel))
}

/// `--tmpfs`/`RUNQ_TMPFS`: absolute paths without `..`, comma-separated.
fn tmpfs_setting(env: &[String], opts: &RuntimeOpts) -> Result<Vec<String>, OptionError> {
    match choose(env, "RUNQ_TMPFS", "tmpfs", &opts.tmpfs) {
        None => Ok(Vec::new()),
        Some(c) => {
            let paths: Vec<String> = c.value.split(',').map(str::to_string).collect();
            let ok = paths
                .iter()
                .all(|p| p.starts_with('/') && !p.split('/').any(|s| s == ".."));
            if !ok {
                return Err(OptionError::Tmpfs {
                    setting: c.setting,
                    value: c.value,
                });
            }
            Ok(paths)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(cpu: Option<&str>, mem: Option<&str>) -> RuntimeOpts {
        RuntimeOpts {
            cpu: cpu.map(Into::into),
            mem: mem.map(Into::into),
            ..Default::default()
        }
    }

    fn env(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const NO_DOCKER: DockerSizing = DockerSizing {
        cpu_quota: None,
        cpu_period: None,
        memory_limit: None,
    };

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s = resolve(&RuntimeOpts::default(), &[], NO_DOCKER).unwrap();
        assert_eq!((s.cpus, s.mem_mib), (DEFAULT_CPUS, DEFAULT_MEM_MIB));
        assert_eq!((s.accel, s.share), (AccelChoice::Auto, Share::Virtiofs));
    }

    #[test]
    fn precedence_env_over_docker_over_options() {
        let docker = DockerSizing {
            cpu_quota: Some(150_000),
            cpu_period: Some(100_000),
            memory_limit: Some(512 << 20),
        };
        let o = opts(Some("4"), Some("1024"));
        // runtime options alone
        let s = resolve(&o, &[], NO_DOCKER).unwrap();
        assert_eq!((s.cpus, s.mem_mib), (4, 1024));
        // Docker's flags beat them (--cpus 1.5 needs 2 vCPUs)
        let s = resolve(&o, &[], docker).unwrap();
        assert_eq!((s.cpus, s.mem_mib), (2, 512));
        // RUNQ_* beats both, below Docker's limits
        let s = resolve(&o, &env(&["RUNQ_CPU=1", "RUNQ_MEM=300"]), docker).unwrap();
        assert_eq!((s.cpus, s.mem_mib), (1, 300));
    }

    /// Options that let the tests set every variable.
    fn allow_all() -> RuntimeOpts {
        RuntimeOpts {
            allow_env: Some(OPERATOR_ONLY.join(",")),
            ..Default::default()
        }
    }

    #[test]
    fn sizes_never_exceed_dockers_limits_or_the_operators() {
        let docker = DockerSizing {
            cpu_quota: Some(150_000),
            cpu_period: Some(100_000),
            memory_limit: Some(512 << 20),
        };
        let none = RuntimeOpts::default();
        let e = resolve(&none, &env(&["RUNQ_MEM=4096"]), docker).unwrap_err();
        assert_eq!(
            e.to_string(),
            "RUNQ_MEM=4096: above the container's limit of 512 (docker's --memory)"
        );
        let e = resolve(&none, &env(&["RUNQ_CPU=3"]), docker).unwrap_err();
        assert!(
            e.to_string().contains("limit of 2 (docker's --cpus)"),
            "{e}"
        );
        let s = resolve(&none, &env(&["RUNQ_MEM=256", "RUNQ_CPU=2"]), docker).unwrap();
        assert_eq!((s.mem_mib, s.cpus), (256, 2), "below the limits");
        // The operator's ceilings hold without Docker's flags too.
        let mut o = none.clone();
        o.max_mem = Some("300".into());
        o.max_cpu = Some("1".into());
        assert!(resolve(&o, &env(&["RUNQ_MEM=301"]), NO_DOCKER).is_err());
        assert!(resolve(&o, &env(&["RUNQ_CPU=2"]), NO_DOCKER).is_err());
        let s = resolve(&o, &[], NO_DOCKER).unwrap();
        assert_eq!((s.mem_mib, s.cpus), (256, 1));
        // The lower of the two ceilings names itself; Docker's own --cpus
        // above --max-cpu is refused too.
        assert!(resolve(&o, &[], docker)
            .unwrap_err()
            .to_string()
            .contains("--max-cpu"));
        o.max_cpu = None;
        let e = resolve(&o, &env(&["RUNQ_MEM=400"]), docker).unwrap_err();
        assert!(e.to_string().contains("limit of 300 (--max-mem)"), "{e}");
        o.max_mem = Some("200".into());
        assert_eq!(
            resolve(&o, &[], NO_DOCKER).unwrap().mem_mib,
            200,
            "default shrinks"
        );
        o.max_mem = Some("lots".into());
        assert!(resolve(&o, &[], NO_DOCKER).is_err());
    }

    #[test]
    fn operator_only_variables_are_refused_unless_allowed() {
        for var in OPERATOR_ONLY {
            for value in ["tcg", ""] {
                let e = resolve(
                    &RuntimeOpts::default(),
                    &env(&[&format!("{var}={value}")]),
                    NO_DOCKER,
                )
                .unwrap_err();
                assert_eq!(e, OptionError::OperatorOnly(var.to_string()));
            }
        }
        let mut o = RuntimeOpts {
            allow_env: Some("RUNQ_KERNEL, RUNQ_ACCEL".into()),
            ..Default::default()
        };
        let s = resolve(
            &o,
            &env(&["RUNQ_KERNEL=debian", "RUNQ_ACCEL=tcg"]),
            NO_DOCKER,
        )
        .unwrap();
        assert_eq!((s.kernel.as_str(), s.accel), ("debian", AccelChoice::Tcg));
        assert!(resolve(&o, &env(&["RUNQ_SHARE=9p"]), NO_DOCKER).is_err());
        o.allow_env = Some("RUNQ_MEM".into());
        assert_eq!(
            resolve(&o, &[], NO_DOCKER).unwrap_err(),
            OptionError::AllowEnv("RUNQ_MEM".into())
        );
    }

    #[test]
    fn empty_env_value_clears_the_runtime_option() {
        let o = opts(Some("4"), Some("1024"));
        let s = resolve(&o, &env(&["RUNQ_CPU=", "RUNQ_MEM="]), NO_DOCKER).unwrap();
        assert_eq!((s.cpus, s.mem_mib), (DEFAULT_CPUS, DEFAULT_MEM_MIB));
    }

    #[test]
    fn last_env_entry_wins() {
        let s = resolve(
            &allow_all(),
            &env(&["RUNQ_MEM=100", "RUNQ_MEM=200"]),
            NO_DOCKER,
        )
        .unwrap();
        assert_eq!(s.mem_mib, 200);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e = resolve(&allow_all(), &env(&["RUNQ_MEM=12x"]), NO_DOCKER).unwrap_err();
        assert_eq!(
            e.to_string(),
            "RUNQ_MEM=\"12x\": not a number of MiB between 64 and 1048576"
        );
        let e = resolve(&opts(Some("0"), None), &[], NO_DOCKER).unwrap_err();
        assert!(e.to_string().starts_with("--cpu=\"0\""), "{e}");
        let e = resolve(&opts(None, Some("32")), &[], NO_DOCKER).unwrap_err();
        assert!(matches!(e, OptionError::Mem { .. }));
        let docker = DockerSizing {
            memory_limit: Some(6 << 20),
            ..NO_DOCKER
        };
        let e = resolve(&allow_all(), &[], docker).unwrap_err();
        assert!(e.to_string().starts_with("--memory=\"6\""), "{e}");
        let e = resolve(&allow_all(), &env(&["RUNQ_ACCEL=xen"]), NO_DOCKER).unwrap_err();
        assert!(matches!(e, OptionError::Accel { .. }));
        let e = resolve(&allow_all(), &env(&["RUNQ_SHARE=nfs"]), NO_DOCKER).unwrap_err();
        assert!(matches!(e, OptionError::Share { .. }));
        for (var, want) in [
            ("RUNQ_9PCACHE=fast", "9p cache must be"),
            ("RUNQ_KERNEL=../x", "a kernel name is"),
            ("RUNQ_ROOTDISK=a/b", "not a runq disk id"),
        ] {
            let e = resolve(&allow_all(), &env(&[var]), NO_DOCKER).unwrap_err();
            assert!(e.to_string().contains(want), "{var}: {e}");
        }
        let e = resolve(
            &allow_all(),
            &env(&["RUNQ_ROOTDISK=r", "RUNQ_ROOTDISK_EXCLUDE=/var/cache,tmp"]),
            NO_DOCKER,
        )
        .unwrap_err();
        assert!(matches!(e, OptionError::RootDiskExclude(_)));
        let e = resolve(&allow_all(), &env(&["RUNQ_TMPFS=/a,../b"]), NO_DOCKER).unwrap_err();
        assert!(matches!(e, OptionError::Tmpfs { .. }));
    }

    #[test]
    fn a_9p_cache_mode_selects_9p_for_the_operator_and_is_refused_otherwise() {
        let o = RuntimeOpts {
            ninep_cache: Some("loose".into()),
            ..RuntimeOpts::default()
        };
        let s = resolve(&o, &[], NO_DOCKER).unwrap();
        assert_eq!((s.share, s.ninep_cache), (Share::NineP, NinePCache::Loose));
        let e = resolve(
            &RuntimeOpts::default(),
            &env(&["RUNQ_9PCACHE=loose"]),
            NO_DOCKER,
        )
        .unwrap_err();
        assert!(matches!(e, OptionError::NinePCacheNeeds9p { .. }), "{e}");
        let o = RuntimeOpts {
            share: Some("virtiofs".into()),
            ninep_cache: Some("loose".into()),
            ..RuntimeOpts::default()
        };
        assert!(resolve(&o, &[], NO_DOCKER).is_err());
        // Under 9p the container may choose its cache mode.
        let o = RuntimeOpts {
            share: Some("9p".into()),
            ..RuntimeOpts::default()
        };
        let s = resolve(&o, &env(&["RUNQ_9PCACHE=none"]), NO_DOCKER).unwrap();
        assert_eq!(s.ninep_cache, NinePCache::None);
    }

    #[test]
    fn share_kernel_and_rootdisk_settings() {
        let d = resolve(&allow_all(), &[], NO_DOCKER).unwrap();
        assert_eq!(
            (d.share, d.ninep_cache, d.kernel.as_str(), d.rootdisk),
            (Share::Virtiofs, NinePCache::Mmap, DEFAULT_KERNEL, None)
        );
        let o = RuntimeOpts {
            share: Some("9p".into()),
            ninep_cache: Some("loose".into()),
            kernel: Some("debian".into()),
            ..allow_all()
        };
        let s = resolve(
            &o,
            &env(&[
                "RUNQ_KERNEL=runq",
                "RUNQ_ROOTDISK=root",
                "RUNQ_ROOTDISK_EXCLUDE=/var/cache/, /tmp",
            ]),
            NO_DOCKER,
        )
        .unwrap();
        assert_eq!(
            (s.share, s.ninep_cache, s.kernel.as_str()),
            (Share::NineP, NinePCache::Loose, "runq")
        );
        assert_eq!(
            s.rootdisk,
            Some(RootDisk {
                id: "root".into(),
                exclude: vec!["/var/cache".into(), "/tmp".into()],
            })
        );
    }

    #[test]
    fn foreign_guest_arch_forces_tcg_and_refuses_kvm() {
        let foreign = if GuestArch::host() == GuestArch::S390x {
            "x86_64"
        } else {
            "s390x"
        };
        let var = format!("RUNQ_GUEST_ARCH={foreign}");
        let s = resolve(&allow_all(), &env(&[&var]), NO_DOCKER).unwrap();
        assert_eq!(s.accel, AccelChoice::Tcg);
        assert_eq!(s.guest_arch.map(GuestArch::as_str), Some(foreign));
        let e = resolve(&allow_all(), &env(&[&var, "RUNQ_ACCEL=kvm"]), NO_DOCKER).unwrap_err();
        assert!(matches!(e, OptionError::ForeignArchNeedsTcg { .. }));
        let native = format!("RUNQ_GUEST_ARCH={}", GuestArch::host().as_str());
        let s = resolve(&allow_all(), &env(&[&native]), NO_DOCKER).unwrap();
        assert_eq!((s.guest_arch, s.accel), (None, AccelChoice::Auto));
        let e = resolve(&allow_all(), &env(&["RUNQ_GUEST_ARCH=mips"]), NO_DOCKER).unwrap_err();
        assert!(matches!(e, OptionError::GuestArch { .. }));
    }

    #[test]
    fn apuuid_is_a_uuid_for_s390x_guests() {
        let u = "RUNQ_APUUID=E2A4C3B0-4f6a-4c3e-9a52-1d0b1c2d3e4f";
        let s = resolve(&allow_all(), &env(&[u, "RUNQ_GUEST_ARCH=s390x"]), NO_DOCKER);
        if GuestArch::host() == GuestArch::S390x {
            assert!(s.is_ok());
        } else {
            assert_eq!(
                s.unwrap().apuuid.as_deref(),
                Some("e2a4c3b0-4f6a-4c3e-9a52-1d0b1c2d3e4f")
            );
            let e = resolve(&allow_all(), &env(&[u]), NO_DOCKER).unwrap_err();
            assert_eq!(e, OptionError::ApNotS390x);
        }
        let e = resolve(
            &allow_all(),
            &env(&["RUNQ_APUUID=e2a4c3b0-4f6a", "RUNQ_GUEST_ARCH=s390x"]),
            NO_DOCKER,
        )
        .unwrap_err();
        assert!(matches!(e, OptionError::ApUuid(_)));
    }

    #[test]
    fn boolean_settings() {
        let on = RuntimeOpts {
            runqenv: true,
            ..Default::default()
        };
        let s = resolve(&on, &[], NO_DOCKER).unwrap();
        assert!(s.runqenv && !s.systemd);
        let s = resolve(&on, &env(&["RUNQ_RUNQENV=", "RUNQ_SYSTEMD=1"]), NO_DOCKER).unwrap();
        assert!(!s.runqenv && s.systemd);
        let s = resolve(&allow_all(), &env(&["RUNQ_RUNQENV=true"]), NO_DOCKER).unwrap();
        assert!(s.runqenv);
        let e = resolve(&on, &env(&["RUNQ_SYSTEMD=yes"]), NO_DOCKER).unwrap_err();
        assert_eq!(
            e.to_string(),
            "RUNQ_SYSTEMD=\"yes\": must be 1/true or 0/false"
        );
    }

    #[test]
    fn resolv_conf_byte_for_byte() {
        let o = RuntimeOpts {
            dns: Some("8.8.8.8,8.8.4.4".into()),
            dns_opts: Some("timeout:2".into()),
            dns_search: Some("example.com".into()),
            ..Default::default()
        };
        let s = resolve(&o, &[], NO_DOCKER).unwrap();
        assert_eq!(
            s.resolv_conf.as_deref(),
            Some("# Generated by RunQ\noptions timeout:2\nsearch example.com\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n")
        );
        let e = env(&[
            "RUNQ_DNS=1.2.3.4,5.5.5.5",
            "RUNQ_DNS_OPTS=timeout:7,ndots:1",
            "RUNQ_DNS_SEARCH=foo.com,bar.org",
        ]);
        let s = resolve(&allow_all(), &e, NO_DOCKER).unwrap();
        assert_eq!(
            s.resolv_conf.as_deref(),
            Some("# Generated by RunQ\noptions timeout:7 ndots:1\nsearch foo.com bar.org\nnameserver 1.2.3.4\nnameserver 5.5.5.5\n")
        );
    }

    #[test]
    fn empty_dns_env_clears_and_preserve_keeps_dockers_file() {
        let o = RuntimeOpts {
            dns: Some("8.8.8.8".into()),
            dns_opts: Some("timeout:2".into()),
            ..Default::default()
        };
        let s = resolve(&o, &env(&["RUNQ_DNS="]), NO_DOCKER).unwrap();
        assert_eq!(
            s.resolv_conf.as_deref(),
            Some("# Generated by RunQ\noptions timeout:2\n")
        );
        let s = resolve(&o, &env(&["RUNQ_DNS=", "RUNQ_DNS_OPTS="]), NO_DOCKER).unwrap();
        assert_eq!(
            s.resolv_conf.as_deref(),
            Some("# Generated by RunQ\n"),
            "given, all empty: the generated file with no lines (as the Go runq)"
        );
        let s = resolve(&o, &env(&["RUNQ_DNS_PRESERVE=1"]), NO_DOCKER).unwrap();
        assert_eq!(s.resolv_conf, None);
        assert_eq!(
            resolve(&allow_all(), &[], NO_DOCKER).unwrap().resolv_conf,
            None
        );
    }

    #[test]
    fn bad_nameserver_is_refused_by_name() {
        let e = resolve(
            &allow_all(),
            &env(&["RUNQ_DNS=8.8.8.8,dns.example"]),
            NO_DOCKER,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "RUNQ_DNS=\"8.8.8.8,dns.example\": not a comma-separated list of IP addresses"
        );
    }

    #[test]
    fn env_lookup_needs_the_exact_key() {
        let e = env(&["RUNQ_MEMX=1", "RUNQ_MEM=2"]);
        assert_eq!(env_lookup(&e, "RUNQ_MEM"), Some("2"));
        assert_eq!(env_lookup(&e, "RUNQ_ME"), None);
    }
}
