"""Policies: budgets and rate limits scoped by metadata (README "Policies"). The model, its
vocabulary, services, usage reads, REST API and admin live here; the gateway enforces them in
gateway/policies.py."""
