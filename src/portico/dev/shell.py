"""Running host commands for the lab, with errors a user can act on."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path


class LabError(Exception):
    """A failure the user can act on; the CLI prints it without a traceback."""


# Commands the lab needs, and the Debian package that provides each (`make deps` installs them).
REQUIRED_COMMANDS = {
    "ip": "iproute2",
    "nft": "nftables",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "sysctl": "procps",
    "bird": "bird2",  # the lab's BGP router
    "gobgpd": "gobgpd",  # the BGP speaker the agent drives
    "docker-registry": "docker-registry", "skopeo": "skopeo",  # the lab's registry, pushing to and pulling from it
    "umoci": "umoci", "runc": "runc",  # the lab kubelet's container runtime
}


def missing_commands(commands: dict[str, str] = REQUIRED_COMMANDS) -> dict[str, str]:
    return {cmd: pkg for cmd, pkg in commands.items() if shutil.which(cmd) is None}


def require_commands(commands: dict[str, str] = REQUIRED_COMMANDS) -> None:
    missing = missing_commands(commands)
    if missing:
        packages = sorted(set(missing.values()))
        listing = ", ".join(f"'{cmd}' (Debian package {pkg})" for cmd, pkg in sorted(missing.items()))
        raise LabError(
            f"missing on this machine: {listing}.\n"
            f"Install with: apt-get install -y {' '.join(packages)}   (or run `make deps`)"
        )


def run(argv: list[str], *, input: str | None = None, check: bool = True, timeout: float = 60) -> str:
    """Run a command, return its stdout; on failure raise LabError naming the command and its stderr."""
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as e:
        raise LabError(f"command not found: {argv[0]}") from e
    if check and proc.returncode != 0:
        raise LabError(f"`{shlex.join(argv)}` failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def build_output(script: Path, what: str) -> Path:
    """Run one of hack/*/build.sh (each builds pinned upstream Go code once, cached on disk) and return the path it
    prints; its progress goes to the terminal."""
    if not script.exists():
        raise LabError(f"{script} is missing: run from a Portico checkout")
    proc = subprocess.run([str(script)], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(f"building {what} failed (exit {proc.returncode}); see the output above")
    return Path(proc.stdout.strip().splitlines()[-1])
