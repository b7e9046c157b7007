"""The container tooling's own logic, fast (no image is built here; `make container-test` does that).

- deploy/bentofile_variant.py: the CPU image's bentofile is torch-free and starts FROM the local base.
- deploy/check_container.py: the comparison catches a different label, score or forecast, and the
  digits it uploads are the real MNIST test pixels.
- deploy/podman.sh: the generated containers.conf/storage.conf are valid TOML with the settings
  this host needs, and every storage path lies in the throwaway folder.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # deploy/ is tooling, not part of the installed package

from deploy import bentofile_variant, check_container  # noqa: E402

DATA_DIR = Path(os.environ.get("DATA_DIR", ROOT.parent / "shared" / "data"))
BASE = "localhost/debian-py:bookworm"


def names(packages: list[str]) -> list[str]:
    return [bentofile_variant.split_requirement(p)[0] for p in packages]


def test_variant_is_torch_free_and_uses_local_base_image():
    source = {
        "service": "service.app:ModelZoo",
        "include": ["service/**/*.py", "service/examples/*"],
        "models": ["mnist-mlp:latest"],
        "envs": [{"name": "ZOO_RUNTIME", "value": "onnx"}],
        "python": {"packages": [
            "torch>=2.4", "torchvision>=0.19", "onnxruntime-gpu>=1.18; sys_platform == 'linux'",
            "Pillow>=10", "numpy>=1.24",
        ]},
        "docker": {"distro": "debian", "python_version": "3.11", "system_packages": ["git"]},
    }
    variant, notes = bentofile_variant.make_variant(source, BASE)
    assert variant["python"]["packages"] == ["onnxruntime>=1.18", "Pillow>=10", "numpy>=1.24"]
    assert variant["docker"] == {"base_image": BASE}
    for key in ("service", "include", "models", "envs"):
        assert variant[key] == source[key]
    assert source["python"]["packages"][0] == "torch>=2.4"  # the source is not modified
    assert any("torch>=2.4" in n for n in notes) and any("system_packages" in n for n in notes)


def test_variant_adds_missing_serving_packages_without_duplicates():
    source = {"service": "s:S", "python": {"packages": ["onnxruntime>=1.20", "onnxruntime-gpu>=1.18"]}}
    variant, _ = bentofile_variant.make_variant(source, BASE)
    assert names(variant["python"]["packages"]) == ["onnxruntime", "pillow", "numpy"]
    assert variant["python"]["packages"][0] == "onnxruntime>=1.20"


@pytest.mark.parametrize(
    "source, fragment",
    [
        ({"python": {"packages": []}}, "no 'service:'"),
        ({"service": "s:S", "python": {"requirements_txt": "requirements.txt"}}, "requirements_txt"),
        ({"service": "s:S", "docker": {"dockerfile_template": "t.j2"}}, "dockerfile_template"),
    ],
)
def test_variant_rejects_what_it_cannot_convert(source, fragment):
    with pytest.raises(bentofile_variant.VariantError, match=fragment):
        bentofile_variant.make_variant(source, BASE)


def test_variant_cli_writes_yaml_and_fails_with_one_line(tmp_path, capsys):
    src = tmp_path / "bentofile.yaml"
    src.write_text(yaml.safe_dump({"service": "s:S", "python": {"packages": ["torch", "numpy"]}}))
    out = tmp_path / "variant.yaml"
    assert bentofile_variant.main([str(src), "--base-image", BASE, "--out", str(out)]) == 0
    assert names(yaml.safe_load(out.read_text())["python"]["packages"]) == ["numpy", "onnxruntime", "pillow"]

    capsys.readouterr()
    assert bentofile_variant.main([str(tmp_path / "missing.yaml"), "--base-image", BASE, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.yaml not found" in err[0]


def test_repository_bentofile_gives_a_torch_free_variant():
    source = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    variant, _ = bentofile_variant.make_variant(source, BASE)
    packages = set(names(variant["python"]["packages"]))
    assert not packages & {"torch", "torchvision", "onnxruntime-gpu"}
    assert {"onnxruntime", "pillow", "numpy"} <= packages


def test_gpu_bentofile_serves_the_same_service_and_models():
    gpu = yaml.safe_load((ROOT / "deploy" / "bentofile.gpu.yaml").read_text())
    cpu = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    for key in ("service", "include", "exclude", "models"):
        assert gpu.get(key) == cpu.get(key), f"deploy/bentofile.gpu.yaml {key} differs from bentofile.yaml"
    assert "onnxruntime-gpu" in names(gpu["python"]["packages"])
    assert "onnxruntime" not in names(gpu["python"]["packages"])  # the two wheels must never coexist


def result(index: int, score: float, second: float = 0.01) -> dict:
    top = [{"label": str(index), "index": index, "score": score}, {"label": "x", "index": 9, "score": second}]
    return {**top[0], "top_k": top}


def test_compare_classifications_detects_each_kind_of_difference():
    ref = [result(7, 0.9), result(2, 0.8)]
    files = ["a.png", "b.png"]
    assert check_container.compare_classifications([result(7, 0.9 + 1e-7), result(2, 0.8)], ref, files) == []
    assert "a.png: label" in check_container.compare_classifications([result(1, 0.9), result(2, 0.8)], ref, files)[0]
    assert "b.png: score" in check_container.compare_classifications([result(7, 0.9), result(2, 0.81)], ref, files)[0]
    assert "top_k scores" in check_container.compare_classifications([result(7, 0.9), result(2, 0.8, 0.02)], ref, files)[0]
    assert "results" in check_container.compare_classifications([result(7, 0.9)], ref, files)[0]
    assert check_container.compare_forecasts([0.5, 0.25], [0.5, 0.25000001]) == []
    assert check_container.compare_forecasts([0.5, 0.26], [0.5, 0.25]) == ["step 1: 0.26 != 0.25"]


def test_uploaded_digits_are_the_real_mnist_test_pixels():
    from torchvision.datasets import MNIST

    digits = check_container.mnist_pngs(DATA_DIR, 3)
    test_set = MNIST(root=str(DATA_DIR), train=False, download=False)
    for i, (name, png, label) in enumerate(digits):
        decoded = np.asarray(Image.open(io.BytesIO(png)))
        assert decoded.shape == (28, 28) and name.endswith(".png")
        assert np.array_equal(decoded, test_set.data[i].numpy()) and label == int(test_set.targets[i])


def test_podman_configuration_is_valid_and_kept_in_the_work_folder(tmp_path):
    script = f'source "{ROOT}/deploy/podman.sh"; zoo_podman_env "{tmp_path}"; echo "$CONTAINERS_CONF"; echo "$CONTAINERS_STORAGE_CONF"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split()
    containers = tomllib.loads(Path(out[0]).read_text())
    storage = tomllib.loads(Path(out[1]).read_text())
    assert containers["engine"]["runtime"] == "runc" and containers["engine"]["cgroup_manager"] == "cgroupfs"
    assert "nofile=20000:20000" in containers["containers"]["default_ulimits"]
    paths = [storage["storage"]["graphroot"], storage["storage"]["runroot"], containers["network"]["network_config_dir"]]
    assert all(Path(p).is_relative_to(tmp_path) for p in paths)


def test_shell_scripts_parse():
    for script in (ROOT / "scripts" / "container_test.sh", ROOT / "deploy" / "podman.sh"):
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_script_fails_with_the_step_name_and_cleans_up(tmp_path):
    """A missing dataset stops the run before anything is built: one clear line, no work folder left."""
    env = {**os.environ, "DATA_DIR": str(tmp_path / "no-data"), "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "container_test.sh")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"MNIST not found in {tmp_path / 'no-data'}/MNIST/raw" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "container-test: FAILED at step 'check prerequisites' (exit 1)"
    assert not list(tmp_path.glob("model-zoo-container.*"))


class _Resp:
    def __init__(self, status_code: int, text: str = ""):
        self.status_code, self.text = status_code, text


def test_token_check_requires_a_401_without_the_token(monkeypatch):
    digits = [("d.png", b"png", 7)]
    monkeypatch.setattr(check_container.httpx, "post", lambda *a, **k: _Resp(401, '{"error": "unauthorized"}'))
    assert "401" in check_container.check_token_required("http://pod", digits)
    monkeypatch.setattr(check_container.httpx, "post", lambda *a, **k: _Resp(200, "[]"))
    with pytest.raises(check_container.CheckError, match="answered HTTP 200, expected 401"):
        check_container.check_token_required("http://pod", digits)


def test_metrics_check_matches_whole_metric_names(monkeypatch):
    text = ('# TYPE bentoml_service_request_in_progress gauge\n'
            'bentoml_service_request_in_progress{endpoint="/classify_digit"} 0.0\n'
            'bentoml_service_request_total{endpoint="/x"} 3.0\n')
    monkeypatch.setattr(check_container.httpx, "get", lambda *a, **k: _Resp(200, text))
    assert "bentoml_service_request_in_progress" in check_container.check_metrics("http://pod", ["bentoml_service_request_in_progress"])
    with pytest.raises(check_container.CheckError, match=r"no \['bentoml_service_request'\]"):
        check_container.check_metrics("http://pod", ["bentoml_service_request"])  # a prefix is not the metric
