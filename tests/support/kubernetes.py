"""Offline validation of Kubernetes manifests against the schemas `kubernetes-validate` ships."""

from __future__ import annotations

from typing import Any

import kubernetes_validate

# the newest Kubernetes release whose schemas the installed package carries
KUBERNETES_VERSION = kubernetes_validate.latest_version()


def validate_manifest(doc: dict[str, Any]) -> None:
    """Raise unless ``doc`` is valid for :data:`KUBERNETES_VERSION`; strict: unknown fields fail too."""
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
