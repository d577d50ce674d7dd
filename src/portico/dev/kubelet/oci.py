"""A container's OCI runtime spec (config.json) from its pod, its image's config and the kubelet's mounts (pure).

The defaults are containerd's (the runtime behind most kubelets): its capability set, its /dev, /proc and /sys
mounts, masked and read-only paths. The kubelet's parts: the command (Kubernetes' `command` replaces the image's
Entrypoint, `args` its Cmd), environment, user, capabilities, read-only root, no-new-privileges, hostname and the
pod's network namespace. cgroups are left alone: the lab does not enforce resources (docs/lab.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightkube.models.core_v1 import Container, PodSecurityContext, SecurityContext

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# containerd's default set (pkg/oci defaultUnixCaps): what a container gets unless its securityContext says otherwise.
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
BASE_MOUNTS: tuple[dict[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
)


class ContainerConfigError(ValueError):
    """The container cannot be created as specified (the kubelet's CreateContainerConfigError)."""


@dataclass(frozen=True)
class Mount:
    """A bind mount the kubelet prepared on the host (a volume, /etc/hosts, ...) and where it goes."""
    source: str
    destination: str
    read_only: bool = False


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()


def command_line(container: Container, entrypoint: Sequence[str], cmd: Sequence[str]) -> list[str]:
    """Kubernetes' rule: `command` replaces the image's Entrypoint (and drops its Cmd), `args` replaces Cmd."""
    if container.command:
        return [*container.command, *(container.args or [])]
    return [*entrypoint, *(container.args if container.args else cmd)]


def merged_env(image_env: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The image's environment with the container's on top (same name: the container's wins)."""
    merged = {"PATH": DEFAULT_PATH}  # containerd's, for an image that sets none
    merged.update(item.partition("=")[::2] for item in image_env)
    merged.update(env)
    return [f"{name}={value}" for name, value in merged.items()]


def _id(value: str, table: str, what: str) -> int:
    """A user or group id from a number or a name in the image's /etc/passwd or /etc/group text."""
    if value.isdigit():
        return int(value)
    for line in table.splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[0] == value and fields[2].isdigit():
            return int(fields[2])
    raise ContainerConfigError(f"unable to find {what} {value!r} in the image")


def user(image_user: str, container: SecurityContext | None, pod: PodSecurityContext | None,
         passwd: str = "", group: str = "") -> User:
    """Who the process runs as: runAsUser/runAsGroup (the container's over the pod's) over the image's USER."""
    name, _, group_name = (image_user or "0").partition(":")
    uid = _id(name, passwd, "user")
    gid = _id(group_name, group, "group") if group_name else _primary_gid(name, passwd)
    run_as_user = next((c.runAsUser for c in (container, pod) if c is not None and c.runAsUser is not None), None)
    run_as_group = next((c.runAsGroup for c in (container, pod) if c is not None and c.runAsGroup is not None), None)
    if run_as_user is not None:
        uid = run_as_user
    if run_as_group is not None:
        gid = run_as_group
    non_root = next((c.runAsNonRoot for c in (container, pod) if c is not None and c.runAsNonRoot is not None), None)
    if non_root and uid == 0:
        raise ContainerConfigError("container has runAsNonRoot and image will run as root")
    extra = [*(pod.supplementalGroups or [] if pod else []), *([pod.fsGroup] if pod and pod.fsGroup else [])]
    return User(uid=uid, gid=gid, additional_gids=tuple(dict.fromkeys(extra)))


def _primary_gid(name: str, passwd: str) -> int:
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) > 3 and (fields[0] == name or fields[2] == name) and fields[3].isdigit():
            return int(fields[3])
    return 0


def capabilities(context: SecurityContext | None) -> list[str]:
    """The default set, minus `drop` (ALL drops every one), plus `add` (names with or without CAP_)."""
    caps = context.capabilities if context is not None else None
    def named(names: Sequence[str] | None) -> list[str]:
        return [n.upper() if n.upper().startswith("CAP_") else f"CAP_{n.upper()}" for n in names or []]
    drop, add = named(caps.drop if caps else None), named(caps.add if caps else None)
    kept = [] if "CAP_ALL" in drop else [c for c in DEFAULT_CAPABILITIES if c not in drop]
    return list(dict.fromkeys([*kept, *add]))


def runtime_spec(*, container: Container, pod_security: PodSecurityContext | None, image_config: Mapping[str, Any],
                 rootfs: str, hostname: str, netns_path: str, env: Mapping[str, str], mounts: Sequence[Mount],
                 passwd: str = "", group: str = "") -> dict[str, Any]:
    """config.json for one container of a pod."""
    cfg = image_config.get("config") or {}
    context = container.securityContext
    who = user(cfg.get("User", ""), context, pod_security, passwd, group)
    args = command_line(container, cfg.get("Entrypoint") or [], cfg.get("Cmd") or [])
    if not args:
        raise ContainerConfigError("no command specified: the image has no Entrypoint or Cmd and the container "
                                   "no command")
    caps = capabilities(context)
    privilege_escalation = context.allowPrivilegeEscalation if context is not None else None
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": who.uid, "gid": who.gid, **({"additionalGids": list(who.additional_gids)}
                                                          if who.additional_gids else {})},
            "args": args,
            "env": merged_env(cfg.get("Env") or [], env),
            "cwd": container.workingDir or cfg.get("WorkingDir") or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": privilege_escalation is False,
        },
        "root": {"path": rootfs, "readonly": bool(context and context.readOnlyRootFilesystem)},
        "hostname": hostname,
        "mounts": [*BASE_MOUNTS, *({"destination": m.destination, "type": "bind", "source": m.source,
                                    "options": ["rbind", "rprivate", "ro" if m.read_only else "rw"]}
                                   for m in mounts)],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                           {"type": "network", "path": netns_path}],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
