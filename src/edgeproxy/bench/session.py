"""One benchmark session: the upstream, the sizes, the suites' shared state.

`Session` is what every suite receives: where the cloud is, how big things
are, how many runs, the progress printer and the shared dataset. Its
`each_target` helper is the one loop all suites use: start a target (or
record why it is skipped), repeat a measured run `runs` times, aggregate the
runs into median/min/max, stop the target.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeproxy.bench.baselines import Skip, Target, open_target
from edgeproxy.bench.cloud import Upstream
from edgeproxy.bench.dataset import Dataset, DatasetSizes
from edgeproxy.bench.kubeclient import BenchError
from edgeproxy.bench.runner import MIN_RUNS, Progress, Run, aggregate, repeat


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big and how long; FULL is `make bench`'s default set (< 10 min on 2 cores)."""

    runs: int
    challenge_objects: int
    resourceusage: int
    loop_seconds: float
    wrk_seconds: float
    pods: int
    services: int
    endpoints_per_service: int
    watchers: int
    watch_changes: int
    outage_objects: int
    outage_changes: int
    outage_seconds: float
    bandwidth_seconds: float
    churn_per_s: float
    fanout_objects: int
    fanout_rate: float
    fanout_seconds: float
    filter_updates: int
    filter_rate: float


FULL = Sizes(
    runs=MIN_RUNS,
    challenge_objects=100,  # as the challenge
    resourceusage=1_000,  # as the challenge: ~1.1 MB per list
    loop_seconds=4.0,  # the challenge loops 60 s; 4 s x 3 runs keeps the set under 10 min
    wrk_seconds=2.0,
    pods=10_000,
    services=1_000,
    endpoints_per_service=50,
    watchers=100,
    watch_changes=100,
    outage_objects=50,
    outage_changes=20,
    outage_seconds=3.0,
    bandwidth_seconds=6.0,
    churn_per_s=10.0,
    fanout_objects=50,
    fanout_rate=1_000.0,  # watchcache: writes/s straight to the sim, 100 watchers
    fanout_seconds=10.0,
    filter_updates=1_000,  # filters: EndpointSlice updates per client kind and run
    filter_rate=200.0,
)
QUICK = Sizes(
    runs=MIN_RUNS,
    challenge_objects=10,
    resourceusage=50,
    loop_seconds=0.5,
    wrk_seconds=1.0,
    pods=300,
    services=20,
    endpoints_per_service=5,
    watchers=5,
    watch_changes=10,
    outage_objects=5,
    outage_changes=3,
    outage_seconds=1.0,
    bandwidth_seconds=1.0,
    churn_per_s=10.0,
    fanout_objects=10,
    fanout_rate=200.0,
    fanout_seconds=1.0,
    filter_updates=40,
    filter_rate=100.0,
)

# `--against real`: the same sizes; a real apiserver takes the dataset through its API.
REAL = FULL


@dataclass(slots=True)
class SuiteResult:
    """A suite's figures per target, and what a reader must know about them."""

    name: str
    title: str
    about: str
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Figure names in the order the suite measures them (a row per figure).
    figures: list[str] = field(default_factory=list)
    runs: dict[str, list[Run]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "about": self.about,
            "figures": self.figures,
            "targets": self.targets,
            "skipped": self.skipped,
            "notes": self.notes,
            "failures": self.failures,
            "runs": {
                t: [{k: _json_float(v) for k, v in r.items()} for r in rs]
                for t, rs in self.runs.items()
            },
        }


def _json_float(v: float) -> float | None:
    return None if math.isnan(v) else v


@dataclass(slots=True)
class Session:
    upstream: Upstream
    sizes: Sizes
    targets: tuple[str, ...]
    progress: Progress
    workdir: Path
    dataset: Dataset = field(init=False)

    def __post_init__(self) -> None:
        s = self.sizes
        self.dataset = Dataset(DatasetSizes(s.pods, s.services, s.endpoints_per_service))

    def say(self, text: str) -> None:
        self.progress.say(text)

    async def each_target(
        self,
        result: SuiteResult,
        targets: Iterable[str],
        once: Callable[[Target, int], Awaitable[Run]],
        *,
        prepare: Callable[[Target], Awaitable[None]] | None = None,
        proxy_args: tuple[str, ...] = (),
        skip: dict[str, str] | None = None,
        upstream: Upstream | None = None,
        opener: Callable[[str], Target] | None = None,
    ) -> None:
        """For each selected target: start it, `prepare`, `runs` x `once`, aggregate, stop.

        `opener` replaces `open_target` (e.g. nginx serving a static file). A
        suite may call this more than once per target (one measurement each):
        the figures of the same run index are merged into one run.
        """
        for name in targets:
            if name not in self.targets:
                continue
            if skip and name in skip:
                result.skipped[name] = skip[name]
                continue
            try:
                # In a thread: the event loop keeps serving (the relay) meanwhile.
                if opener is not None:
                    target = await asyncio.to_thread(opener, name)
                else:
                    target = await asyncio.to_thread(
                        open_target,
                        name,
                        upstream or self.upstream,
                        *proxy_args,
                        workdir=self.workdir / f"{result.name}-{name}",
                    )
            except Skip as exc:
                result.skipped[name] = str(exc)
                self.say(f"{result.name} / {name}: skipped: {exc}")
                continue
            try:
                if prepare is not None:
                    await prepare(target)

                async def one(i: int, target: Target = target) -> Run:
                    return await once(target, i)

                runs = await repeat(self.progress, f"{result.name} / {name}", self.sizes.runs, one)
                merged = result.runs.setdefault(name, [])
                for k, run in enumerate(runs):
                    if k < len(merged):
                        merged[k].update(run)
                    else:
                        merged.append(run)
                    result.figures += [f for f in run if f not in result.figures]
                result.targets.setdefault(name, {}).update(aggregate(runs))
            except (BenchError, OSError, RuntimeError) as exc:
                result.failures.append(f"{name}: {exc}")
                self.say(f"{result.name} / {name}: FAILED: {exc}")
                traceback.print_exc()
            finally:
                with contextlib.suppress(OSError):
                    target.close()
