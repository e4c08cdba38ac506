"""The report: run the experiments, then write ``index.html``, ``results.json`` and the figures.

:mod:`~normpen.report.runner` runs the experiments, :mod:`~normpen.report.writer`
writes the directory, :mod:`~normpen.report.figures` turns figures into PNG
bytes. Nothing is imported here, so that ``normpen fit``, which needs only the
figures, does not load the experiments and the HTML templates (0.2 s).
"""
