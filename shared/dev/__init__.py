"""Everything that exists only for development and tests: embedded servers, the `dev` supervisor, the simulator.

Nothing under poller/ or gateway/ imports it (tests/test_layout.py checks), so a production image never runs it.
"""
