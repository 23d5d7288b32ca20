"""AppTest: the Jobs form shows the chosen preset's values, sends only what the user changed, takes method
parameters from their one declaration, and queues an "attribute an existing adapter" job — without torch."""

import json
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from engine.catalog.methods import method_info
from engine.errors import InputError
from engine.jobs import queue as jobs
from engine.paths import REPO_ROOT
from engine.spec.load import spec_from_dict
from engine.spec.presets import PRESETS
from engine.spec.run_spec import spec_rule
from ui.spec_form import DEVICE_FIELD, FORM_FIELDS, changes, param_changes, param_fields

JOBS = REPO_ROOT / "app_pages" / "jobs.py"


@pytest.fixture
def env(jobs_env):
    return jobs_env


def _run() -> AppTest:
    at = AppTest.from_file(str(JOBS), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def _submit(at) -> AppTest:
    at.get("form_submit_button")[0].click()
    at.run()
    assert not at.exception, at.exception
    assert any("Queued job" in s.value for s in at.success), [e.value for e in at.error]
    return at


def _queued_spec(env) -> dict:
    (job,) = jobs.list_jobs(env / "jobs")
    return json.loads((env / "jobs" / job["id"] / "spec.json").read_text())


def test_the_form_shows_the_presets_values(env):
    at = _run()
    quick = PRESETS["quick"]
    assert at.number_input(key="f_epochs").value == quick.train.epochs
    assert at.number_input(key="f_ntrain").value == quick.task.n_train_per_label
    at.selectbox(key="f_preset").set_value("paper").run()
    paper = PRESETS["paper"]
    assert at.number_input(key="f_epochs").value == paper.train.epochs
    assert at.number_input(key="f_batch").value == paper.train.batch_size
    assert at.number_input(key="f_ntrain").value is None  # the paper's full task sizes


def test_choosing_the_paper_preset_queues_the_paper_settings(env):
    at = _run()
    at.selectbox(key="f_preset").set_value("paper").run()
    at.text_input(key="f_name").input("paper-run")
    _submit(at)
    spec = _queued_spec(env)
    paper = PRESETS["paper"]
    assert spec["train"]["epochs"] == paper.train.epochs and spec["train"]["lr"] == paper.train.lr
    assert spec["train"]["batch_size"] == paper.train.batch_size and spec["lora"]["dropout"] == paper.lora.dropout
    assert spec["task"]["n_train_per_label"] is None  # the paper's task sizes, not the form's old 10


def test_only_changes_are_sent_on_top_of_the_preset():
    values = {"train.epochs": 2, "train.lr": 1e-3, "train.batch_size": 16, "lora.target_modules": ["q_proj", "v_proj"]}
    assert changes(values, "quick") == {"train": {"batch_size": 16}}  # quick has epochs 2, lr 1e-3, q/v
    assert changes({"train.epochs": 10}, "paper") == {}


def _spec_at(path: str, value) -> dict:
    *parents, leaf = path.split(".")
    out: dict = {"preset": "quick"}
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return out


@pytest.mark.parametrize("f", FORM_FIELDS, ids=lambda f: f.key)
def test_the_forms_options_and_bounds_are_the_spec_rules(f):
    r = spec_rule(f.path)
    assert f.options == tuple(r["choices"] or r["suggest"] or ()) and f.help == r["help"]
    if f.kind not in ("int", "float"):
        assert f.kind in ("choice", "multi") and f.options
        return
    lowest = (1 if f.kind == "int" else 0.0) if r["positive"] else r["minimum"]
    assert (f.minimum, f.maximum) == (lowest, r["maximum"])
    # the widget's lowest value is the spec's (a positive float's bound 0 is itself refused on submit)
    step = 1 if f.kind == "int" else 0.5
    with pytest.raises(InputError, match=f"spec field '{f.path}'"):
        spec_from_dict(_spec_at(f.path, f.minimum - step))
    if f.kind == "int" or not r["positive"]:
        spec_from_dict(_spec_at(f.path, f.minimum))
    else:
        with pytest.raises(InputError, match=f"spec field '{f.path}' must be positive"):
            spec_from_dict(_spec_at(f.path, f.minimum))


def test_the_widgets_show_the_spec_rules(env):
    at = _run()
    for f in FORM_FIELDS:
        if f.kind in ("int", "float"):
            w = at.number_input(key=f.key)
            assert (w.min, w.max) == (f.minimum, f.maximum), f.key
        else:
            w = at.selectbox(key=f.key) if f.kind == "choice" else at.multiselect(key=f.key)
            assert list(w.options) == list(f.options), f.key
    # the device box offers the spec's device choices (declared once, on RunSpec.device)
    assert DEVICE_FIELD.path == "device"
    assert at.selectbox(key="f_device").options == list(spec_rule("device")["choices"]) == ["auto", "cpu", "cuda"]


def test_method_parameters_come_from_the_catalog(env):
    lissa = {p.name for p in param_fields("lissa")}
    assert lissa == set(method_info("lissa").defaults) - {"dtype", "device", "lambda_c"}
    assert param_changes({"lissa": {"tol": 1e-4, "max_iter": 5000}}) == {"lissa": {"max_iter": 5000}}
    at = _run()
    at.text_input(key="f_name").input("tuned")
    at.number_input(key="mp_lissa_tol").set_value(1e-6)
    at.selectbox(key="mp_lissa_solver").set_value("iterative")
    _submit(at)
    spec = _queued_spec(env)
    assert spec["scoring"]["params"] == {"lissa": {"tol": 1e-6, "solver": "iterative"}}


def test_an_existing_adapter_is_queued_with_its_folders(env):
    at = _run()
    at.radio(key="f_mode").set_value("attribute an existing adapter").run()
    at.radio(key="data_source").set_value("dataset path on the worker").run()
    assert "f_epochs" not in [w.key for w in at.number_input]  # the adapter's own training is not asked for
    at.text_input(key="f_name").input("theirs")
    at.text_input(key="f_base").input("/models/base")
    at.text_input(key="f_adapter").input("/models/out")
    at.text_area(key="f_ckdirs").input("/models/out\n")
    at.text_input(key="f_dspath").input("/data/mine.jsonl")
    _submit(at)
    spec = _queued_spec(env)
    assert spec["model"] == {**spec["model"], "name": "/models/base", "adapter": "/models/out",
                             "checkpoints": ["/models/out"]}
    assert spec["task"] == {**spec["task"], "name": "file", "path": "/data/mine.jsonl"}
    assert "retrain" not in spec["analysis"]["stages"]


def test_an_adapter_job_needs_its_folder(env):
    at = _run()
    at.radio(key="f_mode").set_value("attribute an existing adapter").run()
    at.text_input(key="f_base").input("/models/base")
    at.get("form_submit_button")[0].click()
    at.run()
    assert any("model.adapter" in e.value for e in at.error)
    assert jobs.job_ids(env / "jobs") == []


def test_no_page_imports_torch(tmp_path):
    """Each page runs (AppTest) in a fresh interpreter that never loads torch: the form reads the catalog."""
    code = (
        "import sys, pathlib\n"
        "from streamlit.testing.v1 import AppTest\n"
        "pages = [pathlib.Path('app.py'), *sorted(p for p in pathlib.Path('app_pages').glob('*.py') if p.name != '__init__.py')]\n"
        "for p in pages:\n"
        "    at = AppTest.from_file(str(p), default_timeout=120).run()\n"
        "    assert not at.exception, (p, at.exception)\n"
        "    assert 'torch' not in sys.modules, p\n"
        "print(len(pages))\n"
    )
    env = {"INFLUENCE_STORE": str(tmp_path / "s.duckdb"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.strip().splitlines()[-1]) >= 8


def test_the_plan_button_shows_the_memory_plan_and_queues_nothing(env):
    """"Plan memory and disk first": the plan of the form's spec (a child process), each stage's peak, and no job."""
    at = _run()
    at.get("form_submit_button")[1].click()
    at.run(timeout=300)
    assert not at.exception, at.exception
    assert not [e.value for e in at.error]
    assert any("Memory plan for tiny" in s.value and "fits" in s.value for s in at.success), \
        [s.value for s in at.success]
    table = at.dataframe[0].value
    assert {"load", "finetune", "features"} <= set(table["stage"]) and (table["host MB"] > 0).all()
    assert not jobs.list_jobs(env / "jobs")


def test_a_spec_the_plan_cannot_read_says_why_without_a_traceback(env, tmp_path):
    at = _run()
    at.radio(key="f_mode").set_value("attribute an existing adapter").run()
    at.text_input(key="f_base").input("tiny")
    at.text_input(key="f_adapter").input(str(tmp_path / "no-adapter-here"))
    at.get("form_submit_button")[1].click()
    at.run(timeout=300)
    assert not at.exception, at.exception
    (err,) = [e.value for e in at.error]
    assert err.startswith("No plan:") and "model.adapter" in err and "Traceback" not in err
    assert not jobs.list_jobs(env / "jobs")
