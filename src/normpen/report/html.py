"""The self-contained ``index.html``: the results document through jinja2, figures inlined as base64 PNG."""

from __future__ import annotations

import math
from collections.abc import Mapping

import jinja2

from normpen.report.figures import png_data_uri

__all__ = ["render_html"]

TEMPLATE = "report.html"


def format_number(value) -> str:
    """A number as the report shows it: integers in full, floats to 4 significant digits; text unchanged."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return str(value)


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("normpen.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["number"] = format_number
    return environment


def render_html(document: Mapping, figures: Mapping[str, bytes]) -> str:
    """Render the report page from the ``results.json`` document and the PNG bytes of each figure file.

    Every figure a record names must be in ``figures``; the page references
    no other file.
    """
    images = {name: png_data_uri(png) for name, png in figures.items()}
    return _environment().get_template(TEMPLATE).render(images=images, **document)
