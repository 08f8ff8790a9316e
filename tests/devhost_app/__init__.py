"""A small function app for devhost's tests: every trigger kind, recording what it saw in a JSON-lines outbox."""
