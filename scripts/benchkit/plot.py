"""The latency distributions of a run as a PNG: one panel per measured row, one curve per target.

`draw()` runs in the benchmark's environment and hands the samples to this same module run under
`.bench/plot-venv` (matplotlib lives there, not in the balancer's .venv)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

PANELS = (("latency.2 KB", "latency, 2 KB body"),
          ("latency.100 KB", "latency, 100 KB body"),
          ("latency.1 MB", "latency, 1 MB body"),
          ("ttft.2 KB", "time to first text, 2 KB body"),
          ("ttft.100 KB", "time to first text, 100 KB body"),
          ("ttft.1 MB", "time to first text, 1 MB body"))
COLUMNS = 3
COLOURS = {"direct": "#555555", "mitmdump": "#1f77b4", "balancer": "#d62728", "litellm": "#2ca02c",
           "ccr": "#9467bd"}


def draw(results: dict[str, Any], png: Path, say: Callable[[str], None]) -> None:
    from .envs import ensure_env

    python = ensure_env("plot-venv", Path(__file__).with_name("plot-requirements.lock"), say)
    data = {"title": f"{results['machine']['cpus']} CPUs, Python {results['machine']['python']}, "
                     + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
            "panels": [(key, label, results["samples"][key]) for key, label in PANELS if key in results["samples"]]}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(data, f)
        f.flush()
        subprocess.run([str(python), "-m", "benchkit.plot", f.name, str(Path(png).resolve())], check=True,
                       cwd=Path(__file__).resolve().parents[1])


def _render(data_path: str, png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(Path(data_path).read_text())
    panels = data["panels"]
    lines = -(-len(panels) // COLUMNS)
    fig, axes = plt.subplots(lines, COLUMNS, figsize=(5.2 * COLUMNS, 4.2 * lines), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (_key, label, samples) in zip(axes.flat, panels, strict=False):
        for name, values in samples.items():
            ordered = sorted(values)
            if not ordered:
                continue
            share = [100 * (i + 1) / len(ordered) for i in range(len(ordered))]
            ax.plot(ordered, share, label=name, color=COLOURS.get(name), linewidth=1.6)
        ax.set_xscale("log")
        ax.set_xlabel("milliseconds (log scale)")
        ax.set_ylabel("requests at or below (%)")
        ax.set_title(label, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Latency distributions on loopback ({data['title']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    _render(sys.argv[1], sys.argv[2])
