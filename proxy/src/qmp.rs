//! QEMU's monitor protocol (QMP) on one end of a socket pair: enough of
//! it to save a VM template and to restore one and plug a container's
//! devices in. QMP is JSON documents separated by newlines, which
//! serde_json reads and writes as they come; no client crate here passes
//! descriptors (`getfd`), so this one is small and does.

use std::io::{BufRead, BufReader, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP: QEMU closed the monitor (it exited)")]
    Closed,
    #[error("QMP: undecodable reply: {0}")]
    Json(#[from] serde_json::Error),
    #[error("QMP {command}: {desc}")]
    Command { command: String, desc: String },
    #[error("QMP: no {what} within {secs}s")]
    Timeout { what: String, secs: u64 },
}

/// The longest QMP document read.
const MAX_REPLY: u64 = 1 << 20;

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Events read while waiting for a command's answer.
    events: Vec<Value>,
}

impl Qmp {
    /// Read the greeting, leave capabilities negotiation.
    pub fn connect(stream: UnixStream) -> Result<Self, QmpError> {
        let writer = stream.try_clone()?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            events: vec![],
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let greeting = qmp.read(deadline, "QMP greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Command {
                command: "greeting".into(),
                desc: format!("not a QMP greeting: {greeting}"),
            });
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn read(&mut self, deadline: Instant, what: &str) -> Result<Value, QmpError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(QmpError::Timeout {
                what: what.to_string(),
                secs: 0,
            });
        }
        self.reader.get_ref().set_read_timeout(Some(left))?;
        let mut line = Vec::new();
        // QEMU's answers here are small: a reply of more is not QMP.
        match (&mut self.reader)
            .take(MAX_REPLY)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => Err(QmpError::Closed),
            Ok(_) if !line.ends_with(b"\n") => Err(QmpError::Command {
                command: what.to_string(),
                desc: format!("a reply of more than {MAX_REPLY} bytes"),
            }),
            Ok(_) => Ok(serde_json::from_slice(&line)?),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(QmpError::Timeout {
                    what: what.to_string(),
                    secs: left.as_secs(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Run a command, return its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        self.execute_with_fd(command, arguments, None)
    }

    /// The same, with a descriptor passed alongside (`getfd`).
    pub fn execute_with_fd(
        &mut self,
        command: &str,
        arguments: Value,
        fd: Option<BorrowedFd>,
    ) -> Result<Value, QmpError> {
        let mut msg = serde_json::to_vec(&json!({"execute": command, "arguments": arguments}))?;
        msg.push(b'\n');
        match fd {
            Some(fd) => {
                let fds = [fd.as_raw_fd()];
                let cmsg = [ControlMessage::ScmRights(&fds)];
                sendmsg::<()>(
                    self.writer.as_raw_fd(),
                    &[IoSlice::new(&msg)],
                    &cmsg,
                    MsgFlags::empty(),
                    None,
                )
                .map_err(std::io::Error::from)?;
            }
            None => self.writer.write_all(&msg)?,
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.read(deadline, &format!("answer to {command}"))?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                let desc = e.get("desc").and_then(Value::as_str).unwrap_or("error");
                return Err(QmpError::Command {
                    command: command.to_string(),
                    desc: desc.to_string(),
                });
            }
            self.events.push(v);
        }
    }

    /// Wait for the `MIGRATION` event with a final status (`completed`,
    /// or `failed`/`cancelled` as an error); needs the `events`
    /// migration capability.
    pub fn wait_migration(&mut self, timeout: Duration, what: &str) -> Result<(), QmpError> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = if self.events.is_empty() {
                self.read(deadline, what)?
            } else {
                self.events.remove(0)
            };
            if v.get("event").and_then(Value::as_str) != Some("MIGRATION") {
                continue;
            }
            match v["data"]["status"].as_str() {
                Some("completed") => return Ok(()),
                Some(s @ ("failed" | "cancelled")) => {
                    let detail = self
                        .execute("query-migrate", json!({}))
                        .ok()
                        .and_then(|r| {
                            r.get("error-desc")
                                .and_then(Value::as_str)
                                .map(str::to_string)
                        })
                        .unwrap_or_default();
                    return Err(QmpError::Command {
                        command: what.to_string(),
                        desc: format!("migration {s} {detail}").trim().to_string(),
                    });
                }
                _ => {}
            }
        }
    }
}
