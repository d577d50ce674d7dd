"""HAProxy run by the agent as a child, in master-worker mode: a new configuration is checked, then loaded by a
seamless reload (the master re-executes, the new worker takes the listening sockets over from the old one through
the runtime socket's `expose-fd listeners`, and the old worker finishes its connections), so no connection is
refused or cut by a change. Both of its sockets live in the agent's private directory.

Runtime-API commands go through the master CLI to the current worker by its pid (`@!PID`), never to the runtime
socket itself: every worker accepts on that socket, a reload's old one too until it has stopped listening
(measured with `grace 1s`: 23 of 30 commands sent right after a reload were answered by the old worker), and a
change the old worker takes is lost to the one serving from then on (a pool left with no server in service: 503s
until the next reload)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

from portico.announce.bgp import RUN_DIR, _set_parent_death_signal, private_directory, stop_child

log = logging.getLogger(__name__)

RELOAD_TIMEOUT = 10.0
REFUSALS = ("No such", "Unknown", "Require", "Invalid", "Permission denied")  # how the runtime API says no


class InvalidConfiguration(Exception):
    """HAProxy refused the configuration (`haproxy -c`); the one it runs is unchanged."""


class HAProxy:
    def __init__(self, directory: str = os.path.join(RUN_DIR, "haproxy"), binary: str = "haproxy") -> None:
        self.directory = Path(directory)
        self.binary = binary
        self.config = self.directory / "haproxy.cfg"
        self.master_socket = self.directory / "master.sock"
        self.runtime_socket = self.directory / "runtime.sock"
        self._process: asyncio.subprocess.Process | None = None
        self._worker: int | None = None  # the current worker's pid
        self.reloads = 0
        self.updates = 0  # changes made through the runtime API, without a reload

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def apply(self, text: str) -> None:
        """Run `text`: checked first, then started or reloaded. Raises InvalidConfiguration."""
        private_directory(str(self.directory))
        candidate = self.directory / "haproxy.cfg.new"
        candidate.write_text(text)
        check = await asyncio.create_subprocess_exec(self.binary, "-c", "-f", str(candidate),
                                                     stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await check.communicate()
        if check.returncode != 0:
            raise InvalidConfiguration((err or out).decode(errors="replace").strip()[-2000:])
        candidate.replace(self.config)
        if not self.running:
            await self._start()
        else:
            await self._reload()

    async def update(self, commands: list[str], text: str) -> bool:
        """Change the running worker through its runtime API (portico.dataplane.haproxy.runtime_changes), the
        configuration file kept equal to what then runs. False when the worker refused a command: reload then."""
        answers = await self.runtime(*commands)
        refused = [line for line in answers.splitlines() if line.startswith(REFUSALS)]
        if refused:
            log.warning("haproxy's runtime API refused %s; reloading instead", refused[0])
            return False
        self.config.write_text(text)
        self.updates += 1
        return True

    async def _start(self) -> None:
        for stale in (self.master_socket, self.runtime_socket):
            stale.unlink(missing_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            self.binary, "-W", "-S", f"{self.master_socket},mode,600", "-f", str(self.config),
            stdin=asyncio.subprocess.DEVNULL, preexec_fn=_set_parent_death_signal)
        await self._until(lambda proc: bool(_current_workers(proc)), "start")
        log.info("haproxy started (master pid %d)", self._process.pid)

    async def _reload(self) -> None:
        assert self._process is not None
        before = await self._master_reloads()
        self._process.send_signal(signal.SIGUSR2)
        await self._until(lambda proc: _master_reloads(proc) > before and bool(_current_workers(proc)), "reload")
        self.reloads += 1

    async def _until(self, done: Callable[[str], bool], what: str) -> None:
        """Until `show proc` says `done`; then the current worker is the one it lists."""
        deadline = asyncio.get_running_loop().time() + RELOAD_TIMEOUT
        while asyncio.get_running_loop().time() < deadline:
            if self._process is not None and self._process.returncode is not None:
                raise RuntimeError(f"haproxy exited with status {self._process.returncode} during {what}")
            with contextlib.suppress(OSError):
                show_proc = await self.master("show proc")
                if done(show_proc):
                    self._worker = _current_workers(show_proc)[0]
                    return
            await asyncio.sleep(0.02)
        raise RuntimeError(f"haproxy did not {what} within {RELOAD_TIMEOUT:.0f}s")

    async def _master_reloads(self) -> int:
        return _master_reloads(await self.master("show proc"))

    async def master(self, command: str) -> str:
        """A command on the master CLI (`@!PID command` is one for that worker)."""
        return await _ask(self.master_socket, command)

    async def runtime(self, *commands: str) -> str:
        """Commands on the current worker's runtime API, in order, through the master."""
        assert self._worker is not None, "haproxy is not running"
        return await self.master("; ".join(f"@!{self._worker} {command}" for command in commands))

    async def stop(self) -> None:
        if self._process is not None:
            await stop_child(self._process)
        self._process, self._worker = None, None


async def _ask(path: Path, command: str) -> str:
    """One command; `quit` after it, as the master CLI keeps a connection open otherwise."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(command.encode() + b"; quit\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.read(), 5)).decode(errors="replace")
    finally:
        writer.close()


def _master_reloads(show_proc: str) -> int:
    """The master's reload count, from `show proc` (`<pid> master <reloads> [failed: N] ...`)."""
    match = re.search(r"^\d+\s+master\s+(\d+)", show_proc, re.MULTILINE)
    return int(match.group(1)) if match else -1


def _current_workers(show_proc: str) -> list[int]:
    """The current workers' pids (the lines between `# workers` and `# old workers`)."""
    current = show_proc.split("# workers", 1)[-1].split("# old workers", 1)[0] if "# workers" in show_proc else ""
    return [int(pid) for pid in re.findall(r"^(\d+)\s+worker\s", current, re.MULTILINE)]

