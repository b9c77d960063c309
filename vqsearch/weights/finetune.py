"""Fine-tuning after rounding: make the compressed model's outputs match the float model's.

``weights.compress(src, dst, ..., calibration=texts, finetune=True)`` first compresses as usual
(into ``dst/_finetune/rounded``, resumable), then tunes that model on the calibration texts and
writes the result into ``dst``.  Every tensor keeps its format and code layout (same arrays,
shapes and bits), so :func:`~vqsearch.weights.load`, serving and decoding are unchanged.

What is trained (the ideas of QuIP#/QTIP fine-tuning and PV-Tuning; quantizers.md §1–2):

* **continuous parameters** (the "P step", Adam): every quantised tensor's per-(row, block) scales
  (as log-scales, so steps are relative), outlier values, and every float16 leftover of the
  archive (LayerNorms, biases, small tensors);
* **discrete codes** (the "V step", PV-Tuning's linearised update restricted to a few groups):
  every ``code_every`` steps the gradient g of the loss with respect to the normalised code values
  U (averaged over those steps, scaled by the tensor's RMS gradient D) defines a target U − η·g/D;
  the tiles with the largest predicted gain are re-encoded with the tensor's **own**
  quantiser (nearest codeword / Viterbi path to the target), and a tile's new code is kept only
  if it lowers the proximal objective ⟨g, ΔU⟩ + D‖ΔU‖² / 2η, at most ``code_fraction`` of the
  tiles per step; the whole step is kept only if the loss on two probe batches drops (else it is
  undone and η halves).  Formats, tile shapes and code sizes never change.

Stages, in order (each reports its loss on up to 8 calibration batches before and after it):

1. ``embeddings`` — everything before the first transformer block, against the float model's
   input to that block;
2. ``block.i`` for each block — the block's parameters, fed the *compressed* model's hidden states
   (so a block also learns to absorb its predecessors' error), against the float model's output of
   that block; loss = relative squared error over real (unpadded) tokens;
3. ``end-to-end`` — all parameters, against the model's output: 1 − cosine of the sentence
   embeddings (sentence-transformers) or the token-level KL divergence of the next-token
   distributions (causal LMs, :mod:`.causal_lm`).

Deterministic given ``seed`` (batch order, initial state; torch on CPU), bounded by
``time_budget`` seconds of fine-tuning (calibration and rounding come before it; remaining steps are
skipped once the budget is spent, the report says so, and such a run is no longer reproducible),
resumable: the state after each stage is checkpointed in ``dst/_finetune`` and an interrupted run
continues after the last finished stage.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Conflict, CorruptData, InvalidInput, InvalidSpec
from .finetune_codes import StoredQuantised, float_record, write_archive
from .manifest import FILES_DIR, MANIFEST, read_manifest
from .shards import JOURNAL, SHARD_DIR

log = logging.getLogger(__name__)
WORK_DIR = "_finetune"
CHECKPOINT = "state.pt"
#: Batches the per-stage loss (before / after) is measured on.
EVAL_BATCHES = 8
#: Steps before each V step whose code gradients are averaged.
_CODE_GRAD_STEPS = 5


@dataclass
class FinetuneOptions:
    """Knobs of fine-tuning (defaults: MiniLM-sized models in a few minutes on 2 cores)."""

    embed_steps: int = 20
    block_steps: int = 30
    e2e_steps: int = 80
    batch_size: int = 16
    lr_scale: float = 2e-3
    lr_float: float = 2e-4
    code_every: int = 10
    code_step: float = 1.0
    code_fraction: float = 0.01
    max_seq_length: int = 64
    time_budget: float = 200.0
    seed: int = 0

    @classmethod
    def of(cls, value: Any) -> FinetuneOptions:
        if isinstance(value, FinetuneOptions):
            return value
        if value is True or value is None:
            return cls()
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls)}
            bad = sorted(set(value) - known)
            if bad:
                raise InvalidSpec(f"unknown fine-tuning option(s) {bad}; known: {sorted(known)}")
            return cls(**dict(value))
        raise InvalidSpec(f"finetune must be True, a mapping of options or FinetuneOptions, got {type(value).__name__}")

    def validate(self) -> None:
        for k in ("embed_steps", "block_steps", "e2e_steps"):
            if getattr(self, k) < 0:
                raise InvalidSpec(f"finetune {k} must be >= 0")
        if self.batch_size < 1 or self.code_every < 1 or self.max_seq_length < 2:
            raise InvalidSpec("finetune batch_size and code_every must be >= 1, max_seq_length >= 2")
        if not 0 <= self.code_fraction <= 1 or self.code_step <= 0 or self.time_budget <= 0:
            raise InvalidSpec("finetune code_fraction must be in [0, 1], code_step and time_budget > 0")


# ----------------------------------------------------------------------------- orchestration
def compress_finetuned(src: Any, dst: Any, texts: Sequence[str], options: FinetuneOptions,
                       compress_kwargs: dict[str, Any], *, overwrite: bool, progress: bool):
    """``compress`` + fine-tuning (see the module docstring); returns the :class:`ModelInfo` of ``dst``."""
    from .archive import DEFAULT_SHARD_SIZE, load
    from .compression import compress
    from .info import info
    from .safetensors_io import SafetensorsSource

    options.validate()
    texts = _check_texts(texts)
    root = Path(dst)
    work = root / WORK_DIR
    ft_config = {**asdict(options), "texts": _fingerprint(texts)}
    source = SafetensorsSource(src)
    # The job as the final manifest records it: the rounding job plus the fine-tuning options.
    if (root / MANIFEST).exists():
        try:
            old = read_manifest(root)
        except CorruptData:
            old = None
        old_job = (old or {}).get("config") or {}
        if old_job.get("finetune") == ft_config and not overwrite \
                and old_job.get("source_files") == source.file_digests():
            log.info("%s already holds this fine-tuned model; nothing to do", root)
            return info(root)
        if not overwrite:
            raise Conflict(f"{root} holds a different compressed model; pass overwrite=True or another directory")
        _wipe_final(root)
        shutil.rmtree(work, ignore_errors=True)
    elif root.exists() and any(p.name not in (WORK_DIR, SHARD_DIR, FILES_DIR, MANIFEST + ".tmp")
                               for p in root.iterdir()):
        raise Conflict(f"{root} is not empty and is not a compressed model directory")
    root.mkdir(parents=True, exist_ok=True)
    work.mkdir(exist_ok=True)
    marker = work / "job.json"
    if marker.exists() and json.loads(marker.read_text()) != ft_config:
        if not overwrite:
            raise Conflict(f"{work} holds an interrupted fine-tuning run with other options; pass overwrite=True")
        shutil.rmtree(work)
        work.mkdir()
    marker.write_text(json.dumps(ft_config, sort_keys=True))
    t0 = time.perf_counter()
    rounded = compress(src, work / "rounded", overwrite=overwrite, progress=progress, **compress_kwargs)
    t_round = time.perf_counter() - t0
    archive = load(work / "rounded")
    tuner = Tuner(source.folder, archive, texts, options, work / CHECKPOINT, progress=progress)
    report = tuner.run()
    report["rounding_seconds"] = t_round
    records = list(tuner.records(source))
    manifest = {k: v for k, v in archive.manifest.items() if k not in ("shards", "tensors", "totals", "format_version")}
    manifest["config"] = {**manifest.get("config", {}), "finetune": ft_config}
    manifest["finetune"] = report
    manifest["seconds"] = float(rounded.seconds or 0.0) + report["seconds"]
    archive.close()
    _wipe_final(root)
    if (work / "rounded" / FILES_DIR).is_dir():  # the copied model files, listed under "files" in the manifest
        os.replace(work / "rounded" / FILES_DIR, root / FILES_DIR)
    write_archive(root, records, manifest, int(compress_kwargs.get("shard_size", DEFAULT_SHARD_SIZE)))
    shutil.rmtree(work, ignore_errors=True)
    return info(root)


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts \
            or not all(isinstance(t, str) and t for t in texts):
        raise InvalidInput("fine-tuning needs calibration texts: a non-empty list of non-empty strings")
    return list(texts)


def _fingerprint(texts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest()[:32]


def _wipe_final(root: Path) -> None:
    for name in (MANIFEST, MANIFEST + ".tmp", JOURNAL):
        (root / name).unlink(missing_ok=True)
    shutil.rmtree(root / SHARD_DIR, ignore_errors=True)
    shutil.rmtree(root / FILES_DIR, ignore_errors=True)


# ----------------------------------------------------------------------------- the tuner
class _Stop(Exception):
    """Raised by a capture hook to end a forward pass early."""


class Tuner:
    """Runs the stages of the module docstring on one compressed archive."""

    def __init__(self, folder: Path, archive, texts: list[str], options: FinetuneOptions,
                 checkpoint: Path, *, progress: bool = False) -> None:
        import torch

        from .causal_lm import adapter_for
        from .finetune_model import attach, find_blocks

        self.torch = torch
        self.opt = options
        self.archive = archive
        self.checkpoint = Path(checkpoint)
        self.progress = progress
        torch.manual_seed(options.seed)
        self.adapter = adapter_for(folder, options.max_seq_length)
        self.float_model = self.adapter.load()
        self.float_model.eval()
        for p in self.float_model.parameters():
            p.requires_grad_(False)
        self.model = copy.deepcopy(self.float_model)
        stored, floats = {}, {}
        self.kinds: dict[str, str] = {}
        for name in archive:
            meta, arrays = archive.record(name)
            if meta["format"] in ("float16", "float32"):
                floats[name] = archive[name]
                self.kinds[name] = "float"
            elif meta["format"] == "raw":
                self.kinds[name] = "raw"
            else:
                stored[name] = StoredQuantised.from_record(name, meta, arrays)
                self.kinds[name] = "quant"
        parts = attach(self.adapter.param_root(self.model), stored, floats)
        self.quant, self.floats, self.frozen = parts["quant"], parts["floats"], parts["frozen"]
        self.blocks_q = find_blocks(self.adapter.param_root(self.model))
        self.blocks_f = find_blocks(self.adapter.param_root(self.float_model))
        if self.blocks_q is None:
            raise InvalidInput("fine-tuning found no transformer blocks (no nn.ModuleList) in the model")
        self.batches = self.adapter.batches(texts, options.batch_size)
        self.stages = ["embeddings"] + [f"block.{i}" for i in range(len(self.blocks_q))] + ["end-to-end"]
        self.deadline = time.perf_counter() + options.time_budget
        self.eta = options.code_step
        self.truncated = False

    # ------------------------------------------------------------------ parameters of a stage
    def _stage_params(self, stage: str) -> tuple[list, list, list]:
        """(quant params, log-scale/outlier params, float params) trained in ``stage``."""
        if stage == "end-to-end":
            inside = None
        elif stage == "embeddings":
            inblock = {id(p) for b in self.blocks_q for p in b.parameters()}
            inside = lambda p: id(p) not in inblock  # noqa: E731
        else:
            ids = {id(p) for p in self.blocks_q[int(stage.split(".")[1])].parameters()}
            inside = lambda p: id(p) in ids  # noqa: E731
        quant = [qp for qp in self.quant.values() if inside is None or inside(qp.rho)]
        cont = [p for qp in quant for p in (qp.rho, qp.oval) if p is not None]
        flo = [p for p in self.floats.values() if inside is None or inside(p)]
        return quant, cont, flo

    # ------------------------------------------------------------------ captures
    def _block_input(self, model, blocks, i: int, batch) -> tuple[tuple, dict]:
        """(args, kwargs) with which ``blocks[i]`` is called on ``batch`` (the forward stops there)."""
        got: dict[str, Any] = {}

        def hook(module, args, kwargs):
            got["args"], got["kwargs"] = args, kwargs
            raise _Stop

        h = blocks[i].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            self.adapter.forward(model, batch)
        except _Stop:
            pass
        finally:
            h.remove()
        return got["args"], got["kwargs"]

    @staticmethod
    def _hidden(args, kwargs):
        return args[0] if args else kwargs["hidden_states"]

    @staticmethod
    def _call_block(block, args, kwargs, hidden):
        if args:
            out = block(hidden, *args[1:], **kwargs)
        else:
            out = block(**{**kwargs, "hidden_states": hidden})
        return out[0] if isinstance(out, (tuple, list)) else out

    def _relmse(self, pred, target, mask):
        m = mask.unsqueeze(-1).to(pred.dtype)
        return ((pred - target) ** 2 * m).sum() / ((target**2) * m).sum().clamp_min(1e-12)

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        torch = self.torch
        t0 = time.perf_counter()
        done, history = self._resume()
        n = len(self.batches)
        with torch.no_grad():
            targets = [self.adapter.forward(self.float_model, b).detach() for b in self.batches] \
                if self.adapter.cache_targets else None
        states: dict[str, Any] = {}
        for k, stage in enumerate(self.stages):
            if k < done:
                continue
            if stage == "embeddings":
                loss_fn = self._embed_loss_fn(states)
                steps = self.opt.embed_steps
            elif stage == "end-to-end":
                loss_fn = self._e2e_loss_fn(targets)
                steps = self.opt.e2e_steps
            else:
                loss_fn = self._block_loss_fn(int(stage.split(".")[1]), states)
                steps = self.opt.block_steps
            before = self._eval(loss_fn, n)
            snap = self._snapshot()
            info = self._train(stage, loss_fn, steps, n)
            after = self._eval(loss_fn, n)
            info["reverted"] = after > before
            if info["reverted"]:  # never leave a stage worse than it started (on the calibration texts)
                self._restore(snap)
                after = before
            history.append({"stage": stage, "loss_before": before, "loss_after": after, **info})
            log.info("fine-tuning %s: loss %.5g -> %.5g (%d steps, %d codes changed)", stage, before, after,
                     info["steps"], info["codes_changed"])
            if stage.startswith("block.") and k + 1 < len(self.stages) - 1:
                self._advance(int(stage.split(".")[1]), states)
            self._save(k + 1, history)
        return {"stages": history, "seconds": time.perf_counter() - t0, "truncated_by_time_budget": self.truncated,
                "batches": n, "frozen": self.frozen}

    def _embed_loss_fn(self, states):
        def fn(j):
            with self.torch.no_grad():
                a_f, k_f = self._block_input(self.float_model, self.blocks_f, 0, self.batches[j])
            a_q, k_q = self._block_input(self.model, self.blocks_q, 0, self.batches[j])
            return self._relmse(self._hidden(a_q, k_q), self._hidden(a_f, k_f), self.adapter.mask(self.batches[j]))
        return fn

    def _block_loss_fn(self, i: int, states):
        torch = self.torch
        if states.get("index") != i:  # first block stage of this process: capture the inputs of block i
            with torch.no_grad():
                states["q"] = [self._block_input(self.model, self.blocks_q, i, b) for b in self.batches]
                states["f"] = [self._block_input(self.float_model, self.blocks_f, i, b) for b in self.batches]
            states["index"] = i
        with torch.no_grad():
            targets = [self._call_block(self.blocks_f[i], a, kw, self._hidden(a, kw)) for a, kw in states["f"]]
        states["targets"] = targets

        def fn(j):
            a, kw = states["q"][j]
            pred = self._call_block(self.blocks_q[i], a, kw, self._hidden(a, kw))
            return self._relmse(pred, targets[j], self.adapter.mask(self.batches[j]))
        return fn

    def _advance(self, i: int, states) -> None:
        """Hidden states into block i + 1: block i applied to its inputs (float and compressed)."""
        with self.torch.no_grad():
            q = []
            for a, kw in states["q"]:
                h = self._call_block(self.blocks_q[i], a, kw, self._hidden(a, kw))
                q.append(((h, *a[1:]), kw) if a else ((), {**kw, "hidden_states": h}))
            f = []
            for (a, kw), h in zip(states["f"], states["targets"]):
                f.append(((h, *a[1:]), kw) if a else ((), {**kw, "hidden_states": h}))
        states.update(q=q, f=f, index=i + 1)

    def _e2e_loss_fn(self, targets):
        def fn(j):
            b = self.batches[j]
            out = self.adapter.forward(self.model, b)
            if targets is not None:
                tgt = targets[j]
            else:
                with self.torch.no_grad():
                    tgt = self.adapter.forward(self.float_model, b)
            return self.adapter.e2e_loss(out, tgt, b)
        return fn

    def _eval(self, loss_fn, n: int) -> float:
        """Mean stage loss over (up to ``EVAL_BATCHES`` evenly spaced) calibration batches."""
        picks = np.unique(np.linspace(0, n - 1, min(n, EVAL_BATCHES)).round().astype(int))
        with self.torch.no_grad():
            return float(np.mean([float(loss_fn(int(j))) for j in picks]))

    def _train(self, stage: str, loss_fn, steps: int, n: int) -> dict[str, Any]:
        torch = self.torch
        quant, cont, flo = self._stage_params(stage)
        groups = [g for g in ({"params": cont, "lr": self.opt.lr_scale}, {"params": flo, "lr": self.opt.lr_float})
                  if g["params"]]
        if not groups or steps == 0:
            return {"steps": 0, "codes_changed": 0, "seconds": 0.0}
        t0 = time.perf_counter()
        adam = torch.optim.Adam(groups)
        codes = self.opt.code_fraction > 0 and bool(quant)
        acc = {qp.name: [torch.zeros_like(qp.u), torch.zeros_like(qp.u), 0] for qp in quant} if codes else {}
        changed = 0
        # Per-stage random state and step size: a resumed run repeats exactly what an uninterrupted one does.
        rng = np.random.default_rng([self.opt.seed, self.stages.index(stage)])
        self.eta = self.opt.code_step
        order = rng.permutation(n)
        done = 0
        iterator: Any = range(steps)
        if self.progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc=f"fine-tuning {stage}", unit="step", leave=False)
        for step in iterator:
            if time.perf_counter() > self.deadline:
                self.truncated = True
                break
            if step and step % n == 0:
                order = rng.permutation(n)
            adam.zero_grad(set_to_none=True)
            # Code gradients only over the last few steps before each V step (they cost ~40 % of a step).
            window = codes and (step % self.opt.code_every) >= self.opt.code_every - _CODE_GRAD_STEPS
            for qp in quant if codes else ():
                qp.u.requires_grad_(window)
            loss = loss_fn(int(order[step % n]))
            loss.backward()
            for qp in quant if window else ():
                if qp.u.grad is not None:
                    a = acc[qp.name]
                    a[0] += qp.u.grad
                    a[1] += qp.u.grad**2
                    a[2] += 1
                    qp.u.grad = None
            adam.step()
            done += 1
            if codes and (step + 1) % self.opt.code_every == 0:
                probes = [int(order[(step + 1 + k) % n]) for k in range(2)]
                changed += self._code_step(quant, acc, loss_fn, probes)
        for qp in quant:
            qp.u.requires_grad_(False)
            qp.u.grad = None
        return {"steps": done, "codes_changed": int(changed), "seconds": time.perf_counter() - t0}

    def _code_step(self, quant, acc, loss_fn, probes) -> int:
        """The V step on every tensor of ``quant`` (gradients averaged since the last one), kept only if the
        loss on the probe batches drops; η halves after a rejected step and grows by 1.25× after a kept one."""
        steps = []
        for qp in quant:
            gsum, g2sum, cnt = acc[qp.name]
            if cnt:
                steps.append((qp, (gsum / cnt).numpy(), (g2sum / cnt).numpy()))
            acc[qp.name] = [self.torch.zeros_like(qp.u), self.torch.zeros_like(qp.u), 0]

        def evaluate():
            with self.torch.no_grad():
                return float(sum(float(loss_fn(j)) for j in probes))

        changed, kept = pv_round(steps, self.eta, self.opt.code_fraction, evaluate)
        self.eta = min(self.opt.code_step * 4, self.eta * 1.25) if kept else self.eta * 0.5
        return changed

    # ------------------------------------------------------------------ checkpoints and output
    def _snapshot(self) -> dict[str, Any]:
        return {"rho": {k: qp.rho.detach().clone() for k, qp in self.quant.items()},
                "oval": {k: qp.oval.detach().clone() for k, qp in self.quant.items() if qp.oval is not None},
                "floats": {k: p.detach().clone() for k, p in self.floats.items()},
                "symbols": {k: qp.sq.symbols.copy() for k, qp in self.quant.items()}}

    def _restore(self, st: dict[str, Any]) -> None:
        with self.torch.no_grad():
            for k, qp in self.quant.items():
                qp.rho.copy_(st["rho"][k])
                if qp.oval is not None:
                    qp.oval.copy_(st["oval"][k])
                qp.sq.symbols = st["symbols"][k].copy()
                qp.sync_codes()
            for k, p in self.floats.items():
                p.copy_(st["floats"][k])

    def _save(self, done: int, history: list) -> None:
        tmp = self.checkpoint.with_suffix(".tmp")
        self.torch.save({"done": done, "history": history, "state": self._snapshot()}, tmp)
        os.replace(tmp, self.checkpoint)

    def _resume(self) -> tuple[int, list]:
        if not self.checkpoint.exists():
            return 0, []
        try:
            ck = self.torch.load(self.checkpoint, weights_only=False)
            self._restore(ck["state"])
        except (OSError, KeyError, RuntimeError, EOFError) as exc:
            log.warning("fine-tuning checkpoint %s is unreadable (%s); starting over", self.checkpoint, exc)
            return 0, []
        log.info("fine-tuning: resuming after %d of %d stages", ck["done"], len(self.stages))
        return int(ck["done"]), list(ck["history"])

    def records(self, source=None):
        """(name, arrays, meta, info) of every tensor of the tuned model, in archive order."""
        from .stats import sqnr_db

        for name in self.archive:
            entry = self.archive.entry(name)
            info = {k: entry[k] for k in ("sqnr_db", "stats", "rounding", "seconds") if k in entry}
            meta, arrays = self.archive.record(name)
            if name in self.quant:
                qp = self.quant[name]
                qp.sq.scales = qp.scales_numpy()
                if qp.oval is not None:
                    qp.sq.outlier_value = qp.oval.detach().numpy().astype(np.float32)
                arrays, meta = qp.sq.record()
            elif name in self.floats:
                arrays, meta = float_record(meta, self.floats[name].detach().numpy())
            else:
                arrays = {k: np.array(v) for k, v in arrays.items()}
            info["finetuned"] = name in self.quant or name in self.floats
            if source is not None and meta["format"] != "raw" and info["finetuned"]:
                from .codec import decode_tensor

                w = source.get(name)
                info["sqnr_db"] = _json_float(sqnr_db(w, decode_tensor(arrays, meta)))
            yield name, arrays, meta, info


def code_step(qp, g: np.ndarray, g2: np.ndarray, eta: float, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """PV-Tuning's linearised V step on one quantised tensor; returns (re-encoded tiles, their old symbols).

    ``g``: mean gradient of the loss with respect to the normalised values U (m_pad × n_pad);
    ``g2``: mean squared gradient (D = √mean(g2) scales the step of the whole tensor).  Candidates are the
    ``4 × fraction`` of tiles with the largest predicted gain Σ g²/D; each is re-encoded towards
    U − η·g/D with the tensor's own quantiser and kept if ⟨g, ΔU⟩ + Σ D·ΔU²/2η < 0, best first,
    at most ``fraction`` of the tiles.  ``qp.sq.accept(tiles, old)`` + ``qp.sync_codes()`` undo it.
    """
    sq = qp.sq
    none = (np.zeros(0, dtype=np.int64), sq.symbols[:0].copy())
    # One preconditioner per tensor (the RMS gradient): within a tensor the step follows the gradient
    # itself, so weights whose gradient is large move furthest (an element-wise Adam scaling would turn
    # it into a sign step, which overshoots along correlated directions).
    d = np.full_like(g, float(np.sqrt(np.mean(g2))) + 1e-30)
    u = qp.u.detach().numpy()
    gt, dt = sq.tiles_of(g), sq.tiles_of(d)
    score = np.sum(gt * gt / dt, axis=1)
    budget = max(1, int(math.floor(fraction * sq.n_tiles))) if fraction > 0 else 0
    live = int(np.count_nonzero(score > 0))
    if budget == 0 or live == 0:
        return none
    ncand = min(live, 4 * budget)
    cand = np.sort(np.argpartition(-score, ncand - 1)[:ncand])
    sym, vals = sq.reencode(u - eta * g / d, cand)
    du = vals - sq.tiles_of(u)[cand]
    obj = np.sum(gt[cand] * du + dt[cand] * du * du / (2 * eta), axis=1)
    good = np.flatnonzero(obj < 0)
    if good.size > budget:
        good = good[np.argsort(obj[good], kind="stable")[:budget]]
    good = np.sort(good)
    if good.size == 0:
        return none
    old = sq.accept(cand[good], sym[good])
    qp.sync_codes()
    return cand[good], old


def pv_round(steps: list[tuple[Any, np.ndarray, np.ndarray]], eta: float, fraction: float,
             evaluate) -> tuple[int, bool]:
    """One V step on several tensors, kept only if it lowers ``evaluate()`` (the loss on a few probe batches).

    ``steps``: (QuantParam, mean gradient, mean squared gradient) per tensor.  Returns (tiles changed,
    kept?).  The check makes the discrete step safe whatever the step size; the caller adapts η.
    """
    before = evaluate()
    undo = []
    for qp, g, g2 in steps:
        ids, old = code_step(qp, g, g2, eta, fraction)
        if ids.size:
            undo.append((qp, ids, old))
    if not undo:
        return 0, False
    changed = sum(int(ids.size) for _, ids, _ in undo)
    if evaluate() < before:
        return changed, True
    for qp, ids, old in undo:
        qp.sq.accept(ids, old)
        qp.sync_codes()
    return 0, False


def _json_float(v: float) -> Any:
    if v != v:
        return None
    if v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return v
