#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Runs a command on a fresh pseudo-terminal and scripts the terminal side of it, the way a user
at a terminal would: wait for some output, type, resize the window.

Used by the end-to-end parity tests for `ctr run -t` / `ctr task exec -t` (ctr needs a real
terminal on its side; Node has no pty support).

Usage: pty-drive.py STEPS_JSON COMMAND [ARG...]

STEPS_JSON is a JSON list of steps, run in order:
  {"size": [rows, cols]}            window size of the pty before COMMAND starts (first step only)
  {"expect": REGEX, "timeout": s}   read output until REGEX (Python syntax, searched in the output
                                    received since the end of the previous match) matches
  {"send": TEXT}                    write TEXT to the terminal (what the user types)
  {"resize": [rows, cols]}          set the window size (the kernel sends SIGWINCH to COMMAND)
  {"sleep": s}                      pause

Then the output is read until COMMAND closes the terminal, and COMMAND is waited for (it is
SIGKILLed after --deadline seconds in total). Prints one JSON object on stdout:
  {"output": <base64 of every byte read from the terminal>, "status": <exit code, or -signal>,
   "error": <null, or why a step failed>}
"""
import base64
import errno
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time

DEADLINE_S = float(os.environ.get('PTY_DRIVE_DEADLINE', '40'))


def winsize(rows, cols):
    return struct.pack('HHHH', rows, cols, 0, 0)


def main():
    steps = json.loads(sys.argv[1])
    cmd = sys.argv[2:]
    rows, cols = 24, 80
    if steps and 'size' in steps[0]:
        rows, cols = steps.pop(0)['size']

    pid, fd = pty.fork()
    if pid == 0:
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, winsize(rows, cols))
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)

    start = time.monotonic()
    deadline = start + DEADLINE_S
    buf = bytearray()
    pos = 0
    eof = False
    error = None

    def pump(until):
        """Reads what is available (waiting at most until `until`); False on timeout."""
        nonlocal eof
        if eof:
            return False
        t = until - time.monotonic()
        if t <= 0:
            return False
        r, _, _ = select.select([fd], [], [], t)
        if not r:
            return False
        try:
            data = os.read(fd, 65536)
        except OSError as e:
            if e.errno == errno.EIO:  # the other side has no holders any more
                eof = True
                return False
            raise
        if not data:
            eof = True
            return False
        buf.extend(data)
        return True

    for step in steps:
        if 'expect' in step:
            rx = re.compile(step['expect'].encode())
            until = min(deadline, time.monotonic() + float(step.get('timeout', 20)))
            while True:
                m = rx.search(bytes(buf), pos)
                if m:
                    pos = m.end()
                    break
                if not pump(until) and (eof or time.monotonic() >= until):
                    error = 'expected %r, got %r' % (step['expect'], bytes(buf[pos:]).decode('utf8', 'replace'))
                    break
        elif 'send' in step:
            os.write(fd, step['send'].encode())
        elif 'resize' in step:
            r, c = step['resize']
            fcntl.ioctl(fd, termios.TIOCSWINSZ, winsize(r, c))
        elif 'sleep' in step:
            end = time.monotonic() + float(step['sleep'])
            while time.monotonic() < end:
                pump(end)
        if error:
            break

    # Drain until the command closes the terminal.
    while not eof and time.monotonic() < deadline:
        pump(deadline)

    status = None
    while status is None:
        wpid, st = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            status = os.waitstatus_to_exitcode(st)
            break
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            _, st = os.waitpid(pid, 0)
            status = os.waitstatus_to_exitcode(st)
            error = error or 'command did not exit within %ss' % DEADLINE_S
            break
        time.sleep(0.02)

    os.close(fd)
    sys.stdout.write(json.dumps({
        'output': base64.b64encode(bytes(buf)).decode(),
        'status': status,
        'error': error,
    }))


if __name__ == '__main__':
    main()
