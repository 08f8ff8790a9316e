"""A local, stateful stand-in for Mailchimp's Marketing API v3 and its OAuth login, for tests and benchmarks.

It answers in Mailchimp's JSON shapes and reproduces the behaviour a connector must survive (status overwrite on
batch subscribe, compliance refusals, forgotten addresses, the 10-connection cap, latency and faults), so the
connector can be tested against a real process instead of mocks. Run it with `python -m mailchimp_local`.
"""
