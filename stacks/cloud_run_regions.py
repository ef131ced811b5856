"""Regions where Cloud Run services can attach an NVIDIA L4 GPU.

Source: Google Cloud documentation "GPU support for services" (Cloud Run), section
"Supported regions", as published in 2025. asia-south1 is listed as by invitation only.
Check that page when adding a region; a region missing here is refused before any resource
is created, which beats a failed `pulumi up` after the cluster is already built.
"""

from __future__ import annotations

CLOUD_RUN_L4_REGIONS: frozenset[str] = frozenset(
    {
        "us-central1",
        "us-east4",
        "europe-west1",
        "europe-west4",
        "asia-southeast1",
        "asia-south1",
    }
)
