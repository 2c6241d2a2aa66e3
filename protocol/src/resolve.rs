//! Mount destinations resolved the way runc resolves them inside a runc
//! container's rootfs: symlinks followed, absolute ones from the image's
//! root, `..` clamped at that root (`filepath-securejoin`'s rules, which
//! runc uses), with the mounts made before a destination taken into
//! account: a destination below a volume is resolved in the volume.
//!
//! Under runq the container's root is the QEMU tree and the image's rootfs
//! is only a mount at `/rootfs`, so runc itself would resolve an image
//! symlink (`/data -> /usr/bin`) against the tree. `runq create` resolves
//! every destination here first and hands runc the result, which names no
//! symlink of the image any more; runq-init resolves its own (tmpfs, disks)
//! the same way inside the guest.

use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// Linux's own limit on symlinks in one path walk (securejoin's too).
pub const MAX_SYMLINKS: u32 = 40;

/// What a path names, the last component not followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Symlink(PathBuf),
    /// A directory, file, device...: the walk continues through it.
    Other,
    /// Nothing there (or nothing readable): the rest is created by runc.
    Missing,
}

/// Reads a filesystem below a base directory.
pub trait Fs: std::fmt::Debug {
    /// The node at `rel` below `base`; `rel` is relative and its
    /// intermediate components were found to be no symlinks.
    fn node(&self, base: &Path, rel: &Path) -> Node;
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("mount destination {0:?}: too many levels of symbolic links")]
    Loop(PathBuf),
    #[error("mount destination {0:?} must be an absolute path")]
    NotAbsolute(PathBuf),
}

/// The container as runc will have built it up to some mount: the image's
/// rootfs with the mounts made so far on top.
pub struct MountView<'a> {
    rootfs: PathBuf,
    /// (resolved destination, host source or `None` for a mount whose
    /// content is not visible from here) in mount order.
    mounts: Vec<(PathBuf, Option<PathBuf>)>,
    fs: &'a dyn Fs,
}

impl<'a> MountView<'a> {
    pub fn new(rootfs: impl Into<PathBuf>, fs: &'a dyn Fs) -> Self {
        MountView {
            rootfs: rootfs.into(),
            mounts: Vec::new(),
            fs,
        }
    }

    /// A bind mount of host directory (or file) `source` now sits at
    /// `resolved` (a result of [`MountView::resolve`]).
    pub fn add_bind(&mut self, resolved: PathBuf, source: PathBuf) {
        self.mounts.push((resolved, Some(source)));
    }

    /// A mount whose content cannot be read from here (a fresh tmpfs, a
    /// device's filesystem): below it, names resolve as written.
    pub fn add_opaque(&mut self, resolved: PathBuf) {
        self.mounts.push((resolved, None));
    }

    /// Where `dest` lands: a clean absolute path in the container's view
    /// (`/` is the image's root) that names no symlink.
    pub fn resolve(&self, dest: &Path) -> Result<PathBuf, ResolveError> {
        if !dest.is_absolute() {
            return Err(ResolveError::NotAbsolute(dest.to_path_buf()));
        }
        let mut resolved = PathBuf::from("/");
        // Components still to walk, the next one last.
        let mut pending: Vec<std::ffi::OsString> = Vec::new();
        push_components(&mut pending, dest);
        let mut links = 0;
        let mut missing = false;
        while let Some(name) = pending.pop() {
            if name == ".." {
                resolved.pop();
                // `..` out of a missing directory may come back to real ones.
                missing = false;
                continue;
            }
            let candidate = resolved.join(&name);
            if missing {
                resolved = candidate;
                continue;
            }
            match self.node(&candidate) {
                Node::Symlink(target) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(ResolveError::Loop(dest.to_path_buf()));
                    }
                    if target.is_absolute() {
                        resolved = PathBuf::from("/");
                    }
                    push_components(&mut pending, &target);
                }
                Node::Other => resolved = candidate,
                Node::Missing => {
                    missing = true;
                    resolved = candidate;
                }
            }
        }
        Ok(resolved)
    }

    /// The node at container path `p`: in the newest mount that holds it,
    /// else in the image.
    fn node(&self, p: &Path) -> Node {
        for (dest, source) in self.mounts.iter().rev() {
            if let Ok(rel) = p.strip_prefix(dest) {
                return match source {
                    // The mount point itself is the mount's root: no link.
                    _ if rel.as_os_str().is_empty() => Node::Other,
                    Some(src) => self.fs.node(src, rel),
                    None => Node::Missing,
                };
            }
        }
        let rel = p.strip_prefix("/").unwrap_or(p);
        if rel.as_os_str().is_empty() {
            return Node::Other;
        }
        self.fs.node(&self.rootfs, rel)
    }
}

/// `path`'s components onto the stack `pending` so that the first one
/// pops first; `.` and the root vanish, `..` stays.
fn push_components(pending: &mut Vec<std::ffi::OsString>, path: &Path) {
    let names: Vec<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    pending.extend(names.into_iter().rev());
}

/// `std::fs` below `base`, for a filesystem no one else changes (the
/// guest's view of its own root).
#[derive(Debug)]
pub struct StdFs;

impl Fs for StdFs {
    fn node(&self, base: &Path, rel: &Path) -> Node {
        let p = base.join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(&p) {
                Ok(t) => Node::Symlink(t),
                Err(_) => Node::Missing,
            },
            Ok(_) => Node::Other,
            Err(_) => Node::Missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// An in-memory tree: host path -> symlink target ("" for a directory).
    #[derive(Debug)]
    struct MemFs(HashMap<PathBuf, String>);

    impl Fs for MemFs {
        fn node(&self, base: &Path, rel: &Path) -> Node {
            match self.0.get(&base.join(rel)) {
                None => Node::Missing,
                Some(t) if t.is_empty() => Node::Other,
                Some(t) => Node::Symlink(PathBuf::from(t)),
            }
        }
    }

    fn fs(entries: &[(&str, &str)]) -> MemFs {
        MemFs(
            entries
                .iter()
                .map(|(p, t)| (PathBuf::from(p), t.to_string()))
                .collect(),
        )
    }

    fn resolve(view: &MountView, dest: &str) -> String {
        view.resolve(Path::new(dest))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    const IMAGE: &[(&str, &str)] = &[
        ("/img/usr", ""),
        ("/img/usr/bin", ""),
        ("/img/abs", "/usr/bin"),
        ("/img/rel", "../../../../usr/bin"),
        ("/img/etc", ""),
        ("/img/etc/hosts", "/usr/bin/runq-proxy"),
        ("/img/chain1", "/chain2"),
        ("/img/chain2", "usr/./bin/../bin"),
        ("/img/loop1", "/loop2"),
        ("/img/loop2", "/loop1"),
        ("/img/up", ".."),
        ("/img/dangling", "/nowhere/deeper"),
        ("/vol/link", "../../../lib"),
        ("/vol/sub", ""),
    ];

    #[test]
    fn image_symlinks_resolve_inside_the_image() {
        let f = fs(IMAGE);
        let v = MountView::new("/img", &f);
        assert_eq!(resolve(&v, "/abs"), "/usr/bin");
        assert_eq!(resolve(&v, "/rel"), "/usr/bin");
        assert_eq!(resolve(&v, "/abs/x/y"), "/usr/bin/x/y");
        assert_eq!(resolve(&v, "/etc/hosts"), "/usr/bin/runq-proxy");
        assert_eq!(resolve(&v, "/chain1/z"), "/usr/bin/z");
        assert_eq!(resolve(&v, "/up/up/abs"), "/usr/bin");
        assert_eq!(resolve(&v, "/dangling"), "/nowhere/deeper");
        assert_eq!(resolve(&v, "/missing/../abs"), "/usr/bin");
        assert_eq!(resolve(&v, "/data"), "/data");
        assert_eq!(resolve(&v, "/"), "/");
        assert_eq!(
            v.resolve(Path::new("/loop1")),
            Err(ResolveError::Loop("/loop1".into()))
        );
        assert!(v.resolve(Path::new("rel")).is_err());
    }

    #[test]
    fn destinations_below_a_mount_resolve_in_its_source() {
        let f = fs(IMAGE);
        let mut v = MountView::new("/img", &f);
        let data = v.resolve(Path::new("/abs")).unwrap();
        v.add_bind(data, "/vol".into());
        // /abs is /usr/bin now, holding the volume: its link climbs out
        // of the volume, and stops at the image's root.
        assert_eq!(resolve(&v, "/abs/link/x"), "/lib/x");
        assert_eq!(resolve(&v, "/usr/bin/sub"), "/usr/bin/sub");
        // A later mount over the same place hides the earlier one.
        v.add_opaque("/usr/bin".into());
        assert_eq!(resolve(&v, "/usr/bin/link"), "/usr/bin/link");
    }
}
