"""The experiments of docs/RESULTS.md and docs/DOWNSTREAM.md: recipes, runners and reports.

experiments/reproduce.py and experiments/reproduce_downstream.py are their command lines. The
runners run train.py and eval.py as a user would (subprocesses in the checkout); the reports build
every table from the committed JSON alone.
"""
