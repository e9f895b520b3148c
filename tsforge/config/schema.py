"""Typed schemas of every config group, registered in Hydra's ConfigStore.

`conf/<group>/<option>.yaml` files name one of these schemas in their defaults list, so a typo
or a wrong type in a YAML file or on the command line fails before anything starts, naming the
key. Only the builders at the edge (`tsforge.train.builders`) read these objects; library
classes take plain typed arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# Names of the trainer's settings that the training code implements (train.precision,
# train.schedule): kept here, with the schema, so the checks before launch read them without
# importing the training code.
PRECISIONS = ("auto", "fp32", "bf16")
SCHEDULES = ("cosine", "onecycle", "constant")
STRATEGIES = ("ddp", "fsdp")  # train.parallel


@dataclass
class SourceConfig:
    """One source of `data=mixture` (conf/data/mixture.yaml): a registry name, a generator
    (`kernelsynth`, `randomwalk`, `profiles`) or a store path, and its weight."""

    name: str | None = None  # a registry name (`tsforge data list`) or a generator
    path: str | None = None  # or a store made by `tsforge data ingest` (not both)
    weight: float | None = None  # > 0; give every source one, or none (data.temperature)
    windows: int | None = None  # a generated source's size for temperature (1,000,000)


@dataclass
class DataConfig:
    name: str = "synthetic"  # a registry name (`tsforge data list`), "store" or "mixture"
    path: str | None = None  # a store made by `tsforge data ingest` (with name=store)
    input_size: int = 96  # look-back L, in steps
    horizon: int = 24  # forecast length H, in steps
    # A preset, holdout:H, or a spec ({kind: holdout, horizon: 48}): splits.parse. None: the
    # store's own split.
    split: Any = None
    multivariate: bool = False  # all target channels in one window, or one series each
    stride: int = 1  # between training windows; >1 trades coverage for speed
    min_input_size: int | None = None  # < input_size pads short series (masked)
    batch_size: int = 256  # global: split across ranks, so results do not depend on them
    eval_batch_size: int = 1024
    sampling: str = "epoch"  # epoch: every window once per epoch | sampled: with replacement
    sample_by: str = "window"  # sampled mode: uniform over windows or over series
    shuffle_group_blocks: int = 16  # epoch mode: blocks mixed together; more = more random
    scaling: str = "standard"  # standard | robust | none
    scale_by: str = "window"  # window | series (series stats from the train split)
    num_workers: int = 0  # DataLoader processes per rank
    cache_mb: int = 256  # decoded chunks kept per worker
    season: int = 24  # seasonal period for the seasonal-naive baseline and MASE
    # original: metrics in the data's units | scaled: on the loader's scaled values (with
    # scale_by=series this is the long-horizon protocol: train-fit standardization)
    metrics_on: str = "original"
    # Legacy, for matching published tables only: score the test split as the DLinear/PatchTST
    # code did, in drop_last batches of this many time steps (their batch size; e.g. 32 or
    # 128), which leaves out the last windows. 0 (the protocol): every test window.
    legacy_test_drop_last: int = 0
    # data=mixture: the sources, and the temperature T of weights from their sizes in windows
    # (w_i ~ n_i^(1/T)) when no source has a weight; null: T = 1 (tsforge.data.mixture)
    sources: list[SourceConfig] = field(default_factory=list)
    temperature: float | None = None


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "cosine"  # cosine | onecycle | constant
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    grad_clip: float = 1.0  # max global grad norm; 0 disables


@dataclass
class LossConfig:
    name: str = "mae"  # mae | mse | huber | quantile | normal | student_t
    delta: float = 1.0  # huber
    quantiles: list[float] = field(default_factory=lambda: [0.1, 0.5, 0.9])


@dataclass
class TrainerConfig:
    max_steps: int = 300
    seed: int = 0
    val_every_steps: int = 100  # 0: never (no best checkpoint; test uses the last weights)
    log_every_steps: int = 10
    accumulate_steps: int = 1  # gradient accumulation: optimizer step every N batches
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16
    compile: bool = False  # torch.compile the model
    # ddp: a full replica per rank, gradients all-reduced | fsdp: parameters, gradients and
    # optimizer state sharded over the ranks (FSDP2), checkpoints sharded (DCP); less memory
    # per rank for more communication
    strategy: str = "ddp"
    # recompute each transformer block's activations in backward instead of keeping them:
    # less memory, about a third more compute; for models with blocks (not dlinear)
    activation_checkpointing: bool = False
    device: str = "auto"  # auto | cpu | cuda
    early_stop_patience: int = 0  # evaluations without improvement; 0 disables
    early_stop_metric: str = "mae"
    checkpoint_every_steps: int = 100
    checkpoint_every_min: float = 10.0
    keep_last: int = 2  # step checkpoints kept besides latest and best
    threads: int = 0  # torch intra-op threads per rank; 0 = cores / ranks
    # CPU memory: allocations of this many KiB or more are mapped on their own and given back
    # to the system when freed (glibc's mmap threshold, fixed); 0: glibc's default, which keeps
    # freed memory; null: 4096 under strategy=fsdp on CPU, else 0 (tsforge.train.allocator)
    malloc_mmap_threshold_kb: int | None = None
    dist_timeout_s: float = 600.0
    plot_series: int = 4  # validation series drawn in TensorBoard at each evaluation
    # The device's peak TFLOP/s that MFU is measured against; None: automatic (a table of
    # CUDA cards' dense bf16/fp32 peaks; on CPU, a short measured matmul throughput)
    peak_tflops: float | None = None
    # Fine-tuning: start from the weights of a run directory (its best checkpoint, else its
    # latest) or of a checkpoint file, with a fresh optimizer and schedule. The shapes must
    # match the model this config builds. Ignored when the run resumes its own checkpoint.
    init_from: str | None = None


@dataclass
class LauncherConfig:
    name: str = "local"  # local | slurm
    nprocs: int = 1  # DDP processes on this machine (local)
    # slurm (conf/launcher/slurm.yaml says what each key is for)
    nodes: int = 1
    tasks_per_node: int = 1  # one per GPU; on CPU nodes, processes
    partition: str | None = None  # None: the cluster's default partition
    timeout_min: int = 60
    wait: bool = False  # block, following rank 0's log; exit with the job's status
    account: str | None = None
    qos: str | None = None
    cpus_per_task: int | None = None  # also the trainer's threads when trainer.threads=0
    gpus_per_node: int = 0
    mem_gb: float | None = None
    constraint: str | None = None
    exclusive: bool = False
    signal: str = "USR2"  # sent signal_delay_s before the time limit; USR1 may be NCCL's
    signal_delay_s: int = 120
    max_requeues: int = 10  # then the job fails instead of coming back forever
    setup: list[str] = field(default_factory=list)  # shell lines run first: modules, venv
    sbatch_extra: dict[str, Any] = field(default_factory=dict)  # other sbatch options
    array_parallelism: int = 16  # sweeps: array elements running at once


@dataclass
class Config:
    model: Any = MISSING  # one of the model schemas (tsforge/config/models.py)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)


def register() -> None:
    from tsforge.config.models import model_schema
    from tsforge.models import MODELS

    cs = ConfigStore.instance()
    cs.store(name="tsforge_schema", node=Config)
    for name in MODELS:
        cs.store(group="model", name=f"{name}_schema", node=model_schema(name))
    cs.store(group="data", name="schema", node=DataConfig)
    cs.store(group="launcher", name="schema", node=LauncherConfig)
