"""How Portico reaches upstream providers: the SSRF guard and the guarded HTTP client."""
