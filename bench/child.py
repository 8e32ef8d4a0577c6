"""A tool run as a child process: its exit code, output, CPU time and peak RSS.

``os.wait4`` is the only way to get the rusage of one particular child, so the
child is reaped here in a thread rather than by ``Popen.wait``. Peak RSS is
*not* its ru_maxrss: Linux carries the high-water mark of the image before
``exec`` into it, and that image is this benchmark's own (forked, holding a
million keys' names), which made a 85 MB bootstrap read as up to 166 MB. It is
the kernel's VmHWM of the exec'd process, sampled from /proc until it exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def bootstrap_cmd(*args: str) -> list[str]:
    return [PYTHON, "-m", "bootstrap", *args]


@dataclass
class Finished:
    cmd: list[str]
    returncode: int
    started: float  # time.monotonic()
    ended: float
    output: str
    max_rss_kb: int
    cpu_s: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


class Child:
    """Start now; ``wait`` returns a Finished (bounded: the child is killed after ``timeout``)."""

    def __init__(self, cmd: Sequence[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.cmd = list(cmd)
        self.log = log
        self._out = log.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})}
        )
        self._result: tuple[int, int, float] | None = None
        self.ended = 0.0
        self._hwm_kb = 0
        self._sampler = threading.Thread(target=self._sample_hwm, daemon=True)
        self._sampler.start()
        self._thread = threading.Thread(target=self._reap, daemon=True)
        self._thread.start()

    def _sample_hwm(self) -> None:
        """VmHWM of the child's own image every 10 ms until it is gone (Popen returns after the exec)."""
        status = f"/proc/{self.proc.pid}/status"
        while self._result is None:
            try:
                with open(status) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self._hwm_kb = max(self._hwm_kb, int(line.split()[1]))
            except (OSError, ValueError):
                return
            time.sleep(0.01)

    def _reap(self) -> None:
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.ended = time.monotonic()
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code  # so Popen never waits for a PID that is gone
        self._result = (code, self._hwm_kb, float(usage.ru_utime + usage.ru_stime))

    @property
    def done(self) -> bool:
        return self._result is not None

    def wait(self, timeout: float) -> Finished:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.proc.kill()  # our own child, by PID
            self._thread.join(10)
        self._out.close()
        code, rss, cpu = self._result if self._result else (-9, 0, 0.0)
        output = self.log.read_text(errors="replace")
        return Finished(self.cmd, code, self.started, self.ended or time.monotonic(), output, rss, cpu)


def run(cmd: Sequence[str], log: Path, timeout: float) -> Finished:
    return Child(cmd, log).wait(timeout)
