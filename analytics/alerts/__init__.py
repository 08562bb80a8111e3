"""Alert rules over the rollups (README "Alerts").

- ``models``: AlertRule (configuration, written only through ``services``), AlertState (the
  condition per rule and scope value), AlertEvent (fired / resolved / test history) and
  AlertDelivery (one row per delivery attempt).
- ``rules``: the rule vocabulary: scope (analytics.filters' parameters), ``per``, windows,
  comparisons, channels; every problem is a ValidationError naming its field.
- ``metrics``: the registry of metric kinds; each computes a rule's current value per scope value.
- ``evaluation``: the periodic evaluation (Celery beat, or the embedded scheduler) and the
  state machine ok -> firing (cooldown) -> resolved.
- ``delivery``: signed webhooks through the gateway's guarded client and e-mail through Django's
  mail backend, with retries driven from the database.
"""
