"""A local HTTP server that speaks the Kubernetes API calls the API executor makes, on a few
in-memory objects, recording every request. Not a mock of the client: lightkube talks HTTP to it.

    async with KubeApiStub() as api:
        api.add_deployment("payments", "api", replicas=2)
        kubeconfig = api.write_kubeconfig(tmp_path)      # context "stub"
        ...
        api.requests  # [Request(method, path, query, content_type, body), ...]
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.local_http import LocalHttpServer

TOKEN = "stub-token"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any
    authorization: str


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def reply(body: Any, status: int = 200) -> web.Response:
    # exactly "application/json", as the API server sends it (lightkube reads errors only then)
    return web.Response(body=json.dumps(body).encode(), status=status, headers={"Content-Type": "application/json"})


def status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    return reply(body, status=code)


class KubeApiStub(LocalHttpServer):
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (resource, namespace, name)
        self.requests: list[Request] = []
        self.forbidden_namespaces: set[str] = set()
        self.hang = False
        self._version = 100

    # -- objects ---------------------------------------------------------------------------
    def _meta(self, namespace: str, name: str, **extra: Any) -> dict[str, Any]:
        self._version += 1
        return {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                "resourceVersion": str(self._version), **extra}

    def add_deployment(self, namespace: str, name: str, *, replicas: int = 1, revision: int = 1,
                       image: str = "app:1", kind: str = "deployments") -> dict[str, Any]:
        labels = {"app": name}
        obj = {
            "apiVersion": "apps/v1", "kind": {"deployments": "Deployment", "statefulsets": "StatefulSet",
                                               "daemonsets": "DaemonSet", "replicasets": "ReplicaSet"}[kind],
            "metadata": self._meta(namespace, name, annotations={"deployment.kubernetes.io/revision": str(revision)}),
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}},
        }
        self.objects[(kind, namespace, name)] = obj
        return obj

    def add_replicaset(self, owner: dict[str, Any], *, revision: int, image: str) -> None:
        ns, name = owner["metadata"]["namespace"], owner["metadata"]["name"]
        rs_name = f"{name}-{revision}abc"
        labels = {**owner["spec"]["selector"]["matchLabels"], "pod-template-hash": f"{revision}abc"}
        self.objects[("replicasets", ns, rs_name)] = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": self._meta(ns, rs_name, labels=labels,
                                   annotations={"deployment.kubernetes.io/revision": str(revision)},
                                   ownerReferences=[{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                                     "uid": owner["metadata"]["uid"], "controller": True}]),
            "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}},
        }

    def add_pod(self, namespace: str, name: str) -> None:
        self.objects[("pods", namespace, name)] = {
            "apiVersion": "v1", "kind": "Pod", "metadata": self._meta(namespace, name),
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        }

    def write_kubeconfig(self, directory: Path, *, context: str = "stub") -> Path:
        path = Path(directory) / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "stub", "cluster": {"server": self.url}}],
            "users": [{"name": "stub", "user": {"token": TOKEN}}],
            "contexts": [{"name": context, "context": {"cluster": "stub", "user": "stub"}}],
        }))
        return path

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method in ("PATCH", "PUT", "POST", "DELETE")]

    # -- HTTP ------------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.requests.append(Request(request.method, request.path, dict(request.query),
                                     request.headers.get("Content-Type", ""), body,
                                     request.headers.get("Authorization", "")))
        if self.hang:
            await asyncio.sleep(3600)
        parts = request.path.strip("/").split("/")
        # /api/v1/namespaces/NS/RES[/NAME[/SUB]] or /apis/GROUP/VERSION/namespaces/NS/RES[/NAME[/SUB]]
        rest = parts[2:] if parts[0] == "api" else parts[3:]
        if len(rest) < 3 or rest[0] != "namespaces":
            return status(404, "NotFound", f"no route {request.path}")
        namespace, resource, name, sub = rest[1], rest[2], (rest[3:4] or [None])[0], (rest[4:5] or [None])[0]
        if namespace in self.forbidden_namespaces:
            return status(403, "Forbidden", f'{resource} is forbidden: User "system:serviceaccount:x" cannot '
                                            f'{request.method.lower()} resource "{resource}" in "{namespace}"')
        if name is None:
            if request.method != "GET":
                return status(405, "MethodNotAllowed", "collections are read-only here")
            wanted = dict(p.split("=", 1) for p in request.query.get("labelSelector", "").split(",") if p)
            items = [o for (r, ns, _), o in self.objects.items() if r == resource and ns == namespace
                     and wanted.items() <= o["metadata"].get("labels", {}).items()]
            kind = items[0]["kind"] if items else "ReplicaSet"
            return reply({"apiVersion": "apps/v1", "kind": f"{kind}List",
                                      "metadata": {"resourceVersion": str(self._version)}, "items": items})
        obj = self.objects.get((resource, namespace, name))
        if obj is None:
            return status(404, "NotFound", f'{resource} "{name}" not found')
        if sub == "scale":
            return self._scale(request, obj, body)
        if request.method == "GET":
            return reply(obj)
        if request.method == "DELETE":
            del self.objects[(resource, namespace, name)]
            return reply(obj)
        if request.method == "PATCH":
            if "json-patch" in request.headers.get("Content-Type", ""):
                for op in body:
                    assert op["op"] == "replace" and op["path"] == "/spec/template", op
                    obj["spec"]["template"] = op["value"]
            else:
                _merge(obj, body)
            self._version += 1
            obj["metadata"]["resourceVersion"] = str(self._version)
            return reply(obj)
        return status(405, "MethodNotAllowed", request.method)

    def _scale(self, request: web.Request, obj: dict[str, Any], body: Any) -> web.Response:
        if request.method == "PATCH":
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != obj["metadata"]["resourceVersion"]:
                return status(409, "Conflict", "the object has been modified")
            obj["spec"]["replicas"] = body["spec"]["replicas"]
            self._version += 1
            obj["metadata"]["resourceVersion"] = str(self._version)
        elif request.method != "GET":
            return status(405, "MethodNotAllowed", request.method)
        meta = obj["metadata"]
        return reply({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "resourceVersion": meta["resourceVersion"]},
            "spec": {"replicas": obj["spec"]["replicas"]}, "status": {"replicas": obj["spec"]["replicas"]},
        })
