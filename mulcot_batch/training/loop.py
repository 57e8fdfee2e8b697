"""The multi-task training loop shared by `train-assistant` and `distill`.

loss = w_label * CE(label token) + w_reason * CE(chain tokens) + w_kd * T^2 * KL(assistant || student)
where the KD term compares temperature-softened distributions over the three label tokens at the
prediction position (the assistant's logits are precomputed once: on CPU that halves the cost).
A dev evaluation after every epoch keeps the best checkpoint; a checkpoint every N steps and at
every epoch end makes a killed run resumable.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..schema import LABELS
from .batches import IGNORE, Sequence, plan_batches


@dataclass
class TrainConfig:
    epochs: int = 1
    lr: float = 2e-4
    projector_lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: float = 0.06
    token_budget: int = 2048  # tokens per batch (length x rows)
    grad_accum: int = 1
    w_label: float = 1.0
    w_reason: float = 0.5
    w_kd: float = 0.0
    kd_temperature: float = 2.0
    checkpoint_every: int = 200
    seed: int = 0
    bf16: bool = True
    max_steps: int | None = None  # for smoke tests


@dataclass
class TrainState:
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_score: float = -1.0
    best_epoch: int = -1


def label_logits_at(model, batch: dict[str, Any], hidden: torch.Tensor, label_ids: list[int]) -> torch.Tensor:
    """Logits of the three label tokens at each row's prediction position."""
    rows = torch.arange(hidden.shape[0])
    picked = hidden[rows, batch["label_pos"]]
    return model.lm.lm_head(picked)[:, label_ids].float()


def batch_loss(model, batch: dict[str, Any], cfg: TrainConfig, label_ids: list[int]) -> tuple[torch.Tensor, dict]:
    hidden = model.hidden_states(batch)
    targets = batch["targets"][:, 1:]
    selected = targets != IGNORE
    logits = model.lm.lm_head(hidden[:, :-1][selected]).float()
    ce = F.cross_entropy(logits, targets[selected])
    parts = {"ce_" + batch["task"]: round(ce.item(), 4)}
    if batch["task"] == "reason":
        return cfg.w_reason * ce, parts
    loss = cfg.w_label * ce
    if cfg.w_kd > 0 and "teacher" in batch:
        t = cfg.kd_temperature
        student = F.log_softmax(label_logits_at(model, batch, hidden, label_ids) / t, dim=-1)
        teacher = F.softmax(batch["teacher"].float() / t, dim=-1)
        kd = F.kl_div(student, teacher, reduction="batchmean") * t * t
        loss = loss + cfg.w_kd * kd
        parts["kd"] = round(kd.item(), 4)
    return loss, parts


@torch.inference_mode()
def predict(model, batches: list[dict[str, Any]], label_ids: list[int], bf16: bool) -> tuple[np.ndarray, np.ndarray]:
    """Label-token logits (n, 3) and gold indices for label-task batches (dev evaluation, teacher logits)."""
    model.eval()
    logits, gold = [], []
    for batch in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = model.hidden_states(batch)
            logits.append(label_logits_at(model, batch, hidden, label_ids).cpu())
        gold.append(batch["gold"])
    return torch.cat(logits).numpy(), torch.cat(gold).numpy()


def label_scores(logits: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    pred = logits.argmax(axis=1)
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, average="macro", labels=[0, 1, 2], zero_division=0)),
        "weighted_f1": float(f1_score(gold, pred, average="weighted", labels=[0, 1, 2], zero_division=0)),
        "predicted": {LABELS[k]: int((pred == k).sum()) for k in range(3)},
    }


class Trainer:
    """Runs epochs over planned batches; `save_best(dir)` writes the model's deliverable parts."""

    def __init__(
        self,
        model,
        sequences: list[Sequence],
        make_batch: Callable[[list[int]], dict[str, Any]],
        dev_batches: list[dict[str, Any]],
        label_ids: list[int],
        cfg: TrainConfig,
        work_dir: Path,
        save_best: Callable[[Path], None],
        log: Callable[[str], None] = print,
    ) -> None:
        self.model, self.sequences, self.make_batch = model, sequences, make_batch
        self.dev_batches, self.label_ids, self.cfg = dev_batches, label_ids, cfg
        self.work_dir, self.save_best, self.log = work_dir, save_best, log
        self.params = [p for p in model.parameters() if p.requires_grad]
        projector = {id(p) for p in model.projector.parameters()}
        groups = [
            {"params": [p for p in self.params if id(p) in projector], "lr": cfg.projector_lr},
            {"params": [p for p in self.params if id(p) not in projector], "lr": cfg.lr},
        ]
        self.optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        steps_per_epoch = math.ceil(len(plan_batches(sequences, cfg.token_budget, cfg.seed)) / cfg.grad_accum)
        self.total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
        warm = max(1, int(cfg.warmup * self.total_steps))
        schedule = lambda s: min(1.0, (s + 1) / warm) * max(0.0, (self.total_steps - s) / max(1, self.total_steps - warm))  # noqa: E731
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, [schedule, schedule])
        self.state = TrainState()
        self.checkpoint = work_dir / "checkpoint.pt"

    def fit(self) -> TrainState:
        self._resume()
        while self.state.epoch < self.cfg.epochs:
            self._epoch()
            if self.cfg.max_steps and self.state.step >= self.cfg.max_steps:
                break
        return self.state

    def _epoch(self) -> None:
        cfg, state = self.cfg, self.state
        plan = plan_batches(self.sequences, cfg.token_budget, cfg.seed + state.epoch)
        started, seen = time.perf_counter(), 0
        self.model.train()
        for index in range(state.batch_in_epoch, len(plan)):
            batch = self.make_batch(plan[index])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                loss, parts = batch_loss(self.model, batch, cfg, self.label_ids)
            (loss / cfg.grad_accum).backward()
            seen += 1
            state.batch_in_epoch = index + 1
            if state.batch_in_epoch % cfg.grad_accum == 0 or state.batch_in_epoch == len(plan):
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                state.step += 1
                if state.step % 20 == 0:
                    rate = seen / (time.perf_counter() - started)
                    self.log(f"epoch {state.epoch + 1} batch {state.batch_in_epoch}/{len(plan)} step {state.step} "
                             f"loss {float(loss):.4f} {parts} ({rate:.2f} batches/s)")
                if state.step % cfg.checkpoint_every == 0:
                    self._save_checkpoint()
                if cfg.max_steps and state.step >= cfg.max_steps:
                    break
        self._end_of_epoch()

    def _end_of_epoch(self) -> None:
        state = self.state
        logits, gold = predict(self.model, self.dev_batches, self.label_ids, self.cfg.bf16)
        scores = label_scores(logits, gold)
        score = scores["macro_f1"] + scores["accuracy"]
        self.log(f"epoch {state.epoch + 1} dev: {json.dumps(scores)}")
        with open(self.work_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps({"epoch": state.epoch + 1, "step": state.step, **scores}) + "\n")
        if score > state.best_score:
            state.best_score, state.best_epoch = score, state.epoch + 1
            self.save_best(self.work_dir / "best")
            self.log(f"epoch {state.epoch + 1}: new best, saved to {self.work_dir / 'best'}")
        state.epoch += 1
        state.batch_in_epoch = 0
        self._save_checkpoint()
        self.model.train()

    def _save_checkpoint(self) -> None:
        trainable = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        payload = {
            "trainable": trainable,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "state": asdict(self.state),
            "rng": torch.get_rng_state(),
        }
        tmp = self.checkpoint.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(self.checkpoint)

    def _resume(self) -> None:
        if not self.checkpoint.is_file():
            return
        payload = torch.load(self.checkpoint, weights_only=True)
        self.model.load_state_dict(payload["trainable"], strict=False)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.state = TrainState(**payload["state"])
        torch.set_rng_state(payload["rng"])
        self.log(f"resumed from {self.checkpoint}: epoch {self.state.epoch + 1}, batch {self.state.batch_in_epoch}")
