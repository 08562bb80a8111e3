"""The read engine: every aggregate the REST API and the dashboard show.

- ``engine``: the source choice (DimensionRollup, MetadataRollup, or the raw logs when a filter
  is not a rolled-up dimension), grouping, and aggregation of sums and latency histograms; REST
  graphs/groups (analytics.reports, analytics.portkey_api) and alert metrics read through it.
- ``cache``: the one closed-period cache, keyed by the workspace's data generation, the filter
  and the question; every dashboard aggregate, filtered or not, is read through it (``read``),
  and computed on a miss by one code path (``compute``, through ``engine``).
- ``metrics``: ``Metrics``, the one metrics type every reader shapes, the rollup writer sums
  and the cache packs.
- ``export``: a dashboard group table as CSV or JSONL.

The window rule is written once, in the README ("Analytics windows").
"""
