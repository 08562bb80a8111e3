"""The read engine's dashboard side: aggregates over an hour-aligned window with the log
filter vocabulary applied (see analytics/reads/filtered.py).

The source choice (rollups where the filter is a rolled-up dimension, raw logs otherwise) is
analytics.aggregates.choose_source, the same one the REST graphs and groups use, so a filtered
dashboard table and the REST answer for the same window and filter are the same numbers.
"""
