"""Where a run trains: here in local DDP processes (`local`), as a SLURM job through
submitit (`slurm`), or as a SLURM job array for a `-m` sweep (`sweep`).

    python -m tsforge.launch launcher=local trainer.nproc_per_node=2
    python -m tsforge.launch launcher=slurm launcher.nodes=2
    python -m tsforge.launch -m launcher=slurm optim.lr=1e-3,3e-3

Launchers start `tsforge.train` in the processes they make; nothing in `tsforge.train`
imports a launcher.
"""
