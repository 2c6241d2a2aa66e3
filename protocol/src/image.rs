//! A disk image's format from its first bytes, on both sides of the
//! container: `runq create` decides it, the proxy checks it again on the
//! descriptor it hands to QEMU (a guest sharing the image may have
//! rewritten the header meanwhile).

use crate::DiskFormat;
use thiserror::Error;

/// Why a disk image is not attached.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
pub enum ImageRefusal {
    #[error("neither a regular file nor a block device")]
    NotAnImage,
    /// QEMU would open another file named by the image (its content is
    /// the guest's to write: a raw disk becomes such a qcow2 by one write).
    #[error("its qcow2 header names a backing file (runq attaches self-contained images only)")]
    BackingFile,
    #[error(
        "its qcow2 header names an external data file (runq attaches self-contained images only)"
    )]
    DataFile,
}

/// Bytes of a qcow2 header [`format_from_header`] reads.
pub const HEADER_LEN: usize = 80;

/// raw or qcow2 by the first bytes; a qcow2 image that names another file
/// (backing file, external data file) is refused: QEMU would open it.
pub fn format_from_header(header: &[u8]) -> Result<DiskFormat, ImageRefusal> {
    if !header.starts_with(b"QFI\xfb") {
        return Ok(DiskFormat::Raw);
    }
    let be64 = |at: usize| {
        header
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    let version = header
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0);
    // backing_file_offset at 8 (every version); incompatible_features at
    // 72 (version 3), bit 2 = external data file.
    if be64(8).unwrap_or(0) != 0 {
        return Err(ImageRefusal::BackingFile);
    }
    if version >= 3 && be64(72).unwrap_or(0) & (1 << 2) != 0 {
        return Err(ImageRefusal::DataFile);
    }
    Ok(DiskFormat::Qcow2)
}
