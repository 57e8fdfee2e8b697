"""Aggregate sentiment reports over scored outputs: Parquet tables, a terminal summary, an HTML page.

    archive.py   find and check scored parts, scan them lazily
    keys.py      --by keys (columns, hashtags, mentions)     timeaxis.py  --time-col / --every
    measures.py  the shared measures, from additive sums    tables.py    overall, by group, over time
    modality.py  text vs image sentiment in the chains      exemplars.py representative posts
    output.py    the report folder                          report.py    the command, start to end
    terminal.py  rich summary                                html.py      the self-contained page
"""

from .options import ReportOptions
from .report import Report, plan_report, run_report

__all__ = ["Report", "ReportOptions", "plan_report", "run_report"]
