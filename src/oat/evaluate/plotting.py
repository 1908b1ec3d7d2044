"""Matplotlib set-up shared by the report's plots (headless Agg backend, one finishing step)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written on servers without a display
import matplotlib.pyplot as plt  # noqa: E402


def finish_plot(fig, ax, path: Path) -> None:
    """Grid, legend, tight layout; save ``path`` at 120 dpi and free the figure."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
