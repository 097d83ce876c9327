"""Reports in notes/: the measured one from a pytest-benchmark JSON of bench/ (`make_report`), the
model's predictions that answer the seed texts (`make_model_report`), and the model against published
measurements (`make_published_report`). All splice generated sections into notes/batching.md between
markers and leave its hand-written text alone.

    python -m triton_conv.report model [--devices H200 T4 "GTX 1050"] [--out notes/batching.md]
    python -m triton_conv.report published [--out notes/batching.md]
    python -m triton_conv.report measured SWEEP.json [...] [--out notes/batching.md] [--no-plots]
"""

from .markdown import read_section, replace_section
from .measured import make_report
from .measured_tables import batching_table, speedup_table
from .model import DEFAULT_DEVICES, make_model_report, model_tables
from .published_report import make_published_report, published_tables
from .sweep_json import load_run

__all__ = [
    "DEFAULT_DEVICES",
    "batching_table",
    "load_run",
    "make_model_report",
    "make_published_report",
    "make_report",
    "model_tables",
    "published_tables",
    "read_section",
    "replace_section",
    "speedup_table",
]
