"""The journal under real faults: a full disk, a file size limit, a damaged page, another owner.

Only corruption may cost cached data, and only the damaged part of it
(storage/database.py). Everything else -- no room, a write error, files the
proxy may not write -- keeps the cache: the proxy serves what it can read
(read-only if need be), says so on /readyz, keeps changes in memory, and
writes them when it can again. Real processes and real faults: a tiny tmpfs
(needs mount, i.e. root), RLIMIT_FSIZE (no root), bytes overwritten in a
real cache.db, and a proxy run as another user (root, to switch users).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edgeproxy.testing import ProxyProcess, SimProcess

# -- helpers ---------------------------------------------------------------------


class FaultyProxy(ProxyProcess):
    """`edge-proxy serve` with a fault set up in the child before it starts.

    Its output goes through a pipe, copied to the log by a thread of the
    test: a file size limit on the child must not hit its own log.
    """

    def __init__(self, *args: Any, preexec: Callable[[], None] | None = None, **kw: Any) -> None:
        self.preexec = preexec
        super().__init__(*args, **kw)

    def start(self, timeout: float = 20.0) -> float:
        args = [
            sys.executable, "-m", "edgeproxy", "serve",
            f"--kubeconfig={self.upstream_kubeconfig}",
            f"--listen=127.0.0.1:{self.port}",
            f"--admin-listen=127.0.0.1:{self.admin_port}",
            f"--cache-dir={self.cache_dir}",
            *self.extra_args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        started = time.monotonic()
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, preexec_fn=self.preexec
        )
        self.proc = proc
        log = self._log

        def copy() -> None:
            assert proc.stdout is not None
            with proc.stdout:
                for line in proc.stdout:
                    log.write(line)
                    log.flush()

        threading.Thread(target=copy, daemon=True, name="proxy-log").start()
        while time.monotonic() < started + timeout:
            if proc.poll() is not None:
                time.sleep(0.2)
                raise RuntimeError(f"edge-proxy exited early:\n{self.log()}")
            with contextlib.suppress(OSError):
                if self.admin("/healthz") == "ok":
                    return time.monotonic() - started
            time.sleep(0.05)
        raise RuntimeError(f"edge-proxy not ready after {timeout}s:\n{self.log()}")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def make_namespace(
    http: aiohttp.ClientSession, sim: SimProcess, prefix: str, objects: int, pad: int = 200
) -> str:
    name = f"{prefix}-{time.monotonic_ns() % 10**9}"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    async with http.post(f"{sim.url}/api/v1/namespaces", json=body) as r:
        assert r.status == 201, await r.text()
    for i in range(objects):
        await create(http, sim, name, f"cm-{i:03d}", f"MARK-{name}-{i:03d}-" + "x" * pad)
    return name


async def create(http: aiohttp.ClientSession, sim: SimProcess, ns: str, name: str, v: str) -> None:
    url = f"{sim.url}/api/v1/namespaces/{ns}/configmaps"
    async with http.post(url, json={"metadata": {"name": name}, "data": {"v": v}}) as r:
        assert r.status == 201, await r.text()


async def names_in(
    http: aiohttp.ClientSession, proxy: ProxyProcess, ns: str, query: str = ""
) -> tuple[int, list[str]]:
    url = f"{proxy.url}/api/v1/namespaces/{ns}/configmaps{query}"
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=25)) as r:
        body = await r.read()
        if r.status != 200:
            return r.status, []
    return 200, sorted(o["metadata"]["name"] for o in json.loads(body)["items"])


async def cache(http: aiohttp.ClientSession, proxy: ProxyProcess, ns: str) -> list[str]:
    """List twice (the second starts a reflector): the scope is cached and kept current."""
    for _ in range(2):
        status, names = await names_in(http, proxy, ns)
        assert status == 200
    return names


async def eventually(predicate: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def journal_line(proxy: ProxyProcess) -> str:
    for line in proxy.admin("/readyz?verbose").splitlines():
        if "journal" in line:
            return line
    raise AssertionError("no journal check on /readyz?verbose")


def journal_stats(proxy: ProxyProcess) -> dict[str, Any]:
    return dict(proxy.admin("/debug/cache")["journal"])


def run(*cmd: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, check=True, capture_output=True, **kw)


def moved_aside(cache_dir: Path) -> list[str]:
    """Cache files moved aside (their -wal and -shm, if any, go with them)."""
    return [
        p.name
        for p in cache_dir.iterdir()
        if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))
    ]


async def journaled(proxy: ProxyProcess, scopes: int) -> None:
    await eventually(lambda: journal_stats(proxy)["scopes"] >= scopes, 10, "scopes journaled")


# -- a write fault that goes away: the same story for a full disk and a size limit --


async def fault_then_recover(
    sim: SimProcess,
    http: aiohttp.ClientSession,
    workdir: Path,
    cache_dir: Path,
    *,
    start_faulty: Callable[[], ProxyProcess],
    lift: Callable[[ProxyProcess], None],
    expect: str,
) -> None:
    """Cache a scope; start with the fault, offline; serve; write while faulty; lift; restart."""
    ns = await make_namespace(http, sim, "wfault", 20)
    with ProxyProcess(sim.kubeconfig, workdir=workdir / "first", cache_dir=cache_dir) as proxy:
        cached = await cache(http, proxy, ns)
        await journaled(proxy, 1)
    assert len(cached) == 20

    sim.fault(blackhole=True)
    proxy = start_faulty()
    try:
        # Offline, on a disk it cannot write: the cache is there, not discarded.
        status, names = await names_in(http, proxy, ns)
        assert (status, names) == (200, cached), proxy.log()
        assert moved_aside(cache_dir) == []
        sim.heal()
        await eventually(
            lambda: all(s["healthy"] for s in proxy.admin("/debug/cache")["upstream"]), 10, "link"
        )
        await cache(http, proxy, ns)  # the reflector runs again
        await create(http, sim, ns, "while-faulty", "new")
        # Served from memory at once, though the journal cannot write it.
        await eventually(
            lambda: "[-]journal" in journal_line(proxy), 15, "the journal fault on /readyz"
        )
        line = journal_line(proxy)
        assert expect in line, line
        assert "not durable" in line, line
        assert journal_stats(proxy)["errors"] > 0
        assert "edgeproxy_journal_writable 0.0" in proxy.admin("/metrics")
        status, names = await names_in(http, proxy, ns, "?resourceVersion=0")
        assert status == 200 and "while-faulty" in names
        # The fault goes away: what was kept in memory is written.
        lift(proxy)
        await eventually(lambda: journal_line(proxy) == "[+]journal ok", 20, "journal ok")
        assert "edgeproxy_journal_writable 1.0" in proxy.admin("/metrics")
    finally:
        sim.heal()
        proxy.close()
    sim.fault(blackhole=True)
    try:
        with ProxyProcess(sim.kubeconfig, workdir=workdir / "last", cache_dir=cache_dir) as last:
            status, names = await names_in(http, last, ns)
            assert status == 200 and names == sorted([*cached, "while-faulty"]), last.log()
    finally:
        sim.heal()


@contextlib.contextmanager
def tiny_filesystem(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"cannot mount a small tmpfs (needs root): {exc} {detail.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full (ENOSPC)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


async def test_full_disk_at_start_serves_the_cache_and_writes_once_there_is_room(
    sim: SimProcess, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    with tiny_filesystem(tmp_path / "fs", "4m") as fs:
        cache_dir = fs / "cache"
        filler: list[Path] = []

        def start_faulty() -> ProxyProcess:
            filler.append(fill(fs))  # after a clean stop: no -wal, no -shm, no room for them
            return ProxyProcess(sim.kubeconfig, workdir=tmp_path / "faulty", cache_dir=cache_dir)

        def lift(_proxy: ProxyProcess) -> None:
            filler[0].unlink()

        await fault_then_recover(
            sim,
            http,
            tmp_path,
            cache_dir,
            start_faulty=start_faulty,
            lift=lift,
            expect="SQLITE_FULL",
        )


async def test_file_size_limit_is_a_write_fault_not_corruption(
    sim: SimProcess, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """RLIMIT_FSIZE: every write past 0 bytes fails (EFBIG), as on a full disk. No root needed."""
    cache_dir = tmp_path / "cache"

    def no_file_growth() -> None:
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))

    def start_faulty() -> ProxyProcess:
        return FaultyProxy(
            sim.kubeconfig, workdir=tmp_path / "faulty", cache_dir=cache_dir, preexec=no_file_growth
        )

    def lift(proxy: ProxyProcess) -> None:
        assert proxy.proc is not None
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.prlimit(proxy.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))

    # A write past the limit fails with EFBIG, which SQLite reports as a write I/O error.
    await fault_then_recover(
        sim,
        http,
        tmp_path,
        cache_dir,
        start_faulty=start_faulty,
        lift=lift,
        expect="SQLITE_IOERR",
    )


# -- a damaged page --------------------------------------------------------------------


def damage_page(path: Path, needle: bytes) -> None:
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    at = data.find(needle)
    assert at >= 0, needle
    page = at // page_size
    data[page * page_size : (page + 1) * page_size] = bytes(
        (i * 131 + 7) % 256 for i in range(page_size)
    )
    path.write_bytes(bytes(data))


async def test_one_damaged_page_costs_one_scope(
    sim: SimProcess, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cache_dir = tmp_path / "cache"
    spaces = [await make_namespace(http, sim, f"page{i}", 40, pad=300) for i in range(3)]
    with ProxyProcess(sim.kubeconfig, workdir=tmp_path / "first", cache_dir=cache_dir) as proxy:
        before = {ns: await cache(http, proxy, ns) for ns in spaces}
        await journaled(proxy, 3)
    assert not Path(f"{cache_dir}/cache.db-wal").exists()  # noqa: ASYNC240 (all in the file)
    damage_page(cache_dir / "cache.db", f"MARK-{spaces[1]}-020-".encode())
    sim.fault(blackhole=True)
    try:
        with ProxyProcess(sim.kubeconfig, workdir=tmp_path / "after", cache_dir=cache_dir) as proxy:
            for ns in (spaces[0], spaces[2]):
                assert await names_in(http, proxy, ns) == (200, before[ns]), proxy.log()
            status, _ = await names_in(http, proxy, spaces[1])
            assert status == 503  # its page is gone, and half a scope is not a state
            stats = journal_stats(proxy)
            assert [k for k in stats["lostScopes"] if spaces[1] in k], stats
            assert stats["state"] == "ok"  # rebuilt: a sound file that takes writes again
            assert len(moved_aside(cache_dir)) == 1
            assert "cache file was damaged; kept" in proxy.log()
    finally:
        sim.heal()


# -- files the proxy may read but not write -------------------------------------------


async def wal_with_a_commit(
    http: aiohttp.ClientSession, sim: SimProcess, kubeconfig: Path, base: Path, cache_dir: Path
) -> tuple[str, list[str]]:
    """A namespace cached and checkpointed, then one more commit left only in the WAL (kill -9)."""
    ns = await make_namespace(http, sim, "wal", 10)
    with ProxyProcess(kubeconfig, workdir=base / "one", cache_dir=cache_dir) as proxy:
        checkpointed = await cache(http, proxy, ns)
        await journaled(proxy, 1)
    proxy = ProxyProcess(kubeconfig, workdir=base / "two", cache_dir=cache_dir)
    try:
        await cache(http, proxy, ns)
        await create(http, sim, ns, "only-in-the-wal", "new")
        deadline = time.monotonic() + 10
        while "only-in-the-wal" not in (await names_in(http, proxy, ns, "?resourceVersion=0"))[1]:
            assert time.monotonic() < deadline, "the new object never reached the cache"
            await asyncio.sleep(0.1)
        # Served from the cache, so committed: to the WAL only (no checkpoint yet).
        proxy.kill()
    finally:
        proxy.close()
    assert Path(f"{cache_dir}/cache.db-wal").stat().st_size > 32  # noqa: ASYNC240
    return ns, checkpointed


async def test_read_only_wal_is_read_and_written_once_writable(
    sim: SimProcess, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A WAL the proxy may read but not write (here a read-only bind mount, which binds root too)."""
    cache_dir = tmp_path / "cache"
    ns, checkpointed = await wal_with_a_commit(http, sim, sim.kubeconfig, tmp_path, cache_dir)
    wal = Path(f"{cache_dir}/cache.db-wal")
    try:
        run("mount", "--bind", str(wal), str(wal))
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot bind-mount the WAL read-only (needs root): {exc}")
    bound = True
    try:
        run("mount", "-o", "remount,bind,ro", str(wal))
        sim.fault(blackhole=True)
        proxy = ProxyProcess(sim.kubeconfig, workdir=tmp_path / "three", cache_dir=cache_dir)
        try:
            # Everything committed is served, the WAL's last commit too.
            status, names = await names_in(http, proxy, ns)
            assert (status, names) == (200, sorted([*checkpointed, "only-in-the-wal"]))
            line = journal_line(proxy)
            assert line.startswith("[-]journal read-only:"), line
            assert moved_aside(cache_dir) == []
            sim.heal()
            await cache(http, proxy, ns)
            await create(http, sim, ns, "while-read-only", "new")
            deadline = time.monotonic() + 10
            while (
                "while-read-only" not in (await names_in(http, proxy, ns, "?resourceVersion=0"))[1]
            ):
                assert time.monotonic() < deadline, "not served from memory"
                await asyncio.sleep(0.1)
            run("umount", "-l", str(wal))  # -l: the proxy still holds the read-only file
            bound = False
            await eventually(lambda: journal_line(proxy) == "[+]journal ok", 20, "writable again")
        finally:
            sim.heal()
            proxy.close()
    finally:
        if bound:
            subprocess.run(["umount", "-l", str(wal)], check=False)  # noqa: ASYNC221
    sim.fault(blackhole=True)
    try:
        with ProxyProcess(sim.kubeconfig, workdir=tmp_path / "four", cache_dir=cache_dir) as last:
            status, names = await names_in(http, last, ns)
            want = sorted([*checkpointed, "only-in-the-wal", "while-read-only"])
            assert (status, names) == (200, want), last.log()
    finally:
        sim.heal()


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def without_file_override() -> None:
    """Root as any other user: no capability to read or write files it does not own.

    Dropped from the bounding set before exec, root's new process keeps every
    capability but these two. Running as `nobody` instead would need an
    interpreter `nobody` can execute, which a venv under /root is not.
    """
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if _LIBC.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


async def test_wal_of_another_user_is_read_only_not_discarded(
    sim: SimProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The WAL and its index belong to another user: the main file's state, read-only."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give files to another user")
    base = tmp_path
    kubeconfig = base / "kubeconfig"
    shutil.copy(sim.kubeconfig, kubeconfig)
    cache_dir = base / "cache"
    ns, checkpointed = await wal_with_a_commit(http, sim, kubeconfig, base, cache_dir)
    wal = Path(f"{cache_dir}/cache.db-wal")
    wal_bytes = wal.read_bytes()  # noqa: ASYNC240
    for leftover in (wal, Path(f"{cache_dir}/cache.db-shm")):
        if leftover.exists():
            os.chown(leftover, 65534, 65534)
            leftover.chmod(0o600)
    try:
        run(sys.executable, "-c", f"open({str(wal)!r}, 'rb')", preexec_fn=without_file_override)
    except subprocess.CalledProcessError:
        pass
    else:
        raise AssertionError("the test's process could still read another user's WAL")
    sim.fault(blackhole=True)
    try:
        other = FaultyProxy(
            kubeconfig, workdir=base / "three", cache_dir=cache_dir, preexec=without_file_override
        )
        try:
            assert await names_in(http, other, ns) == (200, checkpointed), other.log()
            line = journal_line(other)
            assert line.startswith("[-]journal read-only:"), line
            assert "WAL are not seen" in line, line
        finally:
            other.close()
    finally:
        sim.heal()
    assert moved_aside(cache_dir) == []
    assert wal.read_bytes() == wal_bytes  # noqa: ASYNC240 (untouched, for its owner to finish)
