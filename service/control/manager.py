"""The models one worker serves, kept in step with what all workers were asked to serve.

``ModelManager`` is shared by the REST endpoints, the per-model routes and the Open Inference Protocol app.
The set of served models is data (service/control/shared_state.py): every stored model of a known family at
start-up (or exactly ``MODEL_ZOO_MODELS``), changed at run time by Triton's repository extension
(``load``/``unload``, service/control/repository.py). A background task on the worker's event loop applies each change: a model is
loaded, warmed up and only then routed to; an unloaded (or replaced) one stops taking new requests
and is closed when its in-flight requests have finished.

A request for a model this worker is still loading waits for it instead of answering 503, so a
worker that was just (re)started does not turn away traffic that another worker would have served.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator

from service.config import Settings
from service.control.repository import LOAD_WAIT_S, Repository, check_names
from service.control.shared_state import (
    LOADING,
    READY,
    UNAVAILABLE,
    UNLOADING,
    Desired,
    SharedState,
    WorkerStatus,
)
from service.core import stats
from service.core.interface import ServedModel
from service.core.served import build_served_model
from service.errors import (
    InsufficientStorage,
    ModelUnavailable,
    NotInStore,
    NotLoaded,
    ServiceError,
)
from service.http.drain import process_drain  # SIGTERM: a request waiting for a model answers 503 at once
from zoo.entry import get_entry
from zoo.errors import first_line
from zoo.families import (
    missing_model_message,
)

logger = logging.getLogger("model_zoo.manager")

WARMUP_ROUNDS = 16  # model calls per model: > 12, the requests BentoML's batcher uses to fit its latency model
POLL_S = 0.1  # how often a worker looks for changes to the desired set
# Young-generation collections run every GC_THRESHOLD[0] net allocations; Python's default (700) means
# several collections per HTTP request on this stack (service/README.md, "Per-request overhead").
GC_THRESHOLD = (20_000, 20, 20)

def settle_heap() -> None:
    """After start-up: move everything alive into the permanent generation and space out collections.
    The start-up heap (BentoML, pydantic, numpy, ONNX Runtime) never becomes garbage, but every full
    collection would walk it again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    logger.info("start-up heap frozen (%d objects) and GC thresholds set to %s", gc.get_freeze_count(), GC_THRESHOLD)


@dataclass
class Served:
    """A model routed to in this worker, with its in-flight request count."""

    model: ServedModel
    version: str
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)


class ModelManager:
    """The models this worker serves: a background loop applies the desired set; requests ``use`` them."""

    def __init__(self, settings: Settings, state: SharedState, worker: int = 1) -> None:
        self.settings = settings
        self.state = state
        self.worker = worker
        self.served: dict[str, Served] = {}
        self.loading: dict[str, asyncio.Future] = {}  # name -> resolved once it is served (or failed)
        self.failures: dict[str, dict[str, str]] = {}  # name -> {"version", "reason"} in this worker
        self.draining: dict[str, str] = {}  # name -> version: unloaded, answering its last requests
        self.applied = -1  # desired generation applied
        self.synced = False
        self._task: asyncio.Task | None = None
        self.repository = Repository(settings, state)  # Triton's load/unload/index, for every worker
        self._unpublished = False  # the last status write failed (disk full): the loop retries every tick

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Schedule loading on the running loop (returns at once). Requests that arrive meanwhile for
        a model in the desired set wait for it."""
        loop = asyncio.get_running_loop()
        for name in self.state.read_desired().models:
            self.loading[name] = loop.create_future()
        self._publish()
        self._task = loop.create_task(self._run())
        self._task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task) -> None:
        """The background loop ends only when stopped; anything else is a defect that readiness reports."""
        if not task.cancelled() and task.exception() is not None:
            logger.critical("worker %d's model loop died; /readyz answers 503 until the worker is replaced",
                            self.worker, exc_info=task.exception())

    def loop_alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            desired = self.state.read_desired()
            if desired.generation != self.applied:
                await self._apply(desired)
                self.applied = desired.generation
                if not self.synced:
                    self.synced = True
                    settle_heap()
                    logger.info("worker %d ready: serving %s%s", self.worker, ", ".join(sorted(self.served)) or "nothing",
                                f"; failed: {', '.join(sorted(self.failures))}" if self.failures else "")
                self._publish()
            elif self._unpublished:
                self._publish()
            await asyncio.sleep(POLL_S)

    async def _apply(self, desired: Desired) -> None:
        gone = [name for name in self.served if name not in desired.models]
        await asyncio.gather(*(self._drop(name) for name in gone))
        for name, tag in desired.models.items():
            served = self.served.get(name)
            if served is not None and served.model.tag == tag:
                continue
            await self._load(name, tag)  # a failed one is tried again only when the desired set changes

    async def _load(self, name: str, tag: str) -> None:
        future = self.loading.get(name)
        if future is None or future.done():
            future = self.loading[name] = asyncio.get_running_loop().create_future()
        self.failures.pop(name, None)
        self._publish()  # LOADING
        started = time.monotonic()
        try:
            entry = await asyncio.to_thread(get_entry, *tag.split(":", 1))
            if entry is None:
                raise NotInStore(f"model {tag} is no longer in the model store")
            model = await asyncio.to_thread(build_served_model, name, entry, self.settings)
            await model.warmup(WARMUP_ROUNDS, self.settings.warmup_s)
        except Exception as exc:  # noqa: BLE001 - one broken entry must not take the others down
            self.failures[name] = {"version": tag.split(":", 1)[1], "reason": f"model {name!r} failed to load: {first_line(exc)}"}
            logger.exception("model %s failed to load", tag)
        else:
            stats.loaded(name, time.monotonic() - started)  # model_zoo_model_load_seconds
            old = self.served.get(name)
            self.served[name] = Served(model, tag.split(":", 1)[1])
            logger.info("%s is warmed up and served as %r (worker %d)", tag, name, self.worker)
            if old is not None:
                asyncio.get_running_loop().create_task(self._close(old))
        finally:
            self.loading.pop(name, None)
            if not future.done():
                future.set_result(None)
            self._publish()

    async def _drop(self, name: str) -> None:
        """Stop routing to ``name`` now; close it once its in-flight requests are answered."""
        served = self.served.pop(name)
        self.failures.pop(name, None)
        self.draining[name] = served.version
        self._publish()  # UNLOADING until the requests it holds are answered
        try:
            await self._close(served)
        finally:
            if self.draining.get(name) == served.version:
                del self.draining[name]
        logger.info("%s unloaded (worker %d)", served.model.tag, self.worker)

    @staticmethod
    async def _close(served: Served) -> None:
        """Once its in-flight requests are answered, close the model: its memory returns now."""
        while served.in_flight:
            served.idle.clear()
            await served.idle.wait()
        served.model.close()

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for served in self.served.values():
            served.model.close()

    def _publish(self) -> None:
        models = {name: {"version": v, "state": UNLOADING, "reason": ""} for name, v in self.draining.items()}
        models.update({name: {"version": s.version, "state": READY, "reason": ""} for name, s in self.served.items()})
        for name in self.loading:
            if name not in models:
                models[name] = {"version": "", "state": LOADING, "reason": ""}
        for name, failure in self.failures.items():
            models[name] = {"version": failure["version"], "state": UNAVAILABLE, "reason": failure["reason"]}
        try:
            self.state.write_status(WorkerStatus(self.worker, os.getpid(), self.applied, self.synced, models))
        except InsufficientStorage as exc:  # keep serving (and start up): other workers see a stale status until then
            if not self._unpublished:
                logger.error("worker %d cannot publish its status: %s", self.worker, exc.message)
            self._unpublished = True
        else:
            if self._unpublished:
                logger.info("worker %d publishes its status again", self.worker)
            self._unpublished = False

    # ------------------------------------------------------------------ requests

    def is_ready(self) -> bool:
        """Every worker up, done with its start-up set, and no desired model failing anywhere."""
        statuses = self.state.statuses()
        if not self.synced or not self.loop_alive() or len(statuses) < self.settings.workers:
            return False
        desired = self.state.read_desired().models
        return all(st.synced and not any(st.models.get(n, {}).get("state") == UNAVAILABLE for n in desired)
                   for st in statuses)

    @asynccontextmanager
    async def use(self, name: str, version: str | None = None, alias: bool = False) -> AsyncIterator[ServedModel]:
        """The served model for one request; an unload waits until the request is answered.
        ``alias``: the family route for the model stored under the family's name (503 with how to
        add it when the store lacks it, as those routes always answered)."""
        served = await self._lookup(name, version, alias)
        served.in_flight += 1
        try:
            yield served.model
        finally:
            served.in_flight -= 1
            if not served.in_flight:
                served.idle.set()

    async def get(self, name: str, version: str | None = None) -> ServedModel:
        """The served model (for a request that does not hold it: metadata, readiness)."""
        return (await self._lookup(name, version, False)).model

    async def _lookup(self, name: str, version: str | None, alias: bool) -> Served:
        check_names(name, version)
        served = self.served.get(name)
        if served is None and name in self.loading and name not in self.failures:
            try:  # start-up or a load in progress: wait for it rather than turn the request away
                await asyncio.wait_for(process_drain().until(asyncio.shield(self.loading[name]), f"model {name!r} was "
                                                             "still loading; retry on another server"), LOAD_WAIT_S)
            except asyncio.TimeoutError:
                raise ModelUnavailable(f"model {name!r} is still loading; retry shortly (see /readyz)",
                                       headers={"Retry-After": "1"}) from None
            served = self.served.get(name)
        if served is None:
            raise await self._why_not_served(name, alias)
        if version is not None and version != served.version:
            entry = await asyncio.to_thread(get_entry, name, version)
            if entry is None:
                raise NotInStore(f"model {name!r} has no version {version!r} in the model store "
                                 f"(served: {served.version})")
            raise NotLoaded(f"version {version!r} of model {name!r} is in the store but not loaded "
                            f"(served: {served.version}); POST /v2/repository/models/{name}/load to switch")
        return served

    async def _why_not_served(self, name: str, alias: bool) -> ServiceError:
        if name in self.failures:
            return ModelUnavailable(self.failures[name]["reason"])
        entry = await asyncio.to_thread(get_entry, name)
        if entry is None:
            if alias:
                return ModelUnavailable(missing_model_message(name))
            return NotInStore(f"model {name!r} is not in the model store (served here: "
                              f"{', '.join(sorted(self.served)) or 'none'}; POST /v2/repository/index lists every stored model)")
        message = (f"model {name!r} is in the model store ({entry.tag}) but not loaded; "
                   f"POST /v2/repository/models/{name}/load to serve it")
        return ModelUnavailable(message) if alias else NotLoaded(message)
