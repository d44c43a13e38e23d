"""Incremental decoding of a body made of concatenated gzip members.

kube-apiserver compresses a watch-list stream per flush: every flush is a
complete gzip member, and the body is their concatenation (apiserver
endpoints/handlers/watch.go `perFlushGzipWriter`). A gzipped list body is
one member. `GzipMembers.feed(chunk)` turns each received chunk into the
decompressed bytes it completes, whatever the chunk boundaries, without
holding more than one piece of at most `max_piece` bytes of output at a
time: a stream is never decompressed as a whole.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

# Output is produced in pieces of at most this size (a 64 KiB chunk of a
# level-1 gzip stream of JSON can inflate to about 1 MiB).
MAX_PIECE = 256 * 1024


class GzipStreamError(ValueError):
    """The body is not a valid sequence of gzip members."""


def _member() -> zlib._Decompress:
    return zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)


class GzipMembers:
    def __init__(self, max_piece: int = MAX_PIECE) -> None:
        self._inflate = _member()
        self._max_piece = max_piece
        self._started = False  # bytes of the current member were fed
        self.wire_bytes = 0
        self.decoded_bytes = 0

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """The decompressed bytes `chunk` completes, in bounded pieces."""
        self.wire_bytes += len(chunk)
        data = chunk
        if not data:
            return
        while True:
            if self._inflate.eof:  # the next member starts here
                self._inflate = _member()
            self._started = True
            try:
                out = self._inflate.decompress(data, self._max_piece)
            except zlib.error as exc:
                raise GzipStreamError(f"bad gzip stream: {exc}") from exc
            if out:
                self.decoded_bytes += len(out)
                yield out
            if self._inflate.eof:
                self._started = False
                data = self._inflate.unused_data
                if not data:
                    return
            else:
                data = self._inflate.unconsumed_tail
                # A full piece may leave output inside zlib: ask again.
                if not data and len(out) < self._max_piece:
                    return

    def finish(self) -> None:
        """End of body: raises GzipStreamError when a member is cut short."""
        if self._started and not self._inflate.eof:
            raise GzipStreamError("bad gzip stream: truncated member")
