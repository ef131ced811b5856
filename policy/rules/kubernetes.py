"""Kubernetes rules: GPU scheduling, resources, probes, secrets by reference, hardened pods."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .core import (
    ADVISORY,
    MANDATORY,
    ResourceRule,
    RuleContext,
    StackResource,
    StackRule,
    as_list,
    as_mapping,
    is_unknown,
)
from .secrets import literal_secret_args, literal_secret_envs

GPU_RESOURCE = "nvidia.com/gpu"
ACCELERATOR_SELECTOR = "cloud.google.com/gke-accelerator"
CHAT_APP_LABEL = ("app.kubernetes.io/name", "chat-app")
# How an exposed Service or Ingress declares who lets users in: `app-login` (the app's own
# sign-in) or `iap` (Identity-Aware Proxy, possible only on an Ingress, i.e. an HTTPS LB).
AUTH_ANNOTATION = "gemma-stack/auth"
INTERNAL_LB_ANNOTATIONS = {
    "networking.gke.io/load-balancer-type": "internal",
    "cloud.google.com/load-balancer-type": "internal",
}
INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
BACKEND_CONFIG_ANNOTATIONS = (
    "cloud.google.com/backend-config",
    "beta.cloud.google.com/backend-config",
)

SERVICE = "kubernetes:core/v1:Service"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
BACKEND_CONFIG = "kubernetes:cloud.google.com/v1:BackendConfig"
# Where each workload kind keeps its pod template.
_POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:core/v1:Pod": ("spec",),
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
WORKLOAD_TYPES = frozenset(_POD_SPEC_PATHS)
# Run to completion and serve nothing: no endpoint for a readiness or liveness probe to call.
BATCH_TYPES = frozenset({"kubernetes:batch/v1:Job", "kubernetes:batch/v1:CronJob"})


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def pod_spec(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = _dig(props, _POD_SPEC_PATHS.get(resource_type, ("__none__",)))
    return spec if isinstance(spec, Mapping) else {}


def _containers(spec: Mapping[str, Any], key: str = "containers") -> list[Mapping[str, Any]]:
    found = spec.get(key) or []
    return [c for c in found if isinstance(c, Mapping)] if isinstance(found, list) else []


def _all_containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return _containers(spec) + _containers(spec, "initContainers")


def _resource(container: Mapping[str, Any], section: str, name: str) -> Any:
    return _dig(container, ("resources", section, name))


def _label_values(resource_type: str, props: Mapping[str, Any]) -> dict[str, Any]:
    """Labels of the workload and of its pod template together."""
    template = _POD_SPEC_PATHS.get(resource_type, ("spec",))[:-1]
    labels: dict[str, Any] = {}
    for path in (("metadata", "labels"), (*template, "metadata", "labels")):
        found = _dig(props, path)
        if isinstance(found, Mapping):
            labels.update(found)
    return labels


def is_chat_app(resource_type: str, props: Mapping[str, Any]) -> bool:
    key, value = CHAT_APP_LABEL
    return _label_values(resource_type, props).get(key) == value


def _quantity(value: Any) -> str:
    # The engine turns `1` into 1.0; "1", 1 and 1.0 are the same GPU count.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _gpu_scheduling(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    del context
    spec = pod_spec(resource_type, props)
    messages = []
    for container in _all_containers(spec):
        requested = _resource(container, "requests", GPU_RESOURCE)
        limited = _resource(container, "limits", GPU_RESOURCE)
        if requested is None and limited is None:
            continue
        name = container.get("name") or "container"
        if limited is None:
            messages.append(
                f"Container {name!r} requests {GPU_RESOURCE} without a limit; Kubernetes "
                f"schedules GPUs by limit. Set resources.limits[{GPU_RESOURCE!r}] to the GPU "
                "count (and requests equal to it, or leave requests out)."
            )
        elif requested is not None and _quantity(requested) != _quantity(limited):
            messages.append(
                f"Container {name!r} requests {requested} GPUs but limits {limited}; GPU "
                "requests and limits must be equal."
            )
        selectors = spec.get("nodeSelector") or {}
        accelerator = (
            selectors.get(ACCELERATOR_SELECTOR) if isinstance(selectors, Mapping) else None
        )
        if not accelerator:
            messages.append(
                f"Container {name!r} uses GPUs but the pod has no nodeSelector "
                f"{ACCELERATOR_SELECTOR!r}; Autopilot rejects such a pod. Add nodeSelector "
                f'{{"{ACCELERATOR_SELECTOR}": "nvidia-l4"}} (or the GPU type you want).'
            )
    return messages


def _resources_and_probes(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    del context
    spec = pod_spec(resource_type, props)
    messages = []
    for container in _all_containers(spec):
        name = container.get("name") or "container"
        missing = [
            f"{section}.{kind}"
            for section in ("requests", "limits")
            for kind in ("cpu", "memory")
            if _resource(container, section, kind) in (None, "")
        ]
        if missing:
            messages.append(
                f"Container {name!r} has no {', '.join(missing)}. Set CPU and memory requests "
                "and limits so the scheduler can place it and a runaway process cannot starve "
                "its neighbours (Autopilot sets limits equal to requests)."
            )
    for container in [] if resource_type in BATCH_TYPES else _containers(spec):
        name = container.get("name") or "container"
        missing = [p for p in ("readinessProbe", "livenessProbe") if not container.get(p)]
        if missing:
            messages.append(
                f"Container {name!r} has no {' or '.join(missing)}. Add an HTTP readinessProbe "
                "(traffic only when ready) and livenessProbe (restart when hung); slow starters "
                "such as model servers also need a startupProbe long enough to load weights."
            )
    return messages


def _secrets_by_reference(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    del context
    messages = []
    for container in _all_containers(pod_spec(resource_type, props)):
        name = container.get("name") or "container"
        for env_name in literal_secret_envs(as_list(container.get("env"))):
            messages.append(
                f"Container {name!r} sets {env_name} as a literal env value, which lands in "
                "the Deployment spec, `kubectl describe` and Pulumi state. Put the value in a "
                "Kubernetes Secret (created from Secret Manager) and use "
                "env[].valueFrom.secretKeyRef."
            )
        args = as_list(container.get("args")) + as_list(container.get("command"))
        for flag in literal_secret_args(args):
            messages.append(
                f"Container {name!r} passes a credential on its command line ({flag}), visible "
                "in the pod spec and process list. Use an env var from secretKeyRef instead."
            )
    return messages


def _hardening_findings(spec: Mapping[str, Any]) -> list[str]:
    """What keeps a pod from the restricted profile: root, escalation, no seccomp."""
    if is_unknown(spec.get("securityContext")):
        return []  # known only after `pulumi up`
    pod_security = as_mapping(spec.get("securityContext"))
    pod_non_root = pod_security.get("runAsNonRoot") is True
    pod_seccomp = _dig(pod_security, ("seccompProfile", "type")) == "RuntimeDefault"
    findings = []
    for container in _all_containers(spec):
        name = container.get("name") or "container"
        if is_unknown(container.get("securityContext")):
            continue
        security = as_mapping(container.get("securityContext"))
        non_root = security.get("runAsNonRoot")
        if not (non_root is True or (non_root is None and pod_non_root)):
            findings.append(f"{name!r} may run as root (set runAsNonRoot: true)")
        if security.get("allowPrivilegeEscalation") is not False:
            findings.append(
                f"{name!r} allows privilege escalation (set allowPrivilegeEscalation: false)"
            )
        seccomp = _dig(security, ("seccompProfile", "type"))
        if not (seccomp == "RuntimeDefault" or (seccomp is None and pod_seccomp)):
            findings.append(
                f"{name!r} has no RuntimeDefault seccomp profile "
                "(set securityContext.seccompProfile.type: RuntimeDefault)"
            )
    return findings


def _chat_app_hardened(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    del context
    if not is_chat_app(resource_type, props):
        return []
    findings = _hardening_findings(pod_spec(resource_type, props))
    if not findings:
        return []
    return [
        "The chat app faces users, so it must run hardened: "
        + "; ".join(findings)
        + ". Set these in the pod or container securityContext."
    ]


def _workload_hardened(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    del context
    if is_chat_app(resource_type, props):
        return []  # the mandatory chat-app rule reports these
    findings = _hardening_findings(pod_spec(resource_type, props))
    return [f"Workload should run hardened: {'; '.join(findings)}."] if findings else []


def _annotations(props: Mapping[str, Any]) -> Mapping[str, Any]:
    found = _dig(props, ("metadata", "annotations")) or {}
    return found if isinstance(found, Mapping) else {}


def _load_balancer_auth(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    del context
    annotations = _annotations(props)
    auth = annotations.get(AUTH_ANNOTATION)
    name = _dig(props, ("metadata", "name")) or resource_type.rsplit(":", 1)[-1]
    if resource_type == INGRESS:
        ingress_class = str(annotations.get(INGRESS_CLASS_ANNOTATION, "")).lower()
        if ingress_class == "gce-internal" or is_unknown(auth) or auth in ("iap", "app-login"):
            return []
        return [
            f"Ingress {name!r} publishes the app on an external HTTPS load balancer with no "
            "authentication layer declared. Turn on IAP (a BackendConfig with iap.enabled "
            f"referenced by the Service) and annotate the Ingress {AUTH_ANNOTATION}: iap, or "
            f"enable the app's own sign-in and annotate it {AUTH_ANNOTATION}: app-login."
        ]
    if _dig(props, ("spec", "type")) != "LoadBalancer":
        return []
    for key, internal in INTERNAL_LB_ANNOTATIONS.items():
        value = annotations.get(key)
        if isinstance(value, str) and value.lower() == internal:
            return []  # reachable only from the VPC
    if is_unknown(auth) or auth == "app-login":
        return []
    return [
        f"Service {name!r} is a public LoadBalancer with no authentication layer declared"
        + (" (IAP cannot front a LoadBalancer Service; it needs an Ingress)" if auth else "")
        + ". Either keep it internal (ClusterIP, or the annotation "
        "networking.gke.io/load-balancer-type: Internal), put an IAP Ingress in front, or "
        f"enable the app's own sign-in and annotate the Service {AUTH_ANNOTATION}: app-login."
    ]


def _object_name(props: Mapping[str, Any]) -> str:
    name = _dig(props, ("metadata", "name"))
    return name if isinstance(name, str) else ""


def _backend_config_names(service: StackResource) -> set[str]:
    names: set[str] = set()
    for key in BACKEND_CONFIG_ANNOTATIONS:
        raw = _annotations(service.props).get(key)
        if not isinstance(raw, str) or is_unknown(raw):
            continue
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(parsed, Mapping):
            if isinstance(parsed.get("default"), str):
                names.add(parsed["default"])
            ports = parsed.get("ports")
            if isinstance(ports, Mapping):
                names.update(str(v) for v in ports.values())
    return names


def _ingress_backends(ingress: StackResource) -> set[str]:
    spec = as_mapping(ingress.props.get("spec"))
    backends = [_dig(spec, ("defaultBackend", "service", "name"))]
    for rule in as_list(spec.get("rules")):
        for path in as_list(_dig(rule, ("http", "paths"))):
            backends.append(_dig(path, ("backend", "service", "name")))
    return {b for b in backends if isinstance(b, str)}


def _iap_is_configured(
    resources: Sequence[StackResource], context: RuleContext
) -> list[tuple[str, str]]:
    """An Ingress that says `iap` must reach only Services whose BackendConfig enables IAP."""
    del context
    services = {_object_name(r.props): r for r in resources if r.type == SERVICE}
    iap_configs = {
        _object_name(r.props)
        for r in resources
        if r.type == BACKEND_CONFIG and _dig(r.props, ("spec", "iap", "enabled")) is True
    }
    found = []
    for ingress in resources:
        if ingress.type != INGRESS or _annotations(ingress.props).get(AUTH_ANNOTATION) != "iap":
            continue
        for backend in sorted(_ingress_backends(ingress)):
            if is_unknown(backend):
                continue
            service = services.get(backend)
            configs = _backend_config_names(service) if service else set()
            if not configs & iap_configs:
                found.append(
                    (
                        f"Ingress {ingress.name!r} declares {AUTH_ANNOTATION}: iap, but its "
                        f"backend Service {backend!r} references no BackendConfig with "
                        "spec.iap.enabled: true, so the load balancer would let anyone in. "
                        "Annotate the Service cloud.google.com/backend-config with a "
                        "BackendConfig that enables IAP.",
                        ingress.urn,
                    )
                )
    return found


GPU_SCHEDULING = ResourceRule(
    name="k8s-gpu-node-selector-and-limits",
    description="GPU pods carry the accelerator nodeSelector and a GPU limit.",
    enforcement=MANDATORY,
    check=_gpu_scheduling,
    resource_types=WORKLOAD_TYPES,
    remediation=f"Add nodeSelector {ACCELERATOR_SELECTOR} and limits {GPU_RESOURCE}.",
)

RESOURCES_AND_PROBES = ResourceRule(
    name="k8s-resources-and-probes",
    description="Every container has CPU/memory requests and limits, and both probes "
    "(batch Jobs, which serve nothing, need no probes).",
    enforcement=MANDATORY,
    check=_resources_and_probes,
    resource_types=WORKLOAD_TYPES,
    remediation="Set resources.requests/limits for cpu and memory; add both probes.",
)

SECRETS_BY_REFERENCE = ResourceRule(
    name="k8s-secrets-by-reference",
    description="Tokens and keys reach pods only through Secret references, never literals.",
    enforcement=MANDATORY,
    check=_secrets_by_reference,
    resource_types=WORKLOAD_TYPES,
    remediation="Use env[].valueFrom.secretKeyRef (or envFrom.secretRef).",
)

CHAT_APP_HARDENED = ResourceRule(
    name="chat-app-restricted",
    description=(
        "The chat app (label app.kubernetes.io/name: chat-app) runs as non-root, without "
        "privilege escalation, with the RuntimeDefault seccomp profile."
    ),
    enforcement=MANDATORY,
    check=_chat_app_hardened,
    resource_types=WORKLOAD_TYPES,
    remediation="Set runAsNonRoot, allowPrivilegeEscalation: false and seccompProfile.",
)

WORKLOAD_HARDENED = ResourceRule(
    name="k8s-workload-restricted",
    description="Every other workload should meet the same restricted security context.",
    enforcement=ADVISORY,
    check=_workload_hardened,
    resource_types=WORKLOAD_TYPES,
    remediation="Set runAsNonRoot, allowPrivilegeEscalation: false and seccompProfile.",
)

LOAD_BALANCER_AUTH = ResourceRule(
    name="k8s-load-balancer-auth",
    description=(
        "No public LoadBalancer Service or Ingress without an authentication layer in front."
    ),
    enforcement=MANDATORY,
    check=_load_balancer_auth,
    resource_types=frozenset({SERVICE, INGRESS}),
    remediation=f"Make it internal, or declare {AUTH_ANNOTATION}: app-login (or iap on Ingress).",
)

IAP_CONFIGURED = StackRule(
    name="k8s-iap-configured",
    description="An Ingress declaring IAP reaches only Services whose BackendConfig enables it.",
    enforcement=MANDATORY,
    check=_iap_is_configured,
    remediation="Reference a BackendConfig with iap.enabled from every backend Service.",
)

RULES = [
    GPU_SCHEDULING,
    RESOURCES_AND_PROBES,
    SECRETS_BY_REFERENCE,
    CHAT_APP_HARDENED,
    WORKLOAD_HARDENED,
    LOAD_BALANCER_AUTH,
]
STACK_RULES = [IAP_CONFIGURED]
