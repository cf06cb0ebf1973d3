"""The production client for the OpenCode server HTTP API, and the types of its JSON."""
