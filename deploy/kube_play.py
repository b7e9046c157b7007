"""Turn a built kustomize overlay into what ``podman kube play`` runs in ``make container-test``.

podman plays Pods and Deployments; it ignores the other kinds (docs/deployment.md lists what it
ignores, found by experiment). This tool keeps the overlay's Deployment and Service unchanged but
for three things a local run needs:

- the image: the one the test just built (``--image``), with ``imagePullPolicy: Never`` (no registry);
- a host port on 127.0.0.1 for the container's ``http`` port (a cluster reaches it through the Service);
- the bearer-token Secret, written in the form podman 4.3 reads for ``secretKeyRef``: a JSON object of
  key -> base64 value, stored with ``podman secret create NAME FILE``.

Usage:
  kubectl kustomize deploy/k8s/overlays/cpu | python -m deploy.kube_play render --image IMG --port P --out play.yaml
  python -m deploy.kube_play secret --manifest play.yaml --token TOKEN --out secret.json   (prints the Secret's name)
  python -m deploy.kube_play memory --manifest play.yaml --peak-bytes N                      (peak vs the memory request)
Exit status 0 on success; 2 with one line naming the problem otherwise.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from pathlib import Path

import yaml

PLAYED_KINDS = ("Deployment", "Service")
_QUANTITY = re.compile(r"^([0-9.]+)([KMGTE]i?|[kmgte])?$")
_FACTORS = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "E": 10**18,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Ei": 2**60}


class PlayError(ValueError):
    """The manifest cannot be played as asked; the message says what is missing."""


def deployment(docs: list[dict]) -> dict:
    found = [d for d in docs if d.get("kind") == "Deployment"]
    if len(found) != 1:
        raise PlayError(f"expected one Deployment in the manifest, found {len(found)}")
    return found[0]


def container(dep: dict) -> dict:
    containers = dep["spec"]["template"]["spec"].get("containers") or []
    if len(containers) != 1:
        raise PlayError(f"expected one container in Deployment {dep['metadata']['name']}, found {len(containers)}")
    return containers[0]


def render(docs: list[dict], image: str, host_port: int, host_ip: str = "127.0.0.1") -> list[dict]:
    """The Deployment and Service of ``docs`` with the local image and a loopback host port."""
    played = [json.loads(json.dumps(d)) for d in docs if d and d.get("kind") in PLAYED_KINDS]
    c = container(deployment(played))
    c["image"] = image
    c["imagePullPolicy"] = "Never"
    http = [p for p in c.get("ports", []) if p.get("name") == "http"]
    if not http:
        raise PlayError(f"container {c['name']} has no port named 'http'")
    http[0]["hostPort"] = host_port
    http[0]["hostIP"] = host_ip
    return played


def secret_refs(dep: dict) -> dict[str, set[str]]:
    """Secret name -> keys the Deployment's container reads through ``secretKeyRef``."""
    refs: dict[str, set[str]] = {}
    for env in container(dep).get("env", []):
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            refs.setdefault(ref["name"], set()).add(ref["key"])
    return refs


def podman_secret(values: dict[str, str]) -> str:
    """The data of a podman secret that ``kube play`` resolves ``secretKeyRef`` keys from."""
    return json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in values.items()})


def quantity_bytes(q: str | int) -> int:
    """A Kubernetes memory quantity in bytes: ``256Mi`` -> 268435456, ``1G`` -> 10**9."""
    match = _QUANTITY.match(str(q))
    if not match:
        raise PlayError(f"cannot read memory quantity {q!r}")
    return int(float(match.group(1)) * _FACTORS[match.group(2)])


def memory_report(dep: dict, peak: int) -> tuple[str, bool]:
    """One line comparing the measured peak with the container's memory request and limit."""
    res = container(dep).get("resources") or {}
    request = (res.get("requests") or {}).get("memory")
    limit = (res.get("limits") or {}).get("memory")
    if request is None or limit is None:
        raise PlayError("the container has no memory request and limit to compare with")
    ok = peak <= quantity_bytes(request)
    line = (f"peak memory {peak / 2**20:.0f} MiB; request {request}, limit {limit}: "
            + ("within the request" if ok else "ABOVE the request: raise resources.requests.memory"))
    return line, ok


def _load(path: str | None) -> list[dict]:
    text = sys.stdin.read() if path in (None, "-") else Path(path).read_text()
    return [d for d in yaml.safe_load_all(text) if d]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="Deployment + Service with the local image and a host port")
    r.add_argument("manifest", nargs="?", default="-", help="built overlay (default: stdin)")
    r.add_argument("--image", required=True)
    r.add_argument("--port", type=int, required=True, help="host port on 127.0.0.1 for the http port")
    r.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("secret", help="write the podman secret the Deployment's secretKeyRef reads")
    s.add_argument("--manifest", required=True)
    s.add_argument("--token", required=True, help="value for every key the Deployment reads from the Secret")
    s.add_argument("--out", type=Path, required=True)
    m = sub.add_parser("memory", help="compare a measured peak with the memory request")
    m.add_argument("--manifest", required=True)
    m.add_argument("--peak-bytes", type=int, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        if args.command == "render":
            args.out.write_text(yaml.safe_dump_all(render(_load(args.manifest), args.image, args.port), sort_keys=False))
        elif args.command == "secret":
            refs = secret_refs(deployment(_load(args.manifest)))
            if len(refs) != 1:
                raise PlayError(f"expected the Deployment to read one Secret, found {sorted(refs) or 'none'}")
            (name, keys), = refs.items()
            args.out.write_text(podman_secret({k: args.token for k in sorted(keys)}))
            print(name)
        else:
            line, ok = memory_report(deployment(_load(args.manifest)), args.peak_bytes)
            print(f"kube play: {line}")
            return 0 if ok else 1
    except (PlayError, KeyError, yaml.YAMLError) as exc:
        print(f"kube_play: {type(exc).__name__ if isinstance(exc, KeyError) else 'error'}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
