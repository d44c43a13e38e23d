"""The process settings of `edge-proxy serve` that cut its resident memory."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from edgeproxy import footprint


def test_mmap_threshold_is_fixed_where_glibc_runs() -> None:
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert footprint.fix_mmap_threshold() is glibc


PROBE = """
import sys
from edgeproxy import footprint
{before}
applied = footprint.prefer_pure_frozenlist()
import frozenlist
print(applied, frozenlist.FrozenList.__module__)
"""


@pytest.mark.parametrize(
    ("env", "before", "expected"),
    [
        ({}, "", "True frozenlist"),  # the pure-Python class
        ({"FROZENLIST_NO_EXTENSIONS": ""}, "", "True frozenlist._frozenlist"),  # user's choice
        ({}, "import frozenlist", "False frozenlist._frozenlist"),  # too late to choose
    ],
)
def test_frozenlist_is_pure_python_unless_chosen_otherwise(
    env: dict[str, str], before: str, expected: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if k != "FROZENLIST_NO_EXTENSIONS"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(before=before)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == expected


CERTS_PROBE = """
import ssl
from edgeproxy import footprint
print(footprint.import_aiohttp_without_default_certs())
import aiohttp.connector
# aiohttp's import-time default contexts (private names: what the setting is about).
print(aiohttp.connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509"])
# Our own contexts still get the system bundle: the switch was for the import only.
print(ssl.create_default_context().cert_store_stats()["x509"] > 0)
print(footprint.import_aiohttp_without_default_certs())
"""


def test_aiohttp_is_imported_without_loading_the_system_ca_bundle() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CERTS_PROBE], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["True", "0", "True", "False"]
