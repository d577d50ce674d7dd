"""One backend's health as rise/fall counting (pure), as ADCs and HAProxy do it.

A backend starts up (Kubernetes calls it ready) but on probation: its first failed check takes it down at
once, so a pod that is sick from the start leaves rotation after one interval, not `fall` of them. From then
on `fall` failures in a row take it down and `rise` successes in a row bring it back; a result that does not
complete a run changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Monitor:
    rise: int
    fall: int
    up: bool = True
    proven: bool = False  # has passed a check since it started: no longer on probation
    run: int = 0  # results in a row that disagree with `up`
    last_failure: str = ""
    active: bool = True  # False once its target is gone: results still in flight are ignored

    def observe(self, ok: bool, why: str = "") -> bool:
        """Count one check's result; True when it flips the state."""
        if not ok:
            self.last_failure = why
        if ok == self.up:
            self.run = 0
            self.proven |= ok
            return False
        self.run += 1
        if self.run >= (self.rise if ok else self.fall) or (not ok and not self.proven):
            self.up, self.run = ok, 0
            self.proven |= ok
            return True
        return False
