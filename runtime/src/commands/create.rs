//! `runq create` / `runq run`: rewrite the bundle, then let the lower
//! runtime create the container around the proxy.

use std::ffi::OsString;
use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use oci_spec::runtime::Spec;

use super::{lower::exec_lower, verb_args};
use crate::accel;
use crate::bundle::{self, PROXY_PATH};
use crate::cli::{Cli, CreateArgs, RunArgs};
use crate::log::Logger;
use crate::options;
use runq_protocol::tree as layout;

pub fn create(cli: &Cli, log: &Logger, verb: &[OsString]) -> Result<i32> {
    let c = CreateArgs::try_parse_from(verb_args(verb))?.create;
    prepare_bundle(cli, log, &c.bundle, &c.container_id)?;
    exec_lower(cli, verb)
}

pub fn run(cli: &Cli, log: &Logger, verb: &[OsString]) -> Result<i32> {
    let r = RunArgs::try_parse_from(verb_args(verb))?.run;
    prepare_bundle(cli, log, &r.bundle, &r.container_id)?;
    exec_lower(cli, verb)
}

/// Check that the tree has the proxy and the chosen kernel, and that the
/// kernel can mount the root the way `settings` asks.
fn check_tree(tree: &Path, settings: &options::Settings) -> Result<()> {
    let incomplete = |p: &Path| {
        anyhow!(
            "{} is missing: the QEMU tree is incomplete (run `make install`)",
            p.display()
        )
    };
    let proxy = tree.join(PROXY_PATH.trim_start_matches('/'));
    if !proxy.is_file() {
        return Err(incomplete(&proxy));
    }
    let kdir = tree.join(layout::KERNELS).join(&settings.kernel);
    for f in [layout::KERNEL, layout::INITRD] {
        let p = kdir.join(f);
        if p.is_file() {
            continue;
        }
        if settings.kernel != runq_protocol::DEFAULT_KERNEL && !kdir.is_dir() {
            let installed: Vec<String> = fs::read_dir(tree.join(layout::KERNELS))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n != runq_protocol::DEFAULT_KERNEL)
                        .collect()
                })
                .unwrap_or_default();
            bail!(
                "guest kernel {:?} is not installed in {}/kernels (installed: {})",
                settings.kernel,
                tree.display(),
                installed.join(", ")
            );
        }
        return Err(incomplete(&p));
    }
    if settings.share == runq_protocol::Share::NineP {
        let features = fs::read_to_string(kdir.join(layout::FEATURES)).unwrap_or_default();
        if !features.split_whitespace().any(|f| f == layout::FEATURE_9P) {
            let version = fs::read_to_string(kdir.join(layout::VERSION)).unwrap_or_default();
            bail!(
                "share 9p: guest kernel {:?} ({}) has no 9p; use virtiofs, or a kernel with 9p (--kernel runq)",
                settings.kernel,
                version.trim()
            );
        }
    }
    Ok(())
}

/// Rewrite `<bundle>/config.json` in place; Docker's original and the VM
/// description go to `<bundle>/runq/`, which vanishes with the bundle.
fn prepare_bundle(cli: &Cli, log: &Logger, bundle: &Path, id: &str) -> Result<()> {
    let bundle =
        fs::canonicalize(bundle).with_context(|| format!("bundle {}", bundle.display()))?;
    let config = bundle.join("config.json");
    let runq_dir = bundle.join("runq");
    if runq_dir.exists() {
        bail!("bundle {} was already prepared by runq", bundle.display());
    }
    let spec = Spec::load(&config).with_context(|| format!("{}", config.display()))?;
    if bundle::is_cri_sandbox(&spec, id)? {
        return Ok(()); // the pause container: runc runs it unchanged
    }
    let env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    let mut settings = options::resolve(&cli.opts, &env, bundle::docker_sizing(&spec))?;
    check_tree(&cli.opts.qemu_tree, &settings)?;
    let (accel, warning) = accel::choose(settings.accel)?;
    // The Go runq's example daemon.json says --cpuargs host: QEMU would
    // refuse it after start under TCG; here it fails with one line.
    if accel == runq_protocol::Accel::Tcg
        && settings
            .cpu_model
            .as_deref()
            .is_some_and(|m| m == "host" || m.starts_with("host,"))
    {
        bail!(
            "--cpuargs host needs KVM, and guests run under TCG here: use --cpuargs max, or none"
        );
    }
    if cli.opts.nestedvm {
        settings.cpu_model = Some(accel::nested_cpu_model(
            accel,
            settings.cpu_model.as_deref(),
            accel::NestedHost::probe(),
        )?);
    }
    if let Some(w) = &warning {
        log.warn(&format!("runq: {id}: {w}"));
    }
    let sandbox =
        bundle::cri_sandbox_of(&spec).and_then(|sid| crate::host::cri_sandbox_pid(cli, &sid));
    let host = crate::host::host_facts(
        &cli.opts.qemu_tree,
        accel,
        settings.apuuid.as_deref(),
        sandbox,
    )?;
    let mut rewritten = bundle::rewrite(
        spec,
        id,
        &bundle,
        &cli.opts.qemu_tree,
        &settings,
        &host,
        // runc's --debug, or RUNQ_DEBUG=1 for one container: guest kernel
        // messages and runq-init's progress on the console.
        cli.global.debug || options::env_lookup(&env, "RUNQ_DEBUG") == Some("1"),
    )?;

    if settings.template {
        let chosen = ["RUNQ_CPU", "RUNQ_MEM", "RUNQ_DEBUG"]
            .iter()
            .any(|v| options::env_lookup(&env, v).is_some_and(|x| !x.is_empty()));
        let tree = &cli.opts.qemu_tree;
        if let Some(dir) = crate::template::prepare(tree, &mut rewritten.vm, !chosen, log)? {
            bundle::mount_template(&mut rewritten.spec, &dir)?;
        }
    }
    // The same line on the container's stderr, where `docker run` shows it.
    rewritten.vm.host.warning = warning.map(|w| {
        format!("{w} (an emulated guest, with no hardware isolation boundary; runtime option --accel tcg accepts this silently, --accel kvm refuses it)")
    });
    write_bundle(&bundle, &host.tree_dirs, &rewritten)
}

/// `<bundle>/runq/` (Docker's config.json kept, vm.json), the proxy's
/// root of empty mount points, then config.json replaced at once; on a
/// failure nothing of it is left.
fn write_bundle(bundle: &Path, tree_dirs: &[String], rewritten: &bundle::Rewritten) -> Result<()> {
    let config = bundle.join("config.json");
    let runq_dir = bundle.join("runq");
    fs::create_dir(&runq_dir).with_context(|| format!("creating {}", runq_dir.display()))?;
    let written = (|| -> Result<()> {
        // The proxy's root: only mount points, all filled by runc.
        let root = bundle.join(bundle::PROXY_ROOT);
        fs::create_dir(&root)?;
        for d in bundle::proxy_root_dirs(tree_dirs) {
            fs::create_dir(root.join(d))?;
        }
        if rewritten.vm.machine.template {
            fs::create_dir(root.join(bundle::TEMPLATE_MOUNT_POINT))?;
        }
        fs::copy(&config, runq_dir.join("config.orig.json"))?;
        fs::write(
            runq_dir.join(runq_protocol::VM_SPEC_FILE),
            rewritten.vm.to_json()?,
        )?;
        let tmp = bundle.join("config.json.runq-tmp");
        rewritten.spec.save(&tmp)?;
        fs::rename(&tmp, &config)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&runq_dir);
        let _ = fs::remove_file(bundle.join("config.json.runq-tmp"));
        return Err(e.context(format!(
            "writing the rewritten bundle in {}",
            bundle.display()
        )));
    }
    Ok(())
}
