"""diffusion-course: the helper package behind the lesson notebooks.

Lessons import what they need from the sub-packages:

- ``course.device``: device choice, seeding, environment report
- ``course.data``: bundled photos (and, later, the captioned-shapes world)
- ``course.diffusion``: the maths of diffusion, one equation per function
- ``course.viz``: pure plotting functions and the thin widgets around them
- ``course.checks``: the exercise checks shown in the lessons and used by the grader
"""

__version__ = "0.1.0"

#: Where the course lives; Colab installs the package from here.
REPO_URL = "https://github.com/diffusion-course/diffusion-course"
