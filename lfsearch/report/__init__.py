"""Reports of a run or a compare folder: tables, figures, report.md and report.html.

Modules, bottom up: ``runs`` (a run folder read back), ``plotting`` (figure helpers),
``figures`` (rewards, controller trajectories, comparison bars), ``loss_figures`` (the losses
as h(A, p) and log A), ``member_figures`` (what the members outside the target-logit family
change), ``roc`` (test ROC curves), ``document`` (Markdown and HTML), ``writer`` (the reports).
"""

from lfsearch.report.writer import compare_report, report, run_report

__all__ = ["report", "run_report", "compare_report"]
