//! The `runq` runtime as a library: the binary (`main.rs`) is a thin
//! front, and the pure pieces (bundle rewrite, options, disk specs) are
//! reachable from the fuzz targets in `fuzz/`.

pub mod accel;
pub mod bundle;
pub mod cli;
pub mod commands;
pub mod disks;
pub mod host;
pub mod host_fs;
pub mod log;
pub mod options;
pub mod seccomp;
pub mod template;
