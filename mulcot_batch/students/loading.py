"""Library chatter silenced while a model loads.

Why: every `score` run printed transformers' "Loading weights" progress bar (under a second for
nano) and a FutureWarning that peft triggers inside transformers (`is_gradient_checkpointing`),
neither of which a user can act on; they pushed the job's own header off the first screen.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Within: no transformers progress bars, no peft-triggered deprecation warning; restored after."""
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            yield
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
