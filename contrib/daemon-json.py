#!/usr/bin/env python3
"""The one editor of /etc/docker/daemon.json (atomic, keeping every other
key), for `make install` and the tests.

  daemon-json.py register RUNQ_PATH [NAME [RUNTIME_ARG...]]
      runtime NAME (default runq) -> RUNQ_PATH; given arguments replace
      its runtimeArgs, none keep what the administrator configured
  daemon-json.py set KEY JSON_VALUE     e.g. set live-restore true
  daemon-json.py del KEY
  daemon-json.py drop-runtimes ARG_PREFIX
      remove runtimes whose runtimeArgs has an argument starting with it
"""
import json
import os
import sys

PATH = os.environ.get("DOCKER_DAEMON_JSON", "/etc/docker/daemon.json")


def load():
    if os.path.exists(PATH) and os.path.getsize(PATH) > 0:
        with open(PATH) as f:
            return json.load(f)
    return {}


def save(cfg):
    os.makedirs(os.path.dirname(PATH), exist_ok=True)
    with open(PATH + ".tmp", "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    os.replace(PATH + ".tmp", PATH)


def main(argv):
    if not argv:
        sys.exit(__doc__)
    cfg = load()
    verb, args = argv[0], argv[1:]
    if verb == "register" and args:
        runq, name, rt_args = args[0], (args[1:2] or ["runq"])[0], args[2:]
        rt = cfg.setdefault("runtimes", {}).setdefault(name, {})
        rt["path"] = runq
        if rt_args:
            rt["runtimeArgs"] = rt_args
        print(f"daemon-json: runtime {name} -> {runq}{' ' + ' '.join(rt_args) if rt_args else ''} in {PATH}")
    elif verb == "set" and len(args) == 2:
        cfg[args[0]] = json.loads(args[1])
    elif verb == "del" and len(args) == 1:
        cfg.pop(args[0], None)
    elif verb == "drop-runtimes" and len(args) == 1:
        rts = cfg.get("runtimes", {})
        for name in [n for n, r in rts.items()
                     if any(a.startswith(args[0]) for a in r.get("runtimeArgs", []))]:
            del rts[name]
    else:
        sys.exit(f"daemon-json.py: bad arguments {argv}\n{__doc__}")
    save(cfg)


main(sys.argv[1:])
