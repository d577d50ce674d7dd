"""Bad input to the CLI gets a clear, actionable message (no root or lab needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PORTICO = str(Path(sys.executable).parent / "portico")


def test_dev_up_names_missing_packages(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ip", "sysctl", "bird", "gobgpd", "docker-registry", "skopeo", "umoci", "runc"):  # not nft, nsenter
        (bin_dir / tool).symlink_to("/bin/true")
    env = {**os.environ, "PATH": str(bin_dir), "PORTICO_DEV_DIR": str(tmp_path / "lab")}
    proc = subprocess.run([PORTICO, "dev", "up"], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 2
    assert "'nft' (Debian package nftables)" in proc.stderr
    assert "'nsenter' (Debian package util-linux)" in proc.stderr
    assert "apt-get install -y nftables util-linux" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "lab").exists()  # nothing was started


def test_dev_exec_without_a_lab(tmp_path: Path) -> None:
    env = {**os.environ, "PORTICO_DEV_DIR": str(tmp_path)}
    proc = subprocess.run([PORTICO, "dev", "exec", "client", "--", "true"], capture_output=True, text=True,
                          env=env, check=False)
    assert proc.returncode == 2 and "no lab in" in proc.stderr and "portico dev up" in proc.stderr


def test_version_is_the_packages() -> None:
    proc = subprocess.run([PORTICO, "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == f"portico {metadata.version('portico')}"
