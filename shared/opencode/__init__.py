"""Client, types and simulator for the OpenCode server HTTP API."""
