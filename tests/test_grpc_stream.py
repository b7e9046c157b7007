"""gRPC ``ModelStreamInfer`` (Triton's bidirectional stream) against a real ``bentoml serve``, with
``tritonclient.grpc``'s ``start_stream`` / ``async_stream_infer`` / ``stop_stream`` used unchanged:
real MNIST digits answered as unary ModelInfer answers them, matched by request id; a bad message
answered with an error naming it while the stream goes on; the token; Triton's statistics; a full
queue, the stream's deadline and a cancelled stream behind a slow ``transfer-resnet18`` request; and
an open stream ended UNAVAILABLE, not held, when the server stops; and a flood of messages read no
faster than it is answered (``MAX_STREAM_IN_FLIGHT``).

This process imports tritonclient's ``inference`` stubs, never the service's own
(service/grpc/protos/__init__.py says why).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from harness import BLOCKER, Blocker, photos, serve, sibling_home
from test_grpc import AUTH, TOKEN, fp32_input, images_input

from devtools.launch import free_port

grpcclient = pytest.importorskip("tritonclient.grpc")

pytestmark = pytest.mark.slow

SLOW = "transfer-resnet18"
QUEUE = 3  # requests the slow model may hold queued (MODEL_ZOO_MAX_QUEUE)
GRACE_S = 10.0  # service/grpc/server.py's (never imported here: it imports the service's stubs)
ROOT = Path(__file__).resolve().parents[1]


class Answers:
    """A stream's callback: results by request id, errors in arrival order."""

    def __init__(self) -> None:
        self.results: dict[str, object] = {}
        self.ids: list[str] = []  # of every result, to see each message answered once
        self.errors: list = []
        self.cond = threading.Condition()

    def __call__(self, result, error) -> None:
        with self.cond:
            if error is not None:
                self.errors.append(error)
            else:
                rid = result.get_response().id
                self.ids.append(rid)
                self.results[rid] = result
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = 60) -> None:
        """Until ``n`` callbacks (results and errors) have come."""
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.ids) + len(self.errors) >= n, timeout), (self.ids, self.errors)

    def messages(self) -> list[str]:
        return [e.message() for e in self.errors]


class Stream:
    """One tritonclient with its stream open (tritonclient holds one stream per client)."""

    def __init__(self, target: str, headers: dict[str, str] | None = AUTH, **kw) -> None:
        self.client = grpcclient.InferenceServerClient(target)
        self.answers = Answers()
        self.client.start_stream(self.answers, headers=headers, **kw)

    def send(self, model: str, inputs: list, request_id: str) -> None:
        self.client.async_stream_infer(model, inputs, request_id=request_id)

    def stop(self, cancel: bool = False) -> Answers:
        self.client.stop_stream(cancel_requests=cancel)  # without cancel: waits for every answer
        self.client.close()
        return self.answers


@pytest.fixture(scope="module")
def server(zoo_server, tmp_path_factory):
    """One worker with a token, mnist-mlp and the slow model (a queue of ``QUEUE`` requests)."""
    tmp = tmp_path_factory.mktemp("grpc-stream")
    port = free_port()
    env = {"MODEL_ZOO_GRPC_PORT": str(port), "MODEL_ZOO_GRPC_HOST": "127.0.0.1", "MODEL_ZOO_API_TOKEN": TOKEN,
           "MODEL_ZOO_MODELS": f"mnist-mlp,{SLOW}", "MODEL_ZOO_MAX_QUEUE": f"{SLOW}={QUEUE}"}
    with serve(sibling_home(zoo_server, tmp), tmp / "server.log", env) as srv:
        srv.target = f"127.0.0.1:{port}"
        srv.grpc = grpcclient.InferenceServerClient(srv.target)
        yield srv
        srv.grpc.close()


def unary_logits(server, x: np.ndarray) -> np.ndarray:
    return server.grpc.infer("mnist-mlp", [fp32_input(x)], headers=AUTH).as_numpy("logits")


def test_a_stream_of_real_digits_answers_each_as_unary_modelinfer_does(server, zoo_server):
    x = zoo_server.x_test.numpy()  # 64 real MNIST test images
    stream = Stream(server.target)
    for i in range(len(x)):  # one digit per message
        stream.send("mnist-mlp", [fp32_input(x[i:i + 1])], f"digit-{i}")
    answers = stream.stop()
    assert answers.errors == []
    assert sorted(answers.ids) == sorted(f"digit-{i}" for i in range(len(x)))  # each answered once, by its id
    logits = np.concatenate([answers.results[f"digit-{i}"].as_numpy("logits") for i in range(len(x))])
    unary = unary_logits(server, x)
    assert logits.argmax(1).tolist() == unary.argmax(1).tolist()
    np.testing.assert_allclose(logits, unary, rtol=1e-4, atol=1e-4)
    assert all(answers.results[f"digit-{i}"].get_response().model_name == "mnist-mlp" for i in range(len(x)))


def test_a_bad_message_gets_an_error_naming_it_and_the_stream_goes_on(server, zoo_server):
    x = zoo_server.x_test[:3].numpy()
    stream = Stream(server.target)
    stream.send("mnist-mlp", [fp32_input(x[0:1])], "before")
    stream.send("mnist-mlp", [fp32_input(np.zeros((1, 100), np.float32))], "wrong-shape")
    stream.send("nope", [fp32_input(x[1:2])], "unknown-model")
    stream.send("mnist-mlp", [images_input([b"not a png"])], "broken-image")
    stream.answers.wait(4)  # the errors have come back: the stream is still open
    stream.send("mnist-mlp", [fp32_input(x[2:3])], "after")
    answers = stream.stop()
    assert sorted(answers.ids) == ["after", "before"]
    got = np.concatenate([answers.results[i].as_numpy("logits") for i in ("before", "after")]).argmax(1)
    assert got.tolist() == unary_logits(server, x[[0, 2]]).argmax(1).tolist()
    messages = sorted(answers.messages())
    assert len(messages) == 3, messages
    assert messages[0].startswith("[request id: broken-image]") and "image" in messages[0], messages
    assert messages[1].startswith("[request id: unknown-model]") and "'nope' is not in the model store" in messages[1]
    assert messages[2].startswith("[request id: wrong-shape]") and "shape [1, 100] does not match" in messages[2]


def test_a_stream_needs_the_token(server):
    for headers in (None, {"authorization": "Bearer wrong"}):
        stream = Stream(server.target, headers=headers)
        stream.answers.wait(1)  # denied before any message is sent
        answers = stream.stop()
        assert answers.ids == [] and len(answers.errors) == 1
        assert answers.errors[0].status() == "StatusCode.UNAUTHENTICATED" and "Bearer" in answers.errors[0].message()


def statistics(server, model: str = "mnist-mlp"):
    [entry] = server.grpc.get_inference_statistics(model, headers=AUTH).model_stats
    return entry


def success_and_fail(server, model: str = "mnist-mlp") -> tuple[int, int]:
    stats = statistics(server, model).inference_stats
    return stats.success.count, stats.fail.count


def test_stream_messages_count_in_tritons_statistics(server, zoo_server):
    x = zoo_server.x_test[:32].numpy()
    before = statistics(server)
    stream = Stream(server.target)
    for i in range(len(x)):
        stream.send("mnist-mlp", [fp32_input(x[i:i + 1])], str(i))
    stream.send("mnist-mlp", [fp32_input(np.zeros((1, 100), np.float32))], "bad")
    answers = stream.stop()
    assert len(answers.ids) == len(x) and len(answers.errors) == 1
    after = statistics(server)
    assert after.inference_stats.success.count == before.inference_stats.success.count + len(x)
    assert after.inference_stats.fail.count == before.inference_stats.fail.count + 1
    assert after.inference_count == before.inference_count + len(x)


def computed(server) -> int:
    """Items the slow model has computed so far (Triton's ``inference_count``)."""
    return statistics(server, SLOW).inference_count


def test_messages_queued_behind_a_slow_request_form_one_batch(server):
    """Each message is handled as it is read, not after the previous one is answered: the messages
    queued while the model is busy are computed together, in one model call."""
    before = statistics(server, SLOW)
    blocker = Blocker(server.url, headers=AUTH)
    stream = Stream(server.target)
    for i in range(QUEUE):
        stream.send(SLOW, [images_input([photos(1)[0][1]])], f"queued-{i}")
    stream.answers.wait(QUEUE)
    assert blocker.done.is_set()  # answered after the request they queued behind
    answers = stream.stop()
    assert sorted(answers.ids) == [f"queued-{i}" for i in range(QUEUE)] and answers.errors == []
    after = statistics(server, SLOW)
    assert after.inference_count == before.inference_count + BLOCKER + QUEUE
    assert after.execution_count == before.execution_count + 2  # the blocker's call, then one for the stream's


def test_a_full_queue_answers_its_message_and_a_cancelled_stream_computes_nothing(server):
    before, (_, fail) = computed(server), success_and_fail(server, SLOW)
    blocker = Blocker(server.url, headers=AUTH)
    stream = Stream(server.target)
    for i in range(QUEUE):
        stream.send(SLOW, [images_input([photos(1)[0][1]])], f"queued-{i}")
    time.sleep(0.1)  # queued behind the blocker: the queue is full
    stream.send(SLOW, [images_input([photos(2)[0][1]])], "refused")
    stream.answers.wait(1)
    assert not blocker.done.is_set()  # answered at once, while the model is busy
    [busy] = stream.answers.messages()
    assert busy.startswith("[request id: refused]") and "busy" in busy and "MODEL_ZOO_MAX_QUEUE" in busy, busy
    answers = stream.stop(cancel=True)  # the queued messages are cancelled with the call
    blocker.join(120)
    assert blocker.response.status_code == 200
    assert answers.ids == [] and "CANCELLED" in str(answers.errors[-1].status())
    assert computed(server) == before + BLOCKER  # none of the stream's messages was computed
    assert success_and_fail(server, SLOW)[1] == fail + QUEUE + 1  # the refused one and the cancelled ones


def test_the_streams_deadline_applies_to_its_messages(server):
    before, (_, fail) = computed(server), success_and_fail(server, SLOW)
    blocker = Blocker(server.url, headers=AUTH)
    stream = Stream(server.target, stream_timeout=0.2)
    stream.send(SLOW, [images_input([photos(1)[0][1]])], "late")
    stream.answers.wait(1)
    assert not blocker.done.is_set()
    answers = stream.stop()
    assert answers.ids == [] and answers.errors[-1].status() == "StatusCode.DEADLINE_EXCEEDED", answers.messages()
    blocker.join(120)
    assert computed(server) == before + BLOCKER  # the late message never was
    assert success_and_fail(server, SLOW)[1] == fail + 1


def test_an_open_stream_ends_unavailable_when_the_server_stops(zoo_server, tmp_path):
    """SIGTERM: an open (idle) stream stops reading and ends UNAVAILABLE; it does not hold the shutdown
    for the server's grace period (service/grpc/server.py ``GRACE_S``, 10 s)."""
    port = free_port()
    env = {"MODEL_ZOO_GRPC_PORT": str(port), "MODEL_ZOO_GRPC_HOST": "127.0.0.1", "MODEL_ZOO_MODELS": "mnist-mlp"}
    with serve(sibling_home(zoo_server, tmp_path), tmp_path / "server.log", env) as srv:
        stream = Stream(f"127.0.0.1:{port}", headers=None)
        stream.send("mnist-mlp", [fp32_input(zoo_server.x_test[:1].numpy())], "one")
        stream.answers.wait(1)
        t0 = time.monotonic()
        srv.stop()
        took = time.monotonic() - t0
        stream.answers.wait(2)
        answers = stream.stop()
    assert answers.ids == ["one"], answers.messages()
    assert answers.errors[0].status() == "StatusCode.UNAVAILABLE" and "shutting down" in answers.errors[0].message()
    assert took < GRACE_S, took  # an idle stream held until the grace ran out would take longer


# service/grpc/stream.py driven by a client that sends without end, whose messages are answered only
# once released: in a process of its own, as it imports the service's stubs
FLOOD = """
import asyncio, json
import grpc
from service.grpc import stream
from service.grpc.protos import grpc_service_pb2 as pb

class Context:  # the servicer context's reader-writer API
    def __init__(self, n):
        self.n, self.reads, self.written = n, 0, []
    async def read(self):
        self.reads += 1
        return pb.ModelInferRequest(id=str(self.reads)) if self.reads <= self.n else grpc.aio.EOF
    async def write(self, answer):
        self.written.append(answer.infer_response.id)

async def main():
    release = asyncio.Event()
    async def infer(request):
        await release.wait()
        return pb.ModelInferResponse(id=request.id)
    context = Context(10 * stream.MAX_STREAM_IN_FLIGHT)
    call = asyncio.ensure_future(stream.Streams().answer(context, infer))
    await asyncio.sleep(0.5)
    held = context.reads
    release.set()
    await asyncio.wait_for(call, 60)
    print(json.dumps({"bound": stream.MAX_STREAM_IN_FLIGHT, "held": held, "sent": context.n,
                      "written": sorted(map(int, context.written))}))

asyncio.run(main())
"""


def test_a_flood_of_messages_is_read_no_faster_than_it_is_answered():
    done = subprocess.run([sys.executable, "-c", FLOOD], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["held"] == out["bound"]  # reading waited at the bound while nothing was answered
    assert out["written"] == list(range(1, out["sent"] + 1))  # then every message was answered once
