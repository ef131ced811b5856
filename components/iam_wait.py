"""A pause between IAM grants and the first thing that uses them, so one `pulumi up` suffices.

IAM is eventually consistent: Google documents that a changed allow policy typically takes
2 minutes to apply and can take 7 minutes or longer
(https://cloud.google.com/iam/docs/access-change-propagation). A Cloud Build or a Cloud Run
revision that starts seconds after its account was granted a role is refused with
PERMISSION_DENIED. Everything that uses a fresh grant at once therefore depends on the
`Sleep` made here, which starts only once all of its grants exist. Image builds also retry a
refused build for several more minutes (components/submit_build.sh) to cover the slow tail.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumiverse_time as time

# Google's "typically 2 minutes"; paid once, when the grants are first created or replaced.
IAM_PROPAGATION = "120s"


def wait_for_grants(
    name: str, grants: Sequence[pulumi.CustomResource], parent: pulumi.Resource
) -> time.Sleep:
    """A `Sleep` that ends `IAM_PROPAGATION` after every grant in `grants` exists.

    Depend on the result instead of the grants. A replaced grant (a new id) replaces the
    Sleep, so the pause runs again for it; an unchanged stack never waits.
    """
    if not grants:
        raise ValueError(f"wait_for_grants {name!r}: nothing to wait for; pass the grants.")
    return time.Sleep(
        name,
        create_duration=IAM_PROPAGATION,
        triggers={grant.pulumi_resource_name: grant.id for grant in grants},
        opts=pulumi.ResourceOptions(parent=parent, depends_on=list(grants)),
    )
