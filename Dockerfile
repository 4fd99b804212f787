# GPU image for running phyray on a Ray cluster (KubeRay manifests in cluster/).
#
#   docker build -t phyray:latest .                          # the default image
#   docker build --target phyray-phyre -t phyray:phyre .     # + PHYRE data generation (see below)
#
# The code is baked in, so every Ray pod runs the same phyray. `ray job submit --working-dir .`
# is for iteration only: Ray puts the uploaded directory first on the workers' sys.path, so it
# shadows the baked-in copy without rebuilding the image.
#
# Base: rayproject/ray (the ray-ml images are discontinued, so torch etc. are installed here).
# Its Ray (2.60.0, Python 3.11) matches the pin in pyproject.toml, so pip keeps it as is.
FROM rayproject/ray:2.60.0-py311-gpu AS phyray

# MIMALLOC_ARENA_EAGER_COMMIT=0: Arrow's allocator commits its arena as it is used, not 1 GiB at
# once (where page faults are slow, generating collision shards at 256² was 18-28 % slower; phyray/runtime.py).
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    MIMALLOC_ARENA_EAGER_COMMIT=0

# 1. torch first, pinned as scripts/setup.sh pins it. On linux x86_64 the default PyPI index
#    serves the CUDA build of torch (CUDA runtime, cuDNN and NCCL come as nvidia-* wheels), so no
#    --index-url is needed; it only needs a recent enough NVIDIA driver on the nodes. (Locally,
#    scripts/setup.sh installs the same version but asks for the CPU build.)
RUN pip install "torch==2.13.0" \
 && python -c "import torch; assert torch.version.cuda, 'expected the CUDA build of torch'; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# 2. DeepSpeed builds against the torch above (its setup.py imports torch), hence
#    --no-build-isolation. No ops are prebuilt and none are JIT-built at run time either: phyray
#    uses a torch AdamW (phyray/train/loop.py). DS_ACCELERATOR=cuda because the build has no GPU
#    to detect.
RUN DS_ACCELERATOR=cuda pip install --no-build-isolation "deepspeed==0.19.8"

# 3. phyray itself, editable, with the training extras (deepspeed, diffusers). The image runs as
#    the base image's non-root user `ray` (uid 1000, group users; it owns the base's Python, so the
#    steps above installed as it too), stated here so that no base image change makes it root, and
#    numerically, so that the kubelet can check runAsNonRoot (cluster/ pins the same ids). The
#    directory is made by it first so that pip can write phyray.egg-info there (WORKDIR alone
#    would create it owned by root).
USER 1000:100
RUN mkdir -p /home/ray/phyray
WORKDIR /home/ray/phyray
COPY --chown=ray:users . /home/ray/phyray
RUN pip install -e ".[train]" \
 && python -c "import phyray, torch, deepspeed, ray; print('phyray ready: torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'ray', ray.__version__)"


# --- Optional: PHYRE data generation (combinatorial scenes) -------------------------------------
# PHYRE 0.2.2 ships wheels only up to Python 3.9, so it runs in a sidecar venv (.venv-phyre,
# built by scripts/setup_phyre.sh) next to the Python 3.11 one above. The paper study preset
# does not use it; build this target only to generate PHYRE data on the cluster:
#   docker build --target phyray-phyre -t phyray:phyre .
# uv fetches a standalone CPython 3.9 (no deadsnakes/conda needed); setup_phyre.sh uses it as the
# base of .venv-phyre. PHYRAY_PHYRE_PYTHON points phyray at that venv directly, so it is found
# even when the code comes from a `--working-dir` upload (which has no .venv-phyre).
FROM phyray AS phyray-phyre
RUN pip install "uv>=0.5,<1" \
 && uv python install 3.9 \
 && PHYRAY_PHYRE_PYTHON="$(uv python find 3.9)" bash scripts/setup_phyre.sh \
 && .venv-phyre/bin/python -c "import phyre"
ENV PHYRAY_PHYRE_PYTHON=/home/ray/phyray/.venv-phyre/bin/python
# FVD's I3D and LPIPS's heads (hash-checked, from the package index) for combinatorial studies,
# outside the code directory so that a `--working-dir` upload still finds them.
ENV PHYRAY_WEIGHTS_DIR=/home/ray/weights
RUN PHYRAY_WEIGHTS_PYTHON=python bash scripts/fetch_weights.sh


# --- Default target: the image without PHYRE ---------------------------------------------------
# (Last stage = what a plain `docker build .` produces; BuildKit skips the PHYRE stage then.)
FROM phyray
