"""JSON schemas of the custom resources the stack renders, outside the Kubernetes OpenAPI set.

Each is transcribed from the published CRD's openAPIV3Schema, for the fields an object may
carry, with unknown fields refused (as the API server prunes or rejects them):
- PodMonitoring (monitoring.googleapis.com/v1): Google Managed Prometheus's CRD,
  `charts/operator/crds/monitoring.googleapis.com_podmonitorings.yaml` in
  GoogleCloudPlatform/prometheus-engine. Its CEL rules (timeout <= interval; one auth kind
  per endpoint) are checked by `cel_rule_failures`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_DURATION = r"^((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$"
_LABEL = {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}
_SECRET_REF = {
    "type": "object",
    "properties": {
        "secret": {
            "type": "object",
            "required": ["key", "name"],
            "properties": {"key": {"type": "string"}, "name": {"type": "string"}},
            "additionalProperties": False,
        }
    },
    "additionalProperties": False,
}
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "additionalProperties": False,
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
_RELABELING = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "action": {
            "enum": [
                "replace",
                "lowercase",
                "uppercase",
                "keep",
                "drop",
                "keepequal",
                "dropequal",
                "hashmod",
                "labeldrop",
                "labelkeep",
            ]
        },
        "modulus": {"type": "integer"},
        "regex": {"type": "string", "maxLength": 10000},
        "replacement": {"type": "string"},
        "separator": {"type": "string"},
        "sourceLabels": {"type": "array", "maxItems": 100, "items": _LABEL},
        "targetLabel": _LABEL,
    },
}
_ENDPOINT = {
    "type": "object",
    "required": ["interval", "port"],
    "additionalProperties": False,
    "properties": {
        # int-or-string: a container port number or its name.
        "port": {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 65535},
                {"type": "string", "pattern": r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$"},
            ]
        },
        "path": {"type": "string", "pattern": "^/"},
        "scheme": {"enum": ["http", "https"]},
        "interval": {"type": "string", "pattern": _DURATION},
        "timeout": {"type": "string", "pattern": _DURATION},
        "params": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
        "proxyUrl": {"type": "string", "maxLength": 2000},
        "metricRelabeling": {"type": "array", "maxItems": 250, "items": _RELABELING},
        "authorization": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"type": {"type": "string"}, "credentials": _SECRET_REF},
        },
        "basicAuth": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"username": {"type": "string"}, "password": _SECRET_REF},
        },
        "oauth2": {"type": "object"},
        "tls": {"type": "object"},
    },
}
POD_MONITORING_SPEC: dict[str, Any] = {
    "type": "object",
    "required": ["endpoints", "selector"],
    "additionalProperties": False,
    "properties": {
        "selector": _LABEL_SELECTOR,
        "endpoints": {"type": "array", "minItems": 1, "maxItems": 10, "items": _ENDPOINT},
        "filterRunning": {"type": "boolean"},
        "limits": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                k: {"type": "integer"}
                for k in ("samples", "labels", "labelNameLength", "labelValueLength")
            },
        },
        "targetLabels": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "fromPod": {
                    "type": "array",
                    "maxItems": 100,
                    "items": {
                        "type": "object",
                        "required": ["from"],
                        "additionalProperties": False,
                        "properties": {"from": {"type": "string"}, "to": _LABEL},
                    },
                },
                "metadata": {
                    "type": "array",
                    "items": {
                        "enum": [
                            "container",
                            "node",
                            "pod",
                            "top_level_controller_name",
                            "top_level_controller_type",
                        ]
                    },
                },
            },
        },
    },
}

# Kind -> (apiVersion, spec schema) for every custom resource the stack renders.
STACK_CRD_SCHEMAS: dict[str, tuple[str, dict[str, Any]]] = {
    "PodMonitoring": ("monitoring.googleapis.com/v1", POD_MONITORING_SPEC),
}


def _seconds(duration: str) -> float:
    match = re.match(_DURATION, duration)
    if not match or not duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    h, m, s, ms = (int(match.group(i) or 0) for i in (2, 4, 6, 8))
    return h * 3600 + m * 60 + s + ms / 1000


def cel_rule_failures(kind: str, spec: Mapping[str, Any]) -> list[str]:
    """The CRD's x-kubernetes-validations rules that a JSON schema cannot express."""
    failures = []
    if kind == "PodMonitoring":
        for index, endpoint in enumerate(spec.get("endpoints", [])):
            if "timeout" in endpoint and _seconds(endpoint["timeout"]) > _seconds(
                endpoint["interval"]
            ):
                failures.append(f"endpoints[{index}]: scrape timeout exceeds the interval")
            auth = [k for k in ("authorization", "basicAuth", "oauth2") if k in endpoint]
            if len(auth) > 1:
                failures.append(f"endpoints[{index}]: more than one of {auth}")
    return failures
