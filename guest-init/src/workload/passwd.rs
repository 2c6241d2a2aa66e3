//! HOME as runc sets it: from the image's /etc/passwd, else "/".

use std::io;

/// The image's /etc/passwd, read as a running workload may have left it:
/// a regular file only (not a FIFO that blocks, not a link out of the
/// root, not /dev/zero), and at most 1 MiB of it.
pub fn read_passwd(path: &str) -> io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let mut text = String::new();
    f.take(1 << 20).read_to_string(&mut text)?;
    Ok(text)
}

/// The home directory of `uid` in an /etc/passwd, else "/".
pub fn home_of(passwd: &str, uid: u32) -> &str {
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && f[2].parse() == Ok(uid))
        .map(|f| f[5])
        .filter(|h| !h.is_empty())
        .unwrap_or("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_comes_from_passwd_else_root() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\nbad:line\nempty:x:7:7:::\n";
        assert_eq!(home_of(passwd, 0), "/root");
        assert_eq!(home_of(passwd, 65534), "/home");
        assert_eq!(home_of(passwd, 7), "/");
        assert_eq!(home_of(passwd, 1000), "/");
        assert_eq!(home_of("", 0), "/");
    }
}
