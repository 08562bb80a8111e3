"""Whether rollups hold every log a filter selects: a metadata value folded into "(other)"
(``has_overflow``), and two-key rollups for "group by B where A = v" (``complete_pairs``).

PairRollup skips logs past its caps and hours written before A and B were pair keys
(analytics.pair_rollups), so its rows for A = v are used only when, over the whole window, they
add up exactly to MetadataRollup's count for A = v (with no A value folded into "(other)",
which the caller checks): pair counts never exceed the true count in any hour, so equal sums
mean every hour is complete. Anything less and the caller reads the raw logs. The "not set"
rows take part in that sum but are not a group: like the raw logs grouped by B, the cells
hold the logs that carry B, and a Summary's "(not set)" row is the total minus the groups.
"""

from __future__ import annotations

from django.db import connection
from django.db.models import QuerySet, Sum

from analytics.models import MetadataRollup, PairRollup
from workspaces.models import Workspace


def has_overflow(workspace: Workspace, window: tuple, key: str) -> bool:
    """Values past the rollups' per-hour cap are counted under OTHER: a value filter on such a
    key cannot be answered from rollups."""
    return MetadataRollup.objects.filter(
        workspace=workspace, key=key, value=MetadataRollup.OTHER_VALUE, bucket__gte=window[0], bucket__lt=window[1]
    ).exists()


def complete_pairs(
    workspace: Workspace, window: tuple, key_a: str, values_a: tuple[str, ...], key_b: str
) -> QuerySet | None:
    """PairRollup rows of (A in ``values_a``, B = any value) over ``window``, or None when they
    do not account for every log with A in ``values_a`` in it (or B is A)."""
    if key_a == key_b:
        return None
    pairs = PairRollup.objects.filter(
        workspace=workspace,
        key_a=key_a,
        bucket__gte=window[0],
        bucket__lt=window[1],
        value_a__in=values_a,
        key_b=key_b,
    )
    rollups = MetadataRollup.objects.filter(
        workspace=workspace, key=key_a, value__in=values_a, bucket__gte=window[0], bucket__lt=window[1]
    )
    # Both sums in one round trip (a Summary asks this once per cached piece of its window).
    parts = [
        qs.values("workspace_id").annotate(n=Sum("requests")).values("n").query.sql_with_params()
        for qs in (pairs, rollups)
    ]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT ({parts[0][0]}), ({parts[1][0]})", [*parts[0][1], *parts[1][1]])
        counted, total = cursor.fetchone()
    if counted != total:
        return None
    return pairs.filter(b_missing=False)
