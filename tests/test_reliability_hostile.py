"""The hostile-upload corpus (tests/hostile/corpus.py) against a real ``bentoml serve``.

Every case gets exactly its documented answer (docs/reliability.md): the status, a JSON body whose
``error`` names the problem (and the file), and for accepted unusual images the same prediction as
the plain PNG of the same pixels. After every case the server is still ready.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent / "hostile"))
import corpus  # noqa: E402

pytestmark = pytest.mark.slow
CASES = {c.name: c for c in corpus.cases()}


def send(url: str, case: corpus.Case) -> httpx.Response:
    if case.body is not None or not case.files:
        headers = {"content-type": case.content_type} if case.content_type else {}
        return httpx.post(url + "/classify_digit", content=case.body or b"", headers=headers, timeout=60)
    parts = [("images", f) for f in case.files]
    return httpx.post(url + "/classify_digit", files=parts, data=dict(case.fields) or None, timeout=60)


def answer(url: str, png: bytes) -> dict:
    r = httpx.post(url + "/classify_digit", files=[("images", ("ref.png", png, "image/png"))], timeout=60)
    assert r.status_code == 200, r.text
    return r.json()[0]


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_upload_gets_its_documented_answer(zoo_server, name):
    case = CASES[name]
    r = send(zoo_server.url, case)
    assert r.status_code == case.status, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    if case.status >= 400:
        assert isinstance(body, dict) and set(body) == {"error"}, body
        assert body["error"] and case.fragment in body["error"], body["error"]
        assert len(body["error"]) < 2000  # one readable line, not a dump
    else:
        assert len(body) == len(case.files)
        for res in body:
            assert 0 <= res["index"] < 10 and 0.0 <= res["score"] <= 1.0 and len(res["top_k"]) == 5
        if case.same_as is not None:
            ref = answer(zoo_server.url, case.same_as)
            assert body[0]["index"] == ref["index"]
            assert body[0]["score"] == pytest.approx(ref["score"], abs=1e-5)
    health = httpx.get(zoo_server.url + "/readyz", timeout=10)
    assert health.status_code == 200


def test_a_valid_digit_still_classifies_after_the_corpus(zoo_server):
    """The real digit 7 next to garbage in one request: the request fails naming the garbage only."""
    digit = corpus.DIGIT.read_bytes()
    assert answer(zoo_server.url, digit)["label"] == "7"
    r = httpx.post(zoo_server.url + "/classify_digit", timeout=60, files=[
        ("images", ("seven.png", digit, "image/png")), ("images", ("junk.png", corpus.elf_executable(), "image/png"))])
    assert r.status_code == 400 and "images[1] ('junk.png')" in r.json()["error"]
    assert "seven.png" not in r.json()["error"]
