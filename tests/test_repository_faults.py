"""The model repository under faults (issue 25), one worker's model loop in-process against a real
(empty) BentoML model store: a model that fails to load is UNAVAILABLE with its reason, and the loop
goes on serving every other change; readiness sees a loop that has died."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from harness import ROOT

# Runs in its own process: BentoML reads BENTOML_HOME once, at its first store call.
SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    from service.config import Settings
    from service.errors import ModelUnavailable
    from service.control.manager import Zoo
    from service.control.shared_state import SharedState

    async def main(root):
        state = SharedState(root)
        state.update_desired(lambda d: d.models.update({"ghost": "ghost:v1"}))  # not in the store
        zoo = Zoo(Settings(workers=1), state)
        zoo.start()
        for _ in range(200):
            if zoo.synced:
                break
            await asyncio.sleep(0.05)
        out = {"synced": zoo.synced, "alive": zoo.loop_alive(), "failures": zoo.failures,
               "ready_with_failure": zoo.is_ready()}
        try:
            await asyncio.wait_for(zoo.get("ghost"), 5)
        except ModelUnavailable as exc:
            out["request"] = [exc.status, exc.message]
        # the loop applies the next change: the failed model dropped from the desired set
        gen = state.update_desired(lambda d: d.models.pop("ghost")).generation
        for _ in range(200):
            if zoo.applied >= gen:
                break
            await asyncio.sleep(0.05)
        out["applied_next"] = zoo.applied >= gen
        out["ready_after"] = zoo.is_ready()
        zoo._task.cancel()  # a loop that has died (here: stopped) is not ready
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        out["ready_dead_loop"] = zoo.is_ready()
        print(json.dumps(out))

    asyncio.run(main(sys.argv[1]))
""")


def test_a_failed_load_marks_one_model_unavailable_and_the_loop_goes_on(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "store")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "state")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["synced"] and out["alive"], done.stderr[-3000:]
    assert out["failures"] == {"ghost": {"version": "v1", "reason":
                                         "model 'ghost' failed to load: model ghost:v1 is no longer in the model store"}}
    assert out["ready_with_failure"] is False  # a desired model failing anywhere: not ready
    assert out["request"] == [503, "model 'ghost' failed to load: model ghost:v1 is no longer in the model store"]
    assert out["applied_next"] and out["ready_after"] is True
    assert out["ready_dead_loop"] is False


# Names and versions at the edges of BentoML's tag rule: trailing '-', '_' or '.', lengths 63/64/128.
EDGE_NAMES = ["abc-", "abc_", "a", "a-b_c", "a" * 63, "a" * 64, "-abc", "abc.", "a.b"]
EDGE_VERSIONS = ["v1-", "v1_", "v1.", "v1.2", "a" * 63, "a" * 64, "a" * 128, ".v1", "latest1"]


def _bentoml_accepts(name: str, version: str) -> bool:
    """Whether ``bentoml.models.get`` can parse the tag (it parses before it looks in the store)."""
    import bentoml
    from bentoml.exceptions import BentoMLException

    try:
        bentoml.Tag.from_str(f"{name}:{version}")
    except (BentoMLException, ValueError):
        return False
    return True


@pytest.mark.parametrize("name", EDGE_NAMES)
def test_a_model_name_is_accepted_only_when_bentoml_accepts_it(name):
    from zoo.families import InvalidName, check_model_name

    try:
        ours = check_model_name(name) == name
    except InvalidName:
        ours = False
    # '.' is BentoML's and refused here on purpose (ambiguous in a URL): only a name without it must agree
    assert ours == (_bentoml_accepts(name, "v1") and "." not in name), name


@pytest.mark.parametrize("version", EDGE_VERSIONS)
def test_a_model_version_is_accepted_exactly_when_bentoml_accepts_it(version):
    from zoo.families import InvalidName, check_version

    try:
        ours = check_version(version) == version
    except InvalidName:
        ours = False
    assert ours == _bentoml_accepts("abc", version), version
