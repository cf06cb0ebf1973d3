"""The gateway: read-only HTTP API and Server-Sent Events over the poller's live state and archive."""
