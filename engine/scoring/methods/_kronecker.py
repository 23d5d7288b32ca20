"""Shared by ``kfac`` and ``ekfac``: Kronecker-factored curvature of a LoRA block and its damped inverse.

Block l is a LoRA matrix W [out, in] applied at every token, so a sample's gradient is
``g_i = vec(Σ_t dy_t x_tᵀ) = Σ_t dy_t ⊗ x_t`` (row-major ``weight.flatten()`` order), with dy the gradient of
the sample's own loss (the mean over its loss tokens) w.r.t. the block's output. The empirical Fisher that
``exact`` inverts is ``F_l = (1/n) Σ_i g_i g_iᵀ``. K-FAC (Martens & Grosse 2015) assumes tokens uncorrelated
and inputs independent of output gradients, giving

    F_l ≈ S_l ⊗ A_l,   S_l = (1/n) Σ_i Σ_t dy_it dy_itᵀ  [out, out],   A_l = (1/N_tok) Σ_i Σ_t x_it x_itᵀ  [in, in]

(sums over real tokens only). S is normalised per sample and A per token, so that S ⊗ A has the Fisher's scale:
(1/n) Σ_i Σ_t (dy dyᵀ) ⊗ (x xᵀ) ≈ (1/n) Σ_i Σ_t dy dyᵀ ⊗ E_tok[x xᵀ]. (Kronfluence divides S by the token count
too; that only rescales K-FAC's eigenvalues and leaves EK-FAC unchanged.) With the eigendecompositions
``S = Q_S diag(s) Q_Sᵀ``, ``A = Q_A diag(a) Q_Aᵀ`` the Kronecker eigenbasis is ``Q = Q_S ⊗ Q_A`` and, for a
matrix-shaped vector V [out, in],

    (F̃_l + λ_l I)^{-1} v = Q_S [ (Q_Sᵀ V Q_A) / (Λ + λ_l) ] Q_Aᵀ        (element-wise division, Λ [out, in])

- K-FAC: ``Λ[o, i] = s_o a_i``.
- EK-FAC (George et al. 2018; Grosse et al. 2023): keep the basis, refit the eigenvalues to the per-sample
  gradients, ``Λ = (1/n) Σ_i (Q_Sᵀ G_i Q_A)²`` = the diagonal of F_l in that basis. EK-FAC equals ``exact``
  whenever F_l is diagonal in the Kronecker basis, and ``mean(Λ) = trace(F_l)/d_l = mean_i mean_k g_ik²``.

Damping: ``λ_l = mean_i mean_k g_ik² / lambda_c``, the one ``exact``/``datainf``/``lissa`` use, so all of them
precondition with the same ``λ_l``. For EK-FAC that is ``mean(Λ)/lambda_c``, i.e. Kronfluence's default
heuristic (0.1 × the mean eigenvalue) at ``lambda_c = 10``.

Factor eigendecompositions are float64 and computed once per factor object (cached by identity).
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

import torch

from engine.errors import InputError
from engine.features.types import Features, TrainData

from ._common import block_damping, block_sums, check_grads, compute, damping, memo_sums, sq_norms

_EIGEN: WeakKeyDictionary = WeakKeyDictionary()  # KroneckerFactors -> {block: (s, Q_S, a, Q_A)}


def check_factors(train: TrainData, name: str):
    """The training side's K-FAC factors, checked against its gradient blocks; InputError if unusable."""
    f = train.kfac
    if f is None:
        raise InputError(f"{name} needs the K-FAC factors of the training samples (Features.kfac): compute the "
                         "training features with engine.features.grads.sample_features(..., kfac=True)")
    if not train.widths or len(f.act) != len(train.widths) or len(f.grad) != len(train.widths):
        raise InputError(f"{name}: the K-FAC factors have {len(f.act)} blocks but there are "
                         f"{len(train.widths)} gradient blocks")
    if f.samples != train.n:
        raise InputError(f"{name}: the K-FAC factors were summed over {f.samples} samples but there are "
                         f"{train.n} training samples; they must come from the same samples")
    for l, d in enumerate(train.widths):
        out_, in_ = f.grad[l].shape[0], f.act[l].shape[0]
        if out_ * in_ != d:
            block = train.block_names[l] if l < len(train.block_names) else f"#{l}"
            raise InputError(f"{name}: block {block} has factors [{out_}, {out_}] ⊗ [{in_}, {in_}] "
                             f"but gradients of width {d}")
    return f


def _eigh(cache: dict, source: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (clamped at 0) and eigenvectors of the symmetric ``source / count`` in float64, reusing an
    equal factor's from ``cache`` (the q and v ``lora_A`` blocks of a layer share their input, hence their
    activation factor). The cache keeps the factor itself (already held by the KroneckerFactors), not a float64
    copy of it: that copy was half of the eigenbases' memory."""
    key = (tuple(source.shape), float(source.sum()), count)
    for other, eig in cache.get(key, []):
        if other is source or torch.equal(other, source):
            return eig
    w, Q = torch.linalg.eigh(source.double() / max(count, 1))
    cache.setdefault(key, []).append((source, (w.clamp(min=0), Q)))
    return cache[key][-1][1]


def forget_eigenbases(factors) -> None:
    """Drop the eigenbases kept for ``factors`` (recomputed when asked again)."""
    _EIGEN.pop(factors, None)


def eigenbasis(factors, block: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(s, Q_S, a, Q_A)`` of block ``block``: eigenvalues (clamped at 0) and eigenvectors (columns), float64."""
    cache = _EIGEN.setdefault(factors, {"blocks": {}, "matrices": {}})
    if block not in cache["blocks"]:
        s, QS = _eigh(cache["matrices"], factors.grad[block], factors.samples)
        a, QA = _eigh(cache["matrices"], factors.act[block], factors.tokens)
        cache["blocks"][block] = (s, QS, a, QA)
    return cache["blocks"][block]


def rotate(X: torch.Tensor, QS: torch.Tensor, QA: torch.Tensor) -> torch.Tensor:
    """``Q_Sᵀ X_k Q_A`` for every row k of X [k, out*in] -> [k, out, in]."""
    return QS.T @ (X.reshape(X.shape[0], QS.shape[0], QA.shape[0]) @ QA)


def kronecker_precondition(corrected: bool):
    """The per-block preconditioner of K-FAC (``corrected=False``) or EK-FAC (``corrected=True``)."""

    def precondition(G: torch.Tensor, V: torch.Tensor, *, block: int, factors,
                     lambda_c: float = 10.0) -> torch.Tensor:
        """``(F̃ + λ I)^{-1} v`` for every test row of V [m, d]; G [n, d] the block's training gradients."""
        lam = damping(G, lambda_c)
        if not bool(lam > 0):
            return torch.zeros_like(V)
        s, QS, a, QA = (t.to(device=G.device, dtype=G.dtype) for t in eigenbasis(factors, block))
        eig = rotate(G, QS, QA).square().mean(0) if corrected else torch.outer(s, a)
        C = rotate(V, QS, QA) / (eig + lam)
        return (QS @ C @ QA.T).reshape(V.shape)

    return precondition


def kronecker_queries(corrected: bool, name: str):
    """The query phase of K-FAC (``corrected=False``) or EK-FAC (``corrected=True``) from the training shards:
    per block one pass for the damping (and, for EK-FAC, the eigenvalues Λ = (1/n) Σ_i (Q_Sᵀ G_i Q_A)², summed
    in the same pass), then ``Q = Q_S [(Q_Sᵀ V Q_A) / (Λ + λ)] Q_Aᵀ`` — the numbers of
    :func:`kronecker_precondition` on all of G."""

    def queries(train: TrainData, test: Features, p) -> list[torch.Tensor]:
        check_grads(train, test)
        factors = check_factors(train, name)
        dt, dev = compute(train, p)
        out = []
        for l, v in enumerate(test.grads):
            V = v.to(device=dev, dtype=dt)
            s, QS, a, QA = (t.to(device=dev, dtype=dt) for t in eigenbasis(factors, l))
            if corrected:
                sums = memo_sums(train, ("ekfac_sums", l, dt, dev), lambda: block_sums(
                    train, l, dt, dev, lambda G: torch.cat(
                        [sq_norms(G).sum()[None], rotate(G, QS, QA).square().sum(0).ravel()])))
                lam = sums[0] / (train.n * train.widths[l] * p.lambda_c)
                eig = (sums[1:] / train.n).reshape(QS.shape[0], QA.shape[0])
            else:
                lam = block_damping(train, l, dt, dev, p.lambda_c)
                eig = torch.outer(s, a)
            if not bool(lam > 0):
                out.append(torch.zeros_like(V))
                continue
            C = rotate(V, QS, QA) / (eig + lam)
            out.append((QS @ C @ QA.T).reshape(V.shape))
        return out

    return queries
