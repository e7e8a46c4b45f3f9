"""OpenLineage for a landing: the Voucherify export as input, the object's folder under the destination
as output, with its schema and the run's row and byte counts.

The OpenLineage classes are imported when asked for (the provider works without the OpenLineage provider).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import ObjectStoragePath

from voucherify_provider.landing.destination import lineage_dataset_name


def landing_lineage(api_base_url: str, exported_object: str, partition: ObjectStoragePath,
                    manifest: dict[str, Any]) -> Any:
    """The ``OperatorLineage`` of a committed landing; None when the OpenLineage provider is not installed."""
    try:
        from airflow.providers.common.compat.openlineage.facet import (
            Dataset,
            OutputDataset,
            OutputStatisticsOutputDatasetFacet,
            SchemaDatasetFacet,
            SchemaDatasetFacetFields,
        )
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    namespace, name = lineage_dataset_name(partition.parent)  # the dataset every window lands in
    schema = SchemaDatasetFacet(fields=[SchemaDatasetFacetFields(name=c["name"], type=c["type"])
                                        for c in manifest["schema"]])
    statistics = OutputStatisticsOutputDatasetFacet(rowCount=manifest["rows"],
                                                    size=sum(f["bytes"] for f in manifest["files"]))
    return OperatorLineage(
        inputs=[Dataset(namespace=api_base_url, name=f"export/{exported_object}")],
        outputs=[OutputDataset(namespace=namespace, name=name, facets={"schema": schema},
                               outputFacets={"outputStatistics": statistics})],
    )


def no_lineage() -> Any:
    """An empty ``OperatorLineage`` (a task that landed nothing); None without the OpenLineage provider."""
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    return OperatorLineage()
