"""The method catalog and the feature plan: parameters declared once, checked with messages naming the field; the
plan is the union of what the chosen methods and analyses read."""


import pytest

from engine.catalog.methods import CATALOG, DEFAULT_METHODS, method_info, resolve_params
from engine.errors import InputError
from engine.features.plan import FeaturePlan, plan_for
from engine.scoring.methods import REGISTRY
from engine.spec.load import spec_from_dict


def test_every_catalog_method_has_one_implementation_and_back():
    assert set(CATALOG) == set(REGISTRY)
    for name, m in REGISTRY.items():
        assert m.info is CATALOG[name] and m.defaults == CATALOG[name].defaults
    assert set(DEFAULT_METHODS) <= set(CATALOG)


def test_parameters_are_checked_by_name_type_and_rule():
    info = method_info("lissa")
    assert info.make({"tol": 1e-6}).tol == 1e-6
    with pytest.raises(InputError, match=r"no parameter\(s\) \['tolerance'\]"):
        info.make({"tolerance": 1e-6})
    with pytest.raises(InputError, match="'tol' must be positive"):
        info.make({"tol": 0})
    with pytest.raises(InputError, match="'max_iter' must be an integer"):
        info.make({"max_iter": 2.5})
    with pytest.raises(InputError, match="'solver' must be one of auto, spectral, iterative"):
        info.make({"solver": "magic"})
    with pytest.raises(InputError, match="'proj_kind' must be one of"):
        method_info("gradsim_proj").make({"proj_kind": "sparse"})


def test_spec_params_override_the_shared_values_for_one_method():
    spec = spec_from_dict({"scoring": {"methods": ["datainf", "exact"], "lambda_c": 5,
                                       "params": {"datainf": {"lambda_c": 2.0}}}})
    assert spec.scoring.method_params("datainf").lambda_c == 2.0
    assert spec.scoring.method_params("exact").lambda_c == 5.0
    # a value equal to the default is dropped, so equal settings hash the same
    same = spec_from_dict({"scoring": {"methods": ["datainf"], "params": {"datainf": {"dtype": "float64"}}}})
    assert same.scoring.params == {} and same.spec_hash == spec_from_dict({"scoring": {"methods": ["datainf"]}}).spec_hash


@pytest.mark.parametrize("params, message", [
    ({"lissa": {"tol": 1e-5}}, "scoring.params.lissa' sets parameters of 'lissa', which is not in scoring.methods"),
    ({"datainf": {"lamda_c": 3}}, r"no parameter\(s\) \['lamda_c'\] \(spec field 'scoring.params.datainf'\)"),
    ({"datainf": {"lambda_c": -1}}, "spec field 'scoring.params.datainf.lambda_c' must be positive"),
    ({"datainf": {"lambda_c": "x"}}, "spec field 'scoring.params.datainf.lambda_c' must be a number"),
    ({"datainf": 3}, "spec field 'scoring.params.datainf' must be a mapping"),
])
def test_bad_spec_params_name_the_field(params, message):
    with pytest.raises(InputError, match=message):
        spec_from_dict({"scoring": {"methods": ["datainf"], "params": params}})


def test_the_plan_is_the_union_of_what_methods_and_analyses_read():
    def plan(methods, analyses=()):
        return plan_for({m: resolve_params(m, {}) for m in methods}, analyses)

    assert plan(["repsim"]) == FeaturePlan(reps=True)
    assert plan(["gradsim", "repsim"]) == FeaturePlan(grads=True, reps=True)
    assert plan(["tracin"]) == FeaturePlan(history=True)
    assert plan(["ekfac"]) == FeaturePlan(grads=True, kfac=True)
    assert plan(["rept"]) == FeaturePlan(rept=True)
    assert plan(["repsim"], ["ihvp"]) == FeaturePlan(grads=True, reps=True, kfac=True)
    p = plan_for({"gradsim_proj": resolve_params("gradsim_proj", {"proj_dim": 16}),
                  "datainf_proj": resolve_params("datainf_proj", {"proj_dim": 32})})
    assert p.projections == ((16, 0, "rademacher"), (32, 0, "rademacher")) and not p.keep_train_grads
    # TracIn's history makes the plan take every checkpoint up to the last scored one
    assert plan(["tracin"]).checkpoints([3]) == [1, 2, 3]
    assert plan(["gradsim"]).checkpoints([3]) == [3]


def test_the_pipeline_names_no_method():
    from pathlib import Path

    import engine.pipeline.run as pipeline

    text = Path(pipeline.__file__).read_text()
    for name in CATALOG:
        assert f'"{name}"' not in text and f"'{name}'" not in text, name
