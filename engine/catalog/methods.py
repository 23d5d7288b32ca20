"""The method catalog: every attribution method's name, what it reads, and its parameters, declared once.

Each method's parameters are one frozen dataclass (as Kronfluence's argument classes): the registry
(:mod:`engine.scoring.methods`, the implementations), the defaults, spec validation (``scoring.params``), YAML and the
Jobs form all read it. This module imports no torch, so specs can be validated and forms drawn without it.

What a method reads (:attr:`MethodInfo.reads`) is one of the feature kinds of :mod:`engine.features.plan`:

- ``grads``   per-sample LoRA gradients of the train and test samples at the scored checkpoint
- ``reps``    the final-layer hidden state at the last prompt token
- ``kfac``    the K-FAC factor sums of the training samples (summed during their gradient pass)
- ``proj``    seeded random projections of the gradients (its key: proj_dim, proj_seed, proj_kind)
- ``rept``    RepT signatures (hidden state and d loss / d hidden state at the last prompt token)
- ``history`` the gradients at every checkpoint up to the scored one, with their learning-rate weights
- ``text``    the sample texts (prompt and response), for lexical baselines

Score convention of every method: ``S[j, i]`` LARGER when training sample i is MORE responsible for test sample j
(the paper's IF is -S).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from engine.catalog.fields import check_rules, coerce, rule
from engine.errors import InputError

FEATURE_KINDS = ("grads", "reps", "kfac", "proj", "rept", "history", "text")
# Projection kinds of engine.features.projection (declared here, torch-free, because parameters are validated here).
PROJECTION_KINDS = ("rademacher", "gaussian", "orthogonal")
# Parameters that the spec sets for every method that has them (scoring.lambda_c, proj_dim, proj_seed).
SHARED_PARAMS = ("lambda_c", "proj_dim", "proj_seed")


# ---------------------------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Params:
    """Every method's compute settings: ``dtype`` float64 (default) or float32; ``device`` None = where the
    training features are."""

    dtype: str = field(default="float64", metadata=rule(choices=("float64", "float32"),
                                                        help="precision of the scoring arithmetic"))
    device: str | None = field(default=None, metadata=rule(help="torch device; empty = where the features are"))


@dataclass(frozen=True)
class DampedParams(Params):
    lambda_c: float = field(default=10.0, metadata=rule(
        positive=True, help="damping lambda_l = mean(g^2) / lambda_c (larger = less damping)"))


@dataclass(frozen=True)
class LissaParams(DampedParams):
    iterations: int | None = field(default=None, metadata=rule(
        minimum=0, help="fixed number of steps; empty = iterate until the error bound is below tol"))
    scale: float | None = field(default=None, metadata=rule(
        positive=True, help="LiSSA scale; empty = the step that minimises the contraction per block"))
    tol: float = field(default=1e-4, metadata=rule(positive=True, help="bound on the relative iHVP error"))
    max_iter: int = field(default=100000, metadata=rule(minimum=1, help="most steps per block"))
    check_every: int = field(default=10, metadata=rule(minimum=1, help="steps between convergence tests"))
    solver: str = field(default="auto", metadata=rule(
        choices=("auto", "spectral", "iterative"), help="closed form (spectral) or the recursion"))


@dataclass(frozen=True)
class LissaPaperParams(DampedParams):
    iterations: int = field(default=3, metadata=rule(minimum=0, help="the paper's code runs 3 steps"))
    scale: float = field(default=1000.0, metadata=rule(positive=True, help="the paper's scale"))
    alpha: float = field(default=1.0, metadata=rule(help="step size of the paper's recursion"))


@dataclass(frozen=True)
class ProjParams(Params):
    proj_dim: int = field(default=128, metadata=rule(minimum=1, help="dimensions per LoRA block"))
    proj_seed: int = field(default=0, metadata=rule(minimum=0, help="seed of the projection matrices"))
    proj_kind: str = field(default="rademacher", metadata=rule(choices=PROJECTION_KINDS, help="projection kind"))


@dataclass(frozen=True)
class DampedProjParams(ProjParams):
    lambda_c: float = field(default=10.0, metadata=rule(positive=True, help="DataInf's damping (unprojected)"))


@dataclass(frozen=True)
class RandomParams:
    """The random baseline has no arithmetic to tune: only its seed."""

    seed: int = field(default=0, metadata=rule(minimum=0, help="seed of the random scores"))


@dataclass(frozen=True)
class Bm25Params:
    """Okapi BM25 (engine.data.lexical): term-frequency saturation k1 and length normalisation b."""

    k1: float = field(default=1.5, metadata=rule(minimum=0.0, help="term-frequency saturation (0 = presence only)"))
    b: float = field(default=0.75, metadata=rule(minimum=0.0, maximum=1.0,
                                                 help="length normalisation in [0, 1] (0 = none)"))


@dataclass(frozen=True)
class ReptParams(Params):
    balance: bool = field(default=False, metadata=rule(
        help="scale the hidden state and its gradient to unit length before joining (not in the authors' code)"))


# ---------------------------------------------------------------------------------------------- methods

# RepT as implemented here (the raw join of h and dh at the final layer) equals RepSim to every printed digit on
# every task: ||h|| >> ||dh||, so the cosine of the join is the cosine of h. The authors' version picks the layer
# of a "phase transition" found on a probing set and joins normalised parts; without their probing protocol we
# cannot check a faithful version against the paper, so RepT runs only when a spec names it (``balance: true``
# joins unit-length parts).
REPT_NOT_DEFAULT = ("by default it ranks as RepSim does (the hidden state's norm dominates the joined vector); "
                    "name it in scoring.methods to run it")


@dataclass(frozen=True)
class MethodInfo:
    """One attribution method as the rest of the system sees it (the implementation lives in engine.scoring.methods).

    reads: feature kinds (see the module docstring); params: its frozen parameter dataclass; family:
    "gradient" (scores are dot products of per-sample gradients), "representation" or "baseline" (no model:
    chance and word overlap).

    tokens: how a score splits over the training sample's tokens (``engine.scoring.tokens``). A LoRA block's
    per-sample gradient is a sum over tokens, ``g_i = sum_t dy_t x_t^T``, so

    - ``"linear"``: the training side is linear in ``g_i`` and token t's share is the score of ``g_it`` alone;
    - ``"unit:<m>"``: the training side is method ``<m>``'s (linear) one scaled to unit length per sample, so
      token t's share is ``<m>``'s share divided by the sample's norm there (gradient cosine);
    - None: the score is not a sum over the training sample's tokens (representations, baselines).

    projects: for a method on random projections of the gradients, the method it approximates (``gradsim`` for
    ``gradsim_proj``); None otherwise.

    influence: whether the score is an influence function, ``<H^-1 g(z'), g(z_i)>`` with some approximation of
    the inverse Hessian (DataInf, LiSSA, exact, K-FAC, EK-FAC); GradSim, TracIn, representations and baselines
    are not. shown: the pages' default choice when the user has picked none (:func:`default_methods`).
    """

    name: str
    reads: frozenset[str]
    params: type
    description: str
    family: str = "gradient"
    tokens: str | None = None
    projects: str | None = None  # a ``*_proj`` method: the method it computes on projected gradients
    influence: bool = False  # an influence function: an inverse-Hessian-vector product in the score
    shown: int = 0  # > 0: a page that picks methods for the user shows this one, in this order (1 first)
    # why the method is not in a spec's default methods (None: it is); a spec that names it still runs it
    not_default: str | None = None

    @property
    def has_self_influence(self) -> bool:
        """Whether s(z_i, z_i) says something: a bilinear score ``<Q(g_i), g_i>`` ("linear" tokens); a cosine
        (unit-length training side) is 1 for every sample, and representations and baselines have none."""
        return self.tokens == "linear"

    @property
    def linear_part(self) -> str | None:
        """For a ``"unit:<m>"`` method, ``<m>``; else None."""
        return self.tokens.split(":", 1)[1] if self.tokens and self.tokens.startswith("unit:") else None

    @property
    def defaults(self) -> dict[str, Any]:
        return {f.name: f.default for f in fields(self.params)}

    def make(self, values: Mapping[str, Any] | None = None, *, label: str | None = None, where: str = "") -> Any:
        """The parameter object from ``values`` (names checked, types coerced, rules checked).

        Errors read ``<label> '<where>.<name>' ...``; the default label is ``method '<name>' parameter``
        (the spec uses ``spec field`` with ``where = scoring.params.<method>``).
        """
        values = dict(values or {})
        known = self.defaults
        unknown = sorted(set(values) - set(known))
        if unknown:
            at = f" (spec field '{where}')" if where else ""
            raise InputError(f"method {self.name!r} has no parameter(s) {unknown}{at}; its parameters are "
                             f"{sorted(known)}")
        hints = _hints(self.params)
        label = label or f"method {self.name!r} parameter"
        kw = {k: coerce(hints[k], v, f"{where}.{k}" if where else k, label) for k, v in values.items()}
        p = self.params(**kw)
        check_rules(p, where, label)
        return p

    def feature_keys(self, p) -> frozenset:
        """The features this method reads with parameters ``p``: kinds, and ``("proj", dim, seed, kind)``."""
        keys = set(self.reads - {"proj"})
        if "proj" in self.reads:
            keys.add(("proj", p.proj_dim, p.proj_seed, p.proj_kind))
        return frozenset(keys)


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _m(name, reads, params, description, family="gradient", tokens="linear", projects=None, influence=False,
       shown=0, not_default=None) -> MethodInfo:
    assert set(reads) <= set(FEATURE_KINDS), reads
    return MethodInfo(name, frozenset(reads), params, description, family,
                      tokens if family == "gradient" else None, projects, influence, shown, not_default)


CATALOG: dict[str, MethodInfo] = {m.name: m for m in (
    _m("gradsim", {"grads"}, Params,
       "Gradient similarity (paper: gradient match): s = sum_l <g_l(z'), g_l(z_i)>, no Hessian.",
       shown=3),
    _m("gradcos", {"grads"}, Params,
       "Gradient cosine: GradSim on unit-length gradients, s = <g(z'), g(z_i)> / (|g(z')| |g(z_i)|).",
       tokens="unit:gradsim"),
    _m("tracin", {"history"}, Params,
       "TracIn over the checkpoints: s = sum_c eta_c <g^c(z'), g^c(z_i)> (every checkpoint up to the scored one)."),
    _m("datainf", {"grads"}, DampedParams,
       "DataInf: closed-form per-block iHVP approximation, damping lambda_l = mean(g^2)/lambda_c.",
       influence=True, shown=1),
    _m("lissa", {"grads"}, LissaParams,
       "LiSSA run to convergence (automatic scale, error-bound stopping); approaches the exact iHVP.",
       influence=True),
    _m("lissa_paper", {"grads"}, LissaPaperParams,
       "LiSSA as in the paper's code: 3 iterations, scale 1000, minus sign on lambda, no 1/scale (~= 4 x GradSim).",
       influence=True),
    _m("exact", {"grads"}, DampedParams,
       "Exact per-block iHVP with H_l = G^T G / n + lambda_l I (Woodbury when n < d_l), DataInf's damping.",
       influence=True),
    _m("ekfac", {"grads", "kfac"}, DampedParams,
       "EK-FAC: K-FAC eigenbasis with eigenvalues refit to the per-sample gradients, damping lambda_l as exact.",
       influence=True, shown=4),
    _m("kfac", {"grads", "kfac"}, DampedParams,
       "K-FAC: Kronecker-factored per-block iHVP (S ⊗ A + lambda_l I)^-1, damping lambda_l as exact.",
       influence=True),
    _m("repsim", {"reps"}, Params,
       "Representation similarity: cosine of final-layer hidden states at the last prompt token.", "representation",
       shown=2),
    _m("rept", {"rept"}, ReptParams,
       "RepT: cosine of [hidden state at the last prompt token, d loss / d that hidden state] (final layer).",
       "representation", not_default=REPT_NOT_DEFAULT),
    _m("gradsim_proj", {"proj"}, ProjParams,
       "GradSim on random projections of the gradients (k dims per LoRA block, seeded): scales to 100k samples.",
       projects="gradsim"),
    _m("gradcos_proj", {"proj"}, ProjParams,
       "Gradient cosine on random projections of the gradients (k dims per LoRA block, seeded).",
       tokens="unit:gradsim_proj", projects="gradcos"),
    _m("datainf_proj", {"proj"}, DampedProjParams,
       "DataInf on random projections of the gradients (k dims per LoRA block, seeded; unprojected damping).",
       projects="datainf", influence=True),
    _m("random", set(), RandomParams,
       "Random baseline: seeded uniform scores, a function of (seed, test id, train id) only: where chance lies.",
       "baseline"),
    _m("bm25", {"text"}, Bm25Params,
       "BM25 baseline: word overlap of the test prompt + response with each training sample (no model).",
       "baseline"),
)}

METHOD_NAMES = tuple(sorted(CATALOG))
# a spec's default: every method but those with a reason not to be, in catalog order
DEFAULT_METHODS = tuple(name for name, info in CATALOG.items() if info.not_default is None)


def default_methods(available, n: int | None = None, where=None) -> list[str]:
    """What a page shows when the user has picked no method: the ``available`` methods (those ``where(info)``
    keeps) by :attr:`MethodInfo.shown` (1 first), then the others in the order given; the first ``n`` (all when
    None)."""
    keep = [m for m in available if m in CATALOG and (where is None or where(CATALOG[m]))]
    keep += [m for m in available if m not in CATALOG and where is None]
    picked = sorted((m for m in keep if m in CATALOG and CATALOG[m].shown), key=lambda m: CATALOG[m].shown)
    picked += [m for m in keep if m not in picked]
    return picked if n is None else picked[:n]


def method_info(name: str) -> MethodInfo:
    """The catalog entry ``name``; an unknown name is an InputError listing the valid ones."""
    try:
        return CATALOG[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown method {name!r}; valid methods: {', '.join(METHOD_NAMES)}") from None


def resolve_params(name: str, shared: Mapping[str, Any], overrides: Mapping[str, Any] | None = None, *,
                   label: str | None = None, where: str = ""):
    """A method's parameter object for a run: its defaults, then the ``shared`` spec values of
    :data:`SHARED_PARAMS` it has, then its own ``overrides`` (``scoring.params.<name>``)."""
    info = method_info(name)
    values = {k: v for k, v in shared.items() if k in SHARED_PARAMS and k in info.defaults}
    values.update(overrides or {})
    return info.make(values, label=label, where=where)


def changed_params(p) -> dict[str, Any]:
    """The fields of a parameter object that differ from their defaults (what a spec or manifest records)."""
    return {f.name: getattr(p, f.name) for f in fields(p) if getattr(p, f.name) != f.default}


def params_dict(p) -> dict[str, Any]:
    return dataclasses.asdict(p)


# What a method needs that a new query (engine.query) does not have: the reason it cannot answer, per direction.
# "prompt": a new test prompt scored against the run's training samples; "candidate": a new training text scored
# against the run's test prompts. Every other method answers both from the run's query index.
_CANNOT_ANSWER = {
    "prompt": {"random": "its scores are a seeded hash of the test sample's id, and a new prompt has none"},
    "candidate": {
        "random": "its scores are a seeded hash of the training sample's id, and a candidate text has none",
        "bm25": "a candidate text would change the document frequencies of the corpus it is scored in",
    },
}
QUERY_KINDS = tuple(_CANNOT_ANSWER)


def cannot_answer(name: str, kind: str = "prompt") -> str | None:
    """Why method ``name`` cannot answer a new query of ``kind`` ("prompt" or "candidate"), or None if it can."""
    if kind not in _CANNOT_ANSWER:
        raise ValueError(f"query kind must be one of {QUERY_KINDS}, got {kind!r}")
    return _CANNOT_ANSWER[kind].get(name)
