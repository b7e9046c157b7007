"""The ``zoo`` command: models, load, unload, classify, forecast, bench, stats, health (``python -m clients`` is the same).

Every command takes ``--url`` (default ``$ZOO_URL``, else http://localhost:3000) and
``--token`` (default ``$MODEL_ZOO_API_TOKEN``). Any error ends the command with a
non-zero status and one readable line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from clients import bench, classify, forecast, stats
from clients.client import ZooClient
from clients.grpc_client import GrpcZooClient, add_protocol
from clients.transport import DEFAULT_URL, TOKEN_ENV, URL_ENV, Unreachable, ZooError, default_token, default_url


def _health(args: argparse.Namespace) -> int:
    """Readiness and the models served; exit 0 only when the server is ready."""
    if args.protocol == "grpc":
        report = asyncio.run(_grpc_health(args))
    else:
        with ZooClient(args.url, timeout=args.timeout, retries=0, token=args.token) as zoo:
            report = zoo.health()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['url']}: {'live' if report['live'] else 'NOT live'}, {'ready' if report['ready'] else 'NOT ready'}")
        if not report["models"]:
            print("  no models found under /v2/models/{name}")
        for name, info in report["models"].items():
            if not info["ready"]:
                print(f"  {name}: {info['state']}{': ' + info['reason'] if info['reason'] else ''}")
                continue
            meta = info["metadata"]
            tensors = lambda key: ", ".join(f"{t.get('name')}{t.get('shape')} {t.get('datatype')}" for t in meta.get(key, []))
            versions = ",".join(map(str, meta.get("versions") or [])) or "-"
            print(f"  {name}: {'ready' if info['ready'] else 'NOT ready'}; version {versions}; "
                  f"platform {meta.get('platform', '-')}; inputs {tensors('inputs')}; outputs {tensors('outputs')}")
    return 0 if report["ready"] else 1


async def _grpc_health(args: argparse.Namespace) -> dict:
    async with GrpcZooClient(args.grpc_url, timeout=args.timeout, token=args.token) as zoo:
        return await zoo.health()


def _models(args: argparse.Namespace) -> int:
    """The repository index: every stored model version, its state and why it is not served."""
    with ZooClient(args.url, timeout=args.timeout, retries=args.retries, token=args.token) as zoo:
        index = zoo.models(ready_only=args.ready)
    if args.json:
        print(json.dumps(index, indent=2))
        return 0
    rows = [("NAME", "VERSION", "STATE", "REASON")] + [(e["name"], e["version"], e["state"], e.get("reason", ""))
                                                        for e in index]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3])
    return 0


def _load(args: argparse.Namespace) -> int:
    with ZooClient(args.url, timeout=args.timeout, retries=args.retries, token=args.token) as zoo:
        done = zoo.load_model(args.name, args.version)
    print(f"{done['name']}:{done['version']} is served (every worker)")
    return 0


def _unload(args: argparse.Namespace) -> int:
    with ZooClient(args.url, timeout=args.timeout, retries=args.retries, token=args.token) as zoo:
        zoo.unload_model(args.name)
    print(f"{args.name} is no longer served")
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, help=f"service URL (default ${URL_ENV}, else {DEFAULT_URL})")
    p.add_argument("--token", default=None, help=f"bearer token (default ${TOKEN_ENV})")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--retries", type=int, default=3, help="retries on 429/503/connection errors (default 3)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="Client tools for the Model Zoo service.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = [
        ("classify", "classify image files and folders (resumable with --out)", classify),
        ("forecast", "forecast a sequence with the sine RNN", forecast),
        ("bench", "load-test one endpoint at several concurrency levels", bench),
        ("stats", "per model: requests, mean batch size, queue wait and inference p50/p99, errors by reason", stats),
    ]
    for name, help_text, module in commands:
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(p)
        _add_common(p)
        p.set_defaults(func=module.run)
    p = sub.add_parser("models", help="every stored model with its version, state and reason")
    p.add_argument("--ready", action="store_true", help="only the models being served")
    p.add_argument("--json", action="store_true", help="print the index as JSON")
    _add_common(p)
    p.set_defaults(func=_models)
    p = sub.add_parser("load", help="serve a stored model without a restart (waits until every worker serves it)")
    p.add_argument("name", help="the model's store name (python -m export ... --name NAME)")
    p.add_argument("--version", help="a store version (default: the latest)")
    _add_common(p)
    p.set_defaults(func=_load, timeout=600.0)
    p = sub.add_parser("unload", help="stop serving a model (after its in-flight requests)")
    p.add_argument("name")
    _add_common(p)
    p.set_defaults(func=_unload)
    p = sub.add_parser("health", help="readiness and the models served")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_protocol(p)
    _add_common(p)
    p.set_defaults(func=_health)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.url = default_url(args.url)
        args.token = default_token(args.token)
        return args.func(args)
    except Unreachable as exc:
        print(f"zoo {args.command}: error: {exc}; is the service running? start one with `make serve`, "
              f"or name yours with --url or ${URL_ENV}", file=sys.stderr)
    except ZooError as exc:
        print(f"zoo {args.command}: error: {exc}", file=sys.stderr)
    except (ValueError, TypeError, OSError) as exc:  # bad arguments, unreadable files, a bad --out
        print(f"zoo {args.command}: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        hint = "; re-run with the same --out to resume" if getattr(args, "out", None) else ""
        print(f"zoo {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
