"""Filters: the servicetopology filter at 1,000 Services x 50 endpoints.

Only the edge proxy filters: it runs as the strict target with
`--filters=servicetopology --node-name=node-007`; direct and nginx have no
filter to measure, and cache-first serves watches from the same filtered
views, so both are skipped. In a namespace of its own the suite creates
`services` Services annotated `openyurt.io/topologyKeys:
openyurt.io/nodepool`, each with one EndpointSlice (~10 KB) of
`endpoints_per_service` endpoints spread evenly over the 100 Nodes of the
shared dataset, and gives those Nodes pool labels (`apps.openyurt.io/nodepool`,
pools of 10: node-000..009 are pool-00, ...); at 50 endpoints every Service
has 5 endpoints in every pool. The clients are informers of all
EndpointSlices with kube-proxy's label selector, told apart by their
User-Agent: `kube-proxy/...` is served its pool's endpoints (a filtered
view), `kubelet/...` is not a client the filter applies to. At the end the
pool labels are removed and the namespace deleted.

- **node move**, per run (after one unmeasured move): a kube-proxy-like
  client lists and watches; the local node's pool label is merge-patched to
  the other pool (pool-00 and pool-01 in turn), which changes every
  Service's filtered endpoints. The figures: the slices whose filtered
  endpoints change (computed by the suite), the MODIFIED events the client
  received (each checked against the expected endpoints, the list too; any
  beyond those due, within 0.5 s of the last, are counted), the time from
  the PATCH's answer to the first and to the last expected event, and the
  proxy's own re-filter time and re-filtered objects (deltas of
  `edgeproxy_filter_refilter_duration_seconds{input="nodes"}` and
  `edgeproxy_filter_refiltered_objects{input="nodes"}` on /metrics). Then a
  label no filter reads is added to another node (node-042): what the proxy
  spends on it (nothing is due: no re-filter), and the events it sends (none
  are due). Also counted: the events the client got between its watch's
  start and the PATCH, when nothing changed (none are due: a list after a
  re-filter is past its batch).
- **cost per event**, per run and client kind: a fresh proxy (empty cache
  directory) and one informer, `filter_updates / 10` unmeasured updates,
  then `filter_updates` EndpointSlice updates (an annotation, so each is one
  event for either client; the filter decodes and filters the whole slice
  either way) written straight to the simulator at `filter_rate`/s. Proxy
  CPU (user + system, /proc, in 10 ms ticks) from the first write to the
  last event received, per event delivered, and the event latency from each
  write's answer to its arrival. Both kinds run in the same run on the same
  objects, in alternating order; CPU cannot be split between two
  connections of one process, so each kind has the proxy to itself, and
  "filtered / unfiltered" is the ratio of the run's two figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp
import msgspec

from edgeproxy.bench import dataset, objects
from edgeproxy.bench.baselines import Target
from edgeproxy.bench.kubeclient import Api, BenchError
from edgeproxy.bench.procstat import ProcGroup, Usage
from edgeproxy.bench.runner import Run, percentile
from edgeproxy.bench.session import Session, SuiteResult

NAME = "filters"
TITLE = "servicetopology: re-filter after a node label change, CPU per filtered event"
OWN_UPSTREAM_ONLY = "creates Services and EndpointSlices and relabels the Nodes"

NAMESPACE = "bench-topo"
SERVICES_PATH = f"/api/v1/namespaces/{NAMESPACE}/services"
SLICES_PATH = f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"
# As kube-proxy lists and watches them: all namespaces, its label selector.
KUBE_PROXY_SELECTOR = "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"
WATCHED = "/apis/discovery.k8s.io/v1/endpointslices?labelSelector=" + quote(KUBE_PROXY_SELECTOR)
KUBE_PROXY_UA = "kube-proxy/v1.30.2 (linux/amd64) kubernetes/bench"
KUBELET_UA = "kubelet/v1.30.2 (linux/amd64) kubernetes/bench"
CLIENTS = {"filtered": KUBE_PROXY_UA, "unfiltered": KUBELET_UA}

LOCAL = dataset.LOCAL_NODE
OTHER = objects.node_name(42)  # the node whose unrelated label changes
POOL_SIZE = 10
POOLS = ("pool-00", "pool-01")  # the local node (node-007) moves between these
PROXY_ARGS = (
    "--filters=servicetopology",
    f"--node-name={LOCAL}",
    f"--pool-label={objects.POOL_LABEL}",
)
SKIP = {
    "direct": "no proxy, no filter: every client sees every endpoint",
    "nginx": "no filter: every client sees every endpoint",
    "cache-first": "watches are served from the same filtered views in both modes: strict only",
}
SYNC_TIMEOUT = 60.0
DELIVERY_TIMEOUT = 30.0
UNRELATED_WAIT = 3.0  # for the proxy to re-filter (or not) after an unrelated label
QUIET = 0.5  # after the last expected event: later ones are counted as extra
WRITERS = 16
SEQ = "bench/seq"
REFILTER_SECONDS = "edgeproxy_filter_refilter_duration_seconds"
REFILTERED = "edgeproxy_filter_refiltered_objects_total"


def home_pool(node: str) -> str:
    return f"pool-{int(node.removeprefix('node-')) // POOL_SIZE:02d}"


# -- the client ------------------------------------------------------------------------


class _Meta(msgspec.Struct):
    name: str = ""
    namespace: str = ""
    resourceVersion: str = ""
    annotations: dict[str, str] | None = None


class _Endpoint(msgspec.Struct):
    addresses: list[str] = msgspec.field(default_factory=list)


class _Obj(msgspec.Struct):
    metadata: _Meta = msgspec.field(default_factory=_Meta)
    endpoints: list[_Endpoint] | None = None
    code: int = 0  # a Status in an ERROR frame


class _Frame(msgspec.Struct):
    type: str
    object: _Obj


class _ListMeta(msgspec.Struct):
    resourceVersion: str = ""


class _List(msgspec.Struct):
    items: list[_Obj] = msgspec.field(default_factory=list)
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)


_decode_frame = msgspec.json.Decoder(_Frame).decode
_decode_list = msgspec.json.Decoder(_List).decode


def _ips(obj: _Obj) -> tuple[str, ...]:
    return tuple(a for ep in obj.endpoints or () for a in ep.addresses)


@dataclass(frozen=True, slots=True)
class Seen:
    """One object event of the suite's namespace, as the client read it."""

    at: int  # monotonic ns of the read that brought it
    type: str
    name: str
    rv: int
    seq: int
    ips: tuple[str, ...]


@dataclass(slots=True)
class SliceWatch:
    """An informer of EndpointSlices that keeps every event (the suite counts them)."""

    api: Api
    path: str
    listed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    list_rv: int = 0
    events: list[Seen] = field(default_factory=list)
    # bench/seq -> monotonic ns of its first arrival
    by_seq: dict[int, int] = field(default_factory=dict)
    backwards: int = 0  # object events whose RV is below the previous one's
    errors: list[str] = field(default_factory=list)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    _rv: str = ""
    _last_rv: int = 0
    _task: asyncio.Task[None] | None = None

    def start(self) -> SliceWatch:
        self._task = asyncio.create_task(self._run(), name=f"slices:{self.path}")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_synced(self, within: float) -> None:
        try:
            await asyncio.wait_for(self.synced.wait(), within)
        except TimeoutError:
            raise BenchError(f"no list + watch within {within} s: {self.errors[-3:]}") from None

    async def wait_events(self, count: int, within: float) -> bool:
        deadline = time.monotonic() + within
        while len(self.events) < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def wait_seqs(self, seqs: list[int], within: float) -> bool:
        deadline = time.monotonic() + within
        while not all(s in self.by_seq for s in seqs):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def _list(self) -> None:
        status, body = await self.api.get_bytes(f"{self.path}&resourceVersion=0")
        if status != 200:
            raise BenchError(f"list {self.path}: HTTP {status} {body[:200]!r}")
        listed = _decode_list(body)
        self.listed = {
            o.metadata.name: _ips(o) for o in listed.items if o.metadata.namespace == NAMESPACE
        }
        self._rv = listed.metadata.resourceVersion
        self.list_rv = self._last_rv = int(self._rv)

    async def _run(self) -> None:
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                need_list = await self._watch()
                if not need_list:
                    self.errors.append("watch ended; resumed")
            except (BenchError, aiohttp.ClientError, ValueError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                await asyncio.sleep(0.2)

    async def _watch(self) -> bool:
        """One watch stream; True when it ended with 410 Gone."""
        url = (
            f"{self.api.url}{self.path}&watch=true&allowWatchBookmarks=true"
            f"&resourceVersion={self._rv}"
        )
        async with self.api.http.get(url) as resp:
            if resp.status == 410:
                return True
            if resp.status != 200:
                raise BenchError(f"watch {self.path}: HTTP {resp.status}")
            self.synced.set()
            rest = b""
            async for chunk in resp.content.iter_any():
                at = time.monotonic_ns()
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    if line and self._frame(line, at):
                        return True
        return False

    def _frame(self, line: bytes, at: int) -> bool:
        frame = _decode_frame(line)
        meta = frame.object.metadata
        if frame.type == "ERROR":
            self.errors.append(f"ERROR frame {frame.object.code}")
            return frame.object.code == 410
        if meta.resourceVersion:
            self._rv = meta.resourceVersion
        if frame.type == "BOOKMARK" or meta.namespace != NAMESPACE:
            return False
        rv = int(meta.resourceVersion)
        self.backwards += rv < self._last_rv
        self._last_rv = max(rv, self._last_rv)
        seq = int((meta.annotations or {}).get(SEQ, "0"))
        self.events.append(Seen(at, frame.type, meta.name, rv, seq, _ips(frame.object)))
        self.by_seq.setdefault(seq, at)
        return False


# -- the proxy's own figures ----------------------------------------------------------------


def _sample(text: str, name: str) -> float:
    prefix = f'{name}{{input="nodes"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


@dataclass(frozen=True, slots=True)
class Refilters:
    """The proxy's re-filter metrics for node changes: seconds, count, objects."""

    seconds: float
    count: float
    objects: float

    @classmethod
    async def read(cls, target: Target) -> Refilters:
        assert target.proxy is not None
        text = str(await asyncio.to_thread(target.proxy.admin, "/metrics"))
        return cls(
            _sample(text, REFILTER_SECONDS + "_sum"),
            _sample(text, REFILTER_SECONDS + "_count"),
            _sample(text, REFILTERED),
        )

    async def next(self, target: Target, within: float = 10.0) -> Refilters:
        """The metrics once the proxy has re-filtered at least once more."""
        deadline = time.monotonic() + within
        while True:
            now = await Refilters.read(target)
            if now.count > self.count or time.monotonic() > deadline:
                return now
            await asyncio.sleep(0.02)


# -- the suite --------------------------------------------------------------------------


class Filters:
    def __init__(self, session: Session) -> None:
        self.s = session
        self.writer = session.upstream.writer()
        self.services = session.sizes.services
        self.per_service = session.sizes.endpoints_per_service
        self.local_pool = home_pool(LOCAL)
        self.seq = 0
        self.seeded = False
        self.seed_seconds = 0.0
        self.min_rate = math.inf
        self.extra_events = 0
        self.replayed_above_list = 0
        self.views: list[str] = []

    # -- data --------------------------------------------------------------------------

    async def seed(self) -> None:
        if self.seeded:
            return
        t0 = time.perf_counter()
        await self.s.dataset.ensure_nodes(self.writer)
        await self.writer.ensure_namespace(NAMESPACE)
        await self.writer.create_all(
            SERVICES_PATH,
            [objects.topology_service_body(NAMESPACE, i) for i in range(self.services)],
        )
        await self.writer.create_all(
            SLICES_PATH,
            [
                objects.endpointslice_body(NAMESPACE, i, self.per_service)
                for i in range(self.services)
            ],
        )
        await self._label_nodes({}, pools=True)
        self.seeded = True
        self.seed_seconds = time.perf_counter() - t0

    async def _label_nodes(self, labels: dict[str, str | None], *, pools: bool) -> None:
        sem = asyncio.Semaphore(WRITERS)

        async def one(node: str) -> None:
            mine = {**labels, objects.POOL_LABEL: home_pool(node)} if pools else labels
            async with sem:
                await self.writer.patch(f"/api/v1/nodes/{node}", {"metadata": {"labels": mine}})

        await asyncio.gather(*(one(objects.node_name(n)) for n in range(objects.NODES)))

    async def cleanup(self) -> None:
        """Leave the shared Nodes as the dataset made them; drop the namespace."""
        if not self.seeded:
            return
        await self._label_nodes({objects.POOL_LABEL: None, "bench/unrelated": None}, pools=False)
        await self.writer.delete(f"/api/v1/namespaces/{NAMESPACE}")

    def expected(self, pool: str) -> dict[str, tuple[str, ...]]:
        """Slice name -> the endpoint IPs a kube-proxy on node-007 sees, node-007 in `pool`."""

        def pool_of(node: str) -> str:
            return pool if node == LOCAL else home_pool(node)

        out: dict[str, tuple[str, ...]] = {}
        for i in range(self.services):
            eps = [objects.slice_endpoint(i, k, self.per_service) for k in range(self.per_service)]
            out[objects.endpointslice_name(i)] = tuple(
                ip for ip, node in eps if pool_of(node) == pool
            )
        return out

    def unfiltered(self) -> dict[str, tuple[str, ...]]:
        return {
            objects.endpointslice_name(i): tuple(
                objects.slice_endpoint(i, k, self.per_service)[0] for k in range(self.per_service)
            )
            for i in range(self.services)
        }

    async def _updates(self, count: int) -> dict[int, int]:
        """`count` slice updates at filter_rate/s; bench/seq -> answered monotonic ns."""
        rate = self.s.sizes.filter_rate
        answered: dict[int, int] = {}
        seqs = list(range(self.seq + 1, self.seq + count + 1))
        self.seq += count
        t0 = time.monotonic()
        todo = iter(enumerate(seqs))

        async def writer() -> None:
            for k, seq in todo:
                if (wait := t0 + k / rate - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                path = f"{SLICES_PATH}/{objects.endpointslice_name(seq % self.services)}"
                body = {"metadata": {"annotations": {SEQ: str(seq)}}}
                _, answered[seq] = await self.writer.patch(path, body)

        await asyncio.gather(*(writer() for _ in range(min(WRITERS, count))))
        if count > 1:
            self.min_rate = min(self.min_rate, count / (time.monotonic() - t0))
        return answered

    # -- node move --------------------------------------------------------------------------

    async def prepare_move(self, target: Target) -> None:
        """Seed; one unmeasured move, so every run lists after a re-filter as the last change."""
        await self.seed()
        await self.move(target, -1)

    async def move(self, target: Target, i: int) -> Run:
        new_pool = POOLS[1] if self.local_pool == POOLS[0] else POOLS[0]
        before, after = self.expected(self.local_pool), self.expected(new_pool)
        changed = {name for name in after if after[name] != before[name]}
        async with Api(target.url, headers={"User-Agent": KUBE_PROXY_UA}) as api:
            watch = SliceWatch(api, WATCHED).start()
            try:
                await watch.wait_synced(SYNC_TIMEOUT)
                await asyncio.sleep(QUIET)  # nothing changes: any event now is a replay
                mark = len(watch.events)
                wrong = sum(watch.listed.get(name) != ips for name, ips in before.items())
                m0 = await Refilters.read(target)
                body = {"metadata": {"labels": {objects.POOL_LABEL: new_pool}}}
                _, answered = await self.writer.patch(f"/api/v1/nodes/{LOCAL}", body)
                self.local_pool = new_pool
                await watch.wait_events(mark + len(changed), DELIVERY_TIMEOUT)
                m1 = await m0.next(target)
                await asyncio.sleep(QUIET)
                moved = watch.events[mark:]
                # A label no filter reads, on another node.
                self.seq += 1
                body = {"metadata": {"labels": {"bench/unrelated": str(self.seq)}}}
                await self.writer.patch(f"/api/v1/nodes/{OTHER}", body)
                m2 = await m1.next(target, UNRELATED_WAIT)
                await asyncio.sleep(QUIET)
                unrelated = len(watch.events) - mark - len(moved)
            finally:
                await watch.stop()
        replayed = watch.events[:mark]
        if watch.backwards:
            raise BenchError(f"node move: {watch.backwards} events with an RV below an earlier one")
        if any(e.rv <= watch.list_rv for e in moved):
            raise BenchError(f"node move: an event at or below the list's RV {watch.list_rv}")
        got = {e.name for e in moved}
        wrong += len(changed - got)
        wrong += sum(e.type != "MODIFIED" or e.ips != after.get(e.name) for e in moved)
        if i >= 0:
            self.extra_events += max(0, len(moved) - len(changed)) + unrelated
            self.replayed_above_list += sum(e.rv > watch.list_rv for e in replayed)
        last = moved[len(changed) - 1].at if len(moved) >= len(changed) and changed else None
        return {
            "node move: slices whose endpoints change": float(len(changed)),
            "node move: MODIFIED events received": float(len(moved)),
            "node move: wrong endpoint sets (list + events)": float(wrong),
            "node move: PATCH answered -> first event (ms)": (
                (moved[0].at - answered) / 1e6 if moved else math.nan
            ),
            "node move: PATCH answered -> last expected event (ms)": (
                (last - answered) / 1e6 if last is not None else math.nan
            ),
            "node move: proxy re-filter time (ms)": 1000 * (m1.seconds - m0.seconds),
            "node move: proxy re-filters": m1.count - m0.count,
            "node move: objects re-filtered (proxy)": m1.objects - m0.objects,
            "unrelated node label: proxy re-filter time (ms)": 1000 * (m2.seconds - m1.seconds),
            "unrelated node label: proxy re-filters": m2.count - m1.count,
            "unrelated node label: events received": float(unrelated),
            "list + watch after a move: events replayed at the list's RV": float(len(replayed)),
        }

    # -- cost per event ---------------------------------------------------------------------

    async def prepare_cost(self, target: Target) -> None:
        await self.seed()

    async def _fresh_proxy(self, target: Target, tag: str) -> None:
        proxy = target.proxy
        assert proxy is not None
        proxy.kill()
        proxy.cache_dir = self.s.workdir / f"{NAME}-{tag}"
        await asyncio.to_thread(proxy.start)
        assert proxy.proc is not None
        target.procs = ProcGroup(proxy.proc.pid)

    async def _cost_phase(self, target: Target, kind: str, i: int) -> dict[str, float]:
        await self._fresh_proxy(target, f"cost-{kind}-{i}")
        assert target.procs is not None
        count = self.s.sizes.filter_updates
        want = self.expected(self.local_pool) if kind == "filtered" else self.unfiltered()
        async with Api(target.url, headers={"User-Agent": CLIENTS[kind]}) as api:
            watch = SliceWatch(api, WATCHED).start()
            try:
                await watch.wait_synced(SYNC_TIMEOUT)
                warm = await self._updates(max(5, count // 10))
                if not await watch.wait_seqs(list(warm), DELIVERY_TIMEOUT):
                    raise BenchError(f"{kind}: the warm-up updates did not all arrive")
                mark = len(watch.events)
                usage = Usage(target.procs).start()
                answered = await self._updates(count)
                await watch.wait_seqs(list(answered), DELIVERY_TIMEOUT)
                cpu = usage.cpu()
            finally:
                await watch.stop()
        events = watch.events[mark:]
        wrong = sum(want.get(name) != ips for name, ips in watch.listed.items())
        wrong += sum(e.type != "MODIFIED" or e.ips != want.get(e.name) for e in events)
        lags = [(watch.by_seq[s] - at) / 1e6 for s, at in answered.items() if s in watch.by_seq]
        return {
            "CPU per event (µs)": 1e6 * cpu / len(lags) if lags else math.nan,
            "event latency p50 (ms)": percentile(lags, 0.5),
            "event latency p99 (ms)": percentile(lags, 0.99),
            "events delivered (%)": 100 * len(lags) / count,
            "wrong endpoint sets": float(wrong),
        }

    async def cost(self, target: Target, i: int) -> Run:
        kinds = ["unfiltered", "filtered"]
        got = {k: await self._cost_phase(target, k, i) for k in (kinds[::-1] if i % 2 else kinds)}
        run: Run = {}
        for figure in got["unfiltered"]:
            for kind in ("filtered", "unfiltered"):
                run[f"{kind} client: {figure}"] = got[kind][figure]
        # CPU is counted in clock ticks (10 ms): at --quick sizes a phase may show none.
        filtered, unfiltered = (got[k]["CPU per event (µs)"] for k in ("filtered", "unfiltered"))
        run["filtered / unfiltered CPU per event (x)"] = (
            filtered / unfiltered if unfiltered > 0 else math.nan
        )
        return run

    async def debug_views(self, target: Target) -> None:
        """The filtered views the proxy holds after the move runs (for the notes)."""
        assert target.proxy is not None
        cache = await asyncio.to_thread(target.proxy.admin, "/debug/cache")
        for view in cache.get("filteredViews", []):
            self.views.append(
                f"{view['scope']} [{view['chain']}]: {view['objects']} objects,"
                f" {view['refilters']} re-filters"
            )


async def run(session: Session) -> SuiteResult:
    result = SuiteResult(NAME, TITLE, __doc__ or "")
    filters = Filters(session)
    try:

        async def move(target: Target, i: int) -> Run:
            run = await filters.move(target, i)
            if i == session.sizes.runs - 1:
                await filters.debug_views(target)
            return run

        session.say(f"{NAME}: node label changes, a kube-proxy-like watcher")
        await session.each_target(
            result,
            ("strict", *SKIP),
            move,
            prepare=filters.prepare_move,
            proxy_args=PROXY_ARGS,
            skip=SKIP,
        )
        session.say(f"{NAME}: CPU per event, filtered and unfiltered watchers")
        await session.each_target(
            result, ("strict",), filters.cost, prepare=filters.prepare_cost, proxy_args=PROXY_ARGS
        )
    finally:
        try:
            await filters.cleanup()
        finally:
            await filters.writer.close()
    _judge(result, filters, session)
    return result


def _judge(result: SuiteResult, filters: Filters, session: Session) -> None:
    sizes = session.sizes
    figures = result.targets.get("strict", {})
    for name, spread in figures.items():
        if "wrong endpoint sets" in name and spread["max"] > 0:
            result.failures.append(f"strict: {name}: {spread['max']:.0f} in a run")
        if "events delivered" in name and spread["min"] < 100:
            result.failures.append(f"strict: {name}: {spread['min']:.1f}% in a run")
    moved = figures.get("node move: MODIFIED events received")
    due = figures.get("node move: slices whose endpoints change")
    if moved is not None and due is not None and moved["min"] < due["max"]:
        result.failures.append("strict: node move: fewer MODIFIED events than slices changed")
    if filters.extra_events:
        result.notes.append(f"{filters.extra_events} events beyond those due (all runs)")
    if filters.replayed_above_list:
        result.failures.append(
            f"strict: {filters.replayed_above_list} events after a list, before any change"
        )
    replayed = figures.get("list + watch after a move: events replayed at the list's RV")
    if replayed is not None and replayed["max"] > 0:
        # A list after a re-filter is past its batch (cache/views.py, "sealed").
        result.failures.append(
            f"strict: a watch from a list's RV after a re-filter got {replayed['max']:.0f}"
            " events of that re-filter again"
        )
    unrelated = figures.get("unrelated node label: proxy re-filters")
    if unrelated is not None and unrelated["max"] > 0:
        result.failures.append("strict: a node label no filter reads caused a re-filter")
    result.notes.append(
        f"{sizes.services} Services x {sizes.endpoints_per_service} endpoints"
        f" (EndpointSlices), pools of {POOL_SIZE} nodes; seeded in {filters.seed_seconds:.1f} s"
    )
    if math.isfinite(filters.min_rate):
        result.notes.append(
            f"cost per event: {sizes.filter_updates} updates per client kind and run at"
            f" {sizes.filter_rate:.0f}/s (slowest achieved {filters.min_rate:.0f}/s)"
        )
    result.notes += [f"filtered view: {v}" for v in filters.views]
