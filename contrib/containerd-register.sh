#!/usr/bin/env bash
# containerd-register.sh [CONFIG] [RUNQ]: add runtime class "runq"
# (io.containerd.runc.v2 with BinaryName = RUNQ) to containerd's CRI
# config, keeping everything else. Idempotent; refuses a config that
# defines the runq runtime differently rather than guessing.
set -euo pipefail
config=${1:-/etc/containerd/config.toml}
runq=${2:-/var/lib/runq/runq}
python3 - "$config" "$runq" <<'PY'
import os, sys, tomllib
path, runq = sys.argv[1], sys.argv[2]
text = open(path).read() if os.path.exists(path) else ""
cfg = tomllib.loads(text) if text.strip() else {}
version = cfg.get("version", 1 if text.strip() else 2)
if version != 2:
    sys.exit(f"containerd-register: {path} is config version {version}; only version 2 is supported")
runtimes = (cfg.get("plugins", {}).get("io.containerd.grpc.v1.cri", {})
               .get("containerd", {}).get("runtimes", {}))
if "runq" in runtimes:
    have = runtimes["runq"]
    if have.get("runtime_type") == "io.containerd.runc.v2" and have.get("options", {}).get("BinaryName") == runq:
        print(f"containerd-register: runtime runq already in {path}")
        sys.exit(0)
    sys.exit(f"containerd-register: {path} defines runtime runq differently; edit it by hand")
key = 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runq'
snippet = ("" if text.strip() else "version = 2\n") + f'''
[{key}]
  runtime_type = "io.containerd.runc.v2"
[{key}.options]
  BinaryName = "{runq}"
'''
new = text + ("\n" if text and not text.endswith("\n") else "") + snippet
tomllib.loads(new)  # never write a file containerd cannot read
os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
tmp = path + ".runq-tmp"
with open(tmp, "w") as f:
    f.write(new)
os.replace(tmp, path)
print(f"containerd-register: runtime runq -> {runq} added to {path}")
PY
