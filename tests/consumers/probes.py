"""Reading a consumer's --metrics-listen endpoint as Kubernetes and Prometheus do."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def probe(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    """The status and JSON body of a probe; (0, None) while nothing listens."""
    try:
        async with http.get(url) as response:
            return response.status, await response.json()
    except aiohttp.ClientConnectionError:
        return 0, None


async def scrape(http: aiohttp.ClientSession, base: str) -> Samples:
    """Every sample of ``base``/metrics by name and labels; empty while nothing listens."""
    try:
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
    except aiohttp.ClientConnectionError:
        return {}
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))
