"""The disk spool on a real file system: durable appends, ordered replay, crash recovery."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from audit_common.errors import KafkaUnavailable, Overloaded
from relay.events.records import EVENTS, OutboundRecord
from relay.spool import frames
from relay.spool.store import Spool
from tests.support.files import file_size_limit
from tests.support.kafka import REPO


def records(start: int, count: int, size: int = 100) -> list[OutboundRecord]:
    return [
        OutboundRecord(
            EVENTS, f"{i:08d}".encode().ljust(size, b"."), f"{i}".encode(), (("n", b"1"),)
        )
        for i in range(start, start + count)
    ]


class Sink:
    """Stands in for the Kafka publisher: keeps what it was given, fails when told to."""

    def __init__(self, fail_after_calls: int | None = None) -> None:
        self.received: list[OutboundRecord] = []
        self.calls = 0
        self.fail_after_calls = fail_after_calls

    async def __call__(self, batch: Sequence[OutboundRecord]) -> None:
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KafkaUnavailable("broker down")
        self.calls += 1
        self.received.extend(batch)


def held(batch: list[OutboundRecord]) -> int:
    return sum(frames.frame_size(record) for record in batch)


def segment_files(root: Path) -> list[Path]:
    return sorted(root.glob("worker-*/*.seg"))


async def test_append_then_replay_in_order_and_delete(tmp_path: Path) -> None:
    sent = records(0, 50)
    async with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=2000) as spool:
        for i in range(0, 50, 5):
            await spool.append(sent[i : i + 5])
        assert len(segment_files(tmp_path)) > 1
        assert not spool.empty
        stats = spool.stats()
        assert stats.events == 50 and stats.bytes == sum(
            f.stat().st_size for f in segment_files(tmp_path)
        )
        sink = Sink()
        assert await spool.replay(sink) == 50
        assert sink.received == sent
        assert spool.empty and segment_files(tmp_path) == []
        assert spool.stats().replayed_events == 50 and spool.stats().replay_rate == 5.0


async def test_spool_survives_a_restart(tmp_path: Path) -> None:
    async with Spool(tmp_path, max_bytes=1 << 20) as spool:
        await spool.append(records(0, 3))
    async with Spool(tmp_path, max_bytes=1 << 20) as spool:
        assert spool.stats().events == 3
        await spool.append(records(3, 2))
        sink = Sink()
        await spool.replay(sink)
        assert sink.received == records(0, 5)


async def test_full_spool_refuses_the_whole_request(tmp_path: Path) -> None:
    async with Spool(tmp_path, max_bytes=1000) as spool:
        await spool.append(records(0, 5))
        with pytest.raises(Overloaded):
            await spool.append(records(5, 5))
        assert (spool.stats().events, spool.stats().bytes) == (5, held(records(0, 5)))
        await spool.replay(Sink())
        await spool.append(records(5, 5))  # room again once replayed


async def test_failed_publish_keeps_the_rest_and_does_not_repeat_what_was_acked(
    tmp_path: Path,
) -> None:
    async with Spool(tmp_path, max_bytes=1 << 20, replay_batch_bytes=500) as spool:
        await spool.append(records(0, 20))
        failing = Sink(fail_after_calls=2)
        with pytest.raises(KafkaUnavailable):
            await spool.replay(failing)
        assert failing.received == records(0, 10)
        assert spool.stats().events == 10
        assert len(segment_files(tmp_path)) == 1
        sink = Sink()
        await spool.replay(sink)
        assert sink.received == records(10, 10)
        assert spool.empty and segment_files(tmp_path) == []


async def test_a_probing_replay_sends_one_record_first(tmp_path: Path) -> None:
    async with Spool(tmp_path, max_bytes=1 << 20) as spool:
        await spool.append(records(0, 20))
        batches: list[int] = []

        async def publish(batch: Sequence[OutboundRecord]) -> None:
            batches.append(len(batch))

        await spool.replay(publish, probe=True)
        assert batches == [1, 19]


async def test_appends_during_replay_keep_their_order(tmp_path: Path) -> None:
    async with Spool(tmp_path, max_bytes=1 << 20, replay_batch_bytes=300) as spool:
        await spool.append(records(0, 10))
        appended = 10

        async def slow_publish(batch: Sequence[OutboundRecord]) -> None:
            nonlocal appended
            received.extend(batch)
            if appended < 30:
                await spool.append(records(appended, 5))
                appended += 5

        received: list[OutboundRecord] = []
        while not spool.empty:
            await spool.replay(slow_publish)
        assert received == records(0, 30)


async def test_torn_tail_is_cut_and_never_replayed(tmp_path: Path) -> None:
    async with Spool(tmp_path, max_bytes=1 << 20) as spool:
        await spool.append(records(0, 3))
    [segment] = segment_files(tmp_path)
    whole = segment.stat().st_size
    with segment.open("ab") as file:
        file.write(b"\x40\x00\x00\x00garbage")
    async with Spool(tmp_path, max_bytes=1 << 20) as spool:
        assert segment.stat().st_size == whole
        sink = Sink()
        await spool.replay(sink)
        assert sink.received == records(0, 3)


async def test_each_worker_claims_its_own_directory_and_adopts_what_a_dead_one_left(
    tmp_path: Path,
) -> None:
    first = Spool(tmp_path, max_bytes=1 << 20)
    second = Spool(tmp_path, max_bytes=1 << 20)
    await first.start()
    await second.start()
    await first.append(records(0, 4))
    await second.append(records(100, 2))
    assert len({path.parent for path in segment_files(tmp_path)}) == 2
    sink = Sink()
    await second.replay(sink)  # the first worker is alive: its directory is not taken
    assert sink.received == records(100, 2)
    await first.stop()  # releases the lock, as the kernel does when a worker dies
    await second.replay(sink)
    assert sink.received == records(100, 2) + records(0, 4)
    assert segment_files(tmp_path) == []
    await second.stop()


async def test_start_and_stop_are_idempotent(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    await spool.stop()
    await spool.start()
    await spool.start()
    await spool.append(records(0, 1))
    await spool.stop()
    await spool.stop()
    with pytest.raises(RuntimeError):
        await spool.append(records(1, 1))


async def test_stats_report_the_age_of_the_oldest_event(tmp_path: Path) -> None:
    async with Spool(tmp_path, max_bytes=1 << 20) as spool:
        assert spool.stats().oldest_age_s == 0.0
        await spool.append(records(0, 1))
        await asyncio.sleep(0.2)  # the age must grow with wall time; nothing to wait on instead
        await spool.append(records(1, 1))
        assert 0.2 <= spool.stats().oldest_age_s < 5


async def test_concurrent_appends_share_fsyncs_and_each_record_is_replayed_once(
    tmp_path: Path,
) -> None:
    requests = [records(start, 5) for start in range(0, 200, 5)]
    async with Spool(tmp_path, max_bytes=1 << 20) as spool:
        await asyncio.gather(*(spool.append(batch) for batch in requests))
        assert spool.stats().events == 200  # each append returned once its records were written
        assert spool.stats().commits < len(requests)
        sink = Sink()
        assert await spool.replay(sink) == 200
    assert sorted(sink.received, key=lambda record: record.value) == records(0, 200)


async def test_an_append_over_the_bound_is_refused_alone(tmp_path: Path) -> None:
    small = [records(0, 5), records(5, 5), records(10, 5)]
    oversized = records(100, 50)
    # Room for two small requests: what others wait to write counts against the bound too.
    async with Spool(tmp_path, max_bytes=2 * held(small[0]) + 10) as spool:
        results = await asyncio.gather(
            spool.append(small[0]),
            spool.append(oversized),
            spool.append(small[1]),
            spool.append(small[2]),
            return_exceptions=True,
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], Overloaded) and isinstance(results[3], Overloaded)
        sink = Sink()
        await spool.replay(sink)
    assert sink.received == small[0] + small[1]


async def test_a_failed_write_fails_exactly_the_appends_it_carried(tmp_path: Path) -> None:
    requests = [records(start, 5) for start in range(100, 140, 5)]  # all of one size
    size = held(requests[0])
    # A write carries what fits a segment: here five appends, then the other three, each in a
    # segment of its own. A file size limit of four appends fails the first write only.
    async with Spool(tmp_path, max_bytes=1 << 20, segment_bytes=5 * size) as spool:
        with file_size_limit(4 * size):
            results = await asyncio.gather(
                *(spool.append(batch) for batch in requests), return_exceptions=True
            )
        assert all(result is None or isinstance(result, Overloaded) for result in results)
        written = [batch for batch, result in zip(requests, results, strict=True) if not result]
        assert 0 < len(written) < len(requests)
        assert spool.stats().events == 5 * len(written)
        sink = Sink()
        await spool.replay(sink)
    # Nothing of the failed write is left to be replayed, not even some of its whole frames.
    assert sink.received == [record for batch in written for record in batch]


async def test_a_cancelled_append_is_still_written(tmp_path: Path) -> None:
    async with Spool(tmp_path, max_bytes=1 << 20) as spool:
        cancelled = asyncio.create_task(spool.append(records(0, 5)))
        await asyncio.sleep(0)  # the append is waiting for its write
        cancelled.cancel()
        await spool.append(records(5, 5))  # written after it, or together with it
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert spool.stats().events == 10
    async with Spool(tmp_path, max_bytes=1 << 20) as spool:  # and durable: read back from disk
        sink = Sink()
        await spool.replay(sink)
    assert sink.received == records(0, 10)


async def test_stop_writes_the_appends_that_wait(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    await spool.start()
    appends = [asyncio.create_task(spool.append(records(n, 5))) for n in range(0, 20, 5)]
    await asyncio.sleep(0)  # every append is waiting for its write
    await spool.stop()
    await asyncio.gather(*appends)
    async with Spool(tmp_path, max_bytes=1 << 20) as spool:
        sink = Sink()
        await spool.replay(sink)
    assert sink.received == records(0, 20)


WRITER = textwrap.dedent(
    """
    import asyncio, itertools, sys
    from pathlib import Path
    from relay.events.records import OutboundRecord
    from relay.spool.store import Spool

    async def main():
        keys = itertools.count()
        async with Spool(Path(sys.argv[1]), max_bytes=1 << 30, segment_bytes=1 << 30) as spool:

            async def appender():
                while True:
                    batch = [next(keys) for _ in range(20)]
                    await spool.append([
                        OutboundRecord("events", str(i).encode() + b"." * 20_000, str(i).encode())
                        for i in batch
                    ])
                    print(batch[0], flush=True)

            await asyncio.gather(*(appender() for _ in range(int(sys.argv[2]))))

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_sigkill_mid_write_loses_nothing_acknowledged_and_replays_no_garbage(
    tmp_path: Path, concurrency: int
) -> None:
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        str(tmp_path),
        str(concurrency),
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert writer.stdout is not None
    acknowledged: set[int] = set()
    while len(acknowledged) < 400:
        first = int(await asyncio.wait_for(writer.stdout.readline(), 30))
        acknowledged.update(range(first, first + 20))
    writer.send_signal(signal.SIGKILL)
    await asyncio.wait_for(writer.wait(), 10)
    async with Spool(tmp_path, max_bytes=1 << 30) as spool:
        sink = Sink()
        await spool.replay(sink)
    keys = [int(record.key or b"") for record in sink.received]
    # Appends are written in the order they were made, whoever shares a write.
    assert keys == list(range(len(keys)))
    assert acknowledged <= set(keys)
    assert all(record.value == record.key + b"." * 20_000 for record in sink.received)  # type: ignore[operator]
