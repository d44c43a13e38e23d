"""Writing a watcher's frames to a chunked HTTP response.

The one watch writer of the project (simulator and proxy): initial frames
first, then queued events as they come, bookmarks on a timer when the client
asked for them, and a clean end at the deadline, when the watcher is closed,
or when the client goes away (k8s-api-semantics.md sec. 3.3-3.7). Frames are
flushed as they are produced, joined into writes of at most `WRITE_BATCH`
bytes: a write waits (and lets the rest of the proxy run) as soon as the
client's connection holds that much unsent, so a client that stopped reading
pins one batch, not a copy of its whole backlog, and a burst fanned out to
hundreds of watchers is not copied hundreds of times at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator

from aiohttp import web

from edgeproxy.cache.broadcast import Watcher

log = logging.getLogger(__name__)

FrameConverter = Callable[[bytes], bytes]

# aiohttp's writer waits for the connection to drain past 64 KiB: a bigger write
# would only wait as a copy in user space, and a stuck client would pin it.
WRITE_BATCH = 64 * 1024
# kube-apiserver's gzip level (responsewriters/compression.go): least CPU.
GZIP_LEVEL = 1


async def _no_gate() -> None:
    return None


async def stream_watch(
    request: web.Request,
    resp: web.StreamResponse,
    watcher: Watcher,
    initial: Iterable[bytes],
    *,
    duration: float,
    bookmark: Callable[[], bytes | None] | None,
    bookmark_interval: float,
    convert: FrameConverter | None = None,
    gate: Callable[[], Awaitable[None]] = _no_gate,
    idle_check: float = 5.0,
    on_sent: Callable[[int], None] | None = None,
    gzip_writes: bool = False,
) -> None:
    """Stream until the deadline, watcher close, or client disconnect.

    `bookmark()` returns a BOOKMARK frame (or None when none can be promised
    yet); `convert` rewrites each frame (None: JSON, sent as queued); `gate`
    is awaited before each write (the simulator's black-hole). `on_sent(n)`
    is told the bytes written since its last call, every `idle_check`
    seconds and at the end: not per write, where a metrics update per
    watcher per event was 3% of fan-out. `gzip_writes`: each write is one
    complete gzip member, as kube-apiserver compresses a watch-list stream
    per flush (the caller sets the header).
    """
    deadline = time.monotonic() + duration
    interval = bookmark_interval
    # kube-apiserver also sends one ~2 s before the deadline so clients resume late.
    next_bookmark = time.monotonic() + min(interval, max(duration - 2, 0.0))
    transport = request.transport

    sent = 0  # bytes written not yet reported to on_sent

    async def write(frame: bytes) -> None:
        await write_raw(frame if convert is None else convert(frame))

    async def write_raw(data: bytes) -> None:
        nonlocal sent
        if gzip_writes:
            data = gzip_member(data)
        await gate()
        await resp.write(data)
        sent += len(data)

    def report() -> None:
        nonlocal sent
        if on_sent is not None and sent:
            on_sent(sent)
        sent = 0

    # One timer wakes the writer for the deadline, a bookmark or an idle check,
    # re-armed only when that time changes: a timeout per wait (a timer made and
    # cancelled per event per watcher) was a sixth of the proxy's fan-out CPU.
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None
    timer_at = 0.0
    next_check = time.monotonic() + idle_check

    def due() -> float:
        """When the writer must wake though nothing was queued."""
        at = min(deadline, next_check)
        return at if bookmark is None else min(at, next_bookmark)

    wake_at = due()  # recomputed only once it has passed: not per event

    def ring() -> None:
        nonlocal timer
        timer = None  # fired: the next turn arms it again, even for the same time
        watcher.wake.set()

    try:
        for data in _batches(initial, convert):
            await write_raw(data)
        while True:
            if watcher.pending:
                # What is queued goes out in one write (up to WRITE_BATCH): one
                # syscall per burst instead of one per event keeps fan-out latency low.
                batch = watcher.take(WRITE_BATCH)
                if convert is not None:
                    batch = [convert(frame) for frame in batch]
                try:
                    await write_raw(b"".join(batch))
                finally:
                    watcher.sent()
            if watcher.closed and not watcher.pending:
                break
            now = time.monotonic()
            if now >= wake_at:  # the deadline, an idle check or a bookmark is due
                if now >= deadline:
                    break
                if now >= next_check:
                    if transport is None or transport.is_closing():
                        break  # the client went away while nothing was sent
                    next_check = now + idle_check
                    report()
                if bookmark is not None and now >= next_bookmark:
                    mark = bookmark()
                    if mark is not None:
                        await write(mark)
                    next_bookmark = now + interval
                    if deadline - 2 > now:
                        next_bookmark = min(next_bookmark, deadline - 2)
                wake_at = due()
            if timer is None or wake_at != timer_at:
                if timer is not None:
                    timer.cancel()
                timer = loop.call_at(_loop_time(loop, wake_at), ring)
                timer_at = wake_at
            watcher.wake.clear()
            if watcher.pending or watcher.closed:
                continue
            await watcher.wake.wait()
        await resp.write_eof()
    except (ConnectionResetError, ConnectionError):
        log.debug("watch client went away")
    finally:
        if timer is not None:
            timer.cancel()
        report()
        watcher.finish()


def gzip_member(data: bytes) -> bytes:
    """One flush of kube-apiserver's perFlushGzipWriter: a complete gzip member.

    Go's gzip.Writer Flush then Close: the data ends with a sync flush, then
    an empty final block and the trailer. Go's reader (client-go) returns the
    data at the sync flush; after a member made in one final block it would
    first wait for the next member's header, holding this one's events back.
    """
    member = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    return member.compress(data) + member.flush(zlib.Z_SYNC_FLUSH) + member.flush(zlib.Z_FINISH)


def _batches(frames: Iterable[bytes], convert: FrameConverter | None) -> Iterator[bytes]:
    """`frames`, converted, joined into pieces of about WRITE_BATCH bytes."""
    batch: list[bytes] = []
    size = 0
    for frame in frames:
        data = frame if convert is None else convert(frame)
        batch.append(data)
        size += len(data)
        if size >= WRITE_BATCH:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


def _loop_time(loop: asyncio.AbstractEventLoop, monotonic_at: float) -> float:
    """`loop.time()` of a `time.monotonic()` instant (uvloop's clock is its own)."""
    return loop.time() + (monotonic_at - time.monotonic())
