"""A Cloud Monitoring dashboard of PromQL charts, one per serving backend or app."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

# Cloud Monitoring's mosaic grid is 48 columns wide; two charts per row.
GRID_COLUMNS = 48
CHART_WIDTH = 24
CHART_HEIGHT = 16


@dataclass(frozen=True)
class Series:
    """One line of a chart: a PromQL query and how its legend names each series."""

    query: str
    legend: str = ""


@dataclass(frozen=True)
class Chart:
    """A line chart of one or more PromQL series sharing a unit (Cloud Monitoring's UCUM)."""

    title: str
    series: tuple[Series, ...]
    unit: str = "1"


@dataclass(frozen=True)
class ServingDashboardArgs:
    """The project, the dashboard's title and its charts in reading order."""

    project_id: pulumi.Input[str]
    title: str
    charts: Sequence[Chart]
    depends_on: Sequence[pulumi.Resource] = ()


def dashboard_layout(title: str, charts: Sequence[Chart]) -> dict[str, Any]:
    """The dashboard as the Cloud Monitoring API takes it (Dashboard with a MosaicLayout)."""
    tiles = []
    for index, chart in enumerate(charts):
        tiles.append(
            {
                "xPos": (index % 2) * CHART_WIDTH,
                "yPos": (index // 2) * CHART_HEIGHT,
                "width": CHART_WIDTH,
                "height": CHART_HEIGHT,
                "widget": {
                    "title": chart.title,
                    "xyChart": {
                        "dataSets": [
                            {
                                "timeSeriesQuery": {
                                    "prometheusQuery": series.query,
                                    "unitOverride": chart.unit,
                                },
                                "plotType": "LINE",
                                "targetAxis": "Y1",
                                **({"legendTemplate": series.legend} if series.legend else {}),
                            }
                            for series in chart.series
                        ],
                        "yAxis": {"scale": "LINEAR"},
                    },
                },
            }
        )
    return {
        "displayName": title,
        "mosaicLayout": {"columns": GRID_COLUMNS, "tiles": tiles},
    }


class ServingDashboard(pulumi.ComponentResource):
    """One Cloud Monitoring dashboard, and the console URL that opens it."""

    dashboard: gcp.monitoring.Dashboard
    url: pulumi.Output[str]

    def __init__(
        self, name: str, args: ServingDashboardArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gemma-stack:monitoring:ServingDashboard", name, None, opts)
        if not args.charts:
            raise ValueError(f"ServingDashboard {name!r}: a dashboard needs at least one chart.")
        self.dashboard = gcp.monitoring.Dashboard(
            f"{name}-dashboard",
            project=args.project_id,
            dashboard_json=pulumi.Output.json_dumps(dashboard_layout(args.title, args.charts)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        # The resource id is projects/NUMBER/dashboards/ID; the console takes ID.
        self.url = pulumi.Output.concat(
            "https://console.cloud.google.com/monitoring/dashboards/builder/",
            self.dashboard.id.apply(lambda i: i.rsplit("/", 1)[-1]),
            "?project=",
            args.project_id,
        )
        self.register_outputs({"url": self.url})
