"""LingeringClose's bounds in process (service/http/linger.py): what it reads after an early answer."""

from __future__ import annotations

import asyncio

from service.http.linger import CLOSE, LingeringClose

MiB = 2**20


async def early_404(scope, receive, send) -> None:
    """An app that answers without reading the body, like rest.py's unknown model."""
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def run(chunks: int, headers: list[tuple[bytes, bytes]], status_app=early_404, **kw) -> tuple[int, list[dict]]:
    """(body chunks of 1 MiB read, messages sent) for a body of ``chunks`` MiB sent as fast as asked."""
    read, sent = 0, []

    async def receive() -> dict:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b"\0" * MiB, "more_body": read < chunks}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "client": ("10.0.0.1", 1), "headers": headers}
    asyncio.run(LingeringClose(status_app, max_bytes=32 * MiB, per_client=4, **kw)(scope, receive, send))
    return read, sent


def test_an_early_answer_goes_out_whole_before_the_rest_of_the_body_is_read():
    read, sent = run(8, [(b"content-length", str(8 * MiB).encode())])
    assert read == 8  # all of it, then the end of the answer
    start, body, end = sent
    assert start["status"] == 404 and CLOSE in start["headers"]
    assert body["body"] == b"{}" and body["more_body"] is True
    assert end == {"type": "http.response.body", "body": b"", "more_body": False}


def test_a_body_over_the_cap_is_not_read_in_full():
    read, sent = run(40, [(b"transfer-encoding", b"chunked")])
    assert read == 33  # stops once past the 32 MiB cap
    assert sent[-1]["more_body"] is False
    read, _ = run(40, [(b"content-length", str(40 * MiB).encode())])
    assert read == 0  # a declared length over the cap: no lingering at all


def test_no_lingering_for_expect_100_continue_or_a_stalled_body():
    read, sent = run(8, [(b"content-length", str(8 * MiB).encode()), (b"expect", b"100-continue")])
    assert read == 0 and len(sent) == 2 and CLOSE in sent[0]["headers"]

    async def stalled(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 408, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    read, sent = run(8, [(b"content-length", str(8 * MiB).encode())], stalled)
    assert read == 0 and len(sent) == 2


def test_a_body_read_by_the_app_is_left_alone():
    async def reads(scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    read, sent = run(3, [(b"content-length", str(3 * MiB).encode())], reads)
    assert read == 3 and sent[0]["headers"] == [] and len(sent) == 2
