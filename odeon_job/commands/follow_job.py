"""``odeon job status|wait``: follow a Kubeflow PyTorchJob through the Kubernetes API.

The chart is the one source of manifests; this module only reads a job's ``status.conditions``
(Created, Running, Restarting, Succeeded, Failed, as the training operator writes them), prints
each change, and turns the outcome into an exit status a CI pipeline can act on.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from odeon_job.errors import OdeonError
from odeon_job.redaction import shorten

log = logging.getLogger("odeon")

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
EXIT_SUCCEEDED, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 124
FINAL = ("Succeeded", "Failed")
IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class JobError(OdeonError):
    """The API server cannot be reached, refuses us, or has no such job."""


@dataclass(frozen=True)
class Condition:
    type: str
    reason: str
    message: str
    since: str

    def line(self) -> str:
        text = f"{self.since or '-'} {self.type}"
        return text + (f": {self.reason}" if self.reason else "") + (f" ({self.message})" if self.message else "")


def conditions(job: dict[str, Any]) -> list[Condition]:
    """The job's true conditions, oldest first."""
    found = [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    found.sort(key=lambda c: c.get("lastTransitionTime") or "")
    return [
        Condition(c["type"], c.get("reason") or "", c.get("message") or "", c.get("lastTransitionTime") or "")
        for c in found
    ]


def state(job: dict[str, Any]) -> Condition | None:
    """Where the job stands: a final condition when there is one, else the latest true condition."""
    current = conditions(job)
    final = [c for c in current if c.type in FINAL]
    return (final or current)[-1] if final or current else None


def replicas(job: dict[str, Any]) -> str:
    """``Master: 1 active; Worker: 2 active, 1 failed`` from the job's replica statuses."""
    parts = []
    for name, counts in sorted(((job.get("status") or {}).get("replicaStatuses") or {}).items()):
        shown = [f"{counts[key]} {key}" for key in ("active", "succeeded", "failed") if counts.get(key)]
        parts.append(f"{name}: {', '.join(shown) or 'none yet'}")
    return "; ".join(parts)


def default_namespace() -> str:
    """In a pod, its own namespace; else the kubeconfig context's, else ``default``."""
    if os.path.exists(IN_CLUSTER_NAMESPACE):
        with open(IN_CLUSTER_NAMESPACE, encoding="utf-8") as stream:
            return stream.read().strip()
    from kubernetes import config

    try:
        _, context = config.list_kube_config_contexts()
        return context.get("context", {}).get("namespace") or "default"
    except Exception:  # no kubeconfig: the API client will say so
        return "default"


def job_reader(context: str | None = None) -> Callable[[str, str], dict[str, Any]]:
    """A function reading one PyTorchJob (in-cluster credentials in a pod, else the kubeconfig)."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
            config.load_incluster_config()
        else:
            config.load_kube_config(context=context)
    except (ConfigException, OSError) as error:
        raise JobError(f"no Kubernetes credentials: {error} (set KUBECONFIG or run in a pod)") from error
    api = client.CustomObjectsApi()
    if not api.api_client.configuration.verify_ssl:  # the kubeconfig's choice: say it once, not at every read
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        log.warning("odeon: the API server's certificate is not verified (insecure-skip-tls-verify)")

    def read(namespace: str, name: str) -> dict[str, Any]:
        try:
            return cast(dict[str, Any], api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
        except ApiException as error:
            if error.status == 404:
                raise JobError(
                    f"pytorchjob {namespace}/{name}: not found (or the PyTorchJob CRD is not installed)"
                ) from None
            if error.status in (401, 403):
                raise JobError(
                    f"pytorchjob {namespace}/{name}: the API server refused access ({error.status} {error.reason})"
                ) from None
            raise JobError(f"pytorchjob {namespace}/{name}: {error.status} {error.reason}") from None
        except Exception as error:  # urllib3's connection errors
            host = api.api_client.configuration.host
            raise JobError(
                f"cannot reach the Kubernetes API server at {host}: {shorten(str(error).splitlines()[0], 200)}"
            ) from None

    return read


def status(read: Callable[[str, str], dict[str, Any]], namespace: str, name: str) -> tuple[int | None, list[str]]:
    """The job's lines (every true condition, then its pods), and its exit status when final."""
    job = read(namespace, name)
    lines = [f"pytorchjob {namespace}/{name}"] + [f"  {c.line()}" for c in conditions(job)]
    if replicas(job):
        lines.append(f"  pods: {replicas(job)}")
    current = state(job)
    if current is None:
        lines.append("  no condition yet (is the training operator running?)")
    return outcome(current), lines


def outcome(condition: Condition | None) -> int | None:
    if condition is None or condition.type not in FINAL:
        return None
    return EXIT_SUCCEEDED if condition.type == "Succeeded" else EXIT_FAILED


def wait(
    read: Callable[[str, str], dict[str, Any]],
    namespace: str,
    name: str,
    timeout: float | None,
    interval: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print every new condition until the job succeeds (0) or fails (1), or ``timeout`` passes (124)."""
    deadline = None if timeout is None else clock() + timeout
    seen: set[Condition] = set()
    shown_pods = ""
    while True:
        job = read(namespace, name)
        new = [c for c in conditions(job) if c not in seen]
        _print_each(f"pytorchjob {namespace}/{name}: {c.line()}" for c in new)
        seen.update(new)
        pods = replicas(job)
        if pods and pods != shown_pods:
            log.info("pytorchjob %s/%s: pods: %s", namespace, name, pods)
            shown_pods = pods
        current = state(job)
        result = outcome(current)
        if result is not None:
            assert current is not None
            if result == EXIT_FAILED:
                log.error(
                    "odeon: pytorchjob %s/%s failed: %s",
                    namespace,
                    name,
                    current.message or current.reason or "no reason given",
                )
            return result
        if deadline is not None and clock() >= deadline:
            since = current.line() if current else "no condition yet"
            log.error(
                "odeon: pytorchjob %s/%s: not finished after %s (now %s)",
                namespace,
                name,
                dt.timedelta(seconds=round(timeout or 0)),
                since,
            )
            return EXIT_TIMEOUT
        sleep(interval if deadline is None else max(0.0, min(interval, deadline - clock())))


def _print_each(lines: Iterable[str]) -> None:
    for line in lines:
        log.info("%s", line)


def parse_duration(text: str) -> float:
    """``3600``, ``90s``, ``45m``, ``6h`` or ``2d`` in seconds (argparse type)."""
    import argparse

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (3600, 90s, 45m, 6h, 2d)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be positive")
    return seconds
