"""Domain and adapters of the Mailchimp segment export app.

Modules at this level hold logic that needs no Azure SDK; Azure-facing adapters live in `shared.adapters`.
"""
