"""`edge-proxy bench`: the proxy measured against baselines, on the same data, in one run.

Layers, top down: `command` (the subcommand: upstream, suites, report) ->
`suites/*` (one module per suite; each measures every target with
`Session.each_target`) -> `baselines` (direct, nginx, strict, cache-first),
`informer` and `kubeclient` (the clients), `procstat` (CPU and RSS from
/proc), `wrk` -> `runner` (repeats, median/min/max, progress) -> `report`
(JSON, Markdown, PNG). Everything here is a test/benchmark tool: the proxy
never imports it.
"""
