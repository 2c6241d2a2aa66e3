//! Framed host<->guest messages.
//!
//! A frame is a little-endian `u32` payload length followed by the
//! payload, one [`Msg`] encoded with `postcard`. The first frame in each
//! direction is [`Msg::Hello`]; a version mismatch ends the session with a
//! clear error on both sides.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::spec::ProcessSpec;

/// Largest payload we accept. The biggest legitimate message is `Start`
/// with a large environment (Docker allows ~1 MiB of it); data frames are
/// at most [`MAX_DATA_CHUNK`].
pub const MAX_FRAME: usize = 16 << 20;
/// Size of the stdio chunks senders put in one frame.
pub const MAX_DATA_CHUNK: usize = 64 << 10;

/// The largest frame the host accepts from the guest: output chunks and
/// short reports only (a `Start`, the one large message, goes the other
/// way). A bigger length prefix ends the container before any allocation.
pub const MAX_GUEST_FRAME: usize = 2 * MAX_DATA_CHUNK;

/// How the workload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The status a shell (and Docker) reports: N, or 128+S for signal S.
    /// The guest chooses S: any value maps into 128..=255, never overflows.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c & 0xff,
            ExitStatus::Signaled(s) => 128 + s.clamp(0, 127),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// First frame in each direction.
    Hello {
        version: u32,
    },
    /// Host -> guest: mount the root and start this process.
    Start(Box<StartRequest>),
    /// Host -> guest, first message on an exec connection: run this
    /// process in the workload's namespaces.
    Exec(Box<ExecRequest>),
    /// Host -> guest: bytes for the workload's stdin.
    Stdin(Vec<u8>),
    /// Host -> guest: the container's stdin reached EOF.
    StdinEof,
    /// Host -> guest: deliver this signal to the workload.
    Signal(i32),
    /// Host -> guest: terminal size changed.
    Resize {
        rows: u16,
        cols: u16,
    },
    /// Guest -> host: workload output.
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Guest -> host: the workload ended; all its output precedes this.
    Exit(ExitStatus),
    /// Guest -> host: the workload could not be started or the guest
    /// failed; the text is for the user, the code is the exit status to
    /// report (126/127 as runc, else 1... ).
    Failed {
        code: i32,
        message: String,
    },
}

impl Msg {
    /// The message's name, for log lines (never its guest-written payload).
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Hello { .. } => "Hello",
            Msg::Start(_) => "Start",
            Msg::Exec(_) => "Exec",
            Msg::Stdin(_) => "Stdin",
            Msg::StdinEof => "StdinEof",
            Msg::Signal(_) => "Signal",
            Msg::Resize { .. } => "Resize",
            Msg::Stdout(_) => "Stdout",
            Msg::Stderr(_) => "Stderr",
            Msg::Exit(_) => "Exit",
            Msg::Failed { .. } => "Failed",
        }
    }
}

/// What the guest needs to start the workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    pub process: ProcessSpec,
    pub hostname: Option<String>,
    pub readonly_root: bool,
    pub tmpfs: Vec<crate::spec::TmpfsMount>,
    pub shm_size: Option<u64>,
    /// The caller's terminal size (rows, cols), applied before the
    /// workload starts so that its first `stty size` is right.
    pub winsize: Option<(u16, u16)>,
    /// `RUNQ_SYSTEMD`: report poweroff/halt (SIGINT to the PID namespace's
    /// init) as exit 0 and anything else as 1.
    pub systemd: bool,
    /// Write the environment to `/.runqenv` first.
    pub runqenv: bool,
    /// SIGUSR1/2 run `/.runq/SIGUSR1`/`SIGUSR2` (runtime option `--sigusr`).
    pub sigusr: bool,
    /// The container's interfaces, now the guest's NICs, in order.
    pub nics: Vec<NicConfig>,
    /// Routes beyond those the addresses imply (default gateways...).
    pub routes: Vec<RouteConfig>,
    /// Replaces /etc/resolv.conf when runq's DNS options are set.
    pub resolv_conf: Option<String>,
    /// How the container root arrives (virtiofs or 9p with this cache).
    pub share: crate::spec::Share,
    pub ninep_cache: crate::spec::NinePCache,
    /// runq disks to link under /dev/disk/by-runq-id and mount.
    pub disks: Vec<crate::spec::GuestDisk>,
    pub rootdisk: Option<crate::spec::RootDisk>,
    /// Destinations of Docker's bind mounts in the container (a rootdisk
    /// root takes them over from the shared root).
    pub binds: Vec<String>,
    /// Those of `binds` that are read-only: remounted so in the guest, as
    /// runc shows them (the host refuses the writes either way).
    pub readonly_binds: Vec<String>,
    /// OCI `linux.sysctl`, set in the guest before the workload starts.
    pub sysctls: Vec<(String, String)>,
    /// OCI `linux.maskedPaths` / `readonlyPaths`, applied in the
    /// workload's mount namespace.
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    /// BPF programs for the workload and every exec (see VmSpec).
    pub seccomp: Vec<Vec<u64>>,
    /// `--privileged`: the workload sees every guest device.
    pub privileged: bool,
    /// The VM's memory: the container cgroup's `memory.max` in the guest.
    pub memory_bytes: u64,
    /// Docker's `--device` nodes, made in the container's /dev.
    pub devices: Vec<crate::spec::DeviceNode>,
}

/// One container interface as the guest must configure it: the NIC with
/// this MAC becomes `name` with these addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicConfig {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    /// `address/prefix`, IPv4 and IPv6.
    pub addrs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConfig {
    /// `default` or `address/prefix`.
    pub dst: String,
    pub via: Option<String>,
    pub dev: String,
    pub ipv6: bool,
}

/// What the guest needs to run an additional process (`docker exec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub process: ProcessSpec,
    pub winsize: Option<(u16, u16)>,
}

#[derive(Debug, Error)]
pub enum WireError {
    #[error("control connection I/O failed: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
    #[error("protocol version mismatch: this side speaks {ours}, the other {theirs} (host and guest binaries from different builds?)")]
    Version { ours: u32, theirs: u32 },
    #[error("expected Hello as the first frame, got another message")]
    NoHello,
}

/// Encode `msg` into one frame (length prefix + payload).
pub fn encode(msg: &Msg) -> Result<Vec<u8>, WireError> {
    let payload = postcard::to_stdvec(msg)?;
    if payload.len() > MAX_FRAME {
        return Err(WireError::TooLarge {
            len: payload.len(),
            max: MAX_FRAME,
        });
    }
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Decode one payload (without its length prefix).
pub fn decode(payload: &[u8]) -> Result<Msg, WireError> {
    Ok(postcard::from_bytes(payload)?)
}

/// Write one message as a single `write_all`, so that frames written by
/// several threads under one lock never interleave.
pub fn write_msg<W: Write>(w: &mut W, msg: &Msg) -> Result<(), WireError> {
    w.write_all(&encode(msg)?)?;
    Ok(())
}

/// Read one message; `Ok(None)` on a clean EOF between frames.
pub fn read_msg<R: Read>(r: &mut R) -> Result<Option<Msg>, WireError> {
    read_msg_max(r, MAX_FRAME)
}

/// Read one message of at most `max` bytes (the host reads the guest's
/// with [`MAX_GUEST_FRAME`]).
pub fn read_msg_max<R: Read>(r: &mut R, max: usize) -> Result<Option<Msg>, WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    decode(&payload).map(Some)
}

/// Send our Hello and check the peer's.
pub fn handshake<S: Read + Write>(s: &mut S) -> Result<(), WireError> {
    write_msg(
        s,
        &Msg::Hello {
            version: crate::PROTOCOL_VERSION,
        },
    )?;
    match read_msg_max(s, MAX_GUEST_FRAME)? {
        Some(Msg::Hello { version }) if version == crate::PROTOCOL_VERSION => Ok(()),
        Some(Msg::Hello { version }) => Err(WireError::Version {
            ours: crate::PROTOCOL_VERSION,
            theirs: version,
        }),
        _ => Err(WireError::NoHello),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn round_trip(msg: Msg) {
        let frame = encode(&msg).unwrap();
        let mut r = Cursor::new(frame);
        assert_eq!(read_msg(&mut r).unwrap(), Some(msg));
        assert_eq!(read_msg(&mut r).unwrap(), None, "clean EOF after the frame");
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Msg::Hello { version: 7 });
        round_trip(Msg::Stdin(b"abc".to_vec()));
        round_trip(Msg::StdinEof);
        round_trip(Msg::Signal(15));
        round_trip(Msg::Resize { rows: 24, cols: 80 });
        round_trip(Msg::Stdout(vec![0; MAX_DATA_CHUNK]));
        round_trip(Msg::Stderr(vec![]));
        round_trip(Msg::Exit(ExitStatus::Signaled(9)));
        round_trip(Msg::Failed {
            code: 127,
            message: "not found".into(),
        });
        round_trip(Msg::Exec(Box::new(ExecRequest {
            process: ProcessSpec {
                args: vec!["id".into()],
                uid: 65534,
                ..Default::default()
            },
            winsize: None,
        })));
        round_trip(Msg::Start(Box::new(StartRequest {
            process: ProcessSpec {
                args: vec!["true".into()],
                env: (0..1000)
                    .map(|i| format!("V{i}={}", "x".repeat(1024)))
                    .collect(),
                cwd: "/".into(),
                ..Default::default()
            },
            hostname: None,
            readonly_root: false,
            tmpfs: vec![],
            shm_size: Some(1 << 20),
            winsize: Some((24, 80)),
            systemd: false,
            runqenv: true,
            sigusr: false,
            nics: vec![NicConfig {
                name: "eth0".into(),
                mac: "02:42:ac:11:00:02".into(),
                mtu: 1500,
                addrs: vec!["172.17.0.2/16".into(), "fd00::2/64".into()],
            }],
            routes: vec![RouteConfig {
                dst: "default".into(),
                via: Some("172.17.0.1".into()),
                dev: "eth0".into(),
                ipv6: false,
            }],
            resolv_conf: Some("nameserver 10.0.0.1\n".into()),
            share: crate::Share::NineP,
            ninep_cache: crate::NinePCache::Mmap,
            disks: vec![crate::GuestDisk {
                id: "d1".into(),
                fs: Some(crate::DiskFs::Ext4),
                mountpoint: Some("/data".into()),
                readonly: true,
            }],
            rootdisk: Some(crate::RootDisk {
                id: "d1".into(),
                exclude: vec!["/var/cache".into()],
            }),
            binds: vec!["/etc/hosts".into()],
            readonly_binds: vec![],
            sysctls: vec![("net.ipv4.ip_forward".into(), "1".into())],
            masked_paths: vec!["/proc/kcore".into()],
            readonly_paths: vec!["/proc/sys".into()],
            seccomp: vec![vec![0x0006_0000_7fff_0000]],
            privileged: false,
            devices: vec![],
            memory_bytes: 512 << 20,
        })));
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut r = Cursor::new(((MAX_FRAME + 1) as u32).to_le_bytes().to_vec());
        assert!(matches!(read_msg(&mut r), Err(WireError::TooLarge { .. })));
    }

    /// The bytes test/lib/hostile-init.c writes by hand.
    #[test]
    fn encodings_the_hostile_test_guest_spells_out() {
        let payload = |m: &Msg| encode(m).unwrap()[4..].to_vec();
        assert_eq!(
            payload(&Msg::Hello {
                version: crate::PROTOCOL_VERSION
            }),
            [0x00, 0x02]
        );
        assert_eq!(
            payload(&Msg::Stdin(b"hi".to_vec())),
            [0x03, 0x02, b'h', b'i']
        );
        assert_eq!(
            payload(&Msg::Exit(ExitStatus::Signaled(i32::MAX))),
            [0x09, 0x01, 0xfe, 0xff, 0xff, 0xff, 0x0f]
        );
        assert!(decode(&[0x7f, 0xff, 0xff]).is_err());
    }

    #[test]
    fn the_guests_frames_are_held_to_the_guest_limit() {
        // A full output chunk passes; a frame one byte over the limit is
        // refused from its length prefix alone (nothing else was sent).
        let chunk = encode(&Msg::Stdout(vec![7; MAX_DATA_CHUNK])).unwrap();
        let got = read_msg_max(&mut Cursor::new(chunk), MAX_GUEST_FRAME).unwrap();
        assert!(matches!(got, Some(Msg::Stdout(d)) if d.len() == MAX_DATA_CHUNK));
        let mut r = Cursor::new(((MAX_GUEST_FRAME + 1) as u32).to_le_bytes().to_vec());
        let e = read_msg_max(&mut r, MAX_GUEST_FRAME).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "frame of {} bytes exceeds the {MAX_GUEST_FRAME}-byte limit",
                MAX_GUEST_FRAME + 1
            )
        );
        // A Start (host -> guest) may be far larger.
        let big = encode(&Msg::Stdin(vec![0; MAX_GUEST_FRAME * 4])).unwrap();
        assert!(read_msg(&mut Cursor::new(big)).unwrap().is_some());
        assert_eq!(Msg::Stdin(vec![1, 2]).kind(), "Stdin");
    }

    #[test]
    fn truncated_frame_is_an_error_not_eof() {
        let mut frame = encode(&Msg::Signal(2)).unwrap();
        frame.pop();
        assert!(matches!(
            read_msg(&mut Cursor::new(frame)),
            Err(WireError::Io(_))
        ));
    }

    #[test]
    fn garbage_payload_is_a_decode_error() {
        let mut frame = 3u32.to_le_bytes().to_vec();
        frame.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            read_msg(&mut Cursor::new(frame)),
            Err(WireError::Decode(_))
        ));
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(ExitStatus::Exited(42).code(), 42);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
        assert_eq!(
            ExitStatus::Signaled(i32::MAX).code(),
            255,
            "a guest-chosen signal"
        );
        assert_eq!(ExitStatus::Signaled(-5).code(), 128);
    }

    /// A peer that answers with another version is refused by name.
    #[test]
    fn handshake_refuses_other_versions() {
        struct Peer {
            input: Cursor<Vec<u8>>,
        }
        impl Read for Peer {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                self.input.read(b)
            }
        }
        impl Write for Peer {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let theirs = encode(&Msg::Hello { version: 99 }).unwrap();
        let mut p = Peer {
            input: Cursor::new(theirs),
        };
        assert!(matches!(
            handshake(&mut p),
            Err(WireError::Version { theirs: 99, .. })
        ));
        let mut p = Peer {
            input: Cursor::new(encode(&Msg::StdinEof).unwrap()),
        };
        assert!(matches!(handshake(&mut p), Err(WireError::NoHello)));
    }
}
