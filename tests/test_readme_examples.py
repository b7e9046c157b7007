"""The forecast examples the READMEs show, answered by a real server: none of them may set off the band warning."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "service/README.md")


def forecast_examples() -> list[tuple[str, dict]]:
    """(where, JSON body) of every `curl ... -d '{"history": ...}'` and `zoo forecast --history` in the READMEs."""
    found = []
    for doc in DOCS:
        for n, line in enumerate((REPO / doc).read_text().splitlines(), 1):
            if "history" not in line or not line.lstrip().startswith(("curl ", "zoo forecast")):
                continue
            words = shlex.split(line.split("  #")[0])
            if "-d" in words:
                found.append((f"{doc}:{n}", json.loads(words[words.index("-d") + 1])))
            elif "--history" in words:
                history = [float(v) for v in words[words.index("--history") + 1].split(",")]
                steps = int(words[words.index("--steps") + 1]) if "--steps" in words else 10
                found.append((f"{doc}:{n}", {"history": history, "steps": steps}))
    return found


def test_the_readmes_show_forecast_examples():
    where = [w for w, _ in forecast_examples()]
    assert any(w.startswith("README.md") for w in where) and any(w.startswith("service/") for w in where), where


@pytest.mark.parametrize("where, body", forecast_examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_readme_forecast_example_is_inside_the_band(zoo_server, where, body):
    r = httpx.post(zoo_server.url + "/forecast_sine", json=body)
    assert r.status_code == 200, r.text
    assert len(r.json()["forecast"]) == body["steps"]
    assert "warning" not in r.json(), f"{where}: {r.json()['warning']}"
