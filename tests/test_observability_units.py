"""Per-request timing records, the batcher's hooks, request ids and the statistics read back
(service/core/timing.py, service/core/stats.py, service/http/request_ids.py), in one process.

The same things over HTTP against a real two-worker server: tests/test_observability.py.
"""

from __future__ import annotations

import asyncio
import re
import time

import numpy as np
import pytest

from service.core import stats, timing
from service.core.batching import Batcher
from service.errors import BadRequest, Overloaded, TooLarge
from service.http.request_ids import MAX_ID, request_id

PART = re.compile(r'(\w+);(?:dur=([0-9.]+)|desc="(\d+)")')


def parse_server_timing(value: str) -> dict[str, float]:
    """``Server-Timing`` -> {name: ms} (and ``batch``: the size)."""
    out = {}
    for name, dur, desc in PART.findall(value):
        out[name] = float(dur) if dur else int(desc)
    return out


async def _warm(batcher: Batcher) -> None:
    for _ in range(14):  # past the dispatcher's 12-call training phase, which runs one call at a time
        await batcher(np.zeros((1, 2), np.float32))


def test_each_request_learns_its_queue_wait_its_batch_and_the_batch_call():
    """Concurrent requests through the batcher: each record names the size of the call it rode in, and
    its infer time is that call's (measured around ``fn`` itself: the reference here)."""
    calls: list[tuple[int, float]] = []  # (items, seconds) per model call, as fn saw it

    def slow_double(batch: np.ndarray) -> np.ndarray:
        assert type(batch) is np.ndarray  # the runtime gets a plain array, not the timing view
        t0 = time.perf_counter()
        time.sleep(0.004)
        out = batch * 2
        calls.append((len(batch), time.perf_counter() - t0))
        return out

    async def one(batcher: Batcher, x: np.ndarray) -> tuple[np.ndarray, timing.RequestTiming]:
        record = timing.start("unit")  # each gather task runs in a copy of the context: its own record
        return await batcher(x), record

    async def main() -> list[tuple[np.ndarray, timing.RequestTiming]]:
        batcher = Batcher("unit-timing", slow_double, max_batch=64, max_latency_ms=5000, metrics=False)
        await _warm(batcher)
        calls.clear()
        inputs = [np.full((1 + i % 2, 2), i, np.float32) for i in range(24)]
        out = await asyncio.gather(*(one(batcher, x) for x in inputs))
        batcher.shutdown()
        for x, (y, _) in zip(inputs, out):
            np.testing.assert_array_equal(y, x * 2)
        return out

    results = asyncio.run(main())
    sizes = {n for n, _ in calls}
    assert max(sizes) > 1  # concurrent requests were batched together
    for _, record in results:
        assert record.batched and record.batch in sizes and record.queue_ns >= 0
        # its infer time is the duration of one of the calls of its size (perf_counter vs perf_counter_ns)
        assert any(n == record.batch and abs(record.infer_ns * 1e-9 - s) < 0.002 for n, s in calls)


def test_a_request_split_over_two_calls_counts_both():
    calls: list[int] = []

    def plus_one(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        time.sleep(0.002)
        return batch + 1

    async def main() -> timing.RequestTiming:
        batcher = Batcher("unit-split", plus_one, max_batch=4, max_latency_ms=5000, metrics=False)
        await _warm(batcher)
        calls.clear()
        record = timing.start()
        y = await batcher(np.zeros((6, 2), np.float32))  # 4 + 2 items: two calls
        batcher.shutdown()
        np.testing.assert_array_equal(y, np.ones((6, 2)))
        return record

    record = asyncio.run(main())
    assert calls == [4, 2]
    assert record.batch == 4 and record.infer_ns >= 2 * 2_000_000  # both calls' sleeps


def test_warm_up_calls_without_a_record_are_not_counted():
    async def main() -> None:
        batcher = Batcher("unit-warm", lambda b: b, max_batch=8, max_latency_ms=5000, metrics=False)
        await _warm(batcher)
        batcher.shutdown()

    asyncio.run(main())
    [entry] = stats.model_statistics([("unit-warm", "1")])
    assert entry["execution_count"] == 0 and entry["batch_stats"] == []


def test_statistics_read_back_equal_what_was_recorded():
    """``model_statistics`` from the registry (one process here) against the records that went in."""
    name = "unit-stats"
    records = []
    for i in range(5):
        r = timing.RequestTiming(start_ns=time.perf_counter_ns() - 10_000_000)
        r.decode_ns, r.queue_ns, r.infer_ns, r.encode_ns = 1000 * (i + 1), 2000, 3000 * (i + 1), 400
        r.batched, r.batch, r.done = True, 4, True
        records.append(r)
        stats.succeeded(name, r)
    stats.executed(name, 4, 10, 3000, 20)
    stats.executed(name, 4, 10, 6000, 20)
    stats.executed(name, 1, 0, 500, 0)
    stats.failed(name, timing.RequestTiming(), stats.reason_of(Overloaded))
    [entry] = stats.model_statistics([(name, "v1")])
    s = entry["inference_stats"]
    assert (entry["name"], entry["version"]) == (name, "v1")
    assert s["success"]["count"] == 5 and s["success"]["ns"] >= 5 * 10_000_000
    assert s["fail"]["count"] == 1
    assert s["compute_input"] == {"count": 5, "ns": sum(r.decode_ns for r in records)}
    assert s["compute_infer"] == {"count": 5, "ns": sum(r.infer_ns for r in records)}
    assert s["queue"] == {"count": 5, "ns": 5 * 2000} and s["compute_output"] == {"count": 5, "ns": 5 * 400}
    assert entry["execution_count"] == 3 and entry["inference_count"] == 4 + 4 + 1
    assert [b["batch_size"] for b in entry["batch_stats"]] == [1, 4]
    four = entry["batch_stats"][1]
    assert four["compute_infer"] == {"count": 2, "ns": 9000} and four["compute_input"] == {"count": 2, "ns": 20}
    assert entry["last_inference"] >= int((time.time() - 60) * 1000)


def test_an_unbatched_request_is_one_execution_of_its_rows():
    name = "unit-unbatched"
    r = timing.RequestTiming()
    r.begin()
    r.decoded({"x": np.zeros((3, 5, 1), np.float32), "h": np.zeros((1, 3, 16), np.float32)})
    r.predicted()
    r.encoded()
    stats.succeeded(name, r)
    [entry] = stats.model_statistics([(name, "1")])
    assert r.batch == 3 and entry["execution_count"] == 1 and entry["inference_count"] == 3
    assert entry["batch_stats"][0]["batch_size"] == 3


def test_server_timing_parts_add_up_to_no_more_than_the_total():
    r = timing.RequestTiming()
    r.begin()
    r.decoded(np.zeros((2, 4)))
    r.predicted()
    r.encoded()
    parts = parse_server_timing(r.server_timing())
    assert set(parts) == {"decode", "queue", "infer", "encode", "total", "batch"} and parts["batch"] == 2
    assert all(parts[k] >= 0 for k in parts)
    assert sum(parts[k] for k in ("decode", "queue", "infer", "encode")) <= parts["total"]


@pytest.mark.parametrize("given, kept", [
    (b"abc-123", True), (b"0f" * 16, True), (b"trace:1.2_3", True), (b"x" * MAX_ID, True),
    (b"x" * (MAX_ID + 1), False), (b"a b", False), (b"<script>", False), (b"", False), (b"id\xff", False),
    (b"a\r\nSet-Cookie: x=1", False),
])
def test_a_request_id_is_kept_only_when_short_and_safe(given, kept):
    got = request_id([(b"host", b"h"), (b"x-request-id", given)])
    if kept:
        assert got == given.decode()
    else:
        assert got != given.decode("latin-1") and re.fullmatch(r"[0-9a-f]{32}", got)
    assert re.fullmatch(r"[0-9a-f]{32}", request_id([]))
    assert request_id([]) != request_id([])


def test_failure_reasons_are_the_error_classes():
    assert stats.reason_of(Overloaded) == "overloaded"
    assert stats.reason_of(TooLarge) == "too_large" and stats.reason_of(BadRequest) == "bad_request"


def test_the_cost_study_adds_up_its_parts(tmp_path):
    """``python -m benchmarks.studies.instrumentation``: the per-request figure is the parts' sum (the
    per-call part spread over the run's items per call), set against the recorded run."""
    import json
    import subprocess
    import sys

    from harness import ROOT

    results = tmp_path / "results.json"
    results.write_text(json.dumps({"http": {"records": [{
        "server": "service", "level": {"endpoint": "classify_digit", "concurrency": 32, "images": 1},
        "mean_batch": 4.0, "server_cpu_pct": 100.0, "requests_per_s": 1000.0}]}}))
    done = subprocess.run([sys.executable, "-m", "benchmarks.studies.instrumentation", "--requests", "300",
                           "--results", str(results)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    parts = {k: float(v) for k, v in re.findall(r"\| (\w+_us) \| ([0-9.]+) \|", done.stdout)}
    assert set(parts) == {"edge_us", "answer_path_us", "batcher_tag_us", "per_model_call_us"}
    assert all(v > 0 for v in parts.values())
    added, share = re.search(r"added per request at 4.0 items per model call: ([0-9.]+) us; .* 1000 us .*: ([0-9.]+)%",
                             done.stdout).groups()
    expected = parts["edge_us"] + parts["answer_path_us"] + parts["batcher_tag_us"] + parts["per_model_call_us"] / 4
    assert float(added) == pytest.approx(expected, abs=0.2) and float(share) == pytest.approx(expected / 10, abs=0.05)
    missing = subprocess.run([sys.executable, "-m", "benchmarks.studies.instrumentation", "--results",
                              str(tmp_path / "none.json")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "none.json" in missing.stderr and "make bench" in missing.stderr


def test_zoo_stats_quantiles_fall_in_the_bucket_of_the_true_quantile():
    """``histogram_quantile`` over cumulative buckets, against numpy's quantile of the samples themselves."""
    from clients.stats import quantile

    rng = np.random.default_rng(0)
    samples = rng.lognormal(mean=np.log(0.003), sigma=0.8, size=5000)  # seconds
    bounds = [*stats.PHASE_BUCKETS, float("inf")]
    buckets = [(b, float((samples <= b).sum())) for b in bounds]
    for q in (0.5, 0.9, 0.99):
        got, true = quantile(q, buckets), float(np.quantile(samples, q))
        i = next(i for i, b in enumerate(bounds) if true <= b)
        assert (bounds[i - 1] if i else 0.0) <= got <= bounds[i], (q, got, true)
    assert quantile(0.5, []) is None and quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert quantile(0.99, [(0.1, 0.0), (float("inf"), 5.0)]) == 0.1  # all beyond the last bound: that bound


def test_zoo_stats_refuses_a_bad_watch_interval(capsys):
    from clients.cli import main

    assert main(["stats", "--url", "http://127.0.0.1:9", "--watch", "0"]) == 1
    assert "--watch takes a positive number of seconds, got 0.0" in capsys.readouterr().err
