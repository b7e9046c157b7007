"""``zoo classify``: batch classification of files and folders, resumable.

Batches of ``--batch-size`` images go out ``--concurrency`` at a time over one
asyncio client. A batch the server refuses is retried one file at a time, so only
the bad file fails; a file refused on its own (4xx) is recorded as ``rejected``
with the server's reason and the run goes on. An answer about the run rather than a file (401, 403,
404: a wrong token, origin or model name) ends it with one error. Results stream to stdout, or to
``--out`` (CSV/JSONL, appended and flushed per batch, skipped on re-run).

Exit status: 0 all classified; 3 some files rejected or failed; 1 a fatal error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from tqdm import tqdm

from clients.client import AsyncZooClient, model_path
from clients.grpc_client import GrpcZooClient, add_protocol
from clients.discover import Found, find_images, path_key
from clients.media import to_upload
from clients.records import ResultStore, confusion_matrix, format_confusion, make_record
from clients.transport import ZooError

EXIT_PARTIAL = 3
RUN_ERRORS = frozenset({401, 403, 404})  # wrong token, origin or model: every request would get the same answer


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders (recursive)")
    p.add_argument("--model", required=True, help="any image model the server serves (`zoo models` lists them)")
    p.add_argument("--batch-size", type=int, default=32, help="images per request (default 32)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument("--out", help="results file, .csv or .jsonl; re-running skips paths already in it")
    p.add_argument("--follow-symlinks", action="store_true", help="follow symlinks that leave the given folders")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_protocol(p)


@dataclass
class Tally:
    classified: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (path, server's reason)
    failed: list[tuple[str, str]] = field(default_factory=list)  # transient: not recorded, retried on re-run
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # path_key -> record, this run


async def _send(zoo: AsyncZooClient, model: str, items: list[tuple[Found, Any]]) -> list[dict[str, Any]]:
    results = await zoo.classify(model, [upload for _, upload in items])
    return [make_record(f.path, result=r) for (f, _), r in zip(items, results)]


async def classify_batch(zoo: AsyncZooClient, model: str, batch: list[Found]) -> tuple[list[dict], list[tuple[str, str]]]:
    """(records to keep, transient failures) for one batch; raises ZooError when the server is unreachable
    or refuses the run itself (``RUN_ERRORS``)."""
    items, failed = [], []
    for f in batch:
        try:
            items.append((f, await asyncio.to_thread(to_upload, f.path)))
        except (ValueError, OSError) as exc:  # unreadable here: not the server's verdict, so not recorded
            failed.append((f.path, str(exc)))
    if not items:
        return [], failed
    try:
        return await _send(zoo, model, items), failed
    except ZooError as exc:
        if exc.status is None or exc.status in RUN_ERRORS:
            raise
        if len(items) == 1:
            f = items[0][0]
            if exc.is_client_error:
                return [make_record(f.path, error=exc.message)], failed
            return [], failed + [(f.path, str(exc))]
    # The batch was refused: find the bad file(s) by sending each alone.
    records = []
    for item in items:
        kept, more = await classify_batch(zoo, model, [item[0]])
        records += kept
        failed += more
    return records, failed


async def _run_batches(args, zoo: AsyncZooClient, todo: list[Found], store: ResultStore | None, tally: Tally) -> None:
    queue: asyncio.Queue[list[Found]] = asyncio.Queue()
    for i in range(0, len(todo), args.batch_size):
        queue.put_nowait(todo[i:i + args.batch_size])
    bar = tqdm(total=len(todo), unit="img", desc="classify", file=sys.stderr, dynamic_ncols=True,
               disable=args.no_progress or not todo or not sys.stderr.isatty())  # a log gets no bar lines

    async def worker() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            records, failed = await classify_batch(zoo, args.model, batch)
            if store is not None:
                store.append(records)  # flushed per batch: a kill loses at most the batches in flight
            for r in records:
                tally.records[path_key(r["path"])] = r
                if r["status"] == "ok":
                    tally.classified += 1
                    if store is None:
                        bar.write(f"{r['path']}\t{r['label']}\t{float(r['score']):.4f}", file=sys.stdout)
                else:
                    tally.rejected.append((r["path"], r["error"]))
            tally.failed += failed
            bar.update(len(batch))

    tasks = [asyncio.create_task(worker()) for _ in range(min(args.concurrency, max(1, queue.qsize())))]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for t in done:
            t.result()  # re-raise the first fatal error
    finally:
        bar.close()


def _labels_from_metadata(meta: dict[str, Any]) -> list[str] | None:
    """The model's class names if the OIP metadata carries them (top level, parameters or spec)."""
    for holder in (meta, meta.get("parameters") or {}, (meta.get("parameters") or {}).get("spec") or {}, meta.get("spec") or {}):
        labels = holder.get("labels") if isinstance(holder, dict) else None
        if isinstance(labels, list) and labels:
            return [str(x) for x in labels]
    return None


def accuracy_report(found: list[Found], records: dict[str, dict[str, Any]], model_labels: list[str] | None) -> str | None:
    """Accuracy and a confusion matrix when the folders are one sub-folder per class; else None."""
    from_folders = [f for f in found if f.root is not None]
    if not from_folders or any(f.class_name is None for f in from_folders):
        return None
    seen_labels = {r["label"] for r in records.values() if r.get("status") == "ok"}
    seen_labels |= {t.get("label") for r in records.values() for t in (r.get("top_k") or []) if isinstance(t, dict)}
    labels = model_labels or sorted(x for x in seen_labels if x is not None)
    classes = {f.class_name for f in from_folders}
    if not classes <= set(labels):
        return None
    pairs = []
    for f in from_folders:
        r = records.get(path_key(f.path))
        if r is not None and r.get("status") == "ok":
            pairs.append((f.class_name, str(r["label"])))
    if not pairs:
        return None
    shown = [x for x in labels if x in classes or any(p == x for _, p in pairs)]
    correct = sum(t == p for t, p in pairs)
    return (f"accuracy: {correct / len(pairs):.4f} ({correct}/{len(pairs)} images in class folders)\n"
            + format_confusion(confusion_matrix(pairs, shown), shown))


async def _main(args: argparse.Namespace) -> int:
    model_path(args.model, "classify")  # a malformed model name fails before any work
    if args.batch_size < 1 or args.concurrency < 1:
        raise ValueError("--batch-size and --concurrency must be at least 1")
    discovery = find_images(args.paths, args.follow_symlinks)
    store = ResultStore(args.out) if args.out else None
    previous = store.load() if store else {}
    todo = [f for f in discovery.images if path_key(f.path) not in previous]
    skipped = len(discovery.images) - len(todo)
    for path, why in discovery.skipped:
        print(f"skipped {path}: {why}", file=sys.stderr)
    if not discovery.images:
        raise ValueError(f"no images found under {' '.join(args.paths)}")

    tally, start = Tally(), time.perf_counter()
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    if getattr(args, "protocol", "http") == "grpc":  # the same calls over the gRPC port
        client: Any = GrpcZooClient(args.grpc_url, timeout=args.timeout, token=args.token)
    else:
        client = AsyncZooClient(args.url, timeout=args.timeout, retries=args.retries, token=args.token, limits=limits)
    async with client as zoo:
        try:
            await _run_batches(args, zoo, todo, store, tally)
        finally:
            if store is not None:
                store.close()
        elapsed = time.perf_counter() - start
        labels = None
        if any(f.class_name for f in discovery.images):
            try:
                labels = _labels_from_metadata(await zoo.model_metadata(args.model))
            except ZooError:
                labels = None  # metadata is optional here: fall back to the labels seen in answers

    for path, why in tally.rejected:
        print(f"rejected {path}: {why}", file=sys.stderr)
    for path, why in tally.failed:
        print(f"failed {path}: {why} (not recorded; re-run to retry)", file=sys.stderr)
    sent = tally.classified + len(tally.rejected) + len(tally.failed)
    rate = sent / elapsed if elapsed > 0 else 0.0
    print(f"summary: {len(discovery.images)} images: {tally.classified} classified, {len(tally.rejected)} rejected, "
          f"{len(tally.failed)} failed, {skipped} already in {args.out or 'results'}; "
          f"{elapsed:.2f} s, {rate:.1f} images/s", file=sys.stderr)
    report = accuracy_report(discovery.images, {**previous, **tally.records}, labels)
    if report:
        print(report, file=sys.stderr)
    return EXIT_PARTIAL if tally.rejected or tally.failed else 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_main(args))
