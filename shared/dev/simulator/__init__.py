"""An OpenCode 1.18.33 server imitated in-process, for tests, `opencode-sessions dev` and load runs.

`app.create_simulator()` builds the Starlette app (the state and run loops in `engine`, the scripted runs in
`scenarios`, the misbehaviours in `faults`). Besides OpenCode's routes it serves controls under `/__sim/` (never
subject to faults):

    GET    /__sim/stats    request counts, prompt_async / message calls per session and per messageID, and
                           the replies sent to each permission / question id (`replies`)
    POST   /__sim/reset    forget every session, count and fault
    GET    /__sim/faults   the active faults
    POST   /__sim/faults   add one: {"kind", "path"?, "method"?, "count"?, "ms"?} (see `faults.Fault`)
    DELETE /__sim/faults   clear them
    POST   /__sim/events   publish [{"type", "properties"}, …] on `/event` as given (odd shapes included)

Run it as a process with `python -m shared.dev.simulator --port 4096 [--speed 2]`, or in a thread of a test with
`server.serve_in_thread(create_simulator(...))`.
"""
