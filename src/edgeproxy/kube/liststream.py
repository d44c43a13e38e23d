"""A sans-IO splitter for list bodies: item bytes out while the body is still arriving.

Reading a 10 MB list whole and then copying each item out holds the body and
its items at once: twice the list. Fed chunk by chunk, `ListSplitter` hands
out each complete item as soon as it has arrived and keeps only the bytes
after it, so a list costs its items plus one chunk (STYLE.md, "pure parsers
for the wire").

It relies on how kube-apiserver writes JSON (compact, Go's encoder; the same
as the simulator): `{"kind":..,"apiVersion":..,"metadata":{..},"items":[`,
then the items separated by single commas. Items are cut where `},` is
followed by the first item's first key (`{"metadata":`): the bytes up to
there, read as a JSON array by msgspec, are complete items only if the cut
is between two items. A nested array of objects may show the same pattern
(JSON strings cannot, as their quotes are escaped): the array is then
truncated and an earlier cut is tried. Any other error means a broken item
or a layout we did not assume; from there on everything stays buffered for
`finish`, so such a body gives the same result, only without the memory
saved.

`finish()` returns the rest as a complete small list body (the head, the
unsplit items, the trailer) for the ordinary list decoder, which reads the
list's metadata and validates the whole: items handed out earlier are only
good if that succeeds. `head + b"[" + b"".join(i + b"," for i in items) +
rest-after-head` is the body byte for byte (`ListSplitter.body_parts`).
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

_ITEMS = b'"items":['
# Look this far for `"items":[` before giving up on splitting: ListMeta is small.
_HEAD_LIMIT = 64 * 1024
# Drop consumed bytes from the front once this many have piled up (a memmove of
# what is left: at most one partial item).
_COMPACT = 256 * 1024

_validator = msgspec.json.Decoder(msgspec.Raw)
_run_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_OPEN, _CLOSE = ord("["), ord("]")
# msgspec's message when the input is a valid start of JSON that stops early. Should
# the wording change, splitting merely stops at the first nested pattern (safe).
_TRUNCATED = "truncated"


class ListSplitter:
    """`feed(bytes) -> [item bytes]`, then `finish() -> rest of the list as a body`."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head: bytes | None = None  # up to and including `"items":`
        self._sep = b""  # `},` + the first key of an item, once known
        self._splitting = True  # False: layout not recognised, buffer everything
        self._start = 0  # where the current item starts in _buf (1 once splitting)
        self._search = 0  # where to look for the next separator
        self.items = 0  # handed out so far

    def feed(self, data: bytes) -> list[bytes]:
        """Complete items in `data` and before it, in order; each is its own bytes."""
        self._buf += data
        if not self._splitting:
            return []
        if self._head is None and not self._find_head():
            return []
        if not self._sep and not self._find_sep():
            return []
        out = self._split()
        self.items += len(out)
        if self._start >= _COMPACT:
            drop = self._start - 1
            del self._buf[:drop]
            self._search -= drop
            self._start = 1
        return out

    def finish(self) -> bytes:
        """The list without the items already handed out, as a complete body."""
        if self._head is None:
            return bytes(self._buf)
        return self._head + b"[" + bytes(self._buf[self._start :])

    def body_parts(self, items: list[bytes], rest: bytes) -> Iterator[bytes]:
        """The original body again, from the items handed out and `finish()`'s result."""
        if self._head is None:
            yield rest
            return
        yield self._head + b"["
        for item in items:
            yield item
            yield b","
        yield rest[len(self._head) + 1 :]

    # -- steps -------------------------------------------------------------------

    def _find_head(self) -> bool:
        at = self._buf.find(_ITEMS)
        if at < 0:
            if len(self._buf) > _HEAD_LIMIT:
                self._splitting = False
            return False
        head_end = at + len(_ITEMS) - 1  # keep `"items":` in the head, `[` in the buffer
        head = bytes(self._buf[:head_end])
        try:  # `"items":` of the list itself, not of an object inside what comes before
            _validator.decode(head + b"[]}")
        except msgspec.DecodeError:
            self._splitting = False
            return False
        self._head = head
        del self._buf[:head_end]
        self._start = 1  # the byte before an item (`[` or `,`) stays: see _split
        return True

    def _find_sep(self) -> bool:
        buf = self._buf
        if len(buf) < 3:
            return False
        if not buf.startswith(b'[{"'):  # `[]` (no items) or not compact: nothing to split
            self._splitting = False
            return False
        colon = buf.find(b'":', 3)
        if colon < 0:
            if len(buf) > _HEAD_LIMIT:
                self._splitting = False
            return False
        self._sep = b"}," + bytes(buf[1 : colon + 2])
        self._search = 2
        return True

    def _split(self) -> list[bytes]:
        """Every complete item before the last separator that is a real item boundary.

        The bytes around the run of items become `[` and `]` for a moment
        (no copy) and msgspec decodes the run as one JSON array of raw
        values, so it, not Python, walks the items. A separator inside an
        item (a nested array) leaves the array truncated: the one before it
        is tried.
        """
        buf, sep, start = self._buf, self._sep, self._start
        end = buf.rfind(sep, self._search)
        with memoryview(buf) as view:  # released before the buffer may shrink
            while end >= 0:
                before, after = buf[start - 1], buf[end + 1]
                buf[start - 1], buf[end + 1] = _OPEN, _CLOSE
                try:
                    raws = _run_decoder.decode(view[start - 1 : end + 2])
                except msgspec.DecodeError as exc:
                    failure = str(exc)
                else:
                    failure = ""
                buf[start - 1], buf[end + 1] = before, after
                if failure:
                    if _TRUNCATED not in failure:
                        # A broken item: stop splitting, `finish` reports it.
                        self._splitting = False
                        return []
                    end = buf.rfind(sep, self._search, end + len(sep) - 1)
                    continue
                items = [bytes(raw) for raw in raws]
                del raws  # they hold the view
                self._start = end + 2
                self._search = self._start + 1
                return items
        self._search = max(self._search, len(buf) - len(sep) + 1)
        return []
