"""Fixed demo identities, so tests, docs and clients can use the local Mailchimp without any setup call.

These values open nothing but this local server.
"""
DEMO_API_KEY = "0123456789abcdef0123456789abcdef-us6"
DEMO_AUDIENCE_ID = "a1b2c3d4e5"
DEMO_AUDIENCE_NAME = "Demo audience"
DEMO_OAUTH_CLIENT_ID = "demo-client"
DEMO_OAUTH_CLIENT_SECRET = "demo-client-secret"
DEMO_ACCOUNT_ID = "8d3a3db4d97663a9074efcc16"
DEMO_ACCOUNT_NAME = "Demo account"
DATA_CENTER = "us6"
