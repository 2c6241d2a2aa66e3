//! `runq start`: before runc lets the container's process run, check that
//! the proxy's container root is runq's own directory.
//!
//! runc confines each mount to the container's root, but a mount below a
//! volume that another running container shares can be sent, by a link
//! swapped while runc walks it, onto that root itself; the volume would
//! then be the root the proxy is started from. runq's root
//! (`<bundle>/runq/root`) is a directory nobody else can write, so the
//! container's root must be exactly it: same device and inode, seen
//! through the waiting init's `/proc/<pid>/root`, and its
//! `/usr/bin/runq-proxy` must be the tree's. Anything else is killed
//! before it runs.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{lower::exec_lower, verb_args};
use crate::bundle::{PROXY_PATH, PROXY_ROOT};
use crate::cli::Cli;

#[derive(Deserialize)]
struct State {
    pid: i64,
    bundle: PathBuf,
}

pub fn start(cli: &Cli, verb: &[OsString]) -> Result<i32> {
    if let Some(id) = verb_args(verb).last() {
        let out = Command::new(&cli.opts.lower_runtime)
            .args(cli.lower_global_args())
            .arg("state")
            .arg(id)
            .output()
            .context("asking the lower runtime for the container's state")?;
        // No state: let runc's start report it as it does.
        if let Ok(state) = serde_json::from_slice::<State>(&out.stdout) {
            let root = state.bundle.join(PROXY_ROOT);
            if root.is_dir() && state.pid > 0 {
                if let Err(e) = check_root(state.pid, &root, &cli.opts.qemu_tree) {
                    let _ = Command::new(&cli.opts.lower_runtime)
                        .args(cli.lower_global_args())
                        .arg("kill")
                        .arg(id)
                        .arg("KILL")
                        .status();
                    return Err(e);
                }
            }
        }
    }
    exec_lower(cli, verb)
}

/// The init's root is `root`, and its proxy binary is the tree's.
fn check_root(pid: i64, root: &Path, tree: &Path) -> Result<()> {
    let same = |a: &Path, b: &Path| -> Result<bool> {
        let (x, y) = (
            std::fs::metadata(a).with_context(|| format!("{}", a.display()))?,
            std::fs::metadata(b).with_context(|| format!("{}", b.display()))?,
        );
        Ok((x.dev(), x.ino()) == (y.dev(), y.ino()))
    };
    let init_root = PathBuf::from(format!("/proc/{pid}/root/"));
    let proxy = PROXY_PATH.trim_start_matches('/');
    if !same(&init_root, root)? || !same(&init_root.join(proxy), &tree.join(proxy))? {
        bail!(
            "the container's root is not runq's (a mount landed on it: a volume another \
             container shares changed during the start?); killed before it ran"
        );
    }
    Ok(())
}
