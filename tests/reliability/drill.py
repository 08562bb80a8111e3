"""The client side of the reliability drills: a load client that checks every answer, and the
log check that counts, by request_id, what reached the database.

Every request carries ``x-portkey-metadata: {"request_id": <uuid>, "drill": <name>}``, so the
database can be asked, per request, how many logs it holds and with which status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import aiohttp
import orjson
import psycopg

MOCK_REPLY = "This is a mock reply."
CHAT_MESSAGES = [{"role": "user", "content": "Hello from the reliability drill"}]
# Mock usage: 5 words + 3 per message.
PROMPT_TOKENS = 8


@dataclasses.dataclass
class Call:
    """One request and what came back."""

    request_id: str
    drill: str
    stream: bool
    expect: int  # HTTP status the client must get
    log_status: int  # status its log must carry
    status: int | None = None  # None: no HTTP answer (transport error)
    error: str = ""  # transport error, or why the answer is wrong
    log_id: str = ""
    content_chunks: int = 0
    done: bool = False
    disconnected: bool = False
    sent_at: float = 0.0
    latency: float = 0.0

    @property
    def answered(self) -> bool:
        return self.status is not None

    @property
    def correct(self) -> bool:
        return self.status == self.expect and not self.error


class Client:
    """aiohttp, one session, no connection limit; every call is checked against its expectation."""

    def __init__(
        self, base_url: str, api_key: str, *, drill: str, timeout: float = 30.0, force_close: bool = False
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.drill = drill
        self.timeout = timeout
        self.force_close = force_close
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        connector = aiohttp.TCPConnector(limit=0, force_close=self.force_close)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def chat(
        self,
        *,
        stream: bool = False,
        expect: int = 200,
        log_status: int | None = None,
        provider: str = "@mock",
        headers: dict[str, str] | None = None,
        chunks: int | None = None,
        expect_done: bool | None = None,
        disconnect_after: int | None = None,
    ) -> Call:
        """POST /v1/chat/completions. ``chunks``: content chunks a complete stream must carry
        (default: the mock reply's words); ``disconnect_after``: close the connection after this
        many content chunks (the log must then say 499)."""
        assert self.session is not None
        call = Call(
            request_id=str(uuid.uuid4()),
            drill=self.drill,
            stream=stream,
            expect=expect,
            log_status=log_status if log_status is not None else (499 if disconnect_after else expect),
        )
        metadata = orjson.dumps({"request_id": call.request_id, "drill": self.drill}).decode()
        request_headers = {
            "x-portkey-api-key": self.api_key,
            "x-portkey-provider": provider,
            "x-portkey-metadata": metadata,
            **(headers or {}),
        }
        body = {"model": "gpt-4o-mini", "messages": CHAT_MESSAGES, "stream": stream}
        call.sent_at = time.monotonic()
        try:
            async with self.session.post(
                self.base_url + "/v1/chat/completions", json=body, headers=request_headers
            ) as resp:
                call.status = resp.status
                call.log_id = resp.headers.get("x-portico-log-id", "")
                if stream and resp.status == 200:
                    await self._read_stream(call, resp, disconnect_after)
                    if disconnect_after is None:
                        self._check_stream(call, chunks, expect_done)
                else:
                    self._check_body(call, await resp.read())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            call.error = f"{type(exc).__name__}: {exc}"[:200]
        call.latency = time.monotonic() - call.sent_at
        if call.status is not None and call.status != call.expect and not call.error:
            call.error = f"status {call.status}, expected {call.expect}"
        if call.status is not None and not call.log_id and not call.error:
            call.error = "no x-portico-log-id header"
        return call

    @staticmethod
    async def _read_stream(call: Call, resp: aiohttp.ClientResponse, disconnect_after: int | None) -> None:
        buffer = b""
        async for data in resp.content.iter_any():
            buffer += data
            while (end := buffer.find(b"\n\n")) >= 0:
                event, buffer = buffer[:end], buffer[end + 2 :]
                payload = event.removeprefix(b"data: ").strip()
                if payload == b"[DONE]":
                    call.done = True
                    continue
                try:
                    doc = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    call.error = f"undecodable SSE event {payload[:80]!r}"
                    continue
                if "usage" in doc and not doc.get("choices") and doc.get("usage"):
                    call.error = "usage chunk relayed although the client did not ask for it"
                for choice in doc.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        call.content_chunks += 1
            if disconnect_after is not None and call.content_chunks >= disconnect_after:
                call.disconnected = True
                resp.close()  # drops the connection mid-stream
                return

    @staticmethod
    def _check_stream(call: Call, chunks: int | None, expect_done: bool | None) -> None:
        want_done = True if expect_done is None else expect_done
        if call.done != want_done:
            call.error = call.error or ("stream without [DONE]" if want_done else "stream unexpectedly complete")
        elif want_done:
            wanted = chunks if chunks is not None else len(MOCK_REPLY.split())
            if call.content_chunks != wanted:
                call.error = call.error or f"{call.content_chunks} content chunks, expected {wanted}"

    @staticmethod
    def _check_body(call: Call, raw: bytes) -> None:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            call.error = f"not JSON: {raw[:120]!r}"
            return
        if call.status == 200:
            content = doc.get("choices", [{}])[0].get("message", {}).get("content")
            if content != MOCK_REPLY:
                call.error = f"unexpected reply {content!r:.80}"
        elif not (isinstance(doc.get("error"), dict) and doc["error"].get("message")):
            call.error = f"not an OpenAI-shaped error: {raw[:120]!r}"


async def steady(make_call: Callable[[int], Awaitable[Call]], *, count: int, rate: float) -> list[Call]:
    """``count`` calls started at ``rate`` per second (open loop), all awaited."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for index in range(count):
        delay = start + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(make_call(index)))
    return list(await asyncio.gather(*tasks))


async def after(seconds: float, action: Callable[[], object]) -> float:
    """Run the blocking ``action`` (a fault) in a thread ``seconds`` from now; returns when it ran."""
    await asyncio.sleep(seconds)
    await asyncio.to_thread(action)
    return time.monotonic()


# --- logs in the database -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LogRow:
    id: str
    request_id: str
    status_code: int
    is_stream: bool
    prompt_tokens: int
    completion_tokens: int


def read_logs(database_url: str, drill: str) -> dict[str, list[LogRow]]:
    """This drill's logs by request_id."""
    with psycopg.connect(database_url, autocommit=True, connect_timeout=3) as conn:
        rows = conn.execute(
            "SELECT id::text, metadata->>'request_id', status_code, is_stream, prompt_tokens, completion_tokens "
            "FROM analytics_requestlog WHERE metadata->>'drill' = %s",
            [drill],
        ).fetchall()
    logs: dict[str, list[LogRow]] = defaultdict(list)
    for row in rows:
        logs[row[1]].append(LogRow(*row))
    return logs


def pipeline_idle(redis_url: str | None, stream_key: str, spool_dir: Path | None) -> bool:
    """Nothing left in the stream (delivered or pending) nor in the spool."""
    if spool_dir is not None and spool_dir.exists() and any(spool_dir.iterdir()):
        return False
    if not redis_url:
        return True
    import redis

    with redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=2) as client:
        return client.xlen(stream_key) == 0


def wait_for_logs(
    database_url: str,
    drill: str,
    calls: Iterable[Call],
    *,
    timeout: float,
    idle: Callable[[], bool] | None = None,
) -> dict[str, list[LogRow]]:
    """Poll until every answered call has a log and the pipeline is idle (then nothing more can
    arrive), or until the deadline; return the logs as they are then."""
    expected = {call.request_id for call in calls if call.answered}
    deadline = time.monotonic() + timeout
    while True:
        try:
            logs = read_logs(database_url, drill)
            if expected <= logs.keys() and (idle is None or idle()):
                return read_logs(database_url, drill)
        except (psycopg.OperationalError, OSError):
            logs = {}
        if time.monotonic() >= deadline:
            return logs
        time.sleep(0.2)


@dataclasses.dataclass
class Verdict:
    sent: int
    answered_correctly: int
    logs_landed: int
    duplicates: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(calls: list[Call], logs: dict[str, list[LogRow]], *, unanswered_logged: bool = False) -> Verdict:
    """Every answered call correct and with exactly one log of the right status and id; calls
    that got no answer (refused connections) have no log unless ``unanswered_logged``."""
    problems: list[str] = []
    by_id = {call.request_id: call for call in calls}
    for call in calls:
        rows = logs.get(call.request_id, [])
        if call.answered and not call.correct:
            problems.append(f"{call.request_id}: wrong answer ({call.error})")
        if not call.answered:
            if rows and not unanswered_logged:
                problems.append(f"{call.request_id}: unanswered ({call.error}) but logged {len(rows)}x")
            continue
        if not rows:
            problems.append(f"{call.request_id}: no log (answered {call.status})")
            continue
        if len(rows) > 1:
            problems.append(f"{call.request_id}: {len(rows)} logs")
        row = rows[0]
        if row.status_code != call.log_status:
            problems.append(f"{call.request_id}: log status {row.status_code}, expected {call.log_status}")
        if call.log_id and row.id != call.log_id:
            problems.append(f"{call.request_id}: log id {row.id} != x-portico-log-id {call.log_id}")
    strangers = [rid for rid in logs if rid not in by_id]
    if strangers:
        problems.append(f"{len(strangers)} log(s) of requests never sent: {strangers[:3]}")
    return Verdict(
        sent=len(calls),
        answered_correctly=sum(call.correct for call in calls),
        logs_landed=sum(1 for call in calls if logs.get(call.request_id)),
        duplicates=sum(max(0, len(rows) - 1) for rows in logs.values()),
        problems=problems,
    )


def summary(problems: list[str], limit: int = 15) -> str:
    more = f"\n... and {len(problems) - limit} more" if len(problems) > limit else ""
    return "\n".join(problems[:limit]) + more


# --- an upstream the mock cannot play -------------------------------------------------------


class LateTerminatorUpstream:
    """Answers every request with a complete chat stream ([DONE] included) but sends the end of
    the chunked body (``0\\r\\n\\r\\n``) ``delay`` seconds later, as a provider behind a proxy
    may. Runs on a thread of the test process; keep-alive like a real server."""

    def __init__(self, delay: float = 0.3) -> None:
        self.delay = delay
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LateTerminatorUpstream:
        import threading

        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            server.close()

        self._thread = threading.Thread(target=run, name="late-terminator-upstream", daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    @staticmethod
    def events() -> bytes:
        head = {"id": "chatcmpl-late", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini"}

        def event(doc: dict) -> bytes:
            return b"data: " + orjson.dumps({**head, **doc}) + b"\n\n"

        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 1, "total_tokens": PROMPT_TOKENS + 1}
        return b"".join(
            [
                event(
                    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
                ),
                event({"choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]}),
                event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
                event({"choices": [], "usage": usage}),
                b"data: [DONE]\n\n",
            ]
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                body = self.events()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                    + f"{len(body):x}\r\n".encode()
                    + body
                    + b"\r\n"
                )
                await writer.drain()
                await asyncio.sleep(self.delay)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
