"""The trainer: one loop for every launcher, its checkpoints, logging and evaluation."""
