"""One module per suite; each exposes NAME, TITLE, OWN_UPSTREAM_ONLY and `async run(session)`.

`OWN_UPSTREAM_ONLY` is why the suite runs only against an upstream the bench
started (the simulator or `--against real`), or "" when it runs anywhere.
"""
