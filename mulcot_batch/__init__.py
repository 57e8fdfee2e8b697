"""mulcot-batch: offline batch sentiment scoring with a distilled vision-language student."""

__version__ = "0.1.0"
