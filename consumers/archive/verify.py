"""``audit-consumer archive verify URL``: proof that an archive is complete and unchanged.

Per topic partition the objects' offset ranges must follow each other without gap or overlap,
and each object's body must match the count, SHA-256 and offset range it carries. Prints every
gap and mismatch, then a summary; exit 0 when there is none, 1 otherwise, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from audit_common.errors import AuditRelayError, ConfigError
from consumers.archive.layout import ObjectKey
from consumers.archive.reading import Range, find_objects, parse_time, read_objects
from consumers.archive.store import ArchiveStore, StoreSettings


@dataclass
class Findings:
    objects: int = 0
    events: int = 0
    problems: list[str] = field(default_factory=list)


async def verify(store: ArchiveStore, where: Range) -> Findings:
    """Read every object ``where`` covers; raises ArchiveUnavailable."""
    findings = Findings()
    keys = await find_objects(store, where)
    by_partition: dict[tuple[str, int], list[ObjectKey]] = defaultdict(list)
    async for read in read_objects(store, keys):
        findings.objects += 1
        findings.events += len(read.lines)
        by_partition[(read.key.topic, read.key.partition)].append(read.key)
        if read.problem:
            findings.problems.append(f"mismatch: {read.key.path}: {read.problem}")
    if where.cluster is not None:
        # A partition carries every cluster's events: the others' objects fill the gaps.
        return findings
    for (topic, partition), ranges in sorted(by_partition.items()):
        ranges.sort(key=lambda k: (k.first, k.last))
        for before, after in itertools.pairwise(ranges):
            if after.first > before.last + 1:
                findings.problems.append(
                    f"gap: {topic}-{partition} offsets {before.last + 1}-{after.first - 1} "
                    f"are in no object (after {before.path})"
                )
            elif after.first <= before.last:
                findings.problems.append(
                    f"overlap: {topic}-{partition} offsets {after.first}-"
                    f"{min(before.last, after.last)} are in {before.path} and {after.path}"
                )
    return findings


def run_verify(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    parser = argparse.ArgumentParser(
        prog="audit-consumer archive verify",
        description="Check that an archive's offset ranges are contiguous per topic partition "
        "and that every object matches the count and SHA-256 it carries.",
    )
    parser.add_argument("url", help="the archive: s3://BUCKET[/PREFIX], gs://, az://, file://")
    parser.add_argument("--since", help="first hour to check (RFC 3339); default: the oldest")
    parser.add_argument("--until", help="end of the range (RFC 3339); default: the newest")
    parser.add_argument(
        "--cluster",
        help="only this cluster's objects: their contents are checked, not the gaps between "
        "them (a partition carries every cluster's events)",
    )
    parser.add_argument(
        "--archive-endpoint",
        default=environ.get("AUDIT_CONSUMER_ARCHIVE_ENDPOINT"),
        help="URL of an S3-compatible server [env AUDIT_CONSUMER_ARCHIVE_ENDPOINT]",
    )
    args = parser.parse_args(argv)
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
        if since and until and since >= until:
            raise ValueError("--since must be before --until")
        store = ArchiveStore(StoreSettings(args.url, args.archive_endpoint))
    except (ValueError, ConfigError) as exc:
        print(f"audit-consumer archive verify: error: {exc}", file=sys.stderr)
        return 2
    try:
        findings = asyncio.run(verify(store, Range(args.cluster, since, until)))
    except AuditRelayError as exc:
        print(f"audit-consumer archive verify: error: {exc}", file=sys.stderr)
        return 1
    for problem in findings.problems:
        print(problem)
    verdict = f"{len(findings.problems)} problems" if findings.problems else "complete"
    print(f"{findings.objects} objects, {findings.events} events: {verdict}")
    return 1 if findings.problems else 0


def run_archive(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """``audit-consumer archive SUBCOMMAND``; only ``verify`` for now."""
    if argv and argv[0] == "verify":
        return run_verify(argv[1:], environ)
    print("usage: audit-consumer archive verify URL [--since T] [--until T]", file=sys.stderr)
    return 2
