"""A local stand-in for the Azure Functions host, because Core Tools cannot be installed here.

It runs a Python v2-model function app with the trigger semantics the app meets in Azure (HTTP keys,
queue leases, retries and poison queues, NCRONTAB timers with past-due detection, Event Grid blob events
delivered through a storage queue), so the same code is exercised locally and in tests.
"""
