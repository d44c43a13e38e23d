"""Wire-level semantics of the simulator, over real HTTP on loopback.

Every test talks to `edge-proxy sim` running as a child process and checks a
MUST of k8s-api-semantics.md: list shapes, the RV x match table, pagination,
watch start points and framing, selector transitions, bookmarks, watch-list,
410s, content negotiation, writes, bad input and discovery.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import yaml

from edgeproxy.kube.labels import LabelSelector, SelectorError
from edgeproxy.kube.protobuf import decode_object, decode_watch_frames
from edgeproxy.testing import SimProcess

CM = "/api/v1/namespaces/{ns}/configmaps"
NOT_FOUND_BODY = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "the server could not find the requested resource",
    "reason": "NotFound",
    "details": {},
    "code": 404,
}
KUBECTL_TABLE = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)
RFC3339_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    with SimProcess("--bookmark-interval=1", "--max-body-bytes=65536") as proc:
        yield proc


@pytest.fixture(scope="module")
def small_sim() -> Iterator[SimProcess]:
    """A simulator keeping only 5 events per resource, for 410 paths."""
    with SimProcess("--history=5") as proc:
        yield proc


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


class Api:
    """A tiny client over one simulator and one fresh namespace."""

    def __init__(self, session: aiohttp.ClientSession, sim: SimProcess, ns: str) -> None:
        self.s = session
        self.url = sim.url
        self.ns = ns

    def cm_path(self, name: str = "") -> str:
        base = CM.format(ns=self.ns)
        return f"{base}/{name}" if name else base

    async def request(
        self, method: str, path: str, **kw: Any
    ) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
        async with self.s.request(method, self.url + path, **kw) as resp:
            body = await resp.read()
            try:
                doc = json.loads(body) if body else {}
            except ValueError:
                doc = {"_raw": body.decode(errors="replace")}
            return resp.status, doc, resp

    async def get(self, path: str, **kw: Any) -> tuple[int, dict[str, Any]]:
        code, doc, _ = await self.request("GET", path, **kw)
        return code, doc

    async def ok(self, method: str, path: str, expect: int = 200, **kw: Any) -> dict[str, Any]:
        code, doc, _ = await self.request(method, path, **kw)
        assert code == expect, (code, doc)
        return doc

    async def create_cm(
        self,
        name: str,
        data: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        **meta: Any,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, **meta},
            "data": data or {},
        }
        if labels is not None:
            body["metadata"]["labels"] = labels
        return await self.ok("POST", self.cm_path(), 201, json=body)

    async def merge_patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.ok(
            "PATCH",
            self.cm_path(name),
            data=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"},
        )

    async def delete(self, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.ok("DELETE", self.cm_path(name), json=body)

    async def current_rv(self) -> int:
        doc = await self.ok("GET", self.cm_path())
        return int(doc["metadata"]["resourceVersion"])


async def new_namespace(session: aiohttp.ClientSession, sim: SimProcess) -> str:
    name = "t-" + uuid.uuid4().hex[:10]
    async with session.post(
        sim.url + "/api/v1/namespaces",
        json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    ) as resp:
        assert resp.status == 201, await resp.text()
    return name


@pytest.fixture
async def api(http: aiohttp.ClientSession, sim: SimProcess) -> Api:
    return Api(http, sim, await new_namespace(http, sim))


@pytest.fixture
async def small_api(http: aiohttp.ClientSession, small_sim: SimProcess) -> Api:
    return Api(http, small_sim, await new_namespace(http, small_sim))


class Watch:
    """An open watch stream read line by line."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp

    async def next(self, within: float = 3.0) -> dict[str, Any]:
        line = await asyncio.wait_for(self.resp.content.readline(), within)
        assert line, "watch stream ended"
        assert line.endswith(b"\n")
        event: dict[str, Any] = json.loads(line)
        return event

    async def rest(self, within: float = 5.0) -> list[dict[str, Any]]:
        """Every remaining event until the server ends the stream."""
        body = await asyncio.wait_for(self.resp.content.read(), within)
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    async def assert_quiet(self, seconds: float) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.resp.content.readline(), seconds)


async def open_watch(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[Watch, aiohttp.ClientResponse]:
    resp = await session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=30))
    assert resp.status == 200, await resp.text()
    return Watch(resp), resp


def rv_of(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


# -- sec. 1: paths ----------------------------------------------------------------


async def test_unknown_path_is_the_exact_404_status(api: Api) -> None:
    for path in ("/nope", "/api/v1/widgets"):
        code, doc, resp = await api.request("GET", path)
        assert code == 404, path
        assert doc == NOT_FOUND_BODY, path
        assert resp.headers["Content-Type"] == "application/json"
    # No API group serves these: the Go mux's plain-text 404, as kube-apiserver.
    for path in ("/apis/example.com/v1/things", "/api/v2"):
        code, doc, resp = await api.request("GET", path)
        assert code == 404, path
        assert doc == {"_raw": "404 page not found\n"}, path
        assert resp.headers["Content-Type"].startswith("text/plain")


async def test_listing_in_a_missing_namespace_is_an_empty_200(api: Api) -> None:
    async with api.s.get(api.url + "/api/v1/namespaces/no-such-ns/configmaps") as resp:
        assert resp.status == 200
        raw = await resp.read()
    assert b'"items":[]' in raw
    doc = json.loads(raw)
    assert doc["kind"] == "ConfigMapList" and doc["items"] == []


# -- sec. 2.3: list shape ------------------------------------------------------------


async def test_list_shape(api: Api) -> None:
    await api.create_cm("a", {"k": "1"})
    await api.create_cm("b", {"k": "2"})
    doc = await api.ok("GET", api.cm_path())
    assert doc["kind"] == "ConfigMapList"
    assert doc["apiVersion"] == "v1"
    assert [i["metadata"]["name"] for i in doc["items"]] == ["a", "b"]
    for item in doc["items"]:
        assert "kind" not in item and "apiVersion" not in item
        assert item["metadata"]["namespace"] == api.ns
        assert rv_of(doc) >= rv_of(item)
    assert "continue" not in doc["metadata"]


async def test_named_group_list_shape(api: Api) -> None:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{api.ns}/leases"
    await api.ok(
        "POST",
        path,
        201,
        json={"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}},
    )
    doc = await api.ok("GET", path)
    assert doc["kind"] == "LeaseList"
    assert doc["apiVersion"] == "coordination.k8s.io/v1"
    assert [i["metadata"]["name"] for i in doc["items"]] == ["l"]
    assert "kind" not in doc["items"][0]
    single = await api.ok("GET", f"{path}/l")
    assert single["kind"] == "Lease" and single["apiVersion"] == "coordination.k8s.io/v1"


async def test_all_namespaces_list_includes_every_namespace(api: Api, sim: SimProcess) -> None:
    other = await new_namespace(api.s, sim)
    await api.create_cm("mine")
    await Api(api.s, sim, other).create_cm("theirs")
    doc = await api.ok("GET", "/api/v1/configmaps")
    keys = {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in doc["items"]}
    assert {(api.ns, "mine"), (other, "theirs")} <= keys


# -- sec. 2.1: resourceVersion x resourceVersionMatch ---------------------------------


def invalid_message(field: str, detail: str) -> str:
    return f'ListOptions.meta.k8s.io "" is invalid: {field}: {detail}'


@pytest.mark.parametrize(
    ("query", "field", "detail"),
    [
        (
            "resourceVersionMatch=NotOlderThan",
            "resourceVersionMatch",
            "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ),
        (
            "resourceVersion=5&resourceVersionMatch=Exact&continue=abc",
            "resourceVersionMatch",
            "Forbidden: resourceVersionMatch is forbidden when continue is provided",
        ),
        (
            "resourceVersion=0&resourceVersionMatch=Exact",
            "resourceVersionMatch",
            'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
        ),
        (
            "resourceVersion=5&resourceVersionMatch=Bogus",
            "resourceVersionMatch",
            'Unsupported value: "Bogus": supported values: "Exact", "NotOlderThan", ""',
        ),
        (
            "sendInitialEvents=true",
            "sendInitialEvents",
            "Forbidden: sendInitialEvents is forbidden for list",
        ),
    ],
)
async def test_invalid_list_options_are_422(api: Api, query: str, field: str, detail: str) -> None:
    code, doc = await api.get(f"{api.cm_path()}?{query}")
    assert code == 422, doc
    assert doc["kind"] == "Status" and doc["reason"] == "Invalid" and doc["code"] == 422
    assert doc["message"] == invalid_message(field, detail)
    assert doc["details"]["kind"] == "ListOptions"
    assert doc["details"]["group"] == "meta.k8s.io"
    assert doc["details"]["causes"][0]["field"] == field


async def test_exact_rv_returns_the_old_snapshot(api: Api) -> None:
    first = await api.create_cm("a", {"v": "1"})
    await api.merge_patch("a", {"data": {"v": "2"}})
    await api.create_cm("b")
    rv = rv_of(first)
    doc = await api.ok("GET", f"{api.cm_path()}?resourceVersion={rv}&resourceVersionMatch=Exact")
    assert rv_of(doc) == rv
    assert [(i["metadata"]["name"], i["data"]) for i in doc["items"]] == [("a", {"v": "1"})]
    # NotOlderThan: at least rv, here the current state.
    doc = await api.ok(
        "GET", f"{api.cm_path()}?resourceVersion={rv}&resourceVersionMatch=NotOlderThan"
    )
    assert rv_of(doc) > rv
    assert [i.get("data") for i in doc["items"]] == [{"v": "2"}, None]
    # RV=N without match and without limit is NotOlderThan too.
    doc = await api.ok("GET", f"{api.cm_path()}?resourceVersion={rv}")
    assert [i.get("data") for i in doc["items"]] == [{"v": "2"}, None]


async def test_legacy_rv_with_limit_is_exact(api: Api) -> None:
    first = await api.create_cm("a", {"v": "1"})
    await api.merge_patch("a", {"data": {"v": "2"}})
    doc = await api.ok("GET", f"{api.cm_path()}?resourceVersion={rv_of(first)}&limit=10")
    assert rv_of(doc) == rv_of(first)
    assert [i["data"] for i in doc["items"]] == [{"v": "1"}]


async def test_rv_zero_ignores_limit(api: Api) -> None:
    for name in ("a", "b", "c"):
        await api.create_cm(name)
    doc = await api.ok("GET", f"{api.cm_path()}?resourceVersion=0&limit=1")
    assert [i["metadata"]["name"] for i in doc["items"]] == ["a", "b", "c"]
    assert "continue" not in doc["metadata"]


async def test_rv_too_new_waits_then_504(api: Api) -> None:
    current = await api.current_rv()
    wanted = current + 10_000
    started = time.monotonic()
    code, doc, resp = await api.request("GET", f"{api.cm_path()}?resourceVersion={wanted}")
    elapsed = time.monotonic() - started
    assert code == 504
    assert 2.5 <= elapsed < 6, elapsed
    assert resp.headers["Retry-After"] == "1"
    now = int(doc["message"].rsplit(" ", 1)[1])
    assert now >= current
    assert doc == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"Timeout: Too large resource version: {wanted}, current: {now}",
        "reason": "Timeout",
        "details": {
            "causes": [
                {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
            ],
            "retryAfterSeconds": 1,
        },
        "code": 504,
    }


async def test_exact_read_of_a_future_rv_is_etcds_500_at_once(api: Api) -> None:
    # An Exact read goes to etcd (shouldDelegateList), which refuses a future
    # revision without waiting; kube-apiserver passes the error on as a bare 500.
    wanted = await api.current_rv() + 10_000
    for query in (
        f"resourceVersion={wanted}&resourceVersionMatch=Exact",
        f"resourceVersion={wanted}&limit=5",  # the legacy exact read
    ):
        started = time.monotonic()
        code, doc = await api.get(f"{api.cm_path()}?{query}")
        assert time.monotonic() - started < 2.5
        assert (code, doc) == (
            500,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "etcdserver: mvcc: required revision is a future revision",
                "code": 500,
            },
        )


async def test_rv_slightly_ahead_is_served_once_reached(api: Api) -> None:
    current = await api.current_rv()
    pending = asyncio.ensure_future(api.get(f"{api.cm_path()}?resourceVersion={current + 1}"))
    await asyncio.sleep(0.3)
    assert not pending.done()
    await api.create_cm("late")
    code, doc = await asyncio.wait_for(pending, 2)
    assert code == 200
    assert rv_of(doc) >= current + 1
    assert [i["metadata"]["name"] for i in doc["items"]] == ["late"]


async def test_exact_rv_too_old_is_410(small_api: Api) -> None:
    first = await small_api.create_cm("a")
    for i in range(8):
        await small_api.merge_patch("a", {"data": {"i": str(i)}})
    code, doc = await small_api.get(
        f"{small_api.cm_path()}?resourceVersion={rv_of(first)}&resourceVersionMatch=Exact"
    )
    assert code == 410
    assert doc["reason"] == "Expired"
    assert doc["message"] == "The resourceVersion for the provided list is too old."


# -- sec. 2.2: pagination --------------------------------------------------------------


def decode_token(token: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return result


async def test_pagination_is_one_consistent_snapshot(api: Api) -> None:
    names = ["a", "b", "c", "d", "e"]
    for name in names:
        await api.create_cm(name, {"v": "orig"})
    page = await api.ok("GET", f"{api.cm_path()}?limit=2")
    snapshot_rv = page["metadata"]["resourceVersion"]
    assert [i["metadata"]["name"] for i in page["items"]] == ["a", "b"]
    assert page["metadata"]["remainingItemCount"] == 3
    token = page["metadata"]["continue"]
    assert decode_token(token)["rv"] == int(snapshot_rv)

    # Changes after the first page must not show up in later pages.
    await api.merge_patch("c", {"data": {"v": "changed"}})
    await api.delete("e")
    await api.create_cm("bb", {"v": "new"})
    await api.create_cm("z", {"v": "new"})

    seen = [(i["metadata"]["name"], i["data"]["v"]) for i in page["items"]]
    pages = 1
    while token:
        page = await api.ok("GET", f"{api.cm_path()}?limit=2&continue={token}")
        pages += 1
        assert page["metadata"]["resourceVersion"] == snapshot_rv
        seen += [(i["metadata"]["name"], i["data"]["v"]) for i in page["items"]]
        token = page["metadata"].get("continue", "")
        if token:
            assert page["metadata"]["remainingItemCount"] >= 1
        else:
            assert "remainingItemCount" not in page["metadata"]
    assert pages == 3
    assert seen == [(n, "orig") for n in names]


async def test_pagination_with_selector_has_no_remaining_item_count(api: Api) -> None:
    for i in range(5):
        await api.create_cm(f"o{i}", labels={"pick": "yes" if i % 2 == 0 else "no"})
    page = await api.ok("GET", f"{api.cm_path()}?limit=1&labelSelector=pick%3Dyes")
    assert [i["metadata"]["name"] for i in page["items"]] == ["o0"]
    assert page["metadata"]["continue"]
    assert "remainingItemCount" not in page["metadata"]
    names = ["o0"]
    token = page["metadata"]["continue"]
    while token:
        page = await api.ok(
            "GET", f"{api.cm_path()}?limit=1&labelSelector=pick%3Dyes&continue={token}"
        )
        assert "remainingItemCount" not in page["metadata"]
        names += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue", "")
    assert names == ["o0", "o2", "o4"]


async def test_continue_with_resource_version_is_400(api: Api) -> None:
    for name in ("a", "b"):
        await api.create_cm(name)
    page = await api.ok("GET", f"{api.cm_path()}?limit=1")
    token = page["metadata"]["continue"]
    code, doc = await api.get(f"{api.cm_path()}?limit=1&continue={token}&resourceVersion=5")
    assert code == 400
    assert doc["reason"] == "BadRequest"
    assert doc["message"] == "specifying resource version is not allowed when using continue"
    # "0" is tolerated with a continue token.
    doc = await api.ok("GET", f"{api.cm_path()}?limit=1&continue={token}&resourceVersion=0")
    assert [i["metadata"]["name"] for i in doc["items"]] == ["b"]


@pytest.mark.parametrize("token", ["garbage!!", "eyJ2IjoiYm9ndXMifQ", "bm90IGpzb24"])
async def test_undecodable_continue_token_is_400(api: Api, token: str) -> None:
    code, doc = await api.get(f"{api.cm_path()}?limit=1&continue={token}")
    assert code == 400, doc
    assert doc["reason"] == "BadRequest"
    assert doc["message"].startswith("invalid continue token")


async def test_continue_after_compaction_is_410_with_fresh_token(
    small_api: Api, small_sim: SimProcess
) -> None:
    for name in ("a", "b", "c"):
        await small_api.create_cm(name)
    page = await small_api.ok("GET", f"{small_api.cm_path()}?limit=1")
    token = page["metadata"]["continue"]
    await small_api.create_cm("d")
    small_sim.compact()
    code, doc = await small_api.get(f"{small_api.cm_path()}?limit=1&continue={token}")
    assert code == 410
    assert doc["reason"] == "Expired"
    fresh = doc["metadata"]["continue"]
    assert decode_token(fresh)["rv"] == -1
    # The fresh token continues, inconsistently, from the latest state.
    page = await small_api.ok("GET", f"{small_api.cm_path()}?limit=10&continue={fresh}")
    assert [i["metadata"]["name"] for i in page["items"]] == ["b", "c", "d"]


# -- sec. 3: watch ----------------------------------------------------------------------


@pytest.mark.parametrize("rv_param", ["", "&resourceVersion=", "&resourceVersion=0"])
async def test_watch_without_rv_sends_synthetic_added_then_changes(api: Api, rv_param: str) -> None:
    await api.create_cm("a", {"v": "1"})
    await api.create_cm("b")
    watch, resp = await open_watch(api.s, f"{api.url}{api.cm_path()}?watch=true{rv_param}")
    async with resp:
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        initial = [await watch.next(), await watch.next()]
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in initial] == [
            ("ADDED", "a"),
            ("ADDED", "b"),
        ]
        created = await api.create_cm("c")
        patched = await api.merge_patch("a", {"data": {"v": "2"}})
        await api.delete("b")
        events = [await watch.next() for _ in range(3)]
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", "c"),
            ("MODIFIED", "a"),
            ("DELETED", "b"),
        ]
        for event in initial + events:
            assert event["object"]["kind"] == "ConfigMap"
            assert event["object"]["apiVersion"] == "v1"
        assert rv_of(events[0]["object"]) == rv_of(created)
        assert rv_of(events[1]["object"]) == rv_of(patched)
        assert events[1]["object"]["data"] == {"v": "2"}
        # DELETED carries the last state with the deletion's RV.
        assert rv_of(events[2]["object"]) > rv_of(patched)
        await watch.assert_quiet(0.2)


async def test_watch_from_rv_replays_only_later_changes_in_order(api: Api) -> None:
    first = await api.create_cm("a", {"v": "1"})
    await api.merge_patch("a", {"data": {"v": "2"}})
    await api.create_cm("b")
    await api.delete("a")
    watch, resp = await open_watch(
        api.s, f"{api.url}{api.cm_path()}?watch=1&resourceVersion={rv_of(first)}"
    )
    async with resp:
        events = [await watch.next() for _ in range(3)]
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("MODIFIED", "a"),
            ("ADDED", "b"),
            ("DELETED", "a"),
        ]
        live = await api.create_cm("c")
        events.append(await watch.next())
        rvs = [rv_of(e["object"]) for e in events]
        assert rvs == sorted(set(rvs)), rvs
        assert rvs[0] > rv_of(first) and rvs[-1] == rv_of(live)
        await watch.assert_quiet(0.2)


async def test_watch_flushes_each_event_promptly(api: Api) -> None:
    current = await api.current_rv()
    watch, resp = await open_watch(
        api.s, f"{api.url}{api.cm_path()}?watch=true&resourceVersion={current}"
    )
    async with resp:
        for i in range(3):
            started = time.monotonic()
            await api.create_cm(f"p{i}")
            event = await watch.next(within=1.0)
            assert event["object"]["metadata"]["name"] == f"p{i}"
            assert time.monotonic() - started < 0.5


async def test_selector_transitions(api: Api) -> None:
    current = await api.current_rv()
    watch, resp = await open_watch(
        api.s,
        f"{api.url}{api.cm_path()}?watch=true&labelSelector=app%3Dweb&resourceVersion={current}",
    )
    async with resp:
        # no -> no: nothing.
        await api.create_cm("x", {"v": "0"}, labels={"app": "db"})
        await api.merge_patch("x", {"data": {"v": "1"}})
        # no -> yes: ADDED with the new object.
        moved_in = await api.merge_patch("x", {"metadata": {"labels": {"app": "web"}}})
        event = await watch.next()
        assert event["type"] == "ADDED"
        assert event["object"]["metadata"]["name"] == "x"
        assert rv_of(event["object"]) == rv_of(moved_in)
        assert event["object"]["data"] == {"v": "1"}
        # yes -> yes: MODIFIED.
        changed = await api.merge_patch("x", {"data": {"v": "2"}})
        event = await watch.next()
        assert event["type"] == "MODIFIED"
        assert rv_of(event["object"]) == rv_of(changed)
        # yes -> no: DELETED with the previous content and the new RV.
        moved_out = await api.merge_patch("x", {"metadata": {"labels": {"app": "db"}}})
        event = await watch.next()
        assert event["type"] == "DELETED"
        assert event["object"]["kind"] == "ConfigMap"
        assert event["object"]["metadata"]["labels"] == {"app": "web"}
        assert event["object"]["data"] == {"v": "2"}
        assert rv_of(event["object"]) == rv_of(moved_out)
        # no -> no again, then a matching sentinel proves nothing came in between.
        await api.merge_patch("x", {"data": {"v": "3"}})
        await api.create_cm("sentinel", labels={"app": "web"})
        event = await watch.next()
        assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "sentinel")


async def test_watch_with_field_selector_only_sees_that_object(api: Api) -> None:
    await api.create_cm("other")
    await api.create_cm("target")
    watch, resp = await open_watch(
        api.s, f"{api.url}{api.cm_path()}?watch=true&fieldSelector=metadata.name%3Dtarget"
    )
    async with resp:
        assert (await watch.next())["object"]["metadata"]["name"] == "target"
        await api.merge_patch("other", {"data": {"a": "b"}})
        await api.merge_patch("target", {"data": {"a": "b"}})
        event = await watch.next()
        assert (event["type"], event["object"]["metadata"]["name"]) == ("MODIFIED", "target")


async def test_bookmarks_only_when_allowed(api: Api) -> None:
    await api.create_cm("a")
    current = await api.current_rv()
    base = f"{api.url}{api.cm_path()}?watch=true&resourceVersion={current}"
    with_bm, resp_bm = await open_watch(api.s, f"{base}&allowWatchBookmarks=true")
    without, resp_plain = await open_watch(api.s, f"{base}&timeoutSeconds=2")
    async with resp_bm, resp_plain:
        event = await with_bm.next(within=3)
        assert event["type"] == "BOOKMARK"
        obj = event["object"]
        assert obj["kind"] == "ConfigMap" and obj["apiVersion"] == "v1"
        assert set(obj) == {"kind", "apiVersion", "metadata"}
        assert set(obj["metadata"]) == {"resourceVersion"}
        assert rv_of(obj) >= current
        # Past a bookmark interval and up to its deadline: no BOOKMARK at all.
        assert await without.rest(within=5) == []


async def test_timeout_seconds_ends_the_stream_cleanly(api: Api) -> None:
    current = await api.current_rv()
    started = time.monotonic()
    watch, resp = await open_watch(
        api.s, f"{api.url}{api.cm_path()}?watch=true&resourceVersion={current}&timeoutSeconds=1"
    )
    async with resp:
        await api.create_cm("a")
        events = await watch.rest(within=5)
    elapsed = time.monotonic() - started
    assert [e["type"] for e in events] == ["ADDED"]  # no final event
    assert 0.8 <= elapsed < 3, elapsed


async def test_legacy_watch_path_with_name(api: Api) -> None:
    await api.create_cm("target")
    await api.create_cm("other")
    url = f"{api.url}/api/v1/watch/namespaces/{api.ns}/configmaps/target"
    watch, resp = await open_watch(api.s, url)
    async with resp:
        event = await watch.next()
        assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "target")
        await api.merge_patch("other", {"data": {"x": "1"}})
        await api.merge_patch("target", {"data": {"x": "1"}})
        event = await watch.next()
        assert (event["type"], event["object"]["metadata"]["name"]) == ("MODIFIED", "target")
    code, doc = await api.get(
        f"/api/v1/watch/namespaces/{api.ns}/configmaps/target?fieldSelector=metadata.name%3Dother"
    )
    assert code == 400
    assert doc["message"] == "fieldSelector metadata.name doesn't match requested name"
    # The same selector as the path is fine.
    async with api.s.get(
        f"{url}?fieldSelector=metadata.name%3Dtarget&timeoutSeconds=1"
    ) as resp_same:
        assert resp_same.status == 200


async def test_watch_list_initial_events_then_end_bookmark_then_live(api: Api) -> None:
    a = await api.create_cm("a")
    b = await api.create_cm("b")
    url = (
        f"{api.url}{api.cm_path()}?watch=true&sendInitialEvents=true"
        "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
    )
    watch, resp = await open_watch(api.s, url)
    async with resp:
        initial = [await watch.next(), await watch.next()]
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in initial] == [
            ("ADDED", "a"),
            ("ADDED", "b"),
        ]
        assert all(e["object"]["kind"] == "ConfigMap" for e in initial)
        end = await watch.next()
        assert end["type"] == "BOOKMARK"
        assert end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"
        assert rv_of(end["object"]) >= max(rv_of(a), rv_of(b))
        live = await api.create_cm("c")
        event = await watch.next()
        assert (event["type"], rv_of(event["object"])) == ("ADDED", rv_of(live))


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        (
            "watch=true&sendInitialEvents=true",
            "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ),
        (
            "watch=true&resourceVersion=1&resourceVersionMatch=NotOlderThan",
            "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ),
    ],
)
async def test_invalid_watch_options_are_422(api: Api, query: str, detail: str) -> None:
    code, doc = await api.get(f"{api.cm_path()}?{query}")
    assert code == 422, doc
    assert doc["reason"] == "Invalid"
    assert doc["message"] == invalid_message("resourceVersionMatch", detail)


def expired_event(requested: int, oldest: int) -> dict[str, Any]:
    return {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"too old resource version: {requested} ({oldest})",
            "reason": "Expired",
            "code": 410,
        },
    }


async def test_watch_from_a_trimmed_rv_gets_410_error_event(small_api: Api) -> None:
    first = await small_api.create_cm("a")
    for i in range(8):
        await small_api.merge_patch("a", {"data": {"i": str(i)}})
    url = f"{small_api.url}{small_api.cm_path()}?watch=true&resourceVersion={rv_of(first)}"
    async with small_api.s.get(url) as resp:
        assert resp.status == 200
        raw = await asyncio.wait_for(resp.content.read(), 3)
    lines = raw.splitlines()
    assert len(lines) == 1 and raw.endswith(b"\n")
    event = json.loads(lines[0])
    oldest = int(event["object"]["message"].rsplit("(", 1)[1].rstrip(")"))
    assert oldest > rv_of(first)
    assert event == expired_event(rv_of(first), oldest)


async def test_watch_after_compact_gets_410_error_event(
    small_api: Api, small_sim: SimProcess
) -> None:
    first = await small_api.create_cm("a")
    await small_api.create_cm("b")
    compacted = int(small_sim.compact()["compactedAt"])
    url = f"{small_api.url}{small_api.cm_path()}?watch=true&resourceVersion={rv_of(first)}"
    async with small_api.s.get(url) as resp:
        assert resp.status == 200
        events = [
            json.loads(x) for x in (await asyncio.wait_for(resp.content.read(), 3)).splitlines()
        ]
    assert events == [expired_event(rv_of(first), compacted)]
    # Watching from the compaction point itself still works.
    url = f"{small_api.url}{small_api.cm_path()}?watch=true&resourceVersion={compacted}"
    watch, resp = await open_watch(small_api.s, url)
    async with resp:
        await small_api.create_cm("c")
        event = await watch.next()
        assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "c")


# -- sec. 7: content negotiation -----------------------------------------------------------


async def test_table_for_kubectl(api: Api) -> None:
    await api.create_cm("a", {"k": "v"})
    doc = await api.ok("GET", api.cm_path(), headers={"Accept": KUBECTL_TABLE})
    assert doc["kind"] == "Table"
    assert doc["apiVersion"] == "meta.k8s.io/v1"
    assert "resourceVersion" in doc["metadata"]
    names = [c["name"] for c in doc["columnDefinitions"]]
    assert names[0] == "Name"
    assert len(doc["rows"]) == 1
    row = doc["rows"][0]
    assert row["cells"][0] == "a"
    assert len(row["cells"]) == len(names)
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["name"] == "a"
    # A single object is a one-row Table too.
    one = await api.ok("GET", api.cm_path("a"), headers={"Accept": KUBECTL_TABLE})
    assert one["kind"] == "Table" and [r["cells"][0] for r in one["rows"]] == ["a"]


async def test_table_watch_has_columns_only_in_first_event(api: Api) -> None:
    await api.create_cm("a")
    await api.create_cm("b")
    watch, resp = await open_watch(
        api.s, f"{api.url}{api.cm_path()}?watch=true", headers={"Accept": KUBECTL_TABLE}
    )
    async with resp:
        first, second = await watch.next(), await watch.next()
    assert first["object"]["kind"] == "Table"
    assert first["object"]["columnDefinitions"]
    assert second["object"]["kind"] == "Table"
    assert not second["object"].get("columnDefinitions")
    assert second["object"]["rows"][0]["cells"][0] == "b"


async def test_partial_object_metadata_list(api: Api) -> None:
    await api.create_cm("a", {"secret": "payload"}, labels={"x": "y"})
    doc = await api.ok(
        "GET",
        api.cm_path(),
        headers={"Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"},
    )
    assert doc["kind"] == "PartialObjectMetadataList"
    assert doc["apiVersion"] == "meta.k8s.io/v1"
    assert "resourceVersion" in doc["metadata"]
    [item] = doc["items"]
    assert item["kind"] == "PartialObjectMetadata"
    assert item["apiVersion"] == "meta.k8s.io/v1"
    assert item["metadata"]["labels"] == {"x": "y"}
    assert "data" not in item


async def test_protobuf_answers_for_builtin_kinds(api: Api) -> None:
    # As kube-apiserver: client-go's Accept gets protobuf for a built-in kind,
    # decoding to the JSON answer; errors are a protobuf Status.
    await api.create_cm("a", {"k": "v"})
    client_go = {"Accept": "application/vnd.kubernetes.protobuf, application/json"}
    for path in (api.cm_path(), api.cm_path("a")):
        async with api.s.get(api.url + path, headers=client_go) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/vnd.kubernetes.protobuf"
            decoded = decode_object(await resp.read())
        _, as_json = await api.get(path)
        if "items" in as_json:
            for item in as_json["items"]:
                item.pop("kind", None), item.pop("apiVersion", None)
        assert decoded == as_json
    async with api.s.get(api.url + api.cm_path("missing"), headers=client_go) as resp:
        assert (resp.status, resp.headers["Content-Type"]) == (
            404,
            "application/vnd.kubernetes.protobuf",
        )
        assert decode_object(await resp.read())["reason"] == "NotFound"
    watch = api.cm_path() + "?watch=1&resourceVersion=0&timeoutSeconds=1"
    async with api.s.get(api.url + watch, headers=client_go) as resp:
        assert resp.headers["Content-Type"] == "application/vnd.kubernetes.protobuf;stream=watch"
        events, tail = decode_watch_frames(await resp.read())
    assert tail == b""
    assert [(t, o["metadata"]["name"], o["data"]) for t, o in events] == [
        ("ADDED", "a", {"k": "v"})
    ]


async def test_yaml_response(api: Api) -> None:
    await api.create_cm("a", {"k": "v"})
    async with api.s.get(api.url + api.cm_path(), headers={"Accept": "application/yaml"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/yaml"
        doc = yaml.safe_load(await resp.read())
    assert doc["kind"] == "ConfigMapList"
    assert [i["data"] for i in doc["items"]] == [{"k": "v"}]
    async with api.s.get(
        api.url + api.cm_path("a"), headers={"Accept": "application/yaml"}
    ) as resp:
        one = yaml.safe_load(await resp.read())
    assert one["kind"] == "ConfigMap" and one["metadata"]["name"] == "a"


# -- sec. 6: writes -----------------------------------------------------------------------


async def test_create_sets_server_fields(api: Api) -> None:
    created = await api.create_cm("a", {"k": "v"})
    assert created["kind"] == "ConfigMap" and created["apiVersion"] == "v1"
    meta = created["metadata"]
    assert meta["namespace"] == api.ns
    uuid.UUID(meta["uid"])
    assert RFC3339_SECONDS.match(meta["creationTimestamp"])
    assert int(meta["resourceVersion"]) > 0
    got = await api.ok("GET", api.cm_path("a"))
    assert got == created
    pod = await api.ok(
        "POST",
        f"/api/v1/namespaces/{api.ns}/pods",
        201,
        json={
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        },
    )
    assert pod["metadata"]["generation"] == 1


async def test_generate_name(api: Api) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}}
    a = await api.ok("POST", api.cm_path(), 201, json=body)
    b = await api.ok("POST", api.cm_path(), 201, json=body)
    for obj in (a, b):
        assert re.fullmatch(r"gen-[a-z0-9]{5}", obj["metadata"]["name"]), obj["metadata"]
    assert a["metadata"]["name"] != b["metadata"]["name"]
    long_prefix = "x" * 70
    body["metadata"] = {"generateName": long_prefix}
    c = await api.ok("POST", api.cm_path(), 201, json=body)
    assert len(c["metadata"]["name"]) == 63 and c["metadata"]["name"].startswith("x" * 58)


async def test_create_in_missing_namespace_is_404(api: Api) -> None:
    code, doc, _ = await api.request(
        "POST",
        "/api/v1/namespaces/does-not-exist/configmaps",
        json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
    )
    assert code == 404
    assert doc["reason"] == "NotFound"
    assert doc["message"] == 'namespaces "does-not-exist" not found'


async def test_duplicate_create_is_409_already_exists(api: Api) -> None:
    await api.create_cm("a")
    code, doc, _ = await api.request(
        "POST",
        api.cm_path(),
        json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
    )
    assert code == 409
    assert doc["reason"] == "AlreadyExists"
    assert doc["message"] == 'configmaps "a" already exists'
    assert doc["details"] == {"name": "a", "kind": "configmaps"}


async def test_create_with_resource_version_is_500(api: Api) -> None:
    code, doc, _ = await api.request(
        "POST",
        api.cm_path(),
        json={
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "a", "resourceVersion": "7"},
        },
    )
    assert code == 500
    # BeforeCreate's plain error: no reason, no details (as kube-apiserver sends it).
    assert "reason" not in doc and "details" not in doc
    assert doc["message"] == "resourceVersion should not be set on objects to be created"
    code, _ = await api.get(api.cm_path("a"))
    assert code == 404


async def test_update_with_stale_rv_is_409_conflict(api: Api) -> None:
    old = await api.create_cm("a", {"v": "1"})
    await api.merge_patch("a", {"data": {"v": "2"}})
    old["data"] = {"v": "3"}
    code, doc, _ = await api.request("PUT", api.cm_path("a"), json=old)
    assert code == 409
    assert doc["reason"] == "Conflict"
    assert doc["message"] == (
        'Operation cannot be fulfilled on configmaps "a": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    # An empty RV is an unconditional update.
    old["metadata"].pop("resourceVersion")
    updated = await api.ok("PUT", api.cm_path("a"), json=old)
    assert updated["data"] == {"v": "3"}
    code, doc, _ = await api.request("PUT", api.cm_path("missing"), json={"metadata": {}})
    assert code == 404


async def test_noop_update_keeps_rv_and_emits_no_event(api: Api) -> None:
    created = await api.create_cm("a", {"v": "1"})
    watch, resp = await open_watch(
        api.s, f"{api.url}{api.cm_path()}?watch=true&resourceVersion={rv_of(created)}"
    )
    async with resp:
        same = await api.ok("PUT", api.cm_path("a"), json=created)
        assert rv_of(same) == rv_of(created)
        patched = await api.merge_patch("a", {"data": {"v": "1"}})
        assert rv_of(patched) == rv_of(created)
        await api.create_cm("sentinel")
        event = await watch.next()
        assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "sentinel")


async def test_patch_types(api: Api) -> None:
    created = await api.create_cm("a", {"x": "1"}, labels={"l": "1"})
    merged = await api.merge_patch("a", {"data": {"y": "2"}, "metadata": {"labels": None}})
    assert merged["data"] == {"x": "1", "y": "2"}
    assert "labels" not in merged["metadata"]
    assert rv_of(merged) > rv_of(created)
    jsonp = await api.ok(
        "PATCH",
        api.cm_path("a"),
        data=json.dumps(
            [{"op": "test", "path": "/data/x", "value": "1"}, {"op": "remove", "path": "/data/x"}]
        ),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert jsonp["data"] == {"y": "2"}
    assert rv_of(jsonp) > rv_of(merged)
    # A failing json-patch test op changes nothing.
    code, _, _ = await api.request(
        "PATCH",
        api.cm_path("a"),
        data=json.dumps([{"op": "test", "path": "/data/y", "value": "nope"}]),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert 400 <= code < 500
    # Strategic merge: containers merge by name.
    pods = f"/api/v1/namespaces/{api.ns}/pods"
    pod = await api.ok(
        "POST",
        pods,
        201,
        json={
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "one", "image": "busybox:1"},
                    {"name": "two", "image": "busybox:1"},
                ]
            },
        },
    )
    smp = await api.ok(
        "PATCH",
        f"{pods}/p",
        data=json.dumps({"spec": {"containers": [{"name": "two", "image": "busybox:2"}]}}),
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert [(c["name"], c["image"]) for c in smp["spec"]["containers"]] == [
        ("one", "busybox:1"),
        ("two", "busybox:2"),
    ]
    assert rv_of(smp) > rv_of(pod)
    assert smp["metadata"]["generation"] == 2
    # An RV in a patch is a precondition.
    code, doc, _ = await api.request(
        "PATCH",
        api.cm_path("a"),
        data=json.dumps({"metadata": {"resourceVersion": str(rv_of(created))}, "data": {}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert code == 409 and doc["reason"] == "Conflict"


async def test_delete_preconditions(api: Api) -> None:
    created = await api.create_cm("a")
    uid, rv = created["metadata"]["uid"], created["metadata"]["resourceVersion"]
    code, doc, _ = await api.request(
        "DELETE", api.cm_path("a"), json={"preconditions": {"uid": "wrong"}}
    )
    assert code == 409 and doc["reason"] == "Conflict"
    assert (
        f"the UID in the precondition (wrong) does not match the UID in record ({uid})"
        in (doc["message"])
    )
    code, doc, _ = await api.request(
        "DELETE", api.cm_path("a"), json={"preconditions": {"resourceVersion": "1"}}
    )
    assert code == 409 and doc["reason"] == "Conflict"
    assert "the ResourceVersion in the precondition (1) does not match" in doc["message"]
    assert (await api.get(api.cm_path("a")))[0] == 200
    await api.delete("a", {"preconditions": {"uid": uid, "resourceVersion": rv}})
    code, doc = await api.get(api.cm_path("a"))
    assert code == 404
    assert doc["message"] == 'configmaps "a" not found'
    assert doc["details"] == {"name": "a", "kind": "configmaps"}


async def test_finalizers_delay_deletion(api: Api) -> None:
    created = await api.create_cm("a", finalizers=["example.com/hold"])
    watch, resp = await open_watch(
        api.s, f"{api.url}{api.cm_path()}?watch=true&resourceVersion={rv_of(created)}"
    )
    async with resp:
        deleting = await api.delete("a")
        assert RFC3339_SECONDS.match(deleting["metadata"]["deletionTimestamp"])
        event = await watch.next()
        assert event["type"] == "MODIFIED"
        assert event["object"]["metadata"]["deletionTimestamp"]
        got = await api.ok("GET", api.cm_path("a"))
        assert got["metadata"]["finalizers"] == ["example.com/hold"]
        await api.merge_patch("a", {"metadata": {"finalizers": None}})
        event = await watch.next()
        assert event["type"] == "DELETED"
        assert event["object"]["metadata"]["name"] == "a"
        assert (await api.get(api.cm_path("a")))[0] == 404


async def test_deletecollection_with_label_selector(api: Api) -> None:
    await api.create_cm("a", labels={"doomed": "yes"})
    await api.create_cm("b", labels={"doomed": "yes"})
    await api.create_cm("c", labels={"doomed": "no"})
    doc = await api.ok("DELETE", f"{api.cm_path()}?labelSelector=doomed%3Dyes")
    assert doc["kind"] == "ConfigMapList"
    assert sorted(i["metadata"]["name"] for i in doc["items"]) == ["a", "b"]
    left = await api.ok("GET", api.cm_path())
    assert [i["metadata"]["name"] for i in left["items"]] == ["c"]


# -- bad input ----------------------------------------------------------------------------


async def test_malformed_json_body_is_400(api: Api) -> None:
    code, doc, _ = await api.request(
        "POST", api.cm_path(), data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert code == 400 and doc["reason"] == "BadRequest"
    code, doc, _ = await api.request(
        "POST", api.cm_path(), data=b"[1, 2]", headers={"Content-Type": "application/json"}
    )
    assert code == 400 and doc["reason"] == "BadRequest"


async def test_body_of_wrong_kind_is_400(api: Api) -> None:
    code, doc, _ = await api.request(
        "POST",
        api.cm_path(),
        json={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}},
    )
    assert code == 400
    assert doc["reason"] == "BadRequest"
    assert doc["message"] == (
        'Pod in version "v1" cannot be handled as a ConfigMap: '
        "converting (v1.Pod) to (core.ConfigMap): unknown conversion"
    )


@pytest.mark.parametrize(
    "meta",
    [
        {"name": "a", "labels": {"k": 1}},
        {"name": "a", "labels": "x"},
        {"name": 5},
        {"generateName": 5},
        {"name": "a", "finalizers": "x"},
        {"name": "a", "annotations": {"k": ["v"]}},
    ],
)
async def test_wrongly_typed_metadata_is_400_not_500(api: Api, meta: dict[str, Any]) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
    code, doc, _ = await api.request("POST", api.cm_path(), json=body)
    assert code == 400, doc
    assert doc["reason"] == "BadRequest"
    await api.create_cm("ok")
    code, doc, _ = await api.request(
        "PATCH",
        api.cm_path("ok"),
        data=json.dumps({"metadata": {k: v for k, v in meta.items() if k != "name"} or meta}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert code == 400, doc
    code, doc, _ = await api.request(
        "DELETE", api.cm_path("ok"), json={"preconditions": "not-an-object"}
    )
    assert code == 400, doc
    assert (await api.get(api.cm_path("ok")))[0] == 200


async def test_body_over_the_limit_is_413(api: Api) -> None:
    big = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "big"},
        "data": {"x": "y" * 70_000},
    }
    code, doc, _ = await api.request("POST", api.cm_path(), json=big)
    assert code == 413
    assert doc["reason"] == "RequestEntityTooLarge"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 8192

    # Chunked, without Content-Length.
    code, doc, _ = await api.request(
        "POST", api.cm_path(), data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert code == 413
    assert (await api.get(api.cm_path("big")))[0] == 404


async def test_bad_label_selector_is_400_with_the_parser_message(api: Api) -> None:
    selector = "a in ("
    with pytest.raises(SelectorError) as parsed:
        LabelSelector.parse(selector)
    for query in ("", "watch=true&"):
        code, doc = await api.get(f"{api.cm_path()}?{query}labelSelector=a%20in%20(")
        assert code == 400
        assert doc["reason"] == "BadRequest"
        assert doc["message"] == parsed.value.message


async def test_unsupported_field_label(api: Api) -> None:
    for query in ("", "watch=true&"):
        code, doc = await api.get(
            f"/api/v1/namespaces/{api.ns}/pods?{query}fieldSelector=spec.foo%3D1"
        )
        assert code == 400
        assert doc == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "field label not supported: spec.foo",
            "reason": "BadRequest",
            "code": 400,
        }
        code, doc = await api.get(f"{api.cm_path()}?{query}fieldSelector=spec.foo%3D1")
        assert code == 400
        assert doc["message"] == (
            '"spec.foo" is not a known field selector: only "metadata.name", "metadata.namespace"'
        )
    # Supported pod field labels work.
    code, _ = await api.get(f"/api/v1/namespaces/{api.ns}/pods?fieldSelector=spec.nodeName%3Dn1")
    assert code == 200


@pytest.mark.parametrize("value", ["abc", "1.5", "99999999999999999999"])
async def test_non_integer_limit_is_400(api: Api, value: str) -> None:
    code, doc = await api.get(f"{api.cm_path()}?limit={value}")
    assert code == 400
    assert doc["reason"] == "BadRequest"
    assert doc["message"].startswith(f'strconv.ParseInt: parsing "{value}"')


async def raw_request(sim: SimProcess, head: bytes, within: float = 3.0) -> int:
    """Send raw bytes; return the status code of the answer (0 if the server just closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        writer.write(head)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), within)
    finally:
        writer.close()
    if not line:
        return 0
    return int(line.split()[1])


async def test_huge_headers_and_odd_paths_get_a_4xx(sim: SimProcess, api: Api) -> None:
    # kube-apiserver reads heads of up to 1 MiB (Go's MaxHeaderBytes), and so does the sim.
    big = b"GET /api/v1/configmaps HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    assert await raw_request(sim, big) == 200
    huge = b"GET /api/v1/configmaps HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 << 20) + b"\r\n\r\n"
    code = await raw_request(sim, huge)
    assert 400 <= code < 500, code
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(500))
    code = await raw_request(sim, b"GET /api HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert 400 <= code < 500 or code == 200, code
    long_url = b"/api/v1/configmaps?labelSelector=" + b"a" * 20_000
    code = await raw_request(sim, b"GET " + long_url + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert 400 <= code < 500, code
    for path in (b"/api/v1/namespaces//pods", b"/api/v1/namespaces/default/pods%00"):
        code = await raw_request(sim, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert 400 <= code < 500, (path, code)
    for path in (
        b"/api/v1/namespaces/default/pods/%00",
        b"/api/v1/namespaces/%2F/pods",
        b"/api/v1/namespaces/default/pods/%ff%fe",
        b"/apis/",
        b"/apis//v1",
        b"/api/v1/namespaces/default/configmaps/a/b/c/d",
        b"/../../etc/passwd",
        b"/api/v1/namespaces/default/pods?labelSelector=%00",
        b"/api/v1/namespaces/default/pods?resourceVersion=-1",
        b"/api/v1/namespaces/default/pods?resourceVersion=abc&resourceVersionMatch=Exact",
    ):
        code = await raw_request(sim, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert 0 < code < 500, (path, code)
    code = await raw_request(sim, b"NOT-HTTP\r\n\r\n")
    assert 400 <= code < 500, code
    # And the server is still fine.
    assert (await api.get("/healthz"))[0] == 200


# -- sec. 8: discovery and health ------------------------------------------------------------


async def test_discovery(api: Api) -> None:
    doc = await api.ok("GET", "/api")
    assert doc["kind"] == "APIVersions" and doc["versions"] == ["v1"]
    doc = await api.ok("GET", "/apis")
    assert doc["kind"] == "APIGroupList"
    groups = {g["name"]: g for g in doc["groups"]}
    assert groups["discovery.k8s.io"]["preferredVersion"]["groupVersion"] == "discovery.k8s.io/v1"
    doc = await api.ok("GET", "/api/v1")
    assert doc["kind"] == "APIResourceList" and doc["groupVersion"] == "v1"
    resources = {r["name"]: r for r in doc["resources"]}
    pods = resources["pods"]
    assert pods["namespaced"] is True and pods["kind"] == "Pod"
    assert {"get", "list", "watch", "create", "delete", "deletecollection"} <= set(pods["verbs"])
    assert "po" in pods["shortNames"]
    assert resources["namespaces"]["namespaced"] is False
    assert "pods/status" in resources
    doc = await api.ok("GET", "/apis/discovery.k8s.io/v1")
    assert doc["groupVersion"] == "discovery.k8s.io/v1"
    assert "endpointslices" in {r["name"] for r in doc["resources"]}


async def test_version(api: Api) -> None:
    doc = await api.ok("GET", "/version")
    assert doc["major"] == "1"
    assert doc["gitVersion"].startswith("v1.")
    assert doc["platform"]


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/readyz"])
async def test_health(api: Api, path: str) -> None:
    async with api.s.get(api.url + path) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert await resp.text() == "ok"


# -- bodies nested past what a JSON decoder reads (Finding 10) ---------------------------


def _nested(levels: int) -> bytes:
    """A ConfigMap whose data holds arrays `levels` deep (2 more for the objects)."""
    return b'{"metadata":{"name":"deep"},"data":{"a":' + b"[" * levels + b"]" * levels + b"}}"


async def test_body_nested_past_go_max_depth_is_a_400(api: Api) -> None:
    headers = {"Content-Type": "application/json"}
    code, doc, _ = await api.request("POST", api.cm_path(), data=_nested(10_000), headers=headers)
    # kube-apiserver's scanner stops at 10,000 levels while reading kind/apiVersion.
    assert (code, doc["reason"]) == (400, "BadRequest"), doc
    assert doc["message"] == (
        "the object provided is unrecognized (must be of type ConfigMap): couldn't get "
        "version/kind; json parse error: invalid character '[' exceeded max depth "
        '({"metadata":{"name":"deep"},"d ...)'
    )
    # Deeper than the simulator's decoder, within Go's: still a Status, never a 500.
    code, doc, _ = await api.request("POST", api.cm_path(), data=_nested(3_000), headers=headers)
    assert (code, doc["kind"]) == (400, "Status"), doc
    code, doc, _ = await api.request(
        "PUT", api.cm_path("deep"), data=_nested(20_000), headers=headers
    )
    assert code == 400, doc
    assert (await api.get("/healthz"))[0] == 200
