"""The read engine: every aggregate the REST API and the dashboard show.

- ``engine``: the hour-aligned window's source choice (DimensionRollup, MetadataRollup, or the
  raw logs when a filter is not a rolled-up dimension), grouping, and aggregation of sums and
  latency histograms; REST graphs/groups (analytics.reports, analytics.portkey_api), alert
  metrics and filtered dashboard pages read through it.
- ``cache``: the closed-period cache of merged rollup cells keyed by the workspace's data
  generation (shared cache, then a per-process memo), what unfiltered dashboard pages read.
- ``metrics``: ``Metrics``, the one metrics type every reader shapes (and the cache packs).
- ``filtered``: dashboard aggregates under a log filter, through ``engine``.
- ``export``: a dashboard group table as CSV or JSONL.

The window rule is written once, in the README ("Analytics windows").
"""
