"""The restricted pod security settings every gemma-stack workload runs with."""

from __future__ import annotations

import pulumi_kubernetes as kubernetes

# The images' non-root user; checkov (CKV_K8S_40) wants uids >= 10000, clear of host users.
NON_ROOT_UID = 10001


def restricted_pod() -> kubernetes.core.v1.PodSecurityContextArgs:
    """Non-root, its own group for mounted volumes, and the runtime's default seccomp."""
    return kubernetes.core.v1.PodSecurityContextArgs(
        run_as_non_root=True,
        run_as_user=NON_ROOT_UID,
        run_as_group=NON_ROOT_UID,
        fs_group=NON_ROOT_UID,
        seccomp_profile=kubernetes.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def restricted_container() -> kubernetes.core.v1.SecurityContextArgs:
    """No privilege, no escalation, no capabilities, and a read-only root filesystem."""
    return kubernetes.core.v1.SecurityContextArgs(
        allow_privilege_escalation=False,
        privileged=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        run_as_user=NON_ROOT_UID,
        run_as_group=NON_ROOT_UID,
        capabilities=kubernetes.core.v1.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=kubernetes.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )
