"""One HTTP request with curl from a network namespace, read back as status, headers and JSON body (tests)."""

from __future__ import annotations

import json
import subprocess
from typing import Any


def curl_json(netns: str, url: str, *args: str, timeout: float = 3) -> tuple[int, dict[str, str], Any]:
    """Status (0: no answer), response headers (lower-case names; the last of each), and the body as JSON (None
    when it is not)."""
    out = subprocess.run(["ip", "netns", "exec", netns, "curl", "-s", "--max-time", str(timeout), "-D", "-", *args,
                          url], capture_output=True, text=True, timeout=timeout + 7, check=False).stdout
    head, _, body = out.partition("\n\n")  # text mode: curl's CRLFs read as newlines
    lines = head.splitlines()
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body) if body.startswith("{") else None
