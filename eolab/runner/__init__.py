"""Ablation runner: declarative YAML specs -> papermill runs -> tidy tables -> rendered summary.

`eolab.reports.runs` (plotting, imports seaborn) is deliberately not imported here.
"""

from eolab.runner.execute import run_ablation
from eolab.runner.notebook import KernelError
from eolab.runner.spec import SpecError, load_spec
from eolab.runner.store import rebuild_table

__all__ = ["KernelError", "SpecError", "load_spec", "rebuild_table", "run_ablation"]
