"""The multi-task training loop shared by `train-assistant` and `distill`, for every model family.

loss = w_label * CE(label token) + w_reason * CE(chain tokens) + w_kd * T^2 * KL(assistant || student)
(the label CE optionally weighted per label, `label_balance`)
where the KD term compares temperature-softened distributions over the three label tokens at the
prediction position (the assistant's logits are precomputed once: on CPU that halves the cost).
A dev evaluation after every epoch keeps the best checkpoint; a checkpoint every N steps and at
every epoch end makes a killed run resumable.

A family's model only has to give `hidden_states(batch)` (last hidden states) and
`get_output_embeddings()` (the vocabulary head). accelerate runs the loop: bf16 autocast, the
device, and several processes (`accelerate launch`), each taking its share of every epoch's batches.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..accelerating import bf16_is_fast, default_device, stage_accelerator
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
    label_balance: float = 0.0  # label CE weight (label's share of the label-task posts) ** -balance; 1: balanced
    checkpoint_every: int = 200
    seed: int = 0
    bf16: bool | None = None  # bf16 autocast; None: where it is fast (`accelerating.bf16_is_fast`)
    max_steps: int | None = None  # for smoke tests

    def __post_init__(self) -> None:
        if self.bf16 is None:  # decided once, so run.json records what ran
            self.bf16 = bf16_is_fast(default_device())


@dataclass
class TrainState:
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_score: float = -1.0
    best_epoch: int = -1


@contextmanager
def training_accelerator(bf16: bool) -> Iterator[Any]:
    """An Accelerator with this stage's precision (bf16 autocast, or none), cleared again after
    training so that a stage which follows starts from nothing (see `accelerating`)."""
    from accelerate import DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    # A text-only batch leaves the nano projector unused; DDP has to be told that may happen.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    try:
        yield stage_accelerator("bf16" if bf16 else "no", kwargs_handlers=[ddp])
    finally:
        AcceleratorState._reset_state()


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def label_logits_at(model, batch: dict[str, Any], hidden: torch.Tensor, label_ids: list[int]) -> torch.Tensor:
    """Logits of the three label tokens at each row's prediction position."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    head = model.get_output_embeddings()
    picked = hidden[rows, batch["label_pos"]].to(head.weight.dtype)  # outside autocast: the weights' precision
    return head(picked)[:, label_ids].float()


class TaskLogits(nn.Module):
    """What the losses read, computed in `forward`: DDP synchronises gradients through forward only.

    Returns the vocabulary logits at the target positions, and the label-token logits at the
    prediction position when the batch carries the assistant's (for the KD term).
    """

    def __init__(self, model: nn.Module, label_ids: list[int]) -> None:
        super().__init__()
        self.model, self.label_ids = model, label_ids

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden = self.model.hidden_states(batch)
        selected = batch["targets"][:, 1:] != IGNORE
        token_logits = self.model.get_output_embeddings()(hidden[:, :-1][selected]).float()
        label_logits = label_logits_at(self.model, batch, hidden, self.label_ids) if "teacher" in batch else None
        return token_logits, label_logits


def label_token_weights(sequences: list[Sequence], label_ids: list[int], balance: float) -> dict[int, float]:
    """Label token -> its CE weight, share ** -balance, scaled so the average over the posts stays 1.

    Why: macro-F1 counts the rare class (negative, 12% of T15) as much as the majority (neutral,
    59%), while a plain CE lets the majority win every close call. balance 0 (no weights) keeps
    the plain loss; 1 gives each label the same total weight.
    """
    if balance <= 0:
        return {}
    counts = Counter(s.targets[s.label_pos + 1] for s in sequences if s.task == "label")
    total = sum(counts[t] for t in label_ids)
    shares = {t: counts[t] / total for t in label_ids if counts[t]}
    raw = {t: share**-balance for t, share in shares.items()}
    mean = sum(shares[t] * raw[t] for t in raw)
    return {t: raw[t] / mean for t in raw}


def vocab_weight(token_weights: dict[int, float], vocab_size: int) -> torch.Tensor | None:
    """The CE class weights over the whole vocabulary (1 but for the label tokens); None when unweighted.

    Built once per run: the label CE is a cross-entropy over the vocabulary, so its weight is too.
    """
    if not token_weights:
        return None
    weight = torch.ones(vocab_size)
    weight[list(token_weights)] = torch.tensor(list(token_weights.values()))
    return weight


def batch_loss(
    module: nn.Module, batch: dict[str, Any], cfg: TrainConfig, label_weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict]:
    """The batch's loss and its parts; `label_weight` (see `vocab_weight`) weights the label-task CE."""
    token_logits, label_logits = module(batch)
    targets = batch["targets"][:, 1:]
    weight = label_weight if batch["task"] == "label" else None
    ce = F.cross_entropy(token_logits, targets[targets != IGNORE], weight=weight)
    parts = {"ce_" + batch["task"]: round(ce.item(), 4)}
    if batch["task"] == "reason":
        return cfg.w_reason * ce, parts
    loss = cfg.w_label * ce
    scored = ~batch["teacher"].isnan().any(dim=-1) if label_logits is not None else None
    if cfg.w_kd > 0 and scored is not None and scored.any():  # extra texts carry no assistant logits
        t = cfg.kd_temperature
        student = F.log_softmax(label_logits[scored] / t, dim=-1)
        teacher = F.softmax(batch["teacher"][scored].float() / t, dim=-1)
        kd = F.kl_div(student, teacher, reduction="batchmean") * t * t
        loss = loss + cfg.w_kd * kd
        parts["kd"] = round(kd.item(), 4)
    return loss, parts


@torch.inference_mode()
def predict(model, batches: Iterable[dict[str, Any]], label_ids: list[int], bf16: bool) -> tuple[np.ndarray, np.ndarray]:
    """Label-token logits (n, 3) and gold indices for label-task batches (dev evaluation, teacher logits)."""
    model.eval()
    device = next(model.parameters()).device
    logits, gold = [], []
    for batch in batches:
        inputs = to_device(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            hidden = model.hidden_states(inputs)
        # the label logits at the weights' precision (fp32 on CPU), as `score` computes them: bf16 ties close calls
        logits.append(label_logits_at(model, inputs, hidden, label_ids).cpu())
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
    """Runs epochs over planned batches; `save_best(dir)` writes the model's deliverable parts.

    `groups` are the optimizer's parameter groups (default: every trainable parameter at `cfg.lr`);
    checkpoints hold the trainable parameters by their names in `model`, whatever wraps it.
    """

    def __init__(
        self,
        model: nn.Module,
        sequences: list[Sequence],
        make_batch: Callable[[list[int]], dict[str, Any]],
        dev_batches: Iterable[dict[str, Any]],
        label_ids: list[int],
        cfg: TrainConfig,
        work_dir: Path,
        save_best: Callable[[Path], None],
        accelerator: Any,
        log: Callable[[str], None] = print,
        groups: list[dict[str, Any]] | None = None,
    ) -> None:
        self.model, self.sequences, self.make_batch = model, sequences, make_batch
        self.dev_batches, self.label_ids, self.cfg = dev_batches, label_ids, cfg
        self.work_dir, self.save_best, self.accelerator = work_dir, save_best, accelerator
        self.main = accelerator.is_main_process
        self.log = log if self.main else (lambda message: None)
        self.params = [p for p in model.parameters() if p.requires_grad]
        groups = groups or [{"params": self.params, "lr": cfg.lr}]
        optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        steps_per_epoch = math.ceil(len(self._rank_share(plan_batches(sequences, cfg.token_budget, cfg.seed))) / cfg.grad_accum)
        self.total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
        warm = max(1, int(cfg.warmup * self.total_steps))
        schedule = lambda s: min(1.0, (s + 1) / warm) * max(0.0, (self.total_steps - s) / max(1, self.total_steps - warm))  # noqa: E731
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [schedule] * len(groups))
        self.module, self.optimizer = accelerator.prepare(TaskLogits(model, label_ids), optimizer)
        token_weights = label_token_weights(sequences, label_ids, cfg.label_balance)
        self.label_weight = vocab_weight(token_weights, model.get_output_embeddings().weight.shape[0])
        if self.label_weight is not None:
            self.label_weight = self.label_weight.to(accelerator.device)
            named = dict(zip(label_ids, LABELS))
            self.log("label loss weights: " + ", ".join(f"{named[t]} {w:.2f}" for t, w in token_weights.items()))
        self.state = TrainState()
        self.checkpoint = work_dir / "checkpoint.pt"

    def fit(self) -> TrainState:
        self._resume()
        while self.state.epoch < self.cfg.epochs:
            self._epoch()
            if self.cfg.max_steps and self.state.step >= self.cfg.max_steps:
                break
        return self.state

    def _rank_share(self, plan: list[list[int]]) -> list[list[int]]:
        """This process's batches: every N-th, the plan cycled so that all ranks take as many steps."""
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        if world == 1:
            return plan
        per_rank = math.ceil(len(plan) / world)
        cycled = [plan[i % len(plan)] for i in range(per_rank * world)]
        return cycled[rank::world]

    def _epoch(self) -> None:
        cfg, state, acc = self.cfg, self.state, self.accelerator
        plan = self._rank_share(plan_batches(self.sequences, cfg.token_budget, cfg.seed + state.epoch))
        started, seen = time.perf_counter(), 0
        self.module.train()
        for index in range(state.batch_in_epoch, len(plan)):
            batch = to_device(self.make_batch(plan[index]), acc.device)
            stepping = (index + 1) % cfg.grad_accum == 0 or index + 1 == len(plan)
            with nullcontext() if stepping else acc.no_sync(self.module):
                with acc.autocast():
                    loss, parts = batch_loss(self.module, batch, cfg, self.label_weight)
                acc.backward(loss / cfg.grad_accum)
            seen += 1
            state.batch_in_epoch = index + 1
            if stepping:
                self._step()
                if state.step % 20 == 0:
                    rate = seen / (time.perf_counter() - started)
                    self.log(f"epoch {state.epoch + 1} batch {state.batch_in_epoch}/{len(plan)} step {state.step} "
                             f"loss {loss.item():.4f} {parts} ({rate:.2f} batches/s)")
                if state.step % cfg.checkpoint_every == 0:
                    self._save_checkpoint()
                if cfg.max_steps and state.step >= cfg.max_steps:
                    break
        self._end_of_epoch()

    def _step(self) -> None:
        self.accelerator.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1

    def _end_of_epoch(self) -> None:
        state = self.state
        logits, gold = predict(self.model, self.dev_batches, self.label_ids, self.cfg.bf16)
        scores = label_scores(logits, gold)
        score = scores["macro_f1"] + scores["accuracy"]
        self.log(f"epoch {state.epoch + 1} dev: {json.dumps(scores)}")
        if self.main:
            with open(self.work_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps({"epoch": state.epoch + 1, "step": state.step, **scores}) + "\n")
        if score > state.best_score:  # every rank saw the same dev scores: the same decision
            state.best_score, state.best_epoch = score, state.epoch + 1
            if self.main:
                self.save_best(self.work_dir / "best")
            self.log(f"epoch {state.epoch + 1}: new best, saved to {self.work_dir / 'best'}")
        state.epoch += 1
        state.batch_in_epoch = 0
        self._save_checkpoint()
        self.module.train()

    def _save_checkpoint(self) -> None:
        if self.main:
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
        self.accelerator.wait_for_everyone()

    def _resume(self) -> None:
        if not self.checkpoint.is_file():
            return
        payload = torch.load(self.checkpoint, weights_only=True, map_location="cpu")
        self.model.load_state_dict(payload["trainable"], strict=False)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.state = TrainState(**payload["state"])
        torch.set_rng_state(payload["rng"])
        self.log(f"resumed from {self.checkpoint}: epoch {self.state.epoch + 1}, batch {self.state.batch_in_epoch}")
