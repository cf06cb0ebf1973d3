"""The poller: claims leased sessions, mirrors OpenCode into Redis, archives finished sessions to PostgreSQL."""
