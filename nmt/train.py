"""The training loop: maximise log p(T | S) by teacher forcing, validate, keep the best, resume.

Run folder layout (``run_dir``):

    checkpoints/step-NNNNNNN/   complete checkpoints (nmt.trainstate saves and resumes them)
    best -> checkpoints/…       best dev BLEU so far
    last -> checkpoints/…       most recent; training resumes from here
    metrics.jsonl               one JSON object per log interval or validation
    train_summary.json          written when training has finished (the Makefile's target)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nmt.atomic import FolderBusy, atomic_write_text, check_destination, folder_lock
from nmt.batching import Sequences, make_batch, token_batches
from nmt.checkpoint import run_checkpoints
from nmt.config import Config
from nmt.errors import NmtError
from nmt.hardware import (ThreadGovernor, choose_threads, hold_heap, pick_device, resolve_decode_precision,
                          resolve_precision, thread_ceiling, trim_heap)
from nmt.interrupt import StopRequest, stop_requests
from nmt.loss import linear_cross_entropy
from nmt.model import Seq2Seq, build_model, count_parameters
from nmt.provenance import versions
from nmt.quantize import int8_levels_on
from nmt.tokenizer import PAD, Tokenizer
from nmt.trainlog import MetricsWindow, append_record, truncate_after
from nmt.trainset import BATCHING, epoch_batches, load_training_data, rest_of_epoch
from nmt.trainstate import TrainerState, resume_run, save_run, unusable_run
from nmt.translate import Translator

log = logging.getLogger(__name__)

LOG_EVERY = 20  # steps between training-metric lines
NONFINITE_LIMIT = 10  # steps in a row without a finite gradient before training stops as diverged


@dataclass
class Progress:
    """What the caller (a progress bar) is told after every step."""

    step: int
    epoch: int
    loss: float
    tokens_per_s: float
    lr: float
    grad_norm: float
    elapsed_s: float
    validation: dict | None = None


def batch_loss(model: Seq2Seq, batch, smoothing: float, fused: bool = False) -> tuple[torch.Tensor, int]:
    """Summed token cross-entropy of one batch (padding dropped) and its number of target tokens."""
    features = model.features(batch.src, batch.src_lengths, batch.tgt_in, fused)  # (B, T, D)
    real = batch.tgt_out != PAD
    generator = model.generator
    loss = linear_cross_entropy(features[real], generator.weight, generator.bias, batch.tgt_out[real], smoothing)
    return loss, int(real.sum())


@torch.inference_mode()
def dev_loss(model: Seq2Seq, src: Sequences, tgt: Sequences, max_tokens: int, device) -> float:
    """Mean per-token cross-entropy of the dev split (no smoothing): log-perplexity."""
    model.eval()
    total, count = 0.0, 0
    for index in token_batches(src.lengths, tgt.lengths, max_tokens):
        batch = make_batch(src, index, tgt).to(device)
        loss, n = batch_loss(model, batch, 0.0)
        total, count = total + float(loss), count + n
    return total / max(1, count)


def check_validation_precision(precision: str, device: torch.device) -> None:
    """Validation decodes with decode.precision: int8 where it cannot run is refused before the
    first step, not at the first validation with every step before it lost."""
    if resolve_decode_precision(precision, device, "decode.precision") == "int8":
        try:
            int8_levels_on(device)
        except NmtError as exc:
            raise NmtError(f"decode.precision is int8, which validation decodes with: {exc}") from None


class Trainer:
    """Owns the optimisation; knows the model only through forward() and the checkpoint format."""

    def __init__(self, config: Config, data_dir: Path, tokenizer_dir: Path, run_dir: Path, device: str | None = None):
        self.config, self.run_dir = config, Path(run_dir)
        last = self.run_dir / "last"
        if self.run_dir.is_dir():  # a run another process trains, or cannot resume: said before seconds of setting up
            with self._only_trainer():
                pass
            if last.is_symlink() and not last.exists():  # its checkpoint deleted: starting afresh would hide that
                raise unusable_run(self.run_dir, f"{last} points to {last.readlink()}, which is missing")
            if not last.exists() and run_checkpoints(self.run_dir):  # afresh would write over an earlier run
                raise unusable_run(self.run_dir, f"{self.run_dir} holds checkpoints but no {last.name} link to "
                                                 f"resume from")
        self.saved_step: int | None = None  # the step of runs/<name>/last, where a new run would resume
        self.nonfinite_in_row = 0  # steps in a row whose gradient was not finite
        self._dev_noted = False  # the dev lines' notes said (lines cut …): a validation says them once
        self.data_dir = Path(data_dir)
        self.device = pick_device(device)
        self.precision = resolve_precision(config.train.precision, self.device, "train.precision")
        check_validation_precision(config.decode.precision, self.device)
        self.governor: ThreadGovernor | None = None  # train(): train.threads 0 follows other processes' load
        hold_heap()  # buffers reuse freed memory between trims (nmt.hardware.hold_heap)
        self.tokenizer = Tokenizer.from_folder(tokenizer_dir)
        data = load_training_data(self.data_dir, self.tokenizer, tokenizer_dir, config)
        self.inputs, self.train_src, self.train_tgt = data.fingerprint, data.train_src, data.train_tgt
        self.train_ids, self.split_lengths = data.train_ids, data.split_lengths
        self.longest_source = int(self.train_src.lengths.max())  # recorded in checkpoints: translation warns past it
        self.dev_src, self.dev_tgt, self.dev_lines, self.dev_refs = data.dev_src, data.dev_tgt, data.dev_lines, data.dev_refs

        torch.manual_seed(config.train.seed)
        self.model = build_model(config.model, self.tokenizer.src_vocab, self.tokenizer.tgt_vocab).to(self.device)
        # fused: one kernel for all parameters (CPU and CUDA) instead of ~10 ops per tensor and step
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.train.lr, fused=True)
        self.state = TrainerState(lr=config.train.lr)
        self.window = MetricsWindow()  # the training metrics since the last log line
        log.info("model: %s parameters, %d training pairs, %s", f"{count_parameters(self.model):,}", len(self.train_src),
                 self.precision)
        if last.exists():
            self._resume(last)

    # -- checkpoints -------------------------------------------------------------------------
    def _resume(self, folder: Path) -> None:
        self.state, changed, saved_under = resume_run(folder, self.model, self.optimizer, self.config, self.inputs)
        st, now = self.state, {key: getattr(self.config.train, key) for key in BATCHING}
        made = {key: saved_under.get(key, value) for key, value in now.items()}  # how the epoch's batches were
        if st.batch_in_epoch and made != now:  # made otherwise: it goes on with the pairs it had still to see
            st.epoch_rest = rest_of_epoch(self.split_lengths, st.epoch_rest, st.epoch, st.batch_in_epoch, made)
            st.batch_in_epoch = 0
            log.info("epoch %d goes on with the %d pairs it had still to see, in batches made under the new settings",
                     st.epoch, len(st.epoch_rest))
        self.saved_step = self.state.step
        self.window = MetricsWindow(self.state.window)
        self._set_lr(self.state.lr)
        log.info("resumed from %s at step %d%s", folder, self.state.step, changed and f"; changed since: {changed}")

    def _save(self, is_best: bool) -> None:
        self.state.window = self.window.state()  # a run resumed mid-window logs the whole window
        save_run(self.run_dir, self.model, self.optimizer, self.config, self.tokenizer, self.state, self.inputs, is_best,
                 self.longest_source)
        self.saved_step = self.state.step

    # -- the loop ----------------------------------------------------------------------------
    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.state.lr = lr

    def _train_step(self, batch) -> tuple[float, int, float]:
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            loss, n_tokens = batch_loss(self.model, batch, self.config.train.label_smoothing, self.config.train.fused_rnn)
        self.optimizer.zero_grad(set_to_none=True)
        (loss / n_tokens).backward()
        # Clip by the global L2 norm of all gradients; the norm before clipping is logged.
        norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.clip_norm))
        if math.isfinite(norm):
            self.optimizer.step()
            self.nonfinite_in_row = 0
        else:  # an overflow or a NaN: this update would make every weight NaN, and every checkpoint after
            self._skip_update(norm)
        return loss.item() / n_tokens, n_tokens, norm

    def _skip_update(self, norm: float) -> None:
        st, self.nonfinite_in_row = self.state, self.nonfinite_in_row + 1
        st.skipped_updates += 1
        log.warning("step %d: gradient norm %s, update skipped", st.step + 1, norm)
        if self.nonfinite_in_row >= NONFINITE_LIMIT:  # not one bad batch: the model itself has diverged
            raise NmtError(f"training diverged: no finite gradient in {NONFINITE_LIMIT} steps (to step {st.step + 1});"
                           f" {self.run_dir / 'last'} holds the last checkpoint; lower train.lr or train.clip_norm")

    def validate(self) -> dict:
        from nmt.metrics import corpus_scores

        loss = dev_loss(self.model, self.dev_src, self.dev_tgt, self.config.train.max_tokens, self.device)
        translator = Translator(self.model, self.tokenizer, self.config, self.device,
                                follow_load=self.config.train.threads == 0)
        # the dev lines' notes (lines cut …) at the first validation of a process, not at each one
        with translator.noting("none" if self._dev_noted else "first"):
            hyps = translator.translate(self.dev_lines, beam=1)
        self._dev_noted = True
        bleu = corpus_scores(hyps, self.dev_refs, ("bleu",), self.config.data.tgt_lang)["bleu"]["score"]
        return {"dev_loss": loss, "dev_ppl": math.exp(min(loss, 50.0)), "dev_bleu": bleu}

    def _after_validation(self, result: dict) -> None:
        """Update best / lr / patience and save; ``_budget_spent`` then says whether to stop."""
        cfg, st = self.config.train, self.state
        improved = result["dev_bleu"] > st.best_bleu
        if improved:
            st.best_bleu, st.best_step, st.bad_validations, st.lr_bad_validations = result["dev_bleu"], st.step, 0, 0
        else:
            st.bad_validations += 1
            st.lr_bad_validations += 1
            if st.lr_bad_validations >= cfg.lr_patience and st.lr > cfg.min_lr:
                self._set_lr(max(cfg.min_lr, st.lr / 2))  # halve on a dev plateau
                st.lr_bad_validations = 0
                log.info("dev BLEU plateau: learning rate halved to %.2g", st.lr)
        self._save(improved)

    def train(self, on_progress: Callable[[Progress], None] | None = None) -> dict:
        """Train until a budget is spent, early stopping or Ctrl-C; returns train_summary.json's
        contents. Runs with train.threads threads (0: chosen, and changed as other processes' load
        does: ``nmt.hardware.ThreadGovernor``); torch's count is the caller's again at the end."""
        caller = torch.get_num_threads()
        most = thread_ceiling()  # torch's count now (OMP_NUM_THREADS, one per physical core) caps what 0 chooses
        torch.set_num_threads(choose_threads(self.config.train.threads))
        self.governor = ThreadGovernor(most=most) if self.config.train.threads == 0 else None
        try:
            return self._train(on_progress)
        finally:
            torch.set_num_threads(caller)

    def _train(self, on_progress: Callable[[Progress], None] | None) -> dict:
        st = self.state
        metrics_path = self.run_dir / "metrics.jsonl"
        check_destination(self.run_dir / "checkpoints", folder=True)  # before the steps whose checkpoint it holds
        try:
            with self._only_trainer(), stop_requests(signal.SIGINT, signal.SIGTERM) as asked:
                # lines logged after the step we start from (a resumed checkpoint's, or 0) will be logged again
                truncate_after(metrics_path, st.step)
                if not self._budget_spent():  # a finished run's summary no longer describes it (rewritten at the end)
                    (self.run_dir / "train_summary.json").unlink(missing_ok=True)
                self._steps(metrics_path, on_progress, asked)
                # the final weights get a say too (once: a finished run run again has had it); under
                # stop_requests, so a Ctrl-C here saves the steps since the last checkpoint too
                if asked.signum is None and st.validated_step != st.step:
                    self._after_validation(self._validate_and_log(metrics_path))
                if asked.signum is not None and self.saved_step != st.step:  # Ctrl-C or SIGTERM: save the step it
                    self._save(is_best=False)  # came in, here: a repeated SIGTERM (make passes one on) stays noted
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside the main thread: the steps since are lost
            where = (f"{self.run_dir / 'last'}, step {self.saved_step}" if self.saved_step is not None
                     else "the start: no checkpoint yet")
            log.warning("interrupted at step %d; training again resumes from %s", st.step, where)
            raise
        if asked.signum is not None:
            log.warning("interrupted (%s) at step %d, saved as %s; training again resumes there",
                        signal.Signals(asked.signum).name, st.step, self.run_dir / "last")
            raise KeyboardInterrupt
        log.info("%s; best dev BLEU %.2f at step %d", st.stopped, st.best_bleu, st.best_step)
        summary = {
            "stopped": st.stopped,
            "steps": st.step,
            "epochs_completed": st.epoch,
            "best_step": st.best_step,
            "best_dev_bleu": st.best_bleu,
            "skipped_updates": st.skipped_updates,  # steps with a non-finite gradient
            "train_minutes": st.elapsed_s / 60,
            "parameters": count_parameters(self.model),
            "threads": torch.get_num_threads(),
            "device": str(self.device),
            "precision": self.precision,  # train.precision resolved (auto → fp32 or bf16)
            "versions": versions(),
        }
        atomic_write_text(self.run_dir / "train_summary.json", json.dumps(summary, indent=2) + "\n")
        return summary

    @contextlib.contextmanager
    def _only_trainer(self) -> Iterator[None]:
        """One training process per run: a second (make train in another terminal) would resume
        the same checkpoint and write over the first's checkpoints and log."""
        try:
            with folder_lock(self.run_dir):
                yield
        except FolderBusy as exc:
            raise NmtError(f"{self.run_dir} is being trained by another process ({exc.strerror}); "
                           f"wait for it or stop it") from None

    def _steps(self, metrics_path: Path, on_progress: Callable[[Progress], None] | None,
               asked: StopRequest) -> None:
        """Train until a budget is spent, early stopping, or ``asked`` to stop; validate and save
        every valid_every steps."""
        cfg, st = self.config.train, self.state
        start, window = time.perf_counter() - st.elapsed_s, self.window
        stop = self._budget_spent()
        while not stop:
            batches = epoch_batches(self.split_lengths, st.epoch_rest, st.epoch, seed=cfg.seed,
                                    max_tokens=cfg.max_tokens, max_train_len=cfg.max_train_len)
            todo = batches[st.batch_in_epoch :]
            for lines in todo:
                t0 = time.perf_counter()
                index = np.searchsorted(self.train_ids, lines)  # the train split's lines → the pairs kept
                batch = make_batch(self.train_src, index, self.train_tgt).to(self.device)
                loss, n_tokens, norm = self._train_step(batch)
                st.step, st.batch_in_epoch = st.step + 1, st.batch_in_epoch + 1
                if st.batch_in_epoch == len(batches):  # the epoch is complete: what is saved or said now counts it
                    st.epoch, st.batch_in_epoch, st.epoch_rest = st.epoch + 1, 0, None
                st.elapsed_s = time.perf_counter() - start
                window.add(loss, n_tokens, norm, time.perf_counter() - t0, norm > cfg.clip_norm)
                validation = None
                if self.governor is not None:
                    self.governor.check()
                if cfg.trim_heap_every and st.step % cfg.trim_heap_every == 0:
                    trim_heap()  # resident memory level over a long run (nmt.hardware.trim_heap)
                if st.step % LOG_EVERY == 0:
                    append_record(metrics_path, {**window.flush(st), "threads": torch.get_num_threads()})
                if st.step % cfg.valid_every == 0:
                    validation = self._validate_and_log(metrics_path)
                    self._after_validation(validation)
                if on_progress is not None:
                    on_progress(Progress(st.step, st.epoch, loss, window.rate, st.lr, norm, st.elapsed_s, validation))
                if self._budget_spent() or asked.signum is not None:
                    stop = True
                    break
            else:  # nothing left of the epoch (a checkpoint saved at its end before the count above)
                if not todo:
                    st.epoch, st.batch_in_epoch, st.epoch_rest = st.epoch + 1, 0, None

    def _budget_spent(self) -> bool:
        """Whether training is over (``state.stopped`` says why): a budget spent, or early stopping
        under the current train.patience (a finished run run again trained on: its stop was not
        in the checkpoint)."""
        cfg, st = self.config.train, self.state
        if st.step >= cfg.max_steps:  # past it: a run resumed under a smaller budget trains no step
            st.stopped = (f"reached train.max_steps={cfg.max_steps}" if st.step == cfg.max_steps
                          else f"already past train.max_steps={cfg.max_steps}: at step {st.step}")
        elif st.elapsed_s >= cfg.max_minutes * 60:
            st.stopped = f"reached train.max_minutes={cfg.max_minutes:g}"
        elif st.bad_validations >= cfg.patience:
            st.stopped = f"early stopping: no dev BLEU gain in {cfg.patience} validations"
        return bool(st.stopped)

    def _validate_and_log(self, metrics_path: Path) -> dict:
        t0 = time.perf_counter()
        result = self.validate()
        self.state.validated_step = self.state.step
        result.update(step=self.state.step, lr=self.state.lr, valid_seconds=time.perf_counter() - t0)
        # counted now, not at the next step: the checkpoint saved after it, the budget checked after
        # it and the summary of a run ending on it all hold the validation's time
        self.state.elapsed_s += result["valid_seconds"]
        result["elapsed_s"] = self.state.elapsed_s  # when the result was known (benchmarks/curve.py)
        append_record(metrics_path, {"kind": "valid", **result})
        log.info("step %d: dev loss %.3f ppl %.1f BLEU %.2f", self.state.step, result["dev_loss"],
                 result["dev_ppl"], result["dev_bleu"])
        return result
