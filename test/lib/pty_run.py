"""Run a command under a pseudo-terminal, as a person at a terminal would.

pty_run.py ACTION UNTIL -- COMMAND...
Reads the command's output; once it printed READY, performs ACTION
("ctrl-c": types ^C; "resize:ROWS:COLS": resizes the terminal); stops once
the output contains UNTIL (or after 60 s). Prints the output's last line
containing UNTIL, from UNTIL on (or "missing: UNTIL"), and the command's
exit code.
"""
import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time

action, until, cmd = sys.argv[1], sys.argv[2].encode(), sys.argv[4:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)
buf, deadline, done = b"", time.time() + 60, False
while time.time() < deadline and until not in buf:
    r, _, _ = select.select([fd], [], [], 1)
    if r:
        try:
            data = os.read(fd, 1024)
        except OSError:
            break
        if not data:
            break
        buf += data
    if b"READY" in buf and not done:
        if action == "ctrl-c":
            os.write(fd, b"\x03")
        elif action.startswith("resize:"):
            _, rows, cols = action.split(":")
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", int(rows), int(cols), 0, 0))
        done = True
_, status = os.waitpid(pid, 0)
# From UNTIL on: the line may begin with the terminal's echo (^C).
u = until.decode()
lines = [l[l.index(u):].strip() for l in buf.decode(errors="replace").splitlines() if u in l]
print(lines[-1] if lines else f"missing: {u}", os.waitstatus_to_exitcode(status))
