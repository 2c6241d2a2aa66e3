//! Handing a verb to the lower OCI runtime (runc by default).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cli::Cli;

/// Replace this process with the lower runtime, so that its exit code,
/// pid file, console socket and signals are exactly runc's.
pub fn exec_lower(cli: &Cli, verb: &[OsString]) -> Result<i32> {
    let err = Command::new(&cli.opts.lower_runtime)
        .args(cli.lower_global_args())
        .args(verb)
        .exec();
    Err(err).with_context(|| format!("cannot run the lower runtime {:?}", cli.opts.lower_runtime))
}

/// `<lower runtime> state ID`, as JSON (its `bundle`, `pid`, `status`).
pub fn lower_state(cli: &Cli, id: &str) -> Result<serde_json::Value> {
    let out = Command::new(&cli.opts.lower_runtime)
        .args(cli.lower_global_args())
        .args(["state", id])
        .output()
        .with_context(|| format!("running {} state", cli.opts.lower_runtime))?;
    if !out.status.success() {
        bail!(
            "container {id}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing the container state")
}
