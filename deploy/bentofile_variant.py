"""Write a CPU-serving variant of ``bentofile.yaml`` for a host without Docker Hub.

The repository's ``bentofile.yaml`` is what users build with Docker (BentoML's default
``python:3.x-slim`` base image). On a host without a registry, the image must start ``FROM`` a
locally made base (``localhost/debian-py:bookworm``, see deploy/podman.sh); and the serving image
must be torch-free: ONNX Runtime (CPU wheel), Pillow, NumPy and BentoML only. This tool copies the
service, include/exclude, models, envs and labels unchanged and rewrites two sections:

- ``docker``: only ``base_image`` (distro, python_version, cuda_version and system_packages
  describe the default base image and do not apply to a custom one);
- ``python.packages``: minus torch/torchvision/tensorboard and the GPU ONNX Runtime wheel
  (``onnxruntime-gpu`` becomes ``onnxruntime`` with the same version range).

Usage: python -m deploy.bentofile_variant --base-image IMAGE --out FILE [bentofile.yaml]
Exit status 2 with one line on stderr when the source cannot be converted.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

# Packages that only training, export or GPU serving need; the CPU image must not carry them
# (torch alone is about 2 GB with its CUDA wheels).
TORCH_FREE_DROP = ("torch", "torchvision", "torchaudio", "tensorboard", "onnxscript", "onnx", "matplotlib")
GPU_TO_CPU = {"onnxruntime-gpu": "onnxruntime"}
# The serving stack the CPU image needs at least (BentoML adds itself to every bento).
REQUIRED = ("onnxruntime", "pillow", "numpy")
DOCKER_KEYS_FOR_DEFAULT_IMAGE = ("distro", "python_version", "cuda_version", "system_packages")

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?(.*)$")


class VariantError(ValueError):
    """The source bentofile cannot be turned into a CPU variant; the message says why."""


def canonical(name: str) -> str:
    """PEP 503 normalised project name: ``Pillow`` -> ``pillow``, ``onnxruntime_gpu`` -> ``onnxruntime-gpu``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_requirement(req: str) -> tuple[str, str]:
    """``"onnxruntime-gpu>=1.18; sys_platform == 'linux'"`` -> ``("onnxruntime-gpu", ">=1.18; ...")``."""
    match = _NAME.match(req)
    if not match:
        raise VariantError(f"cannot parse python package {req!r} in the bentofile")
    return canonical(match.group(1)), match.group(3).strip()


def cpu_packages(packages: list[str]) -> tuple[list[str], list[str]]:
    """Return (packages for the CPU image, human-readable notes about what changed)."""
    kept: list[str] = []
    notes: list[str] = []
    for req in packages:
        name, rest = split_requirement(req)
        if name in TORCH_FREE_DROP:
            notes.append(f"dropped {req!r} (not needed to serve ONNX on CPU)")
        elif name in GPU_TO_CPU:
            # Keep the version range but not an environment marker meant for the GPU wheel.
            spec = rest.split(";", 1)[0].strip()
            new = GPU_TO_CPU[name] + spec
            if all(split_requirement(k)[0] != GPU_TO_CPU[name] for k in kept):
                kept.append(new)
                notes.append(f"replaced {req!r} with {new!r}")
        elif name == "onnxruntime" and any(split_requirement(k)[0] == "onnxruntime" for k in kept):
            notes.append(f"dropped duplicate {req!r}")
        else:
            kept.append(req)
    names = {split_requirement(k)[0] for k in kept}
    for name in REQUIRED:
        if name not in names:
            kept.append(name)
            notes.append(f"added {name!r} (the CPU service needs it)")
    return kept, notes


def make_variant(source: dict[str, Any], base_image: str) -> tuple[dict[str, Any], list[str]]:
    """The CPU/custom-base-image variant of a parsed bentofile, and notes about each change."""
    if not isinstance(source, dict) or not source.get("service"):
        raise VariantError("the bentofile has no 'service:' entry")
    variant = dict(source)
    notes: list[str] = []

    python = dict(source.get("python") or {})
    if python.get("requirements_txt"):
        raise VariantError(
            "python.requirements_txt is not supported here; list python.packages in bentofile.yaml"
        )
    python["packages"], pkg_notes = cpu_packages(list(python.get("packages") or []))
    notes += pkg_notes
    variant["python"] = python

    docker = dict(source.get("docker") or {})
    for key in DOCKER_KEYS_FOR_DEFAULT_IMAGE:
        if docker.pop(key, None) is not None:
            notes.append(f"dropped docker.{key} (it describes BentoML's default base image)")
    if docker.get("dockerfile_template"):
        raise VariantError("docker.dockerfile_template is not supported by this variant")
    docker["base_image"] = base_image
    variant["docker"] = docker
    notes.append(f"docker.base_image = {base_image}")
    return variant, notes


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", default="bentofile.yaml", help="bentofile to convert")
    parser.add_argument("--base-image", required=True, help="image the Dockerfile starts FROM")
    parser.add_argument("--out", required=True, type=Path, help="where to write the variant")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        source = yaml.safe_load(Path(args.source).read_text())
        variant, notes = make_variant(source, args.base_image)
    except FileNotFoundError:
        print(f"bentofile_variant: {args.source} not found (run from the repository root)", file=sys.stderr)
        return 2
    except (VariantError, yaml.YAMLError) as exc:
        print(f"bentofile_variant: {args.source}: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(yaml.safe_dump(variant, sort_keys=False))
    for note in notes:
        print(f"bentofile_variant: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
