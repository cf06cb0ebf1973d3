"""The supervisor behind `opencode-sessions dev`: the whole system on one machine, started and stopped as one.

What it runs, in order: Redis and PostgreSQL (shared.dev.embedded: real servers on loopback ports with random
passwords, their data in this run's temporary directory unless a data dir is given), the migrations and the
gateway's read-only role (least_privilege), an OpenCode (opencode_choice: the given URL, else the simulator as a
child), N poller replicas and the gateway (each `python -m ...` in its own process group). Then the variables
for other terminals are printed and written (envfile); a data dir keeps ports and credentials (state) and is
locked while in use, and a killed dev's temporary directory is swept by the next (rundir).

Supervision: every child is polled a few times a second; one that exits is restarted after a backoff (about
1 s, doubling up to 30 s, with jitter; back to the start once it has stayed up a minute). Redis and PostgreSQL
are restarted the same way, on the same port and data dir. During start-up a child that exits before it is up
is an error instead: the stack is torn down and its last output lines are shown.

Shutdown (Ctrl-C, SIGTERM, SIGHUP): SIGTERM to every child's process group (gateway, pollers, simulator: the
pollers give their leases back), SIGKILL after a grace period or on a second Ctrl-C, then PostgreSQL and Redis
are stopped and their temporary directories removed. Children also get PR_SET_PDEATHSIG, so even a SIGKILL of
this process takes them down.
"""
