"""Speed, memory and quality of what learners run: ``python -m course bench [--quick] [--full]
[--report DIR] [--write-readme]``.

Measured, never asserted. Every run (but ``--quality-only``) writes a dated report folder,
``bench/reports/YYYY-MM-DD/`` (``--report DIR`` elsewhere): ``README.md`` with one section per
part below, PNG plots, and ``measurements.json``. ``--write-readme`` puts the speed table, with
its date, machine and a link to that folder, between the README's ``bench`` markers (and the
scheduler table between its ``quality`` markers). One module per job:

- ``speed``: the core maths (``forward_diffusion`` on a training-sized batch); widget updates in
  the kernel (lesson 01's redraw, lesson 05's guidance image, lesson 07's adapter mix); every
  solution notebook in FAST mode, wall time and the kernel's peak memory; with ``--full`` each
  notebook again in the learner's default mode (its device picked as the lessons do: cuda, then
  mps, then cpu) and the slider latency in a real browser;
- ``adherence``: every bundled pipeline's prompt adherence by sampler and step count, and by
  guidance scale;
- ``grading``: the instructor's grader on each solution notebook, timed;
- ``records``: what was measured once and stored: training times, the LoRA study, the
  flow-versus-DDPM study (the report says when a study is missing and which command writes it);
- ``quality``: with ``--quality`` (or alone, ``--quality-only``) lesson 03's scheduler table on
  lesson 02's bundled model, 256 images a row, written to ``course/assets/scheduler_quality.json``
  with its date, machine and versions (about 45 minutes on 2 CPU cores, far less on a GPU:
  ``--device cuda``); ``--quality-from FILE`` rewrites the README section from a file measured
  elsewhere; without either, the report shows the stored table;
- ``report``: the report folder's text and plots (matplotlib's Agg canvas), from the
  measurements alone; ``readme``: the README sections; ``machine``: versions, the machine, and
  ``--busy N`` (N other processes each keeping a core busy, as a second notebook training a
  model would: a learner's machine is rarely idle).

``--quick`` finishes in a few minutes on 2 CPU cores and still writes every section: fewer
repeats, notebooks 00 and 01 only, 4 prompts and 2 step counts per adherence row, one notebook
graded; the report says what was cut.
"""

from .cli import add_arguments, run

__all__ = ["add_arguments", "run"]
