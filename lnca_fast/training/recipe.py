"""``Recipe``: every training hyper-parameter as one frozen dataclass, with named presets.

- ``paper``: the official recipe (official §4-5: loss weights, lr, pool, 8-32 steps, 10 + 10
  epochs, batch 8) with the official bugs **fixed** (cosine over optimizer steps, step count
  redrawn every batch, best checkpoint by validation SSIM, blur without dark borders).
- ``faithful``: ``paper`` with every ``faithful_*`` switch on: the official code's behaviour,
  bugs included.
- ``default``: what ``lnca train`` uses: ``paper`` plus the levers measured to help on the
  embedded dataset within a 30-minute CPU budget (see docs/training/README.md).
- ``smoke``: a tiny configuration for tests.

Learning rates left at ``None`` take the official value for the model (``OFFICIAL_LR``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

OFFICIAL_LR = {  # official §4
    "latent-nafca": 1e-2,
    "latent-vitca": 1e-2,
    "vitca": 1e-3,
    "nafnet": 1e-3,
    "restormer": 3e-4,
}
TASKS = ("denoise", "deblur")
CORRUPTIONS = ("paper", "blind")
# Distillation teachers: negative copies (16) assume corruptions that commute with 1 - x, and
# Poisson-Gaussian noise does not.
TEACHER_ENSEMBLES = (1, 8)


def base_model(name: str) -> str:
    """The paper model a preset belongs to (``tiny-latent-nafca`` -> ``latent-nafca``,
    ``latent-vitca-plus-m`` -> ``latent-vitca``): it picks the official learning rate and the
    phases."""
    name = name.removeprefix("tiny-")
    for suffix in ("-plus", "-blind"):
        if suffix in name:
            name = name[: name.index(suffix)]
    return name[:-3] if name.endswith("-tf") else name


@dataclass(frozen=True)
class Recipe:
    # -- what ------------------------------------------------------------------------------------
    model: str = "latent-nafca"
    task: str = "denoise"
    data: str = "embedded"  # "embedded" or a folder
    dataset: str | None = None  # how to read the folder (cifar10, celeba, tinyimagenet, paired)
    seed: int = 0  # training randomness: order, corruptions, pool, step counts, masks
    split_seed: int = 0  # which sources go to which split (kept fixed so every run shares a test set)
    limit: int | None = None  # cap on images read from a folder dataset
    train_limit: int | None = None  # use only the first N training images (tests, quick runs)
    val_limit: int | None = None  # score only the first N validation images each epoch
    # -- data ------------------------------------------------------------------------------------
    tile: int = 64
    size: int = 32
    train_tiles: tuple[int, ...] = ()  # extra training tile sizes (multi-scale)
    extra_gray: bool = False  # add scikit-image's grayscale photos to the training split
    augment: bool = False  # random flip + rot90 per training image
    augment_colour: bool = False  # random negative + RGB permutation per training image
    curriculum_top: float | None = None  # cap on the curriculum level (None = official 0.75 / 10)
    curriculum_bottom: float | None = None  # floor of the curriculum level (None = official 0.25 / 4)
    ae_task: str | None = None  # corruption of the autoencoder phase (None = the task's own)
    # Each training image gets its own level, uniform between the curriculum's minimum and the
    # epoch's level (noise fraction; blur size an integer): lighter corruptions are seen too.
    vary_levels: bool = False
    # "paper": the task's synthetic corruption at the curriculum's level; "blind": every training and
    # validation image draws a kind and level from the task's family (lnca_fast/data/families.py:
    # clean inputs, colour/grey Gaussian, Poisson-Gaussian and sparse noise; line, shake and defocus
    # blur), no curriculum, no level told to the model.
    corruption: str = "paper"
    # Blind runs: the training batches' shares of the family's kinds, in the order of
    # lnca_fast/data/families.py's mix (denoise: clean, awgn, gray, poisson-gaussian, sparse;
    # deblur: clean, motion, shake, defocus); () = the family's own. Validation keeps the family's
    # own mix, so runs with different training mixes are scored alike.
    mix: tuple[float, ...] = ()
    # -- schedule --------------------------------------------------------------------------------
    epochs: int = 10  # NCA phase (latent models) or the only phase (other models)
    ae_epochs: int = 10  # latent models' autoencoder phase
    batch_size: int = 8
    epoch_batches: int | None = None  # cap on batches per epoch (each epoch then draws a fresh random subset)
    lr: float | None = None  # None = OFFICIAL_LR[model]
    ae_lr: float | None = None
    steps_min: int = 8
    steps_max: int = 32
    eval_steps: int = 64
    pool_size: int = 1024  # 0 = no pool: every optimizer step on a fresh batch
    update_rate: float | None = None  # None = the model's (1.0 latent, 0.5 pixel ViTCA)
    nca_dropout: float | None = None  # None = the model's (0.1 NAFCA)
    zero_head: bool = False  # zero-initialise the NAFCA head (as ViTCA's): the first steps are no-ops
    # -plus presets: the fusion head's initial trust g in the corrupted input (out = g x + (1-g) r + d).
    # None keeps the head's own 0.5; near 1 the model starts as the identity on the input, so the
    # NCA phase can only learn what improves on it (deblurring, where r starts blurrier than x).
    fusion_gate_init: float | None = None
    eval_batch: int = 64
    self_ensemble: int = 1  # evaluation: mean over 1, 8 or 16 symmetric copies of the input (test-time augmentation)
    init_ae: str | None = None  # start from this file's autoencoder (weights or training state); ae_epochs=0 skips phase 1
    # Start every parameter and BatchNorm statistic from this weights file or training state (its best
    # weights): a second training stage on another loss (docs/training/blind.md). ae_epochs=0 skips phase 1.
    init_weights: str | None = None
    # NCA models: train the fast model (same math and the same random draws in the same order:
    # CPU fast path on CPU, Triton on CUDA); runs differ from the reference's only by float rounding.
    # NOTE (measured, 1 thread, Xeon with AVX-512, machine under load, medians of 7 interleaved):
    # one NCA-phase batch (B=8 32x32, fresh + pool rollouts of 16 steps, decoder, Adam) takes
    # LatentNAFCA 124 ms fast vs 172 ms reference (1.39x), LatentViTCA 299 vs 606 ms (2.0x).
    # Each run's recorded recipe (its recipe.json; a shipped file's metadata) says which model it
    # trained, and --set fast_model=false reproduces a reference run exactly.
    fast_model: bool = True
    # -- losses (official §4) ----------------------------------------------------------------------
    ae_rec_weight: float = 100.0
    ae_triplet_weight: float = 10.0
    ae_margin: float = 1.0
    ae_task_weight: float = 10.0
    ae_equiv_weight: float = 100.0
    ae_eps_std: float = 0.5
    nca_image_weight: float = 100.0
    nca_latent_weight: float = 100.0
    nca_out_overflow: float = 1.0
    nca_hid_overflow: float = 1.0
    # "mse" (official) or "log_mse": per-image -PSNR, every image's dB alike (losses.log_mse); the
    # blind denoiser needs it to keep clean inputs clean (docs/training/blind.md).
    nca_image_loss: str = "mse"
    nca_ssim_weight: float = 0.0  # lever: + w (1 - SSIM(image, clean)); 0 in the official recipe
    # Fusion-head presets: + w x the image loss of the latent path's own estimate r (the decoded NCA
    # latent the head reads). Without it r is trained only through the head, which learned to
    # ignore it: the shipped denoiser's r scored 10.5 dB, and the NCA's steps changed nothing.
    nca_estimate_weight: float = 0.0
    nca_train_decoder: bool = False  # lever: the NCA phase also trains the decoder (BatchNorm statistics stay frozen)
    nca_decoder_lr_scale: float = 1.0  # with nca_train_decoder: the decoder learns at this x the NCA's rate
    # lever: the NCA phase also trains the encoder, at nca_decoder_lr_scale x the NCA's rate
    # (BatchNorm statistics stay frozen). The latent target E(clean) is then the moving encoder's;
    # for a latent path without skip features (AEConfig.skip_features), whose encoder must keep
    # the detail the NCA restores (docs/training/blind.md, round 6).
    nca_train_encoder: bool = False
    # lever: parameter-name prefixes (e.g. ["decoder.fusion.tv_gate"]); when set, every phase trains
    # only the parameters they name, at the phase's rate, and the rest keeps the starting weights'
    # function: a new gate read on top of a selected network (docs/training/blind.md, round 10).
    train_only: tuple[str, ...] = ()
    # lever: self-ensemble distillation (training/teacher.py): the NCA phase's image loss targets
    # distill_share x the mean of this weights file's model over distill_ensemble symmetric copies
    # of each batch (at the batch's step count) + the rest x clean. Fresh batches only (pool_size=0):
    # the teacher has no pooled states (docs/training/blind.md, round 11).
    distill_teacher: str | None = None
    distill_ensemble: int = 8
    distill_share: float = 1.0
    vitca_l1_weight: float = 100.0
    vitca_overflow_weight: float = 100.0
    # -- faithful switches: True reproduces an official bug (official §8) --------------------------
    faithful_schedule: bool = False  # cosine counts batches: lr hits 0 halfway (§8.5)
    faithful_steps: bool = False  # one step count per run for fresh and one for pool batches, 8..33 (§8.4)
    faithful_last: bool = False  # final test uses the last epoch, not the best by val SSIM (§8.6)
    faithful_blur_border: bool = False  # zero-padded blur darkens borders (§8.15)

    def __post_init__(self) -> None:
        if self.nca_image_loss not in ("mse", "log_mse"):
            raise ValueError(f"nca_image_loss must be 'mse' or 'log_mse', got {self.nca_image_loss!r}")
        if self.corruption not in CORRUPTIONS:
            raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {self.corruption!r}")
        if self.task not in TASKS or self.ae_task not in (None, *TASKS):
            raise ValueError(f"task and ae_task must be one of {TASKS}, got {self.task!r} and {self.ae_task!r}")
        if self.mix:
            from ..data.families import check_mix

            if self.corruption != "blind":
                raise ValueError(f"mix sets the shares of a blind family; corruption is {self.corruption!r}")
            check_mix(self.task, self.mix)
        if base_model(self.model) not in OFFICIAL_LR:
            raise ValueError(f"model must be one of {tuple(OFFICIAL_LR)} (or a tiny-/-tf preset of one), got {self.model!r}")
        for name in ("epochs", "batch_size", "steps_min", "eval_batch", "tile", "size"):
            value = getattr(self, name)
            # epochs=0 for a latent model trains the autoencoder only (an init_ae for NCA runs).
            ae_only = name == "epochs" and value == 0 and self.latent and self.ae_epochs > 0
            if not isinstance(value, int) or (value < 1 and not ae_only):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.ae_epochs < 0 or self.eval_steps < 1 or self.pool_size < 0:
            raise ValueError("ae_epochs and pool_size must be >= 0 and eval_steps >= 1")
        if not self.nca_decoder_lr_scale > 0.0:
            raise ValueError(f"nca_decoder_lr_scale must be > 0, got {self.nca_decoder_lr_scale!r}")
        if self.fusion_gate_init is not None and not 0.0 < self.fusion_gate_init < 1.0:
            raise ValueError(f"fusion_gate_init must lie strictly between 0 and 1, got {self.fusion_gate_init!r}")
        if self.steps_max < self.steps_min:
            raise ValueError(f"steps_max ({self.steps_max}) must be >= steps_min ({self.steps_min})")
        if self.distill_ensemble not in TEACHER_ENSEMBLES:
            raise ValueError(f"distill_ensemble must be one of {TEACHER_ENSEMBLES}, got {self.distill_ensemble!r}")
        if not 0.0 <= self.distill_share <= 1.0:
            raise ValueError(f"distill_share must lie in [0, 1], got {self.distill_share!r}")
        if self.distill_teacher is not None and not self.latent:
            raise ValueError(f"distill_teacher: latent models take a teacher's target; {self.model} is not one")
        if self.distill_teacher is not None and self.pool_size:
            raise ValueError("distill_teacher: the teacher restores fresh batches only; set pool_size=0")
        if self.batch_size < 2 and self.latent:
            raise ValueError("the autoencoder phase needs batch_size >= 2 (negatives are a derangement of the batch)")

    # -- derived ---------------------------------------------------------------------------------
    @property
    def family(self) -> str:
        return base_model(self.model)

    @property
    def latent(self) -> bool:
        return self.family.startswith("latent-")

    @property
    def nca(self) -> bool:
        return self.family in ("latent-nafca", "latent-vitca", "vitca")

    @property
    def nca_lr(self) -> float:
        return OFFICIAL_LR[self.family] if self.lr is None else self.lr

    @property
    def autoencoder_lr(self) -> float:
        return OFFICIAL_LR[self.family] if self.ae_lr is None else self.ae_lr

    @property
    def blur_border(self) -> str:
        return "zeros" if self.faithful_blur_border else "reflect"

    def replace(self, **changes) -> Recipe:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> Recipe:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown recipe fields {unknown}; valid: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


_FAITHFUL = dict(faithful_schedule=True, faithful_steps=True, faithful_last=True, faithful_blur_border=True)

# Measured on the embedded data (docs/training/README.md): each lever is a field above.
_DEFAULT = dict(
    ae_epochs=30,
    epochs=36,
    epoch_batches=128,
    train_tiles=(48, 96, 128),
    extra_gray=True,
    augment=True,
    augment_colour=True,
    ae_task="denoise",
    zero_head=True,
    steps_min=8,
    steps_max=16,
    eval_steps=16,  # the pool (official, 1024 states) keeps the model stable to 64 steps
    nca_ssim_weight=100.0,
    nca_train_decoder=True,
    self_ensemble=8,
)

RECIPES = {
    "paper": {},
    "faithful": _FAITHFUL,
    "default": _DEFAULT,
    # The "-plus" presets (wider AE with a full-resolution fusion head): "default" plus native-scale
    # tiles (32 px: whole photos are restored at their own scale), a level per image, single pass.
    "plus": {**_DEFAULT, "train_tiles": (32, 48, 96, 128), "vary_levels": True, "self_ensemble": 1},
    # Blind restoration (docs/training/blind.md): the latent-nafca-blind preset on the task's corruption
    # family, 64 px tiles at native scale plus larger tiles shrunk to 64 (whole-photo statistics),
    # an image loss weighted for PSNR, the residual head learning at a third of the NCA's rate.
    "blind": {
        **_DEFAULT,
        "corruption": "blind",
        "ae_task": None,
        "tile": 64,
        "size": 64,
        "train_tiles": (96, 128, 192),
        "self_ensemble": 1,
        "ae_epochs": 6,
        "epochs": 44,
        "epoch_batches": 64,
        "nca_image_weight": 1000.0,
        "nca_decoder_lr_scale": 0.3,
        "val_limit": 96,
        "eval_batch": 16,
    },
    "smoke": dict(epochs=2, ae_epochs=1, steps_min=2, steps_max=4, eval_steps=4, pool_size=16, batch_size=4),
}

# Task-specific fields of a recipe, applied under the caller's overrides. "plus" deblurring
# (docs/training/plus.md): with the denoising losses (SSIM term, g = 0.5 start, decoder at the
# NCA's rate) the deblurrer raised SSIM but ended below the blurred input's PSNR (test 24.58 vs
# 24.71 dB). Starting at the input (g = 0.95), an MSE-only image loss and a 10x slower decoder put
# it above the input in both (val 0.741 / 26.26 vs 0.722 / 25.95 dB).
TASK_FIELDS = {
    ("blind", "denoise"): dict(nca_image_loss="log_mse", nca_image_weight=1.0),
    ("blind", "deblur"): dict(nca_ssim_weight=0.0, nca_decoder_lr_scale=0.1),
    ("plus", "deblur"): dict(fusion_gate_init=0.95, nca_image_weight=1000.0, nca_ssim_weight=0.0, nca_decoder_lr_scale=0.1),
}


def get_recipe(name: str, **overrides) -> Recipe:
    """A named recipe with ``overrides``; ``default`` caps the curriculum at the task's evaluation
    level unless told otherwise."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    task = overrides.get("task", "denoise")
    fields = {**RECIPES[name], **TASK_FIELDS.get((name, task), {}), **overrides}
    if name in ("default", "plus") and "curriculum_top" not in overrides:
        from ..data.curriculum import EVAL_LEVEL

        fields["curriculum_top"] = float(EVAL_LEVEL.get(task, 0.5))
    return Recipe(**fields)
