"""Cloud Monitoring alert policies on PromQL conditions, and the email channel they notify."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

# Re-evaluate each rule every minute; an incident closes itself a while after it clears.
EVALUATION_INTERVAL = "60s"
AUTO_CLOSE = "1800s"
SEVERITIES = ("CRITICAL", "ERROR", "WARNING")
_SLUG = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class AlertRule:
    """One policy: fire when `query` returns any series for `for_seconds`; say what to do."""

    slug: str  # resource name part, e.g. "gemma-pending"
    title: str
    query: str
    for_seconds: int
    runbook: str  # Markdown shown in the incident and the email
    severity: str = "WARNING"


@dataclass(frozen=True)
class ServingAlertsArgs:
    """The project, the rules, and the address that hears about them (None: console only)."""

    project_id: pulumi.Input[str]
    rules: Sequence[AlertRule]
    email: str | None = None
    # Ends every policy's name, e.g. the stack, so two stacks' incidents read apart.
    label: str = ""
    depends_on: Sequence[pulumi.Resource] = ()

    def validate(self, name: str) -> None:
        where = f"ServingAlerts {name!r}"
        slugs = [rule.slug for rule in self.rules]
        if len(set(slugs)) != len(slugs):
            raise ValueError(f"{where}: rule slugs must be unique; got {slugs}.")
        for rule in self.rules:
            if not _SLUG.match(rule.slug):
                raise ValueError(f"{where}: slug {rule.slug!r} must be lowercase-with-hyphens.")
            if rule.severity not in SEVERITIES:
                raise ValueError(f"{where}: {rule.slug} severity must be one of {SEVERITIES}.")
            if rule.for_seconds < 0:
                raise ValueError(f"{where}: {rule.slug} for_seconds must not be negative.")


class ServingAlerts(pulumi.ComponentResource):
    """An email NotificationChannel (when an address is set) and one AlertPolicy per rule."""

    channel: gcp.monitoring.NotificationChannel | None
    policies: dict[str, gcp.monitoring.AlertPolicy]

    def __init__(
        self, name: str, args: ServingAlertsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gemma-stack:monitoring:ServingAlerts", name, None, opts)
        args.validate(name)
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        self.channel = None
        if args.email is not None:
            self.channel = gcp.monitoring.NotificationChannel(
                f"{name}-email",
                project=args.project_id,
                display_name=f"gemma-stack alerts ({args.email})",
                type="email",
                labels={"email_address": args.email},
                opts=child,
            )
        channels = [self.channel.name] if self.channel is not None else []
        tail = f" [{args.label}]" if args.label else ""
        self.policies = {
            rule.slug: gcp.monitoring.AlertPolicy(
                f"{name}-{rule.slug}",
                project=args.project_id,
                display_name=rule.title + tail,
                combiner="OR",
                severity=rule.severity,
                conditions=[
                    gcp.monitoring.AlertPolicyConditionArgs(
                        display_name=rule.title,
                        condition_prometheus_query_language=(
                            gcp.monitoring.AlertPolicyConditionConditionPrometheusQueryLanguageArgs(
                                query=rule.query,
                                duration=f"{rule.for_seconds}s",
                                evaluation_interval=EVALUATION_INTERVAL,
                                # The series appear only once the workloads run and are scraped.
                                disable_metric_validation=True,
                            )
                        ),
                    )
                ],
                documentation=gcp.monitoring.AlertPolicyDocumentationArgs(
                    content=rule.runbook, mime_type="text/markdown", subject=rule.title
                ),
                alert_strategy=gcp.monitoring.AlertPolicyAlertStrategyArgs(auto_close=AUTO_CLOSE),
                notification_channels=channels,
                opts=child,
            )
            for rule in args.rules
        }
        self.register_outputs({})
