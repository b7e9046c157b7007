"""The issue's targets as ratios of figures from the same run: met or missed, and by how much.

| target | ratio | bound |
| --- | --- | --- |
| batch efficiency | service /classify_cifar10 images/s (32 PNGs per request, best of its levels) / in-process decode+preprocess+infer at batch 32, same runtime | >= 0.8 |
| batching pays | service / naive images/s, /classify_cifar10 single-image, c=32 | >= 1.5 |
| no slower for a tiny model | service / naive, /classify_digit single-image, c=32; and service p99 / p50 there | >= 1.0; <= 3 |
| int8 pays | ONNX Runtime int8 / fp32 items/s, cifar10-resnet18 batch 64 | >= 1.5 |
| beyond the runtime: tiny model | service / naive-ort images/s, /classify_digit single-image, c=32; p99 ratio there | >= 1.6; <= 1 |
| beyond the runtime: one user | service / naive-ort p50, /classify_digit single-image, c=1 | <= 1.2 |
| beyond the runtime: ResNet | service (fp32; int8) / naive-ort (fp32) images/s, /classify_cifar10 single-image, c=32 | >= 1.1; >= 2.5 |

naive-ort is benchmarks/baselines/naive_ort_server.py: one process, one request at a time, the
service's own ``model.onnx`` (fp32) and preprocessing. The int8 row compares the service serving its
int8 graph (``MODEL_ZOO_PRECISION=int8``) with naive-ort on the fp32 file: the speed a user gets
from the service's int8 model over the runtime served naively.

``profile`` on a missed row says what ``run.py`` profiles: an HTTP level (py-spy on the service) or
``"ort-int8"`` (ONNX Runtime's op profile of both graphs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.http_bench import Level

SERVICE_RUNTIME = "onnx-fp32"  # the service's default on CPU: MODEL_ZOO_RUNTIME=onnx, precision auto -> fp32


@dataclass
class TargetResult:
    name: str
    measured: str  # the figures the ratio comes from
    ratio: float | None
    bound: str  # e.g. ">= 0.8"
    met: bool | None  # None: not measured in this run
    verdict: str  # "met", "missed by 23%", "not measured: ..."
    profile: Any = None  # Level | "ort-int8" | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["profile"] = self.profile.key if isinstance(self.profile, Level) else self.profile
        return d


def _verdict(ratio: float | None, bound: float, at_least: bool = True) -> tuple[bool | None, str]:
    if ratio is None:
        return None, "not measured"
    ok = ratio >= bound if at_least else ratio <= bound
    if ok:
        return True, "met"
    short = (1 - ratio / bound) if at_least else (ratio / bound - 1)
    return False, f"missed by {100 * short:.0f}% ({ratio:.2f} vs {'>=' if at_least else '<='} {bound})"


def _http(records: list[dict], server: str, endpoint: str, images: int, concurrency: int | None = None) -> list[dict]:
    return [r for r in records if r["server"] == server and r["level"]["endpoint"] == endpoint
            and r["level"]["images"] == images and (concurrency is None or r["level"]["concurrency"] == concurrency)]


def _engine(rows: list[dict], model: str, runtime: str, mode: str, batch: int) -> dict | None:
    return next((r for r in rows if (r["model"], r["runtime"], r["mode"], r["batch"]) == (model, runtime, mode, batch)), None)


def _errors(rec: dict) -> str:
    errs = sum(rec["errors"].values()) if rec.get("errors") else 0
    return f", {errs} error answers" if errs else ""



def _service_vs_naive(recs: list[dict[str, Any]], endpoint: str, bound: float, server: str = "service",
                      peer: str = "naive") -> TargetResult:
    """Single-image uploads at concurrency 32: ``server``'s throughput over ``peer``'s."""
    title = f"/{endpoint} single-image, c=32: {server} vs {peer} throughput"
    s, n = _http(recs, server, endpoint, 1, 32), _http(recs, peer, endpoint, 1, 32)
    if not (s and n):
        return TargetResult(title, "-", None, f">= {bound}", None, "not measured")
    if not n[0]["items_per_s"]:
        return TargetResult(title, "-", None, f">= {bound}", None,
                            f"not measured: {peer} answered no request in the window (lengthen --duration)")
    ratio = (s[0]["items_per_s"] or 0) / n[0]["items_per_s"]
    met, verdict = _verdict(ratio, bound)
    return TargetResult(title, f"{s[0]['items_per_s']:.1f}{_errors(s[0])} vs {n[0]['items_per_s']:.1f} images/s",
                        ratio, f">= {bound}", met, verdict,
                        None if met or server != "service" else Level(endpoint, 32, 1))


def _latency_vs(recs: list[dict[str, Any]], endpoint: str, concurrency: int, pct: str, bound: float) -> TargetResult:
    """The service's latency percentile ``pct`` over naive-ort's at one single-image level."""
    title = f"/{endpoint} single-image, c={concurrency}: service {pct[:3]} / naive-ort {pct[:3]}"
    s, n = _http(recs, "service", endpoint, 1, concurrency), _http(recs, "naive-ort", endpoint, 1, concurrency)
    if not (s and n and s[0][pct] and n[0][pct]):
        return TargetResult(title, "-", None, f"<= {bound}", None, "not measured")
    ratio = s[0][pct] / n[0][pct]
    met, verdict = _verdict(ratio, bound, at_least=False)
    return TargetResult(title, f"{s[0][pct]:.2f}{_errors(s[0])} vs {n[0][pct]:.2f} ms", ratio, f"<= {bound}", met,
                        verdict, None if met else Level(endpoint, concurrency, 1))

def evaluate(engine: dict | None, http: dict | None) -> list[TargetResult]:
    rows = engine["rows"] if engine else []
    recs = http["records"] if http else []
    out: list[TargetResult] = []

    # 1. batch classification efficiency
    svc = _http(recs, "service", "classify_cifar10", 32)
    ref = _engine(rows, "cifar10-resnet18", SERVICE_RUNTIME, "pipeline", 32)
    if svc and ref:
        best = max(svc, key=lambda r: r["items_per_s"] or 0)
        ratio = (best["items_per_s"] or 0) / ref["items_per_s"]
        met, verdict = _verdict(ratio, 0.8)
        out.append(TargetResult(
            "/classify_cifar10 images/s over HTTP vs in-process decode+preprocess+infer (ORT fp32, batch 32)",
            f"{best['items_per_s']:.1f} images/s at c={best['level']['concurrency']}{_errors(best)} vs "
            f"{ref['items_per_s']:.1f} in-process", ratio, ">= 0.8", met, verdict,
            None if met else Level("classify_cifar10", best["level"]["concurrency"], 32)))
    else:
        out.append(TargetResult("/classify_cifar10 HTTP vs in-process", "-", None, ">= 0.8", None, "not measured"))

    # 2. batching pays: cifar single-image, c=32
    out.append(_service_vs_naive(recs, "classify_cifar10", 1.5))

    # 3. tiny model: digit single-image, c=32 (throughput and tail)
    out.append(_service_vs_naive(recs, "classify_digit", 1.0))
    s = _http(recs, "service", "classify_digit", 1, 32)
    if s and _http(recs, "naive", "classify_digit", 1, 32):
        tail = s[0]["p99_ms"] / s[0]["p50_ms"] if s[0]["p50_ms"] else None
        met, verdict = _verdict(tail, 3.0, at_least=False)
        out.append(TargetResult("/classify_digit single-image, c=32: service p99 / p50",
                                f"p99 {s[0]['p99_ms']:.1f} ms, p50 {s[0]['p50_ms']:.1f} ms", tail, "<= 3", met, verdict,
                                None if met else Level("classify_digit", 32, 1)))
    else:
        out.append(TargetResult("/classify_digit single-image, c=32: service p99 / p50", "-", None, "<= 3", None,
                                "not measured"))

    # 4. int8 pays on the ResNet at batch 64
    i8 = _engine(rows, "cifar10-resnet18", "onnx-int8", "infer", 64)
    f32 = _engine(rows, "cifar10-resnet18", "onnx-fp32", "infer", 64)
    if i8 and f32:
        ratio = i8["items_per_s"] / f32["items_per_s"]
        met, verdict = _verdict(ratio, 1.5)
        out.append(TargetResult("ONNX Runtime int8 vs fp32, cifar10-resnet18, batch 64",
                                f"{i8['items_per_s']:.1f} vs {f32['items_per_s']:.1f} images/s", ratio, ">= 1.5",
                                met, verdict, None if met else "ort-int8"))
    else:
        out.append(TargetResult("ORT int8 vs fp32 (cifar10-resnet18, batch 64)", "-", None, ">= 1.5", None, "not measured"))

    # 5. what the service adds beyond the runtime: against the naive ONNX Runtime server
    out.append(_service_vs_naive(recs, "classify_digit", 1.6, peer="naive-ort"))
    out.append(_latency_vs(recs, "classify_digit", 32, "p99_ms", 1.0))
    out.append(_latency_vs(recs, "classify_digit", 1, "p50_ms", 1.2))
    out.append(_service_vs_naive(recs, "classify_cifar10", 1.1, peer="naive-ort"))
    out.append(_service_vs_naive(recs, "classify_cifar10", 2.5, server="service-int8", peer="naive-ort"))
    return out
