"""Inference sessions over the exported files: ONNX Runtime (default) or TorchScript.

Both take and return numpy arrays by tensor name (docs/contracts.md: ``input`` -> ``logits`` for
image models; ``x``, ``h`` [, ``c``] -> ``y``, ``h_out`` [, ``c_out``] for the RNN step graph).

ONNX Runtime: with a real CUDA device, providers TensorRT -> CUDA -> CPU and ``model.fp16.onnx``
(float32 IO). ``onnxruntime-gpu`` lists the CUDA provider even on machines without a GPU, so the
device is checked through the CUDA driver (``cuDeviceGetCount``), and the provider the session really
got is logged; a GPU session that silently fell back to CPU is rebuilt with the fp32 graph. On CPU:
``model.onnx`` (fp32), or ``model.int8.onnx`` with ``MODEL_ZOO_PRECISION=int8``, and intra-op
threads sized to the worker's cores. torch is imported only when the TorchScript runtime is chosen.
"""

from __future__ import annotations

import ctypes
import logging
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from zoo.entry import FORMAT_FILES, io_names, output_width
from zoo.errors import first_line
from zoo.spec import Spec

logger = logging.getLogger("model_zoo.runtime")

# precision (or runtime) -> the store entry's file that serves it
ARTIFACTS = {"fp32": FORMAT_FILES["onnx"], "fp16": FORMAT_FILES["onnx-fp16"], "int8": FORMAT_FILES["onnx-int8"],
             "torchscript": FORMAT_FILES["torchscript"]}


class RuntimeLoadError(RuntimeError):
    """A model directory whose artifacts cannot be loaded; the message names the file."""


def cuda_device_count() -> int:
    """Real CUDA devices visible to this process (0 without a driver or a GPU); never imports torch."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


def tensorrt_loadable() -> bool:
    for lib in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"):
        try:
            ctypes.CDLL(lib)
            return True
        except OSError:
            continue
    return False


@dataclass
class Session:
    """A loaded model: ``run({name: array}) -> {name: array}`` plus what was chosen, for logs and /v2."""

    runtime: str  # "onnx" | "torchscript"
    artifact: str  # file name inside the model directory
    provider: str  # e.g. "CPUExecutionProvider", "CUDAExecutionProvider", "torch:cpu"
    input_names: list[str]
    output_names: list[str]
    _run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = field(repr=False)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._run(feeds)

    def close(self) -> None:
        """Release the runtime's session (its weights and arenas) now, even while something still
        holds this object; a later ``run`` says the model was unloaded."""
        self._run = _closed_run


def _closed_run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    raise RuntimeError("this model's session was closed (the model was unloaded or replaced)")


def load_session(model_dir: str | Path, spec: Spec, runtime: str = "onnx", precision: str = "auto",
                 threads: int = 1) -> Session:
    model_dir = Path(model_dir)
    if runtime == "torchscript":
        return _torchscript_session(model_dir, spec, threads)
    return _onnx_session(model_dir, spec, precision, threads)


def _regular_file(path: Path) -> bool:
    """Whether ``path`` exists, checked before anything opens it: a FIFO blocks its reader until a writer
    comes (a load held a thread for ever, preflight hung) and a device never ends, so anything but a
    regular file is a load failure naming it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a file")
        raise RuntimeLoadError(f"{path}: {kind}, not a regular file; re-export the model (python -m export)")
    return True


def _pick_onnx_artifact(model_dir: Path, precision: str, gpu: bool, name: str) -> str:
    wanted = {"auto": "fp16" if gpu else "fp32", "fp16": "fp16", "fp32": "fp32", "int8": "int8"}[precision]
    if wanted == "fp16" and not gpu:
        logger.warning("%s: fp16 asked for but no CUDA device is present; serving fp32 on CPU", name)
        wanted = "fp32"
    if wanted == "int8" and gpu:
        logger.warning("%s: int8 is the CPU artifact; on the GPU serving fp16", name)
        wanted = "fp16"
    if not _regular_file(model_dir / ARTIFACTS[wanted]):
        logger.warning("%s: %s not in the store entry; serving fp32", name, ARTIFACTS[wanted])
        wanted = "fp32"
    return ARTIFACTS[wanted]


def _onnx_session(model_dir: Path, spec: Spec, precision: str, threads: int) -> Session:
    import onnxruntime as ort

    gpu = cuda_device_count() > 0 and "CUDAExecutionProvider" in ort.get_available_providers()
    artifact = _pick_onnx_artifact(model_dir, precision, gpu, spec.family)
    providers: list[Any] = ["CPUExecutionProvider"]
    if gpu:
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if "TensorrtExecutionProvider" in ort.get_available_providers() and tensorrt_loadable():
            providers.insert(0, ("TensorrtExecutionProvider", {"trt_fp16_enable": artifact == ARTIFACTS["fp16"]}))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # one model call uses the worker's cores; batches run one at a time
    opts.inter_op_num_threads = 1
    # No busy-waiting between calls: ORT's pool threads otherwise spin after each call and take the core
    # the event loop needs to parse the next requests (service/README.md, "Per-request overhead").
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # ORT's own warnings go to stderr; ours say what was chosen
    path = model_dir / artifact
    _regular_file(path)  # absent: ORT's own message names it, as it always did
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # noqa: BLE001 - ORT raises several types; the message names the file
        if gpu:
            logger.warning("%s: GPU session for %s failed (%s); falling back to CPU fp32", spec.family, artifact, exc)
            return _onnx_cpu_fallback(model_dir, spec, threads, opts)
        raise RuntimeLoadError(f"{path}: ONNX Runtime cannot load it: {first_line(exc)}") from exc
    used = sess.get_providers()[0]
    if gpu and used == "CPUExecutionProvider":
        logger.warning("%s: CUDA was listed but the session runs on CPU; rebuilding with fp32", spec.family)
        return _onnx_cpu_fallback(model_dir, spec, threads, opts)
    return _wrap_ort(sess, spec, artifact, used)


def _onnx_cpu_fallback(model_dir: Path, spec: Spec, threads: int, opts: Any) -> Session:
    import onnxruntime as ort

    path = model_dir / ARTIFACTS["fp32"]
    _regular_file(path)
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise RuntimeLoadError(f"{path}: ONNX Runtime cannot load it: {first_line(exc)}") from exc
    return _wrap_ort(sess, spec, ARTIFACTS["fp32"], "CPUExecutionProvider")


def _wrap_ort(sess: Any, spec: Spec, artifact: str, provider: str) -> Session:
    inputs, outputs = io_names(spec)
    found = [i.name for i in sess.get_inputs()]
    if sorted(found) != sorted(inputs):
        raise RuntimeLoadError(f"{artifact}: graph inputs {found} do not match the contract {inputs}")
    # fewer labels than outputs passed the load, then every classify was a 500
    width = next((o.shape[-1] for o in sess.get_outputs() if o.name == outputs[0] and o.shape), None)
    if isinstance(width, int) and width != output_width(spec):
        what = f"{width} classes but the spec lists {spec.num_classes} labels" if spec.labels else \
            f"a last dimension of {width}, not {output_width(spec)}"
        raise RuntimeLoadError(f"{artifact}: the graph's output {outputs[0]!r} has {what}; export again with "
                               "matching labels")

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = sess.run(outputs, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})
        return dict(zip(outputs, values))

    return Session("onnx", artifact, provider, inputs, outputs, run)


def _torchscript_session(model_dir: Path, spec: Spec, threads: int) -> Session:
    import torch  # only here: a CPU ONNX deployment never needs torch

    path = model_dir / ARTIFACTS["torchscript"]
    if not _regular_file(path):
        raise RuntimeLoadError(f"{path}: no TorchScript artifact in this store entry (export with --formats torchscript)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "jit.load is deprecated": still how a .ts file loads
            module = torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:  # noqa: BLE001 - RuntimeError for corrupt files, others for missing ops
        raise RuntimeLoadError(f"{path}: torch.jit.load failed: {first_line(exc)}") from exc
    inputs, outputs = io_names(spec)

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n], dtype=np.float32)).to(device) for n in inputs]
        with torch.inference_mode():
            out = module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return {n: t.float().cpu().numpy() for n, t in zip(outputs, out)}

    return Session("torchscript", ARTIFACTS["torchscript"], f"torch:{device.type}", inputs, outputs, run)
