"""``train(recipe, out)``: the whole training run, phase by phase, epoch by epoch, resumable.

Latent models: the autoencoder phase (NCA bypassed), then the NCA phase (AE frozen, BatchNorm in
eval mode), each with a fresh Adam, a fresh cosine schedule and a restarted curriculum (official
§4). Pixel ViTCA: the NCA phase only. NAFNet / Restormer: one supervised phase. After every epoch:
validation on the fixed validation set, the best weights by validation SSIM kept, a checkpoint
written atomically, a CSV row. At the end the best (or, ``faithful_last``, the last) weights are
saved and scored on the test split.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from ..atomic import write_text_atomic
from ..checkpoint import save_weights
from ..data.batches import batches_per_epoch, derive_seed, eval_set, generator, train_batches
from ..data.corruptions import corrupt, corrupt_each, varied_levels
from ..data.curriculum import Curriculum
from ..data.families import blind_corrupt, blur_hints
from ..data.load import load_splits
from ..reference.residual_fusion import ResidualFusion, blur_hint
from . import checkpoints as ckpt
from .distributed import Dist, all_mean, barrier, broadcast_module, init_distributed, wrap
from .epoch_log import EpochLog, progress_bar
from .evaluate import ae_fidelity, restore_metrics
from .models import build_for_training, freeze, only_named, slowed_decoder_params
from .objectives import AEObjective, NCAObjective, SupervisedObjective
from .optim import CosineSchedule, decay_steps, make_adam
from .pool import Pool
from .recipe import Recipe
from .steps import StepCounts, Stepper
from .teacher import EnsembleTeacher


def phases_of(recipe: Recipe) -> list[tuple[str, int]]:
    if recipe.latent:
        return [("ae", recipe.ae_epochs), ("nca", recipe.epochs)]
    return [("nca" if recipe.nca else "supervised", recipe.epochs)]


def resume_point(recipe: Recipe, progress: dict) -> tuple[str, int, int] | None:
    """Where ``Trainer.run`` continues a run whose last checkpoint is ``progress``: (phase, the
    0-based epoch it starts, the phase's epochs), or None when every epoch is done and only the
    final test remains. Mirrors the skipping in ``run``."""
    done_index, done_epoch = progress["phase_index"], progress["epoch"]
    for index, (phase, epochs) in enumerate(phases_of(recipe)):
        if index < done_index:
            continue
        start = done_epoch + 1 if index == done_index else 0
        if epochs > 0 and start < epochs:
            return phase, start, epochs
    return None


class Trainer:
    def __init__(
        self,
        recipe: Recipe,
        out: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
        device: str | None = None,
        echo=print,
    ):
        self.recipe, self.out, self.echo = recipe, Path(out), echo
        self.dist: Dist = init_distributed(device)
        self.show = progress and self.dist.main
        self._check_folder(resume)
        r = recipe
        self.data = load_splits(
            r.data,
            r.dataset,
            seed=r.split_seed,
            tile=r.tile,
            size=r.size,
            train_tiles=r.train_tiles,
            extra_gray=r.extra_gray,
            limit=r.limit,
        )
        if r.train_limit is not None:
            self.data.clean["train"] = self.data.clean["train"][: r.train_limit]
            if self.data.paired:
                self.data.corrupted["train"] = self.data.corrupted["train"][: r.train_limit]
        self.val = eval_set(
            self.data, "val", r.task, seed=r.split_seed, border=r.blur_border, limit=r.val_limit, corruption=r.corruption
        )
        self.model = build_for_training(r, self.dist.device)
        # A deconvolving head trains on each batch's true kernels (blur_hint), which the pool does
        # not keep alongside its states.
        self.deconv = any(isinstance(m, ResidualFusion) and m.deconv for m in self.model.modules())
        if self.deconv and (r.pool_size > 0 or r.corruption != "blind"):
            raise ValueError("a model with detail_deconv trains on the blind family with no pool: set pool_size=0")
        if r.train_only:
            only_named(self.model, r.train_only)  # a prefix that names nothing fails before the folder appears
        self.teacher = EnsembleTeacher(r, self.dist.device) if r.distill_teacher else None
        self.pool = Pool(r.pool_size) if r.pool_size > 0 else None
        self.log = EpochLog(self.out / "log.csv")
        self.progress = ckpt.read_progress(self.out) if resume else None
        self.state = ckpt.load_state(self.out, self.progress) if self.progress else {}
        if self.progress and self.teacher is not None:
            self.teacher.check_resumed(self.progress)
        if self.progress:
            self.model.load_state_dict(ckpt.split_prefix(self.state, "model"))
            if self.pool is not None:
                self.pool.load(self.state)
            self.log.rows = self.progress.get("log", [])
        # Everything that can fail on bad input has run: only now does the run folder appear.
        if self.dist.main and not resume:
            write_text_atomic(self.out / ckpt.RECIPE, json.dumps(recipe.to_dict(), indent=2))
        barrier(self.dist)

    def _check_folder(self, resume: bool) -> None:
        exists = (self.out / ckpt.PROGRESS).is_file() or (self.out / ckpt.RECIPE).is_file()
        if resume and not (self.out / ckpt.PROGRESS).is_file():
            raise ValueError(f"--resume: {self.out} holds no checkpoint (progress.json) to resume from")
        if not resume and exists:
            raise ValueError(f"{self.out} already holds a training run; pass --resume to continue it or choose another --out")

    # -- one phase -------------------------------------------------------------------------------
    def _params(self, phase: str) -> list[torch.nn.Parameter]:
        m = self.model
        if phase == "ae":
            chosen = list(m.encoder.parameters()) + list(m.decoder.parameters())
        elif phase == "nca":
            chosen = list(m.nca.parameters())
            if self.recipe.nca_train_decoder and self.recipe.latent:
                chosen += list(m.decoder.parameters())
            if self.recipe.nca_train_encoder and self.recipe.latent:
                chosen += list(m.encoder.parameters())
        else:
            chosen = list(m.parameters())
        if self.recipe.train_only:
            chosen = only_named(m, self.recipe.train_only)
        freeze(m, keep=chosen)
        return chosen

    def _set_modes(self, phase: str) -> None:
        self.model.train()
        if self.recipe.latent:
            # The fusion head (-plus presets) could copy the input image around the latent: the
            # AE phase trains the latent path alone, the NCA phase the whole decoder.
            self.model.decoder.fusion_active = phase != "ae"
        if phase == "nca" and self.recipe.latent:
            self.model.encoder.eval()  # frozen AE: BatchNorm uses its running statistics
            self.model.decoder.eval()

    def _objective(self, phase: str):
        r = self.recipe
        if phase == "ae":
            return AEObjective(self.model, r)
        if phase == "nca":
            rate = self.model.config.update_rate if r.update_rate is None else r.update_rate
            return NCAObjective(self.model, r, rate, teacher=self.teacher)
        return SupervisedObjective(self.model, r)

    def _validate(self, phase: str) -> dict[str, float]:
        r = self.recipe
        if phase == "ae":
            return ae_fidelity(self.model, self.val, batch=r.eval_batch)
        if self.deconv and self.val.hints is not None:
            with blur_hint(self.model, self.val.hints):  # one batch: the hints are the whole set's
                return restore_metrics(self.model, self.val, r, batch=len(self.val))
        return restore_metrics(self.model, self.val, r, batch=r.eval_batch)

    def _run_phase(self, index: int, phase: str, epochs: int, start_epoch: int, best) -> None:
        r, d = self.recipe, self.dist
        params = self._params(phase)
        slowed = []
        if phase == "nca" and r.latent and not r.train_only:  # train_only: the named parameters learn at the phase's rate
            if r.nca_train_decoder:
                slowed = slowed_decoder_params(self.model, r)
            if r.nca_train_encoder:
                slowed = slowed + list(self.model.encoder.parameters())
        lr = r.autoencoder_lr if phase == "ae" else r.nca_lr
        optimizer = make_adam(params, lr, scaled=slowed, scale=r.nca_decoder_lr_scale)
        per_batch = 1 if phase == "supervised" or (phase == "nca" and self.pool is None) else 2
        cap = r.epoch_batches
        n_batches = batches_per_epoch(self.data.clean["train"].shape[0], r.batch_size, d.world, cap)
        total = decay_steps(epochs, n_batches, per_batch, faithful=r.faithful_schedule)
        step0 = self.progress.get("schedule_step", 0) if self.progress and start_epoch > 0 else 0
        if self.progress and start_epoch > 0:
            ckpt.load_optimizer_tensors(optimizer, self.state)
        schedule = CosineSchedule(optimizer, lr, total, step0)
        stepper = Stepper(phase, wrap(self._objective(phase), d), optimizer, schedule, params, r)
        # The AE phase may learn on another corruption than the task's (recipe.ae_task).
        task = (r.ae_task or r.task) if phase == "ae" else r.task
        own = task == r.task  # the caps describe the task's corruption, not the AE phase's other one
        curriculum = Curriculum(task, epochs, r.curriculum_top if own else None, r.curriculum_bottom if own else None)
        phase_seed = derive_seed(r.seed, index)
        counts = StepCounts(r, generator(phase_seed, 10), generator(r.seed, 11))
        best_val = self.progress.get("best_val", -1.0) if self.progress and start_epoch > 0 else -1.0
        for epoch in range(start_epoch, epochs):
            started, cpu_started = time.perf_counter(), time.process_time()
            self._set_modes(phase)
            level = curriculum.level(epoch)
            rank_seed = derive_seed(phase_seed, epoch, d.rank)
            corr_gen, misc_gen, pool_gen, mask_gen = (generator(rank_seed, k) for k in range(4))
            counts.generator = generator(phase_seed, 10, epoch)
            batches = train_batches(
                self.data.clean["train"],
                r.batch_size,
                seed=phase_seed,
                epoch=epoch,
                rank=d.rank,
                world=d.world,
                corrupted=self.data.corrupted["train"] if self.data.paired else None,
                augment_images=r.augment,
                augment_colours=r.augment_colour,
                max_batches=cap,
            )
            sums: dict[str, float] = {}
            bar = progress_bar(batches, n_batches, f"{phase} {epoch + 1}/{epochs}", self.show)
            for i, (clean, real) in enumerate(bar, 1):
                clean = clean.to(d.device)
                hints = None
                if real is not None:
                    x = real.to(d.device)
                elif r.corruption == "blind":
                    x, kernels = blind_corrupt(clean, task, generator=corr_gen, mix=r.mix, with_kernels=True)
                    if self.deconv:
                        hints = blur_hints(kernels, generator=corr_gen)
                elif r.vary_levels:
                    levels = varied_levels(clean.shape[0], task, curriculum.bounds[0], level, generator=corr_gen)
                    x = corrupt_each(clean, task, levels, generator=corr_gen, border=r.blur_border)
                else:
                    x = corrupt(clean, task, level, generator=corr_gen, border=r.blur_border)
                with blur_hint(self.model, hints) if hints is not None else nullcontext():
                    if phase == "ae":
                        h, w = (-(-s // self.model.config.downsample) for s in clean.shape[-2:])
                        stats = stepper.ae(clean, x, misc_gen, (clean.shape[0], self.model.config.ae.latent_channels, h, w))
                    elif phase == "nca":
                        stats = stepper.nca(clean, x, self.pool, counts, pool_gen, mask_gen, pool_first=not r.latent)
                    else:
                        stats = stepper.supervised(clean, x)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                if self.show:
                    bar.set_postfix(loss=f"{sums['loss'] / i:.4g}", lr=f"{schedule.lr:.2g}", best_val_ssim=f"{best_val:.4f}")
            broadcast_module(self.model, d)  # BatchNorm statistics: rank 0's everywhere
            train = {k: all_mean(v / max(n_batches, 1), d) for k, v in sums.items()}
            val = self._validate(phase)
            if val["ssim"] > best_val:
                best_val, best = val["ssim"], {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            row = {
                "phase": phase,
                "epoch": epoch + 1,
                "level": level,
                "lr": schedule.lr,
                **{f"train_{k}": v for k, v in train.items()},
                **{f"val_{k}": v for k, v in val.items()},
                "best_val_ssim": best_val,
                "seconds": time.perf_counter() - started,
                # The process's CPU time: on a shared machine the wall time also counts the waiting.
                "cpu_seconds": time.process_time() - cpu_started,
            }
            self.log.add(row)
            if self.show:
                self.echo(
                    f"{phase} epoch {epoch + 1}/{epochs}: level {level:g}, loss {train.get('loss', 0):.4g}, "
                    f"val SSIM {val['ssim']:.4f} (best {best_val:.4f}), {row['seconds']:.0f}s"
                )
            if d.main:
                self.log.write()
                progress = {
                    "phase_index": index,
                    "phase": phase,
                    "epoch": epoch,
                    "schedule_step": schedule.step_count,
                    "best_val": best_val,
                    "log": self.log.rows,
                }
                if self.teacher is not None:
                    progress["teacher_sha256"] = self.teacher.digest
                ckpt.save_state(
                    self.out,
                    f"state-{index}-{epoch}",
                    model=self.model,
                    best=best,
                    optimizer=optimizer,
                    extra=self.pool.tensors() if self.pool is not None else {},
                    progress=progress,
                )
            barrier(d)
        self._end_phase(phase, best)

    def _end_phase(self, phase: str, best) -> None:
        last_phase = phase == phases_of(self.recipe)[-1][0]
        if best is not None and not (last_phase and self.recipe.faithful_last):
            self.model.load_state_dict(best)

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> dict:
        done_index = self.progress["phase_index"] if self.progress else -1
        done_epoch = self.progress["epoch"] if self.progress else -1
        for index, (phase, epochs) in enumerate(phases_of(self.recipe)):
            if index < done_index:
                continue  # finished before the kill; its outcome is in the saved weights
            start = done_epoch + 1 if index == done_index else 0
            best = ckpt.split_prefix(self.state, "best") or None if index == done_index else None
            if epochs == 0 or (index == done_index and start >= epochs):
                self._end_phase(phase, best)
                continue
            self._run_phase(index, phase, epochs, start, best)
        return self._finish()

    def _finish(self) -> dict:
        r = self.recipe
        result = {}
        if self.dist.main:
            self.model.eval()
            if r.latent:
                self.model.decoder.fusion_active = True  # inference uses the whole decoder
            test = eval_set(self.data, "test", r.task, seed=r.split_seed, border=r.blur_border, corruption=r.corruption)
            metrics = restore_metrics(self.model, test, r, batch=r.eval_batch, with_input=True)
            if r.self_ensemble > 1:  # also without the test-time augmentation
                plain = restore_metrics(self.model, test, r.replace(self_ensemble=1), batch=r.eval_batch)
                metrics.update({"self_ensemble": r.self_ensemble, "ssim_plain": plain["ssim"], "psnr_plain": plain["psnr"]})
            result = {
                "model": r.model,
                "task": r.task,
                "weights": "last" if r.faithful_last else "best by val SSIM",
                "test_images": len(test),
                **metrics,
                "train_seconds": sum(row["seconds"] for row in self.log.rows),
            }
            save_weights(
                self.model, self.out / "model.safetensors", preset=r.model, extra={"recipe": r.to_dict(), "result": result}
            )
            write_text_atomic(self.out / "result.json", json.dumps(result, indent=2))
        barrier(self.dist)
        return result


def train(recipe: Recipe, out: str | Path, **kwargs) -> dict:
    return Trainer(recipe, out, **kwargs).run()
