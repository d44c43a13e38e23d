"""Thin command-line adapter: parse flags, build settings, run one thing.

Subcommands: `sim` (the Kubernetes API simulator), `serve` (the proxy),
`bench` (the benchmark suites against baselines, see bench/README.md) and
`kubeconfig` (point a node component at the proxy). Bad flag values are
reported as a usage error naming the flag, before anything starts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from edgeproxy import __version__


def parse_hostport(value: str, default_port: int | None = None) -> tuple[str, int]:
    """`HOST:PORT`, `[V6]:PORT` or `:PORT` → (host, port); raises ValueError."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        if default_port is None:
            raise ValueError(f"{value!r} is not HOST:PORT")
        host, port_text = value, str(default_port)
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{value!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{value!r}: port {port} is out of range")
    return host, port


def _hostport(value: str) -> tuple[str, int]:
    try:
        return parse_hostport(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be > 0")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be > 0")
    return number


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-proxy",
        description="Node-local Kubernetes API proxy with a durable cache that keeps answering offline.",
    )
    parser.add_argument("--version", action="version", version=f"edge-proxy {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    parser.add_argument(
        "--logging-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text (default) or one JSON object per line",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = sub.add_parser(
        "sim",
        help="run the Kubernetes API simulator",
        description="A Kubernetes API simulator for demos, tests and benchmarks.",
    )
    sim.add_argument(
        "--listen",
        type=_hostport,
        default=("127.0.0.1", 6443),
        metavar="HOST:PORT",
        help="API listen address (default 127.0.0.1:6443; port 0 picks one)",
    )
    sim.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a generated CA; clients need the client cert or token",
    )
    sim.add_argument(
        "--tls-dir",
        type=Path,
        metavar="DIR",
        help="where the CA, certs and token are kept (default ~/.cache/edge-proxy/sim-tls)",
    )
    sim.add_argument(
        "--kubeconfig-out",
        type=Path,
        metavar="FILE",
        help="write a kubeconfig for this simulator to FILE",
    )
    sim.add_argument(
        "--history",
        type=_positive_int,
        default=10_000,
        metavar="N",
        help="events kept per resource for watch resume and paging (default 10000)",
    )
    sim.add_argument(
        "--seed",
        type=_existing_file,
        action="append",
        default=[],
        metavar="FILE",
        help="YAML/JSON objects to create at start (repeatable)",
    )
    sim.add_argument(
        "--control-listen",
        type=_hostport,
        metavar="HOST:PORT",
        help="extra listener for /_sim/ fault control that faults never touch",
    )
    sim.add_argument(
        "--bookmark-interval",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="seconds between watch bookmarks (default 60, as kube-apiserver)",
    )
    sim.add_argument(
        "--watch-list",
        choices=("on", "ignore", "refuse"),
        default="on",
        help="watch-list requests (sendInitialEvents=true): on, as kube-apiserver 1.37; "
        "ignore, as an apiserver that does not know them (a plain watch); refuse (422)",
    )
    sim.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=3 * 1024 * 1024,
        metavar="N",
        help="largest request body accepted (default 3 MiB)",
    )
    serve = sub.add_parser(
        "serve",
        help="run the edge proxy",
        description="Forward to the cloud apiserver, cache what clients read, answer offline.",
    )
    serve.add_argument(
        "--config", type=Path, metavar="FILE", help="YAML config file; flags win over it"
    )
    serve.add_argument(
        "--server-addr",
        action="append",
        metavar="URL[,URL...]",
        help="upstream apiserver URL(s), tried in order",
    )
    serve.add_argument(
        "--kubeconfig", metavar="FILE", help="upstream credentials from a kubeconfig"
    )
    serve.add_argument(
        "--context", metavar="NAME", help="kubeconfig context (default: current-context)"
    )
    serve.add_argument("--ca-file", metavar="FILE", help="CA bundle for --server-addr")
    serve.add_argument(
        "--token-file",
        metavar="FILE",
        help="bearer token file for --server-addr (re-read every minute)",
    )
    serve.add_argument("--client-cert", metavar="FILE", help="client certificate for --server-addr")
    serve.add_argument("--client-key", metavar="FILE", help="client key for --server-addr")
    serve.add_argument(
        "--insecure-skip-tls-verify",
        action="store_true",
        default=None,
        help="do not verify the upstream's certificate (testing only)",
    )
    serve.add_argument(
        "--listen", metavar="HOST:PORT", help="client listener (default 127.0.0.1:10261)"
    )
    serve.add_argument(
        "--admin-listen",
        metavar="HOST:PORT",
        help="healthz/readyz/metrics/debug listener (default 127.0.0.1:10267)",
    )
    serve.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where the durable cache lives (default: $STATE_DIRECTORY under systemd, "
        "/var/lib/edge-proxy as root, else ~/.cache/edge-proxy)",
    )
    serve.add_argument(
        "--node-name",
        metavar="NAME",
        help="this node's name, for filters that read the local Node (default: host name)",
    )
    serve.add_argument(
        "--drop-name-prefix",
        action="append",
        metavar="PREFIX",
        help="hide objects whose name starts with PREFIX (repeatable)",
    )
    serve.add_argument(
        "--filters",
        metavar="NAME[,NAME...]",
        help="edge filters, in order (replaces the config file's list): servicetopology, "
        "masterservice, discardcloudservice, nodeportisolation, inclusterconfig, "
        "forwardkubesvctraffic, drop-by-name-prefix (default: none)",
    )
    serve.add_argument(
        "--pool-label",
        metavar="KEY",
        help="Node label naming its pool (default apps.openyurt.io/nodepool)",
    )
    serve.add_argument(
        "--master-service-addr",
        metavar="HOST:PORT",
        help="where pods reach this proxy as the apiserver (masterservice, forwardkubesvctraffic)",
    )
    serve.add_argument(
        "--consistency",
        metavar="MODE",
        help='strict (default: resourceVersion="" lists go upstream) or cache-first',
    )
    serve.add_argument(
        "--cache-first-resources",
        metavar="RES[,RES...]",
        help="resources served cache-first even in strict mode",
    )
    serve.add_argument(
        "--max-cache-bytes",
        metavar="SIZE",
        help="disk budget of the cache, e.g. 1Gi (default 1Gi; least recently used scopes go first)",
    )
    serve.add_argument(
        "--max-memory-cache-bytes",
        metavar="SIZE",
        help="memory budget of the cache, e.g. 256Mi (default 256Mi; evicted scopes stay on disk)",
    )
    serve.add_argument(
        "--max-watcher-queue-bytes",
        metavar="SIZE",
        help="what one client watch may have queued before it is disconnected (default 16Mi)",
    )
    serve.add_argument(
        "--max-watcher-queues-total-bytes",
        metavar="SIZE",
        help="what all client watches may have queued together; past it the slowest is "
        "disconnected (default 64Mi)",
    )
    serve.add_argument(
        "--max-protobuf-cache-bytes",
        metavar="SIZE",
        help="memory for the protobuf forms of cached objects and watch events, served to "
        "clients that ask for protobuf (default 32Mi; least recently used go first)",
    )
    serve.add_argument(
        "--serve-protobuf",
        type=_true_or_false,
        metavar="true|false",
        help="answer protobuf to clients that prefer it for built-in kinds, as kube-apiserver "
        "does (default true; false: JSON to everyone)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="client connections open at once; at the cap the longest-open idle one is "
        "closed (default 4096, lowered to fit the open-file limit)",
    )
    serve.add_argument(
        "--request-header-timeout",
        type=float,
        metavar="SECONDS",
        help="a client connection that has not sent a complete request head after this "
        "long is closed (default 10)",
    )
    serve.add_argument(
        "--upstream-strategy",
        metavar="failover|round-robin",
        help="how several --server-addr are used (default failover)",
    )
    serve.add_argument(
        "--upstream-watch-list",
        type=_true_or_false,
        metavar="true|false",
        help="sync the cache with watch-list requests, which kube-apiserver compresses "
        "(default true; false: list, then watch)",
    )
    serve.add_argument(
        "--probe-interval",
        type=float,
        metavar="SECONDS",
        help="seconds between upstream /readyz probes (default 0.5)",
    )
    serve.add_argument(
        "--fallback-after",
        type=float,
        metavar="SECONDS",
        help="answer reads from the cache after this long when the link is in doubt (default 1)",
    )
    serve.add_argument(
        "--bookmark-interval",
        type=float,
        metavar="SECONDS",
        help="seconds between watch bookmarks to clients (default 60)",
    )
    serve.add_argument(
        "--secure-listen",
        metavar="HOST:PORT",
        help="HTTPS listener for pods, each forwarded with its own bearer token "
        "(docs/identity.md; default: none)",
    )
    serve.add_argument(
        "--tls-cert-file",
        metavar="FILE",
        help="serving certificate of --secure-listen (re-read when it changes; default: "
        "obtained from the cluster through a CSR, kept in the cache directory's pki/)",
    )
    serve.add_argument(
        "--tls-private-key-file", metavar="FILE", help="private key of --tls-cert-file"
    )
    serve.add_argument(
        "--secure-anonymous-auth",
        type=_true_or_false,
        metavar="true|false",
        help="serve requests without a token on --secure-listen as the proxy itself "
        "(default false: they get 401)",
    )
    serve.add_argument(
        "--serving-cert-renew-before",
        type=float,
        metavar="SECONDS",
        help="without --tls-cert-file the serving certificate comes from the cluster (a CSR "
        "to kubernetes.io/kubelet-serving) and is renewed at 80%% of its life, or when less "
        "than this is left (default: the 80%% rule only)",
    )
    bench = sub.add_parser(
        "bench",
        help="benchmark the proxy against baselines",
        description="Run benchmark suites against direct, nginx, strict and cache-first targets.",
    )
    bench.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help="challenge, scale, outage, restart, bandwidth, watchcache, filters (default: all)",
    )
    bench.add_argument(
        "--against",
        default="sim",
        metavar="sim|real|KUBECONFIG",
        help="upstream: a fresh simulator (default), a real kube-apiserver started for the run, or the cluster of a kubeconfig",
    )
    bench.add_argument(
        "--out", type=Path, default=Path("bench/out"), metavar="DIR", help="report directory"
    )
    bench.add_argument(
        "--runs", type=_positive_int, default=3, metavar="N", help="runs per figure (min 3)"
    )
    bench.add_argument(
        "--targets",
        default="direct,nginx,strict,cache-first",
        metavar="T[,T...]",
        help="which targets to compare (default all four)",
    )
    bench.add_argument(
        "--render-only",
        type=Path,
        metavar="RESULTS_JSON",
        help="run nothing: redraw the charts of an earlier run's results.json into --out",
    )
    bench.add_argument(
        "--no-charts",
        action="store_true",
        help="write the JSON and Markdown report only (draw the PNGs later with --render-only)",
    )
    bench.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    bench.add_argument(
        "--peers",
        default="",
        metavar="P[,P...]",
        help="instead of the suites: one edge node's workload through direct, strict, "
        "cache-first and these peers (yurthub; build it with k8s/build-peers.sh)",
    )
    bench.add_argument(
        "--peer-runs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="runs of --peers, every target side by side in each (default 3, for medians "
        "with min and max: about 8 minutes on 2 cores with the binaries cached)",
    )
    kubeconfig = sub.add_parser(
        "kubeconfig",
        help="write a kubeconfig that points a node component at the proxy",
        description="Write a kubeconfig for COMPONENT (kubelet, kube-proxy, coredns, a CNI "
        "agent...) whose server is the proxy's client listener (docs/node-wiring.md).",
    )
    kubeconfig.add_argument(
        "--component", required=True, metavar="NAME", help="kubelet, kube-proxy, coredns, ..."
    )
    kubeconfig.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="the proxy's client listener (default: the config file's listen, else "
        "127.0.0.1:10261)",
    )
    kubeconfig.add_argument(
        "--config", type=Path, metavar="FILE", help="the proxy's config file, for its listen"
    )
    kubeconfig.add_argument(
        "--out", type=Path, metavar="FILE", help="write here (mode 0600) instead of stdout"
    )
    status = sub.add_parser(
        "status",
        help="print link state, cached scopes and cache size of a running proxy",
        description="Read a running proxy's admin port and print its link state, scopes and "
        "cache size. Exit code 0: ready, 1: not ready, 2: the admin port cannot be reached.",
    )
    status.add_argument(
        "--admin-addr",
        metavar="HOST:PORT",
        help="the proxy's admin listener (default: the config file's adminListen, else "
        "127.0.0.1:10267)",
    )
    status.add_argument(
        "--config", type=Path, metavar="FILE", help="the proxy's config file, for its adminListen"
    )
    status.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="table (default) or json"
    )
    return parser


def _setup_logging(verbosity: int, fmt: str = "text") -> None:
    from edgeproxy import logs

    logs.setup(verbosity, fmt)


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_sim(args: argparse.Namespace) -> int:
    from edgeproxy.sim.app import SimSettings
    from edgeproxy.sim.seed import SeedError
    from edgeproxy.sim.server import SimConfig, serve_forever

    host, port = args.listen
    control_host, control_port = args.control_listen or (None, 0)
    config = SimConfig(
        host=host,
        port=port,
        tls=args.tls,
        tls_dir=args.tls_dir,
        kubeconfig_out=args.kubeconfig_out,
        history=args.history,
        seed_files=tuple(args.seed),
        control_host=control_host,
        control_port=control_port,
        settings=SimSettings(
            bookmark_interval=args.bookmark_interval,
            max_body_bytes=args.max_body_bytes,
            watch_list=args.watch_list,
        ),
    )
    _install_uvloop()
    try:
        asyncio.run(serve_forever(config))
    except SeedError as exc:
        print(f"edge-proxy sim: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"edge-proxy sim: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from edgeproxy import footprint

    footprint.apply()  # before the server's imports and allocations

    from edgeproxy import config as cfg
    from edgeproxy.errors import ConfigError
    from edgeproxy.server.proxyserver import serve_forever

    try:
        file_settings = cfg.load_file(args.config) if args.config else {}
        flags = {}
        for attr in cfg.ServeConfig.__dataclass_fields__:
            value = getattr(args, attr, None)
            if attr == "server_addrs":
                value = args.server_addr and ",".join(args.server_addr)
            elif attr == "drop_name_prefixes":
                value = args.drop_name_prefix
            if value is not None:
                flags[attr] = cfg.convert(attr, value, cfg.flag_name(attr))
        config = cfg.build(file_settings, flags)
    except ConfigError as exc:
        print(f"edge-proxy serve: {exc}", file=sys.stderr)
        return 2
    _install_uvloop()
    try:
        asyncio.run(serve_forever(config))
    except ConfigError as exc:
        print(f"edge-proxy serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"edge-proxy serve: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _true_or_false(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"must be true or false (got {value!r})")
    return value.lower() == "true"


def run_bench(args: argparse.Namespace) -> int:
    from edgeproxy.bench.command import run

    if args.render_only is not None:
        from edgeproxy.bench.report import render_only

        return render_only(args.render_only, args.out)
    if args.against not in ("sim", "real") and not Path(args.against).is_file():
        print(f"edge-proxy bench: --against {args.against}: no such kubeconfig", file=sys.stderr)
        return 2
    targets = tuple(t for t in args.targets.split(",") if t)
    peers = tuple(p for p in args.peers.split(",") if p)
    return run(
        args.suites,
        args.against,
        args.out,
        quick=args.quick,
        runs=args.runs,
        targets=targets,
        peers=peers,
        peer_runs=args.peer_runs,
        charts=not args.no_charts,
    )


def run_kubeconfig(args: argparse.Namespace) -> int:
    from edgeproxy import config as cfg
    from edgeproxy import nodewiring
    from edgeproxy.errors import ConfigError

    try:
        listen = args.listen
        if listen is None and args.config is not None:
            listen = cfg.load_file(args.config).get("listen")
        text = nodewiring.kubeconfig_for(
            args.component, nodewiring.proxy_url(listen or nodewiring.DEFAULT_LISTEN)
        )
        if args.out is None:
            sys.stdout.write(text)
        else:
            nodewiring.write_file(args.out, text)
    except ConfigError as exc:
        print(f"edge-proxy kubeconfig: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"edge-proxy kubeconfig: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    return 0


def run_status(args: argparse.Namespace) -> int:
    from edgeproxy import config as cfg
    from edgeproxy import status
    from edgeproxy.errors import ConfigError

    addr = args.admin_addr
    if addr is None and args.config is not None:
        try:
            addr = cfg.load_file(args.config).get("admin_listen")
        except ConfigError as exc:
            print(f"edge-proxy status: {exc}", file=sys.stderr)
            return status.UNREACHABLE
    return status.run(addr or status.default_admin_addr(), args.output)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.logging_format)
    commands = {
        "sim": run_sim,
        "serve": run_serve,
        "bench": run_bench,
        "kubeconfig": run_kubeconfig,
        "status": run_status,
    }
    return commands[args.command](args)
