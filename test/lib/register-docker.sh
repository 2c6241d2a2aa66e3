#!/usr/bin/env bash
# register-docker.sh RUNQ_PATH [NAME [RUNTIME_ARGS...]]
# Register a runq runtime (default name "runq") in /etc/docker/daemon.json,
# keeping every other key; for the default name, runtimeArgs already
# configured by the administrator are kept.
set -euo pipefail
runq=$1 name=${2:-runq}
shift $(( $# >= 2 ? 2 : 1 ))
mkdir -p /etc/docker
python3 - "$runq" "$name" "$@" <<'PY'
import json, os, sys
path = "/etc/docker/daemon.json"
runq, name, args = sys.argv[1], sys.argv[2], sys.argv[3:]
cfg = {}
if os.path.exists(path) and os.path.getsize(path) > 0:
    with open(path) as f:
        cfg = json.load(f)
rt = cfg.setdefault("runtimes", {}).setdefault(name, {})
rt["path"] = runq
if args:
    rt["runtimeArgs"] = args
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(cfg, f, indent=2)
    f.write("\n")
os.replace(tmp, path)
PY
echo "register-docker: runtime $name -> $runq${*:+ $*} in /etc/docker/daemon.json"
