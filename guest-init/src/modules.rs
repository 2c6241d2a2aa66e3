//! Loading the kernel modules shipped in the initrd, in the dependency
//! order the build computed from `modules.dep`.

use std::ffi::CString;
use std::fs::File;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

pub fn load_all(list: &str) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(list) else {
        return Ok(()); // a kernel with everything built in ships no list
    };
    let no_params = CString::default();
    for path in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let f = File::open(path).with_context(|| format!("opening module {path}"))?;
        match finit_module(&f, &no_params, ModuleInitFlags::empty()) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("loading module {path}")),
        }
    }
    Ok(())
}
