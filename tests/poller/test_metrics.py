"""The replica's collector pauses: timed while the poller runs, and no longer once it stops."""

from __future__ import annotations

import gc

from poller.metrics import Metrics


def pauses(metrics: Metrics, generation: int) -> tuple[float, float]:
    """(count, sum) of the pauses recorded for one generation."""
    samples = {
        sample.name: sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.labels.get("generation") == str(generation)
    }
    return samples.get("poller_gc_pause_seconds_count", 0.0), samples.get("poller_gc_pause_seconds_sum", 0.0)


def test_each_collection_is_timed_under_its_generation_while_watched() -> None:
    metrics = Metrics()
    with metrics.collector_pauses():
        gc.collect(1)
        gc.collect(1)
        gc.collect(2)
    middle, full = pauses(metrics, 1), pauses(metrics, 2)
    assert middle[0] >= 2 and middle[1] > 0
    assert full[0] >= 1 and full[1] > 0
    gc.collect(1)
    assert pauses(metrics, 1)[0] == middle[0], "a stopped watch records nothing more"
