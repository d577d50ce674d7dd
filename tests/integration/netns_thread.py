"""Run a coroutine inside a network namespace: a thread of its own enters it (setns applies per thread)."""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def run_in_netns(name: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    result: list[T] = []
    error: list[BaseException] = []

    def thread() -> None:
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {name}")
        finally:
            os.close(fd)
        try:
            result.append(asyncio.run(main()))
        except BaseException as e:  # handed to the caller
            error.append(e)

    t = threading.Thread(target=thread)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]
