#!/usr/bin/env python3
"""Edit /etc/docker/daemon.json in place (atomically), keeping other keys.

  daemon-json.py set KEY JSON_VALUE     e.g. set live-restore true
  daemon-json.py del KEY
  daemon-json.py drop-runtimes ARG_PREFIX
      remove runtimes whose runtimeArgs has an argument starting with it
"""
import json
import os
import sys

PATH = "/etc/docker/daemon.json"


def main(argv):
    cfg = {}
    if os.path.exists(PATH) and os.path.getsize(PATH) > 0:
        with open(PATH) as f:
            cfg = json.load(f)
    verb, args = argv[0], argv[1:]
    if verb == "set":
        cfg[args[0]] = json.loads(args[1])
    elif verb == "del":
        cfg.pop(args[0], None)
    elif verb == "drop-runtimes":
        rts = cfg.get("runtimes", {})
        for name in [n for n, r in rts.items()
                     if any(a.startswith(args[0]) for a in r.get("runtimeArgs", []))]:
            del rts[name]
    else:
        sys.exit(f"daemon-json.py: unknown verb {verb}")
    with open(PATH + ".tmp", "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    os.replace(PATH + ".tmp", PATH)


main(sys.argv[1:])
