"""pytest.ini's warning filters: a deprecation in our own packages fails the test that triggers it, other
projects' deprecations are shown, and only the named third-party ones are ignored."""

import warnings

import pytest


def _emit(category, module, message="old API"):
    """Raise ``category`` as if from ``module``; return the warnings shown (raises if the filters say error)."""
    with warnings.catch_warnings(record=True) as shown:  # keeps the filters pytest applied from pytest.ini
        warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module, registry={})
    return shown


@pytest.mark.parametrize("category", [DeprecationWarning, FutureWarning, PendingDeprecationWarning])
@pytest.mark.parametrize("module", ["engine.pipeline.run", "store.queries", "ui.common", "bench.grads", "engine"])
def test_our_own_deprecations_fail(category, module):
    with pytest.raises(category):
        _emit(category, module)


@pytest.mark.parametrize("category", [DeprecationWarning, FutureWarning])
@pytest.mark.parametrize("module", ["transformers.modeling_utils", "peft.tuners", "engines_of_someone_else"])
def test_other_projects_deprecations_are_shown(category, module):
    assert len(_emit(category, module)) == 1


def test_only_the_named_third_party_warning_is_ignored():
    message = "`is_gradient_checkpointing` is deprecated and will be removed in v6."
    assert _emit(FutureWarning, "transformers.modeling_utils", message) == []
    assert len(_emit(FutureWarning, "transformers.modeling_utils", "something else is deprecated")) == 1


def test_every_ignore_names_a_message_and_a_third_party_module(pytestconfig):
    ignores = [f for f in pytestconfig.getini("filterwarnings") if f.strip().startswith("ignore")]
    for f in ignores:
        _, message, _, module = (f.split(":") + [""] * 4)[:4]
        assert message and module and not module.startswith(("engine", "store", "ui", "bench", "scripts")), f
