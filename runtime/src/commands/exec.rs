//! `runq exec`: the exec'd process runs in the VM. The shim's
//! process.json is rewritten in place so that runc starts `runq-proxy
//! exec` in the container; that process relays the real one into the
//! guest and lives exactly as long as it, so the pid the shim watches, its
//! signals and its exit status are the guest process's.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;
use oci_spec::runtime::Process;
use runq_protocol::{VmSpec, VM_SPEC_FILE};

use super::lower::{exec_lower, lower_state};
use super::verb_args;
use crate::bundle;
use crate::cli::{Cli, ExecArgs};

pub fn exec(cli: &Cli, verb: &[OsString]) -> Result<i32> {
    let e = ExecArgs::try_parse_from(verb_args(verb))?.exec;
    let Some(process_json) = e.process else {
        bail!("exec needs --process <process.json> (as containerd passes it); the command-line form is not supported");
    };
    let bundle = container_bundle(cli, &e.container_id)?;
    let vm_path = bundle.join("runq").join(VM_SPEC_FILE);
    let vm = std::fs::read_to_string(&vm_path).with_context(|| {
        format!(
            "{} (is {} a runq container?)",
            vm_path.display(),
            e.container_id
        )
    })?;
    // A container keeps the vm.json, proxy and guest it was created with;
    // `make install` replaces the tree under it (see README Limitations).
    let vm = VmSpec::from_json(&vm).with_context(|| {
        format!(
            "{}: not this runq's VM description (was runq upgraded since {} started? restart it)",
            vm_path.display(),
            e.container_id
        )
    })?;
    if vm.host.noexec {
        bail!("exec is disabled for this container (RUNQ_NOEXEC / --noexec)");
    }
    rewrite_process(&process_json)?;
    exec_lower(cli, verb)
}

fn rewrite_process(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let original: Process =
        serde_json::from_str(&text).with_context(|| path.display().to_string())?;
    let proxy = bundle::exec_proxy_process(&original)?;
    let tmp = path.with_extension("runq-tmp");
    std::fs::write(&tmp, serde_json::to_vec(&proxy)?)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("rewriting {}", path.display()))
}

/// The bundle directory of a container, from the lower runtime's state.
fn container_bundle(cli: &Cli, id: &str) -> Result<PathBuf> {
    lower_state(cli, id)?["bundle"]
        .as_str()
        .map(PathBuf::from)
        .with_context(|| format!("container {id}: no bundle in its state"))
}
