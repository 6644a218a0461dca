"""nanoseek.eval: backends, scorers, the code sandbox, the runner and the report card (suites: nanoseek/tasks).

nanoseek eval --model PATH --suite all --n 20 --out runs/eval     # see nanoseek/eval/cli.py
"""
