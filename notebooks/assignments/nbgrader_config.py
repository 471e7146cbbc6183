"""nbgrader 0.9 configuration for the minclip course; run every nbgrader command from this folder.

See docs/teaching.md for the workflow (generate_assignment -> autograde -> generate_feedback -> export).
The assignments are the folders under source/; `nbgrader generate_assignment <name>` adds one to the gradebook.
"""
import os

c = get_config()  # noqa: F821 (nbgrader provides get_config)

c.CourseDirectory.course_id = "minclip"
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "gradebook.db")

# What students see where a solution was removed.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}

# Autograde runs every notebook on the kernel named python3: the Python that runs nbgrader
# (with ipykernel installed). Each assignment runs in a few seconds; a cell that takes a minute
# is a student's infinite loop, stopped so the rest of the class still gets graded.
c.Execute.kernel_name = "python3"
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True
