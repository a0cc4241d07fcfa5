"""``bedkd bench``: datasets x attacks x defenses on cached victims, resumable, with tables and a chart."""
from .config import BenchConfig
from .runner import run_bench

__all__ = ["BenchConfig", "run_bench"]
