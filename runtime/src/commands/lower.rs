//! Handing a verb to the lower OCI runtime (runc by default).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{Context, Result};

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
