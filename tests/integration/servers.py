"""Real servers for the integration tests, on 127.0.0.1 only: Prometheus (Debian's binary) and the kmock
Kubernetes API emulator, the latter with two fidelity fixes and fault injection.

kmock stores a PATCH before it looks at user reactions, and ignores ``dryRun``. A real API server does neither:
a request answered with an error changes nothing, and a dry run is validated but never stored. `ApiServer`
checks its injected faults first and answers dry runs with the would-be object, so tests see what a real
cluster would do.

`ApiServer.server_version` is the Kubernetes release ``GET /version`` reports (kmock's own answer is fixed).
Below 1.33 the server has no ``pods/resize`` subresource: a resize is answered 404, as an older API server
answers a path it does not serve.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp.web
import kmock

from rlscale.serve.local import stop_process, wait_ready

DEPLOYMENTS = "apps/v1/deployments"
PODS = "v1/pods"
REASONS = {
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalError",
}


def is_sidecar_change(request) -> bool:
    """A PATCH of a Deployment or its scale (what the sidecar sends), not the twin's status writes."""
    return request.method == kmock.method.PATCH and request.subresource in (None, "scale")


@dataclass
class Fault:
    status: int | None  # None: answer normally, after ``delay_s``
    remaining: int | None  # None: until cleared
    match: Callable
    hits: int = 0
    delay_s: float = 0.0
    headers: dict[str, str] | None = None  # sent with the error (a 429's Retry-After)


class ApiServer(kmock.KubernetesEmulator):
    """The kmock emulator with injected faults checked before anything is stored, and server-side dry run."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fault_lock = threading.Lock()
        self.faults: list[Fault] = []
        self.seen: list[dict] = []  # every request: method, path, params, subresource, answer
        self.server_version: tuple[int, int] = (1, 35)  # what GET /version says; < 1.33: no pods/resize

    def inject(
        self,
        status: int | None,
        count: int | None = 1,
        match: Callable = is_sidecar_change,
        delay_s: float = 0.0,
        headers: dict[str, str] | None = None,
    ) -> Fault:
        """Answer the next ``count`` matching requests (None: all until `clear`) with ``status`` (and ``headers``,
        e.g. ``{"Retry-After": "3"}``), storing nothing (200: the object as it would be, as an admission webhook
        or a GitOps controller that reverts the change leaves it); or, with ``status=None``, answer them normally
        but only after ``delay_s`` (a slow API server)."""
        fault = Fault(status, count, match, delay_s=delay_s, headers=headers)
        with self.fault_lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self.fault_lock:
            self.faults.clear()

    def _take(self, request) -> Fault | None:
        with self.fault_lock:
            for fault in self.faults:
                if (fault.remaining is None or fault.remaining > 0) and fault.match(request):
                    fault.hits += 1
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    async def _handle(self, request):
        # kmock keeps every request and matches each new one against that whole history (`request in view`),
        # so a request costs O(requests so far): ~40 ms after 1,000 (the twin sends 20 per second). Keep the
        # last few only (nothing here slices kmock's views by count; `seen` keeps our own record).
        if len(self._requests) > 40:
            del self._requests[:-10]
        entry = {
            "method": str(request.method.value if hasattr(request.method, "value") else request.method).upper(),
            "path": request.url.path,
            "params": dict(request.params),
            "subresource": request.subresource,
            "answer": "ok",
            "t": time.monotonic(),
        }
        self.seen.append(entry)
        if entry["method"] == "GET" and entry["path"].rstrip("/") == "/version":
            major, minor = self.server_version
            version = {"major": str(major), "minor": str(minor), "gitVersion": f"v{major}.{minor}.0"}
            build = {"gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z"}
            build.update(goVersion="go1.24", compiler="gc", platform="linux/amd64")
            return aiohttp.web.json_response({**version, **build})
        if request.subresource == "resize" and self.server_version < (1, 33):
            entry["answer"] = 404
            raise kmock.KubernetesError(
                status=404, reason="NotFound", message="the server could not find the requested resource"
            )
        fault = self._take(request)
        if fault is not None and fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault is not None and fault.status == 200:  # accepted, then reverted (a webhook, a GitOps controller)
            entry["answer"] = "ignored"
            return await self._would_be(request)
        if fault is not None and fault.status is not None:
            entry["answer"] = fault.status
            if fault.headers:  # kmock's errors carry no headers: the same Status object, by hand
                reason = REASONS.get(fault.status, "Error")
                body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason}
                body.update(message=f"injected {fault.status}", code=fault.status)
                return aiohttp.web.json_response(body, status=fault.status, headers=fault.headers)
            raise kmock.KubernetesError(
                status=fault.status, reason=REASONS.get(fault.status, "Error"), message=f"injected {fault.status}"
            )
        if request.params.get("dryRun") and request.resource is not None and request.action == kmock.action.UPDATE:
            entry["answer"] = "dry-run"
            return await self._would_be(request)
        return await super()._handle(request)

    async def _would_be(self, request):
        """The answer to a change that is not stored: the object as it would be."""
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        obj = kmock.Object(copy.deepcopy(self.objects[key].raw))
        obj.patch(request.data)  # dict: merge patch; list: JSON patch
        return aiohttp.web.json_response(obj.raw)


class BackgroundApiServer:
    """`ApiServer` behind a kmock HTTP server on a background thread's event loop (sync tests can use it)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kmock", daemon=True)
        self.thread.start()

        async def start():
            self.emulator = ApiServer()
            await self.emulator.__aenter__()  # renders errors as Kubernetes Status objects
            self.emulator.resources[DEPLOYMENTS] = {}  # listing works before anything is created
            self.emulator.resources[PODS] = {}
            self.server = kmock.Server(self.emulator)  # binds 127.0.0.1 by default
            await self.server.__aenter__()

        self._call(start())
        self.url = str(self.server.url).rstrip("/")

    def _call(self, coro, timeout_s: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def core_api(self):
        """A CoreV1Api of the official client, pointed at the emulator (pods)."""
        import kubernetes

        return kubernetes.client.CoreV1Api(self.apps_api().api_client)

    def apps_api(self):
        """An AppsV1Api of the official client, pointed at the emulator."""
        import kubernetes

        cfg = kubernetes.client.Configuration()
        cfg.host = self.url
        cfg.retries = 0  # as `rlscale sidecar` sets it: urllib3 would otherwise retry a GET's 429 or 5xx itself
        return kubernetes.client.AppsV1Api(kubernetes.client.ApiClient(cfg))

    def write_kubeconfig(self, path: Path, namespace: str) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
                    "users": [{"name": "test", "user": {"token": "test"}}],
                    "contexts": [
                        {"name": "kmock", "context": {"cluster": "kmock", "user": "test", "namespace": namespace}}
                    ],
                    "current-context": "kmock",
                }
            )
        )
        return path

    def stop(self) -> None:
        try:
            self.server.server.runner._shutdown_timeout = 1.0  # kmock waits up to 60 s for open connections
        except AttributeError:
            pass
        self._call(self.server.__aexit__(None, None, None))
        self._call(self.emulator.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class PrometheusServer:
    """Debian's Prometheus on 127.0.0.1 with a 1 s scrape interval and file-based targets; can stop and restart
    on the same port and data (to test an outage)."""

    def __init__(self, binary: str, workdir: Path, port: int) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.targets_file = workdir / "targets.json"
        self.targets_file.write_text("[]")
        self.config = workdir / "prometheus.yml"
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: pipeline\n    file_sd_configs:\n"
            f"      - files: ['{self.targets_file}']\n        refresh_interval: 1s\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_ready(f"{self.url}/-/ready", self.proc, timeout_s, poll_s=0.2):  # never a fixed sleep
            self.proc.kill()
            raise RuntimeError(f"Prometheus did not become ready within {timeout_s:g} s")

    def set_targets(self, targets: list[str]) -> None:
        self.targets_file.write_text(json.dumps([{"targets": targets}]))

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc)
        self.proc = None


def is_sidecar_change_entry(entry: dict) -> bool:
    """`is_sidecar_change` for an entry of `ApiServer.seen`."""
    return entry["method"] == "PATCH" and entry["subresource"] in (None, "scale")
