"""Hyper-parameter search: `tsforge tune` (cli/tune.py) over Optuna, trials as ordinary runs.

space.py the search space in Optuna's terms; study.py the study's database and record;
trials.py where trials run (local processes, SLURM arrays); controller.py the ask-and-tell
loop with pruning and budgets; export.py the best experiment, plots and dashboard.
"""
