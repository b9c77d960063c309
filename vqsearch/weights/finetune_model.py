"""The torch side of fine-tuning: quantised weights as differentiable functions of their scales.

:class:`QuantParam` rebuilds ``W = RHT⁻¹((U ⊙ S)[:m, :nw])`` in torch (see :mod:`.finetune_codes`):
U (the decoded codes, normalised) is a leaf tensor whose gradient drives the discrete step, S is
trained through a log-scale ``ρ`` (S = S₀·e^ρ, so Adam's step is a relative change whatever a
row's magnitude).  The RHT is applied in its structured form H_pᵀ ⊗ H_m (a p × p Paley matrix and
an m × m Sylvester matrix shared by all tensors of one width, plus the tensor's signs), so an
embedding table costs O(rows · n · (p + m)) instead of a dense n × n product.

:func:`attach` swaps the modules of a float model that hold quantised weights (``nn.Linear``,
``nn.Embedding``, GPT-2's ``Conv1D``) for wrappers that read their weight from a shared
:class:`QuantParam` (tied weights stay tied: a tied embedding and output head share one), and loads
the float16 leftovers (LayerNorms, biases, small tensors) into the model as trainable parameters.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping

import numpy as np

from ..rht import hadamard_size, paley_hadamard
from .finetune_codes import StoredQuantised

log = logging.getLogger(__name__)


def _torch():
    import torch

    return torch


@functools.cache
def _sylvester(m: int) -> np.ndarray:
    h = np.ones((1, 1), dtype=np.float64)
    while h.shape[0] < m:
        h = np.block([[h, h], [h, -h]])
    return (h / np.sqrt(m)).astype(np.float32)


def _signs(d: int, seed: int) -> np.ndarray:
    """The RHT's sign vector for (d, seed), drawn exactly as :class:`vqsearch.rht.RandomizedHadamard` does."""
    from ..rht import RandomizedHadamard

    return RandomizedHadamard(d, seed=seed).signs


class InverseRHT:
    """Rows (k, n') → (k, d): the inverse randomized Hadamard transform of :mod:`vqsearch.rht`, in torch."""

    def __init__(self, d: int, seed: int) -> None:
        torch = _torch()
        self.d = d
        self.n, self.p = hadamard_size(d)
        self.m = self.n // self.p
        self.hm = torch.from_numpy(_sylvester(self.m))
        self.hpt = torch.from_numpy(paley_hadamard(self.p).T.astype(np.float32).copy()) if self.p > 1 else None
        self.signs = torch.from_numpy(_signs(d, seed).astype(np.float32))

    def __call__(self, y):
        k = y.shape[0]
        z = (y.reshape(k * self.p, self.m) @ self.hm).reshape(k, self.p, self.m)
        if self.hpt is not None:
            z = self.hpt @ z
        return (z.reshape(k, self.n) * self.signs)[:, : self.d]


def _module_base():
    return _torch().nn.Module


class QuantParam(_module_base()):  # type: ignore[misc]
    """One quantised tensor: W(ρ, U) with trainable log-scales ρ and outlier values."""

    def __init__(self, sq: StoredQuantised) -> None:
        super().__init__()
        torch = _torch()
        self.sq = sq
        self.name = sq.name
        self.u = torch.nn.Parameter(torch.from_numpy(sq.normalised()), requires_grad=False)
        self.register_buffer("s0", torch.from_numpy(sq.scales.copy()))
        self.rho = torch.nn.Parameter(torch.zeros_like(self.s0))
        self.rht = InverseRHT(sq.n, sq.rht_seed) if sq.rht_seed is not None else None
        if sq.outlier_index is not None:
            self.register_buffer("oidx", torch.from_numpy(sq.outlier_index.astype(np.int64)))
            self.oval = torch.nn.Parameter(torch.from_numpy(sq.outlier_value.copy()))
        else:
            self.oidx = None
            self.oval = None

    def scales(self):
        return self.s0 * self.rho.exp()

    def _rows(self, u, s):
        sq = self.sq
        if s.shape[1] == 1:  # one scale per row: broadcast
            w = (u * s)[:, : sq.nw]
        else:
            w = (u * s.repeat_interleave(sq.block, dim=1)[:, : sq.n_pad])[:, : sq.nw]
        return self.rht(w) if self.rht is not None else w[:, : sq.n]

    def weight(self):
        """The whole tensor in its stored shape."""
        sq = self.sq
        w = self._rows(self.u[: sq.m], self.scales())
        if self.oidx is not None:
            w = w.reshape(-1).index_put((self.oidx,), self.oval).reshape(sq.m, sq.n)
        return w.reshape(sq.shape)

    def rows(self, ids):
        """Rows ``ids`` of the (m, n) matrix view (a lookup table's used rows), without building the rest."""
        if self.oidx is not None:
            return self.weight().reshape(self.sq.m, self.sq.n)[ids]
        return self._rows(self.u[ids], self.scales()[ids])

    @property
    def device(self):
        return self.u.device

    def sync_codes(self) -> None:
        """Reload U after :class:`StoredQuantised` symbols changed (the discrete step)."""
        torch = _torch()
        with torch.no_grad():
            self.u.copy_(torch.from_numpy(self.sq.normalised()))

    def scales_numpy(self) -> np.ndarray:
        return self.scales().detach().cpu().numpy().astype(np.float32)


def _wrappers():
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    class QuantLinear(nn.Module):
        def __init__(self, qp: QuantParam, bias) -> None:
            super().__init__()
            self.qp = qp
            self.bias = bias

        def forward(self, x):
            return F.linear(x, self.qp.weight(), self.bias)

    class QuantConv1D(nn.Module):  # GPT-2's Conv1D: weight (in, out), y = x W + b
        def __init__(self, qp: QuantParam, bias) -> None:
            super().__init__()
            self.qp = qp
            self.bias = bias

        def forward(self, x):
            y = x.reshape(-1, x.shape[-1]) @ self.qp.weight()
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*x.shape[:-1], y.shape[-1])

    class QuantEmbedding(nn.Module):
        def __init__(self, qp: QuantParam, like: nn.Embedding) -> None:
            super().__init__()
            self.qp = qp
            self.embedding_dim = like.embedding_dim
            self.num_embeddings = like.num_embeddings
            self.padding_idx = like.padding_idx

        @property
        def weight(self):  # for code that reads .weight (e.g. resizing, tying checks)
            return self.qp.weight()

        def forward(self, ids):
            flat = ids.reshape(-1)
            uniq, inv = torch.unique(flat, return_inverse=True)
            rows = self.qp.rows(uniq)[inv]
            return rows.reshape(*ids.shape, self.embedding_dim)

    return QuantLinear, QuantConv1D, QuantEmbedding


def _resolve(names: list[str], wanted: str) -> str | None:
    """Model parameter name for a stored tensor name (the file may add or drop a prefix)."""
    if wanted in names:
        return wanted
    hits = [n for n in names if n.endswith("." + wanted) or wanted.endswith("." + n)]
    return hits[0] if len(hits) == 1 else None


def attach(root, stored: Mapping[str, StoredQuantised], floats: Mapping[str, np.ndarray]) -> dict:
    """Turn the float module ``root`` into the compressed model, in place.

    ``stored``: quantised tensors by stored name; ``floats``: float16/float32-stored tensors (their
    decoded values).  Returns ``{"quant": {name: QuantParam}, "floats": {name: Parameter}, "frozen": [...]}``:
    the float leftovers become trainable parameters; quantised tensors held by an unsupported module type
    are loaded decoded and frozen (listed in ``frozen``).
    """
    torch = _torch()
    nn = torch.nn
    QuantLinear, QuantConv1D, QuantEmbedding = _wrappers()
    params = dict(root.named_parameters(remove_duplicate=False))
    buffers = dict(root.named_buffers())
    names = list(params)
    holders: dict[int, list[tuple[nn.Module, str, nn.Module]]] = {}
    for _, mod in root.named_modules(remove_duplicate=False):
        for cname, child in mod.named_children():
            w = getattr(child, "weight", None)
            if isinstance(w, nn.Parameter):
                holders.setdefault(id(w), []).append((mod, cname, child))
    quant: dict[str, QuantParam] = {}
    frozen: list[str] = []
    for sname, sq in stored.items():
        pname = _resolve(names, sname)
        if pname is None:
            log.warning("fine-tuning: stored tensor %s has no parameter in the model; left as stored", sname)
            continue
        p = params[pname]
        places = holders.get(id(p), [])
        if not places or not all(isinstance(c, (nn.Linear, nn.Embedding)) or type(c).__name__ == "Conv1D"
                                 for _, _, c in places):
            with torch.no_grad():
                p.copy_(torch.from_numpy(sq.decoded()).reshape(p.shape))
            p.requires_grad_(False)
            frozen.append(sname)
            continue
        qp = QuantParam(sq)
        quant[sname] = qp
        for parent, cname, child in places:
            if isinstance(child, nn.Embedding):
                new = QuantEmbedding(qp, child)
            elif isinstance(child, nn.Linear):
                new = QuantLinear(qp, child.bias)
            else:
                new = QuantConv1D(qp, child.bias)
            setattr(parent, cname, new)
    float_params: dict[str, nn.Parameter] = {}
    for sname, values in floats.items():
        pname = _resolve(names, sname)
        if pname is not None:
            p = params[pname]
            with torch.no_grad():
                p.copy_(torch.from_numpy(np.asarray(values, dtype=np.float32)).reshape(p.shape))
            p.requires_grad_(True)
            float_params[sname] = p
        else:
            bname = _resolve(list(buffers), sname)
            if bname is not None and buffers[bname].dtype.is_floating_point:
                with torch.no_grad():
                    buffers[bname].copy_(torch.from_numpy(np.asarray(values)).reshape(buffers[bname].shape))
    for p in root.parameters():  # everything not stored in the archive stays as it is
        if all(p is not q for q in float_params.values()):
            p.requires_grad_(False)
    for qp in quant.values():
        qp.rho.requires_grad_(True)
        if qp.oval is not None:
            qp.oval.requires_grad_(True)
    return {"quant": quant, "floats": float_params, "frozen": frozen}


def find_blocks(root):
    """The transformer blocks: the longest ``nn.ModuleList`` of identical modules (BERT ``encoder.layer``,
    Llama/Qwen ``model.layers``, GPT-2 ``transformer.h``)."""
    torch = _torch()
    best = None
    for _, mod in root.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 0 \
                and len({type(c) for c in mod}) == 1 and (best is None or len(mod) > len(best)):
            best = mod
    return best
