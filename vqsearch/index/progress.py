"""The tqdm bar of an index write (training, encoding, writing); see :meth:`vqsearch.Index.add`."""

from __future__ import annotations

from typing import Any

#: With ``progress=None`` (the default), the bar of a write appears only once it has run this many seconds.
PROGRESS_DELAY = 1.0


def write_progress_bar(n: int, progress: bool | None) -> Any:
    """A tqdm bar over ``n`` rows for a write, or ``None`` when ``progress`` is False (``True``: shown at once;
    ``None``: shown once the write has run :data:`PROGRESS_DELAY` seconds)."""
    if progress is False:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=n, unit="vec", unit_scale=True, desc="adding", leave=False,
                delay=0.0 if progress else PROGRESS_DELAY)


def describe_stage(bar: Any, stage: str) -> None:
    """Name the stage a write is in on its bar (no-op without a bar)."""
    if bar is not None:
        bar.set_description(stage, refresh=False)
