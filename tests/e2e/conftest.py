"""The full lab for the e2e tier: `portico dev up` in a temporary state dir, `portico dev down` after.

Needs root. Refuses (fails) if another lab is running on this machine: e2e tests own the lab.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from portico.dev import netns

PORTICO = str(Path(sys.executable).parent / "portico")


@dataclass(frozen=True)
class Lab:
    state_dir: Path
    kubeconfig: Path
    kube_proxy: str | None = None  # the mode kube-proxy runs in on the nodes, if it does

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PORTICO_DEV_DIR": str(self.state_dir), "KUBECONFIG": str(self.kubeconfig)}

    def portico(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PORTICO, *args], capture_output=True, text=True, env=self.env, check=check,
                              timeout=300)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(["kubectl", *args], capture_output=True, text=True, env=self.env, input=stdin,
                              timeout=60, check=False)
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def exec_in(self, host: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.portico("dev", "exec", host, "--", *argv, check=False)


THREE_NODE_MODULES = ("test_node_failure.py",)  # run with `--lab-nodes=3`, in a lab of their own (Makefile)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Tests of coexistence with kube-proxy need a lab that runs it (`--kube-proxy=MODE`); tests of node failure
    need pods on three nodes (`--lab-nodes=3`)."""
    if collection_path.name == "test_kube_proxy.py" and not config.getoption("--kube-proxy"):
        return True
    if collection_path.name in THREE_NODE_MODULES and config.getoption("--lab-nodes") < 3:
        return True
    return None


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def probe_during(vip: str, source: str, failure: Callable[[], None], *options: str,
                 duration: float = 4.0) -> dict[str, Any]:
    """Run `portico.dev.probe` in the client for `duration` seconds and cause `failure` one second in."""
    proc = subprocess.Popen(["ip", "netns", "exec", "portico-client", sys.executable, "-m", "portico.dev.probe",
                             vip, "--source", source, "--duration", str(duration), *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    failure()
    out, err = proc.communicate(timeout=duration + 10)
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out)
    print(f"{vip}: {result}")
    return result


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("the e2e tier needs root (network namespaces)")
    if netns.lab_is_wired():
        pytest.fail("a Portico lab is already running on this machine; `portico dev down` it first")
    state_dir = tmp_path_factory.mktemp("lab")
    env = {**os.environ, "PORTICO_DEV_DIR": str(state_dir)}
    mode = request.config.getoption("--kube-proxy")
    nodes = str(request.config.getoption("--lab-nodes"))
    up = subprocess.run([PORTICO, "dev", "up", "--nodes", nodes, *(["--kube-proxy", mode] if mode else [])],
                        capture_output=True, text=True, env=env, timeout=900, check=False)
    assert up.returncode == 0, up.stderr
    lab = Lab(state_dir=state_dir, kubeconfig=Path(up.stdout.strip()), kube_proxy=mode)
    try:
        yield lab
    finally:
        down = lab.portico("dev", "down", check=False)
        assert down.returncode == 0, down.stderr
        assert netns.list_lab_netns() == [], "lab namespaces survived `portico dev down`"
        assert not state_dir.exists() or not any(state_dir.iterdir())
