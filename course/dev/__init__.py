"""Maintainers' tools, never imported by a lesson: authoring (solutions/ -> lessons/), the
benchmark, and the JupyterLab/Chromium driver the browser tests and the benchmark use."""
