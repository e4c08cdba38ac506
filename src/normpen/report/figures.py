"""Figures as PNG bytes and as ``data:`` URIs, for files beside the report and images inside it."""

from __future__ import annotations

import base64
import io

from matplotlib.figure import Figure

__all__ = ["figure_png", "png_data_uri"]

#: Resolution of the report's figures: sharp on screen, small enough to embed.
DPI = 110


def figure_png(figure: Figure, dpi: int = DPI) -> bytes:
    """Render ``figure`` to PNG bytes (Agg, no display needed) and release it.

    A figure that :mod:`matplotlib.pyplot` manages is closed afterwards, so
    a report of many experiments does not accumulate open figures.
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    if figure.canvas.manager is not None:
        import matplotlib.pyplot as plt

        plt.close(figure)
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...``: the PNG embedded in a self-contained HTML page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
