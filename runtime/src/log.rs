//! Error reporting the way containerd reads it: runc's `--log` file in
//! `--log-format json` (containerd shows the last error line to the user),
//! and always one line on stderr.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

pub struct Logger {
    file: Option<PathBuf>,
    json: bool,
}

impl Logger {
    pub fn new(file: Option<PathBuf>, format: Option<&str>) -> Self {
        Logger {
            file,
            json: format == Some("json"),
        }
    }

    /// Find `--log`/`--log-format` in a raw argv, for errors that happen
    /// before the command line could be parsed.
    pub fn from_raw_args(args: &[String]) -> Self {
        let value_of = |flag: &str| {
            let eq = format!("{flag}=");
            args.iter().enumerate().find_map(|(i, a)| {
                if a == flag {
                    args.get(i + 1).cloned()
                } else {
                    a.strip_prefix(&eq).map(str::to_string)
                }
            })
        };
        Logger::new(
            value_of("--log").map(PathBuf::from),
            value_of("--log-format").as_deref(),
        )
    }

    pub fn error(&self, msg: &str) {
        eprintln!("{msg}");
        self.write("error", msg);
    }

    /// A warning for the runtime log only (on success nobody reads our
    /// stderr, and the workload's output is not ours to write into).
    pub fn warn(&self, msg: &str) {
        self.write("warning", msg);
    }

    fn write(&self, level: &str, msg: &str) {
        let Some(path) = &self.file else { return };
        let line = if self.json {
            serde_json::json!({ "level": level, "msg": msg }).to_string()
        } else {
            format!("level={level} msg={msg:?}")
        };
        // Best effort: the message already went to stderr.
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_log_flags_in_raw_args() {
        let args: Vec<String> = [
            "runq",
            "--bogus",
            "--log",
            "/l.json",
            "--log-format=json",
            "create",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let l = Logger::from_raw_args(&args);
        assert_eq!(l.file.as_deref(), Some(std::path::Path::new("/l.json")));
        assert!(l.json);
    }

    #[test]
    fn json_error_line_is_what_containerd_parses() {
        let dir = std::env::temp_dir().join(format!("runq-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.json");
        Logger::new(Some(path.clone()), Some("json")).error("runq: boom \"x\"");
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "runq: boom \"x\"");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
