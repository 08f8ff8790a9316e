"""Azure-facing adapters: the only modules that import Azure SDKs (besides function_app.py and bootstrap)."""
