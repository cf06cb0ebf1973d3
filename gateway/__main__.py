from shared.entrypoints import gateway

gateway()
