"""Token-level random inputs for the K-FAC / EK-FAC tests, and the slow explicit-matrix references.

Every sample i has T_i tokens with inputs x_it [in] and output gradients dy_it [out] per block; its gradient is
g_i = Σ_t dy_it ⊗ x_it (row-major [out, in] flattening, as engine.features.grads) and the factors are the plain sums
Σ x xᵀ and Σ dy dyᵀ, exactly what engine.features.grads collects.
"""

import numpy as np
import torch

from engine.features.grads import KroneckerFactors
from engine.features.types import Features

from ._helpers import np_damping

SHAPES = ((4, 5), (3, 8), (1, 6), (6, 2))  # (out, in) per block: d = 20, 24, 6, 12 around n = 12


def token_features(seed: int = 0, n: int = 12, m: int = 4, shapes=SHAPES, max_tokens: int = 5):
    """(train, test) Features built from random tokens; train carries its KroneckerFactors."""
    gen = torch.Generator().manual_seed(seed)

    def side(k, with_factors):
        grads, act, grad = [], [], []
        lengths = torch.randint(1, max_tokens + 1, (k,), generator=gen).tolist()
        for b, (o, i) in enumerate(shapes):
            scale = 0.5 + b  # blocks on different scales, as real LoRA A and B blocks
            xs = [scale * torch.randn(t, i, generator=gen, dtype=torch.float64) for t in lengths]
            dys = [torch.randn(t, o, generator=gen, dtype=torch.float64) / t for t in lengths]
            grads.append(torch.stack([(dy.T @ x).reshape(-1) for x, dy in zip(xs, dys)]).float())
            act.append(sum(x.T @ x for x in xs))
            grad.append(sum(dy.T @ dy for dy in dys))
        factors = KroneckerFactors(act, grad, sum(lengths), k) if with_factors else None
        return Features(grads=grads, block_names=tuple(f"block{b}" for b in range(len(shapes))), kfac=factors)

    return side(n, True), side(m, False)


def explicit_scores(train: Features, test: Features, corrected: bool, lambda_c: float = 10.0) -> np.ndarray:
    """S[j, i] = Σ_l v_jlᵀ H_l⁻¹ g_il with the d x d matrix H_l built explicitly with torch.kron and solved.

    K-FAC: H = kron(S, A) + λ I.  EK-FAC: H = Q diag(Λ) Qᵀ + λ I, Q = kron(Q_S, Q_A), Λ_k = mean_i (Qᵀ g_i)_k²
    (a loop over samples).
    """
    f = train.kfac
    S_out = np.zeros((test.n, train.n))
    for l, (g, v) in enumerate(zip(train.grads, test.grads)):
        G, V = g.double(), v.double()
        S = f.grad[l] / f.samples
        A = f.act[l] / f.tokens
        lam = np_damping(G.numpy(), lambda_c)
        if corrected:
            Q = torch.kron(torch.linalg.eigh(S).eigenvectors, torch.linalg.eigh(A).eigenvectors)
            eig = torch.zeros(G.shape[1], dtype=torch.float64)
            for i in range(train.n):
                eig += (Q.T @ G[i]) ** 2 / train.n
            H = Q @ torch.diag(eig) @ Q.T
        else:
            H = torch.kron(S, A)
        H = H + lam * torch.eye(G.shape[1], dtype=torch.float64)
        S_out += (torch.linalg.solve(H, V.T).T @ G.T).numpy()
    return S_out
