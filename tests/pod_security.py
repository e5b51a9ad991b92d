"""The "restricted" Pod Security Standard (Kubernetes' pod-security.kubernetes.io/enforce=restricted),
checked on a pod spec: no checker for it exists in the package registries.

Rules of the standard (https://kubernetes.io/docs/concepts/security/pod-security-standards/), baseline
included: no host namespaces, ports or paths, no privileged containers or added capabilities except
NET_BIND_SERVICE, only the allowed volume types, non-root, no privilege escalation, drop ALL, a
RuntimeDefault or Localhost seccomp profile, no unsafe sysctls, default /proc mount.
"""

from __future__ import annotations

from typing import Any

ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """Every rule of the restricted standard that ``pod_spec`` breaks (empty when it passes)."""
    problems: list[str] = []
    pod_context = pod_spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(key):
            problems.append(f"spec.{key} is true")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']}: type {sorted(kinds - ALLOWED_VOLUMES)} is not allowed")
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl['name']} is not allowed")
    pod_seccomp = (pod_context.get("seccompProfile") or {}).get("type")
    containers = [
        *(pod_spec.get("initContainers") or []),
        *(pod_spec.get("containers") or []),
        *(pod_spec.get("ephemeralContainers") or []),
    ]
    if not containers:
        problems.append("no containers")
    for container in containers:
        name, context = container["name"], container.get("securityContext") or {}

        def effective(key: str, context: dict[str, Any] = context) -> Any:
            return context.get(key, pod_context.get(key))

        if context.get("privileged"):
            problems.append(f"container {name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {name}: allowPrivilegeEscalation must be false")
        if effective("runAsNonRoot") is not True:
            problems.append(f"container {name}: runAsNonRoot must be true")
        if effective("runAsUser") == 0:
            problems.append(f"container {name}: runAsUser 0")
        seccomp = (context.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"container {name}: seccompProfile must be RuntimeDefault or Localhost")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"container {name}: capabilities must drop ALL")
        added = set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            problems.append(f"container {name}: adds capabilities {sorted(added)}")
        if context.get("procMount", "Default") != "Default":
            problems.append(f"container {name}: procMount must be Default")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"container {name}: hostPort {port['hostPort']}")
    return problems
