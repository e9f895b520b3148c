"""The trainer: one loop for every launcher, its checkpoints, logging and evaluation."""

# The named checkpoints of a run directory (checkpoints/<name>.pt). Kept here, free of torch,
# so that building the command line does not import torch for every command.
CHECKPOINTS = ("best", "latest")
