"""Triton's model repository extension across every worker: index, load, unload.

What the workers serve is data in their shared state (service/control/shared_state.py): a load or an
unload changes the desired set, and each worker's ``ModelManager`` (service/control/manager.py) applies
it in its background loop; the request is answered once every worker reports the change done, or the
first failure. Changes to one model are serialised per worker (Triton serialises them per model), and
one that a later change (from another worker) overtook answers 409 instead of waiting for ever.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

from service.config import Settings
from service.control.shared_state import (
    LOADING,
    READY,
    UNAVAILABLE,
    Desired,
    SharedState,
)
from service.control.store import (
    check_entry,
    entry_family,
    latest_entries,
    scan_store,
)
from service.errors import (
    InvalidModelName,
    LoadFailed,
    ModelUnavailable,
    NotInStore,
    Superseded,
)
from zoo.entry import get_entry
from zoo.families import FAMILIES, InvalidName, check_model_name, check_version

POLL_S = 0.05  # how often a waiting load/unload looks at the workers' statuses
LOAD_WAIT_S = 600.0  # a load/unload request waits this long for every worker (a ResNet warms up in seconds)


def initial_models(settings: Settings) -> dict[str, str]:
    """name -> tag to serve at start-up: ``MODEL_ZOO_MODELS`` as given, else the latest version of
    every stored model of a known family (other BentoML models in the store are left alone)."""
    if settings.models is not None:
        chosen = {}
        for name, version in settings.models:
            entry = get_entry(name, version)
            if entry is not None:  # preflight has refused to start when one is missing
                chosen[name] = str(entry.tag)
        return chosen
    return {name: str(entry.tag) for name, entry in latest_entries().items() if entry_family(entry) in FAMILIES}


def publish_initial(state: SharedState, settings: Settings) -> Desired:
    """Run where the workers are started, before them: what every worker loads first."""
    models = initial_models(settings)
    return state.update_desired(lambda d: d.models.update(models))


def check_names(name: str, version: str | None) -> None:
    """A name (and version) from a URL or body that a store tag can have, else a 400 naming the rule."""
    try:
        check_model_name(name)
        if version is not None:
            check_version(version)
    except InvalidName as exc:
        raise InvalidModelName(str(exc)) from None



class Repository:
    def __init__(self, settings: Settings, state: SharedState) -> None:
        self.settings = settings
        self.state = state
        self._changing: dict[str, asyncio.Lock] = {}  # name -> held by the one load/unload of it in progress here


    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: every stored model version, with its state across workers."""
        desired = self.state.read_desired()
        statuses = self.state.statuses()
        rows = []
        entries, broken = scan_store()
        for entry in sorted(entries, key=lambda e: (e.tag.name, -e.creation_time.timestamp())):
            name, version = entry.tag.name, entry.tag.version
            state, reason = UNAVAILABLE, "unloaded"
            if entry_family(entry) not in FAMILIES:
                reason = f"not a model of a known family ({', '.join(FAMILIES)})"
            failed = desired.failures.get(name)
            if failed and failed["version"] == version:
                reason = failed["reason"]
            if desired.models.get(name) == str(entry.tag):
                states = [st.models.get(name, {"state": LOADING, "reason": ""}) for st in statuses] or [
                    {"state": LOADING, "reason": ""}]
                bad = [s for s in states if s["state"] == UNAVAILABLE]
                if bad:
                    reason = bad[0]["reason"]
                elif all(s["state"] == READY and s.get("version") == version for s in states) \
                        and len(statuses) >= self.settings.workers:
                    state, reason = READY, ""
                else:
                    state, reason = LOADING, ""
            if not ready_only or state == READY:
                rows.append({"name": name, "version": version, "state": state, "reason": reason})
        if not ready_only:  # after the readable versions of the same name
            rows.extend({"name": b.name, "version": b.version, "state": UNAVAILABLE, "reason": b.reason} for b in broken)
            rows.sort(key=lambda row: row["name"])
        return rows

    async def load(self, name: str, version: str | None = None) -> str:
        """Serve ``name`` (latest or ``version``) on every worker; returns its tag once all serve it."""
        check_names(name, version)
        entry = await asyncio.to_thread(get_entry, name, version)
        if entry is None:
            what = f"model {name!r}" + (f" version {version!r}" if version else "")
            raise NotInStore(f"{what} is not in the model store; export it first (python -m export CHECKPOINT --name {name})")
        tag = str(entry.tag)
        problem = await asyncio.to_thread(check_entry, entry, self.settings.runtime, self.settings.precision)
        if problem is not None:
            self.state.update_desired(lambda d: d.failures.__setitem__(name, {"version": entry.tag.version,
                                                                                "reason": problem}))
            raise LoadFailed(f"load of {tag} failed: {problem}")
        async with self._change_of(name):
            previous = self.state.read_desired().models.get(name)

            def serve(d: Desired) -> None:
                d.models[name] = tag
                d.failures.pop(name, None)

            generation = self.state.update_desired(serve).generation
            failure = await self._wait_all(name, f"load of {tag}", generation,
                                           lambda m: m.get(name, {}).get("state") == READY
                                           and m[name]["version"] == entry.tag.version,
                                           lambda m: m.get(name, {}).get("state") == UNAVAILABLE
                                           and m[name]["version"] == entry.tag.version and m[name]["reason"],
                                           lambda d: d.models.get(name) == tag)
            if failure:
                def undo(d: Desired) -> None:
                    if d.models.get(name) == tag:  # not if a later change (another worker's) replaced it
                        if previous is None:
                            d.models.pop(name, None)
                        else:
                            d.models[name] = previous
                    d.failures[name] = {"version": entry.tag.version, "reason": failure}

                self.state.update_desired(undo)
                raise LoadFailed(f"load of {tag} failed: {failure}")
        return tag

    async def unload(self, name: str) -> None:
        """Stop serving ``name`` on every worker, after the requests they hold are answered."""
        check_names(name, None)
        if name not in self.state.read_desired().models and await asyncio.to_thread(get_entry, name) is None:
            raise NotInStore(f"model {name!r} is not in the model store and not served")
        async with self._change_of(name):
            generation = self.state.update_desired(lambda d: (d.models.pop(name, None),
                                                              d.failures.pop(name, None))).generation
            await self._wait_all(name, f"unload of {name!r}", generation, lambda m: name not in m, lambda m: None,
                                 lambda d: name not in d.models)

    @asynccontextmanager
    async def _change_of(self, name: str) -> AsyncIterator[None]:
        """One load/unload of ``name`` at a time in this worker (Triton serialises them per model); the
        others wait their turn, so each is applied and answered in order. Across workers, ``_wait_all``
        notices a change that overtook its own."""
        lock = self._changing.setdefault(name, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), LOAD_WAIT_S)
        except asyncio.TimeoutError:
            raise ModelUnavailable(f"another load or unload of model {name!r} is still in progress; retry shortly",
                                   headers={"Retry-After": "5"}) from None
        try:
            yield
        finally:
            lock.release()

    async def _wait_all(self, name: str, what: str, generation: int, done: Callable[[dict], bool],
                        failed: Callable[[dict], str | None], holds: Callable[[Desired], bool]) -> str | None:
        """Until every worker applied ``generation`` and ``done`` holds for it; the first failure reason.
        Superseded (409) once the desired set no longer ``holds`` this change: a later load or unload of
        ``name`` (from another worker) replaced it, and the state this waits for would never come."""
        deadline = time.monotonic() + LOAD_WAIT_S
        while time.monotonic() < deadline:
            statuses = self.state.statuses()
            for st in statuses:
                if st.generation >= generation and (reason := failed(st.models)):
                    return reason
            if len(statuses) >= self.settings.workers and all(
                    st.generation >= generation and done(st.models) for st in statuses):
                return None
            desired = self.state.read_desired()
            if not holds(desired):
                now = desired.models.get(name)
                raise Superseded(f"{what} was superseded by a later load or unload of model {name!r}: "
                                 + (f"{now} is served now" if now else "it is unloaded now"))
            await asyncio.sleep(POLL_S)
        raise ModelUnavailable(f"not every worker applied the change within {LOAD_WAIT_S:.0f} s; see the server log",
                               headers={"Retry-After": "5"})
