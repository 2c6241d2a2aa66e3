//! One file per verb that runq handles itself; everything else is handed
//! to the lower runtime unchanged.

mod create;
mod exec;
pub(crate) mod lower;
mod start;

use std::ffi::OsString;

use anyhow::Result;

use crate::cli::{Cli, Verb};
use crate::log::Logger;

pub fn dispatch(cli: &Cli, log: &Logger) -> Result<i32> {
    let Verb::Other(verb) = &cli.verb;
    match verb.first().and_then(|v| v.to_str()) {
        Some("create") => create::create(cli, log, verb),
        Some("run") => create::run(cli, log, verb),
        Some("exec") => exec::exec(cli, verb),
        Some("start") => start::start(cli, verb),
        _ => lower::exec_lower(cli, verb),
    }
}

/// The verb's own arguments, without the verb.
fn verb_args(verb: &[OsString]) -> &[OsString] {
    verb.get(1..).unwrap_or_default()
}
