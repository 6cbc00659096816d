# CUDA image for real runs: llm-unlearn with its GPU extras (bitsandbytes, and llm-compressor for
# GPTQ/AWQ). Not built in CI: there is no Docker there; hadolint lints this file.
#   docker build -t llm-unlearn --build-arg EXTRAS=bnb .
#   docker run --gpus all -v "$PWD/runs:/work/runs" -v "$HOME/.cache/huggingface:/cache/huggingface" \
#       llm-unlearn run recipes/npo_gdr_news.yaml
# EXTRAS picks the extras. The default, gptq,bnb, gets llm-compressor, which pins transformers<=5.17:
# its TrainingArguments lack activation_checkpointing, so the MUSE recipes (*_news, *_books), which
# set it, fail validation there (demo and demo_full run). `--set` cannot drop that key:
# copy the recipe with gradient_checkpointing: true instead, or build with EXTRAS=bnb (newest
# transformers, no GPTQ/AWQ), as above.
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04

ARG EXTRAS=gptq,bnb

# The CUDA libraries come with the torch wheel; the base image brings the user-space driver setup.
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/cache/huggingface \
    LLM_UNLEARN_CACHE=/cache/llm_unlearn

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /work
COPY pyproject.toml README.md ./
COPY llm_unlearn ./llm_unlearn
COPY recipes ./recipes
# Not editable: the image holds the package as built; recipes/ stays beside it for `run recipes/...`
# and `accelerate launch --config_file recipes/accelerate/...`. DL3013 asks for pinned versions:
# this installs the local source, whose dependencies pyproject.toml bounds.
# hadolint ignore=DL3013
RUN pip install ".[${EXTRAS}]"

ENTRYPOINT ["llm-unlearn"]
CMD ["--help"]
