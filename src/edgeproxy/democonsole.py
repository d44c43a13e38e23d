"""The interactive `make demo`: one key per action, a prompt, and what each action did.

A person at a terminal presses c, r, k or q and sees at once that the key
was taken ("c: cutting the link…"), then what the proxy made of it ("done:
the proxy saw it after 1.8 s"). Keys need no Enter: the terminal is put in
cbreak mode and put back as it was on every way out (q, end of input,
Ctrl-C, an error). Lines are printed above the prompt, which always shows
the link as the proxy itself reports it on its admin port: "unknown" until
the proxy's probes have had an answer (or while the proxy is not answering),
never "up" on trust. While the link is cut the console says what to try: a
kubectl command with this demo's kubeconfig, to paste in another terminal.
"""

from __future__ import annotations

import json
import os
import sys
import termios
import threading
import time
import tty
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from edgeproxy.testing import ProxyProcess, SimProcess

UNKNOWN, UP, DOWN = "unknown", "up", "down"
DESCRIBE = {
    UNKNOWN: "unknown (no answer from the proxy's probes yet)",
    UP: "up",
    DOWN: "down (the proxy serves from its cache)",
}
KEYS = "c cut the link · r restore it · k kill -9 the proxy · h help · q quit"
# Short enough for an 80-column terminal: a wrapped prompt cannot be redrawn in place.
PROMPT = "[link {state}] c=cut r=restore k=kill q=quit h=help > "
# How long an action waits for the proxy to notice: its probes take ~2 s on a black hole.
NOTICE_SECONDS = 20.0


def link_state(admin_url: str) -> str:
    """The link as the proxy reports it (/debug/cache); unknown when it does not answer."""
    req = urllib.request.Request(admin_url + "/debug/cache", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            state = json.loads(resp.read())["link"]["state"]
    except (OSError, ValueError, KeyError, TypeError):
        return UNKNOWN
    return state if state in (UP, DOWN) else UNKNOWN


def wait_link(admin_url: str, want: str, timeout: float = NOTICE_SECONDS) -> float:
    """Seconds until the proxy reports the link as `want`; TimeoutError after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if link_state(admin_url) == want:
            return time.monotonic() - started
        time.sleep(0.05)
    raise TimeoutError(f"the proxy did not report the link {want} within {timeout:.0f} s")


def try_while_cut(kubeconfig: Path) -> list[str]:
    """What to paste in another terminal while the link is cut."""
    kc = f"kubectl --kubeconfig {kubeconfig}"
    return [
        "While the link is cut, try in another terminal (answers come from the proxy's cache):",
        f"  {kc} get pods -A -w",
        f"  {kc} get configmaps -n edge-apps -l tier=edge",
        f"  {kc} create configmap x -n edge-apps   # a write: 503, retried, then an error",
    ]


class Terminal:
    """stdin in cbreak mode (keys arrive unbuffered, unechoed), restored on exit."""

    def __init__(self, fd: int, out: TextIO) -> None:
        self.fd = fd
        self.out = out
        self.prompt = "> "
        self._saved: list[Any] | None = None
        self._lock = threading.Lock()
        # Clear the line the prompt is on before writing over it, on a terminal only.
        self._clear = "\r\x1b[K" if out.isatty() else "\n"

    def __enter__(self) -> Terminal:
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd, termios.TCSANOW)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
        with self._lock:
            self.out.write("\n")
            self.out.flush()

    def keys(self) -> str:
        """The next keys pressed ("" at end of input); an escape sequence comes whole."""
        return os.read(self.fd, 16).decode(errors="replace")

    def say(self, *lines: str) -> None:
        """Print lines above the prompt, then the prompt again."""
        with self._lock:
            self.out.write(self._clear + "".join(f"{line}\n" for line in lines) + self.prompt)
            self.out.flush()

    def show_prompt(self, prompt: str) -> None:
        with self._lock:
            self.prompt = prompt
            self.out.write(self._clear + prompt)
            self.out.flush()


class Console:
    """The key loop and a thread that prints every change of the link state."""

    def __init__(self, sim: SimProcess, proxy: ProxyProcess, term: Terminal) -> None:
        self.sim = sim
        self.proxy = proxy
        self.term = term
        self.state = UNKNOWN
        self.cut = False
        self._stop = threading.Event()
        self.actions: dict[str, Callable[[], bool]] = {
            "c": self.cut_link,
            "r": self.restore_link,
            "k": self.restart_proxy,
            "h": self.help,
            "?": self.help,
            "q": self.quit,
            "\x04": self.quit,  # Ctrl-D: cbreak mode passes it through as a key
        }

    def run(self) -> None:
        self.show_state(UNKNOWN)
        watcher = threading.Thread(target=self._watch, name="link-watcher", daemon=True)
        watcher.start()
        try:
            while True:
                keys = self.term.keys()
                if not keys:
                    self.term.say("end of input: quitting")
                    return
                for key in [keys] if keys.startswith("\x1b") else list(keys):
                    if not self.handle(key):
                        return
        finally:
            self._stop.set()
            watcher.join(timeout=5)

    def handle(self, key: str) -> bool:
        """Act on one key; False to quit."""
        if key in ("\n", "\r", " "):
            self.term.say("")
            return True
        action = self.actions.get(key.lower())
        if action is None:
            shown = "an escape sequence" if key.startswith("\x1b") else repr(key)
            self.term.say(f"{shown} does nothing here: press c, r, k or q (h for help)")
            return True
        return action()

    def show_state(self, state: str) -> None:
        self.state = state
        self.term.show_prompt(PROMPT.format(state=state))

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            state = link_state(self.proxy.admin_url)
            if state != self.state and not self._stop.is_set():
                self.term.say(f"[{time.strftime('%H:%M:%S')}] link {DESCRIBE[state]}")
                self.show_state(state)

    def cut_link(self) -> bool:
        if self.cut:
            self.term.say("c: the link is already cut (r restores it)")
            return True
        self.term.say("c: cutting the link (a black hole: packets vanish, nothing answers)…")
        self.sim.fault(blackhole=True)
        self.cut = True
        self.term.say(self._noticed(DOWN, "saw it"), "", *self.hints())
        return True

    def _noticed(self, want: str, what: str) -> str:
        try:
            seconds = wait_link(self.proxy.admin_url, want)
        except TimeoutError as exc:
            return f"   not yet: {exc}; its log is {self.proxy.log_path}"
        self.show_state(want)  # the prompt agrees with the line below at once
        return f"   done: the proxy {what} after {seconds:.1f} s"

    def restore_link(self) -> bool:
        if not self.cut:
            self.term.say("r: the link is not cut (c cuts it)")
            return True
        self.term.say("r: restoring the link…")
        self.sim.heal()
        self.cut = False
        self.term.say(self._noticed(UP, "saw the link return"))
        return True

    def restart_proxy(self) -> bool:
        self.term.say("k: killing edge-proxy (kill -9, as a crash) and starting it again…")
        self.proxy.kill()
        seconds = self.proxy.start()
        self.term.say(f"   done: it answered again after {seconds:.2f} s, from its on-disk cache")
        return True

    def help(self) -> bool:
        self.term.say(*self.hints())
        return True

    def hints(self) -> list[str]:
        kc = self.proxy.kubeconfig
        if self.cut:
            return try_while_cut(kc)
        return [
            "Try in another terminal:",
            f"  kubectl --kubeconfig {kc} get pods,configmaps -n edge-apps",
            f"  kubectl --kubeconfig {kc} get configmaps -n edge-apps -w",
            f"Keys: {KEYS}",
        ]

    def quit(self) -> bool:
        self.term.say("q: quitting: stopping edge-proxy and the simulator…")
        return False


def interactive(sim: SimProcess, proxy: ProxyProcess) -> None:
    print(f"\nkubeconfig for clients of the proxy: {proxy.kubeconfig}")
    print(f"Metrics and cache state: {proxy.admin_url}/metrics  {proxy.admin_url}/debug/cache")
    print("Press a key, no Enter needed.", flush=True)
    with Terminal(sys.stdin.fileno(), sys.stdout) as term:
        console = Console(sim, proxy, term)
        term.say(*console.hints())
        console.run()
