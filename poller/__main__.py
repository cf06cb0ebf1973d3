from shared.entrypoints import poller

poller()
