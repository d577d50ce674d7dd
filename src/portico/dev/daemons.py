"""Background processes the lab starts and must be able to stop even after it was restarted.

Each daemon runs in its own session (so its whole process group can be signalled), logs to
`logs/NAME.log` and is recorded in `run/NAME.pid` with its kernel start time, so a recycled
PID is never mistaken for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name (field 2) may contain spaces, so split after ')'.
    return stat.rsplit(")", 1)[1].split()[19]


class Daemons:
    def __init__(self, state_dir: Path) -> None:
        self.run_dir = state_dir / "run"
        self.log_dir = state_dir / "logs"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path(name).open("ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env, cwd=cwd)
        self._pid_file(name).write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
        return proc.pid

    def pid(self, name: str) -> int | None:
        """The daemon's PID if it is still the process we started, else None."""
        try:
            pid_s, start = self._pid_file(name).read_text().split()
        except (OSError, ValueError):
            return None
        pid = int(pid_s)
        _reap(pid)
        return pid if _start_time(pid) == start else None

    def alive(self, name: str) -> bool:
        return self.pid(name) is not None

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.run_dir.glob("*.pid")) if self.run_dir.is_dir() else []

    def stop(self, name: str, grace: float = 5.0) -> None:
        pid = self.pid(name)
        if pid is not None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and _start_time(pid) is not None:
                    _reap(pid)
                    time.sleep(0.05)
                if _start_time(pid) is None:
                    break
        self._pid_file(name).unlink(missing_ok=True)


def _reap(pid: int) -> None:
    """Collect the exit status if the daemon is our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
