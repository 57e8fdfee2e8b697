"""Aggregate sentiment reports over scored outputs: Parquet tables, a terminal summary, an HTML page.

One concern per module, in the order a report runs:

- options.py: the options; archive.py: find the parts, check them from their footers, scan lazily
- keys.py: `--by` keys (columns, hashtags, mentions); timeaxis.py: `--time-col` / `--every`
- digest.py: the one pass over the parts into a compact file every table reads
- measures.py: the shared measures from additive sums; tables.py: overall, by group, over time
- modality.py: text against image in the chains; exemplars.py: representative posts
- output.py: the report folder; terminal.py: rich summary; html.py + svg.py: the page
- report.py: the command from start to end; after_scoring.py: `score --report`, job files
"""

from .options import ReportOptions
from .report import Report, plan_report, run_report

__all__ = ["Report", "ReportOptions", "plan_report", "run_report"]
