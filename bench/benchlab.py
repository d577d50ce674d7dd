"""A lab of the bench's own: `portico dev up` in a temporary state dir, `portico dev down` after, and the
few commands benchmarks run against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PORTICO = str(Path(sys.executable).parent / "portico")


class Lab:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.env = {**os.environ, "PORTICO_DEV_DIR": str(state_dir)}

    def run(self, *argv: str, stdin: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env, input=stdin, timeout=900,
                              check=False)
        if check and proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)}: {proc.stderr.strip()}")
        return proc.stdout

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return self.run("kubectl", *args, stdin=stdin)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def exec_in(self, host: str, *argv: str) -> str:
        return self.run(PORTICO, "dev", "exec", host, "--", *argv)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


@contextmanager
def lab_of_its_own(nodes: int = 2, kube_proxy: str | None = None) -> Iterator[Lab]:
    with tempfile.TemporaryDirectory(prefix="portico-bench-") as state_dir:
        lab = Lab(Path(state_dir))
        print(f"lab: up ({nodes} nodes)", file=sys.stderr)
        try:
            extra = ["--kube-proxy", kube_proxy] if kube_proxy else []
            lab.env["KUBECONFIG"] = lab.run(PORTICO, "dev", "up", "--nodes", str(nodes), *extra).strip()
            yield lab
        finally:
            lab.run(PORTICO, "dev", "down", check=False)
