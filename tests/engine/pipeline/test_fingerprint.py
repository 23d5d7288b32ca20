"""Every pipeline run's manifest carries its settings fingerprint, equal to what its spec and model say."""

from engine.catalog.methods import CATALOG
from engine.runfolder.runformat import read_manifest


def test_the_tiny_run_records_its_fingerprint(tiny_run, tiny_spec):
    m = read_manifest(tiny_run)
    fp = m["fingerprint"]
    assert fp["loss_positions"] == m["spec"]["train"]["loss_on"] == "response" and fp["prompt_masked"] is True
    assert fp["preprocessing"] == "clean"
    assert fp["precision"] == {"model": "float32", "gradients": "float32",
                               "scoring_dtype": {name: "float64" for name in m["methods"]
                                                 if "dtype" in CATALOG[name].params.__dataclass_fields__}}
    assert "random" not in fp["precision"]["scoring_dtype"]  # a seeded hash: no arithmetic to be precise in
    assert fp["pad_attention"] == "none"
    assert fp["attention"] == "sdpa"  # transformers' default kernel for the tiny Llama on torch 2.x
    damped = {name for name in m["methods"] if "lambda_c" in CATALOG[name].params.__dataclass_fields__}
    assert damped == {"datainf", "lissa", "lissa_paper", "exact", "ekfac", "kfac", "datainf_proj"}
    assert fp["damping"] == {name: m["spec"]["scoring"]["lambda_c"] for name in m["methods"] if name in damped}
    assert fp["projection"] == {name: {"dim": 128, "seed": 0, "kind": "rademacher"}
                                for name in ("gradsim_proj", "gradcos_proj", "datainf_proj")}
    assert "one query per test sample" in fp["query"]
