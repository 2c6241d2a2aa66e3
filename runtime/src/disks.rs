//! runq disks: `--volume FILE:/dev/runq/<id>/<cache>[/<fs><mountpoint>]`
//! and `--device BLOCKDEV:/dev/runq/...` (docs/interface.md). Parsing of the
//! destination and detection of the image format, both pure.

use std::collections::HashSet;

use runq_protocol::{DiskCache, DiskFs};
use thiserror::Error;

/// Destinations under this prefix are runq disks, not mounts.
pub const DISK_PREFIX: &str = "/dev/runq/";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DiskError {
    #[error("runq disk {dest:?}: expected /dev/runq/<id>/<cache>[/<fs><mountpoint>]")]
    Shape { dest: String },
    #[error("runq disk {dest:?}: id {id:?} must be 1 to 36 of a-z A-Z 0-9 _ -")]
    Id { dest: String, id: String },
    #[error("runq disk {dest:?}: cache {cache:?} must be writeback, writethrough, none or unsafe")]
    Cache { dest: String, cache: String },
    #[error("runq disk {dest:?}: filesystem {fs:?} must be ext2, ext3, ext4, xfs or btrfs")]
    Fs { dest: String, fs: String },
    #[error("runq disk {dest:?}: mount point {mountpoint:?} must not contain '..' or be /")]
    Mountpoint { dest: String, mountpoint: String },
    #[error("runq disk id {0:?} is used twice")]
    Duplicate(String),
    #[error("runq disk {dest:?}: {path} is neither a regular file nor a block device")]
    NotAnImage { dest: String, path: String },
    #[error("runq disk {dest:?}: {path} is refused: {why}")]
    Refused {
        dest: String,
        path: String,
        why: ImageRefusal,
    },
}

/// A parsed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskDest {
    pub id: String,
    pub cache: DiskCache,
    pub fs: Option<DiskFs>,
    pub mountpoint: Option<String>,
}

/// `^[a-zA-Z0-9_-]{1,36}$`: a disk id (also RUNQ_ROOTDISK's value).
pub fn valid_id(id: &str) -> bool {
    (1..=36).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `None` when `dest` is not a runq disk at all.
pub fn parse_dest(dest: &str) -> Option<Result<DiskDest, DiskError>> {
    let rest = dest.strip_prefix(DISK_PREFIX)?;
    Some(parse_rest(dest, rest))
}

fn parse_rest(dest: &str, rest: &str) -> Result<DiskDest, DiskError> {
    let shape = || DiskError::Shape {
        dest: dest.to_string(),
    };
    let mut parts = rest.splitn(4, '/');
    let id = parts.next().filter(|s| !s.is_empty()).ok_or_else(shape)?;
    if !valid_id(id) {
        return Err(DiskError::Id {
            dest: dest.into(),
            id: id.into(),
        });
    }
    let cache_s = parts.next().filter(|s| !s.is_empty()).ok_or_else(shape)?;
    let cache = cache_s.parse::<DiskCache>().map_err(|_| DiskError::Cache {
        dest: dest.into(),
        cache: cache_s.into(),
    })?;
    let fs = match parts.next() {
        None | Some("") => None,
        Some(f) => Some(f.parse::<DiskFs>().map_err(|_| DiskError::Fs {
            dest: dest.into(),
            fs: f.into(),
        })?),
    };
    let mountpoint = match parts.next() {
        None | Some("") => None,
        Some(m) => {
            let m = format!("/{}", m.trim_end_matches('/'));
            if m == "/" || m.split('/').any(|s| s == ".." || s == ".") {
                return Err(DiskError::Mountpoint {
                    dest: dest.into(),
                    mountpoint: m,
                });
            }
            Some(m)
        }
    };
    Ok(DiskDest {
        id: id.to_string(),
        cache,
        fs,
        mountpoint,
    })
}

/// Refuse an id given twice.
pub fn check_unique<'a>(ids: impl IntoIterator<Item = &'a str>) -> Result<(), DiskError> {
    let mut seen = HashSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(DiskError::Duplicate(id.to_string()));
        }
    }
    Ok(())
}

/// qcow2 images start with "QFI\xfb"; anything else is taken as raw.
pub use runq_protocol::image::{format_from_header, ImageRefusal, HEADER_LEN};

#[cfg(test)]
mod tests {
    use super::*;
    use runq_protocol::DiskFormat;

    fn ok(dest: &str) -> DiskDest {
        parse_dest(dest).expect("a disk").expect("valid")
    }

    fn err(dest: &str) -> DiskError {
        parse_dest(dest).expect("a disk").expect_err("invalid")
    }

    #[test]
    fn other_destinations_are_not_disks() {
        assert_eq!(parse_dest("/data"), None);
        assert_eq!(parse_dest("/dev/runqx/a/none"), None);
    }

    #[test]
    fn full_and_short_forms_parse() {
        assert_eq!(
            ok("/dev/runq/0001/none/ext4/mnt/data"),
            DiskDest {
                id: "0001".into(),
                cache: DiskCache::None,
                fs: Some(DiskFs::Ext4),
                mountpoint: Some("/mnt/data".into()),
            }
        );
        let attach = ok("/dev/runq/a_b-C/unsafe");
        assert_eq!(
            (attach.cache, attach.fs, attach.mountpoint),
            (DiskCache::Unsafe, None, None)
        );
        let fs_only = ok("/dev/runq/x/writethrough/xfs");
        assert_eq!((fs_only.fs, fs_only.mountpoint), (Some(DiskFs::Xfs), None));
        assert_eq!(
            ok("/dev/runq/x/writeback/btrfs/d/").mountpoint.as_deref(),
            Some("/d")
        );
    }

    #[test]
    fn each_bad_part_is_named() {
        assert!(matches!(err("/dev/runq/"), DiskError::Shape { .. }));
        assert!(matches!(err("/dev/runq/id"), DiskError::Shape { .. }));
        assert!(matches!(err("/dev/runq/a.b/none"), DiskError::Id { .. }));
        assert!(matches!(
            err(&format!("/dev/runq/{}/none", "x".repeat(37))),
            DiskError::Id { .. }
        ));
        assert_eq!(
            err("/dev/runq/d/fast").to_string(),
            "runq disk \"/dev/runq/d/fast\": cache \"fast\" must be writeback, writethrough, none or unsafe"
        );
        assert!(matches!(
            err("/dev/runq/d/none/ntfs/x"),
            DiskError::Fs { .. }
        ));
        assert!(matches!(
            err("/dev/runq/d/none/ext4/a/../b"),
            DiskError::Mountpoint { .. }
        ));
    }

    #[test]
    fn duplicate_ids_are_refused() {
        assert_eq!(check_unique(["a", "b"]), Ok(()));
        assert_eq!(
            check_unique(["a", "b", "a"]),
            Err(DiskError::Duplicate("a".into()))
        );
    }

    #[test]
    fn qcow2_is_detected_by_magic() {
        assert_eq!(
            format_from_header(b"QFI\xfb\0\0\0\x03"),
            Ok(DiskFormat::Qcow2)
        );
        assert_eq!(format_from_header(&[0u8; 512]), Ok(DiskFormat::Raw));
        assert_eq!(format_from_header(b""), Ok(DiskFormat::Raw));
    }

    #[test]
    fn qcow2_naming_another_file_is_refused() {
        let mut h = vec![0u8; HEADER_LEN];
        h[..8].copy_from_slice(b"QFI\xfb\0\0\0\x03");
        assert_eq!(format_from_header(&h), Ok(DiskFormat::Qcow2));
        let mut backing = h.clone();
        backing[15] = 0x68; // backing_file_offset = 0x68
        assert_eq!(format_from_header(&backing), Err(ImageRefusal::BackingFile));
        let mut v2 = backing.clone();
        v2[7] = 2;
        assert_eq!(format_from_header(&v2), Err(ImageRefusal::BackingFile));
        let mut data = h.clone();
        data[79] = 1 << 2;
        assert_eq!(format_from_header(&data), Err(ImageRefusal::DataFile));
        // The data-file bit means nothing to a version 2 header.
        data[7] = 2;
        assert_eq!(format_from_header(&data), Ok(DiskFormat::Qcow2));
    }
}
