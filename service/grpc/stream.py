"""``ModelStreamInfer``: many ``ModelInferRequest`` messages in one bidirectional call (Triton's RPC,
which tritonclient's ``start_stream`` / ``async_stream_infer`` use).

Each message read becomes a task answered by the unary path (``InferenceServicer.infer``, so the same
checks, timing record, statistics and deadline), and the messages of one stream meet in the model's
batcher. Answers are written as they complete (completion order), each a ``ModelStreamInferResponse``
whose ``infer_response.id`` is its request's ``id``: clients match answers to requests by id. A
``ServiceError`` answers only its message, with ``error_message`` (``[request id: ID] `` and the
message a unary call would get) and the id, as Triton does; the stream goes on.

At most ``MAX_STREAM_IN_FLIGHT`` messages of a stream are read and not yet answered back: at the bound,
reading waits (HTTP/2 flow control then holds the client), so a flood of messages cannot grow the
server's memory without bound. The call's deadline applies to every message; when the call ends
(cancelled by the client, past its deadline, or cut at the end of the server's shutdown grace), the
messages in flight are cancelled and counted as client disconnects, as unary calls are. When the
server stops (SIGTERM's drain), every open stream stops reading, answers what it has read, and ends
UNAVAILABLE, so an idle stream does not hold the shutdown and its client knows to resend elsewhere.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import grpc

from service.errors import ServiceError
from service.grpc.protos import grpc_service_pb2 as pb

MAX_STREAM_IN_FLIGHT = 256  # messages of one stream read and not yet answered back; reading waits beyond
SHUTDOWN = ("the server is shutting down: every message it read on this stream was answered; "
            "send the others again, to another server")


class _Read:
    """Reading has ended after ``count`` messages (``drained``: stopped by the server's shutdown)."""

    def __init__(self, count: int, drained: bool) -> None:
        self.count, self.drained = count, drained


def error_answer(request: Any, exc: ServiceError) -> Any:
    """One message's error, as Triton answers it on a stream: the message, prefixed with the request's id."""
    prefix = f"[request id: {request.id}] " if request.id else ""
    return pb.ModelStreamInferResponse(error_message=prefix + exc.message,
                                       infer_response=pb.ModelInferResponse(id=request.id))


class Streams:
    """The open ``ModelStreamInfer`` calls of one server, so that its shutdown can end their reading."""

    def __init__(self) -> None:
        self.readers: set[asyncio.Task] = set()
        self.closing = False

    def close(self) -> None:
        """Stop reading on every open stream (and on any that opens from now on)."""
        self.closing = True
        for reader in list(self.readers):
            reader.cancel()

    async def answer(self, context: grpc.aio.ServicerContext, infer: Callable[[Any], Awaitable[Any]]) -> None:
        """One call: ``infer(request)`` for each message ``context`` reads, each answer written to it."""
        loop = asyncio.get_running_loop()
        done: asyncio.Queue[Any] = asyncio.Queue()  # answers, a bug's exception, then a _Read
        slots = asyncio.Semaphore(MAX_STREAM_IN_FLIGHT)
        tasks: set[asyncio.Task] = set()

        async def one(request: Any) -> None:
            try:
                answer = pb.ModelStreamInferResponse(infer_response=await infer(request))
            except ServiceError as exc:  # that message's mistake (or the queue's 429): the stream goes on
                answer = error_answer(request, exc)
            done.put_nowait(answer)

        def finished(task: asyncio.Task) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:  # a bug (or a failed read): ends the call
                done.put_nowait(task.exception())

        async def read() -> None:
            count = 0
            try:
                while True:
                    await slots.acquire()  # released once an answer is written
                    request = await context.read()
                    if request is grpc.aio.EOF:  # the client has sent its last message
                        break
                    count += 1
                    task = loop.create_task(one(request))
                    tasks.add(task)
                    task.add_done_callback(finished)
            except asyncio.CancelledError:
                done.put_nowait(_Read(count, drained=True))
                raise
            done.put_nowait(_Read(count, drained=False))

        reader = loop.create_task(read())
        self.readers.add(reader)
        reader.add_done_callback(self.readers.discard)
        reader.add_done_callback(finished)
        if self.closing:
            reader.cancel()
        written, ended = 0, None
        try:
            while ended is None or written < ended.count:
                item = await done.get()
                if isinstance(item, _Read):
                    ended = item
                elif isinstance(item, BaseException):
                    raise item
                else:
                    await context.write(item)
                    written += 1
                    slots.release()
            if ended.drained:
                await context.abort(grpc.StatusCode.UNAVAILABLE, SHUTDOWN)
        finally:  # ended, failed or cancelled: nothing more is read or answered
            reader.cancel()
            for task in tasks:
                task.cancel()
