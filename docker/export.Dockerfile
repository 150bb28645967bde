# syntax=docker/dockerfile:1
# The exporter (`python -m export`): Hugging Face checkpoint -> ONNX graph + parity check -> Triton
# entry. Used by the model-export Job (k8s/jobs/model-export.yaml) to fill the model-repository
# volume; not part of the serving path. CPU PyTorch: exporting needs no GPU.
#
#   docker build -f docker/export.Dockerfile -t anime-vector-service-export:0.1.0 .
#   docker run --rm -v $PWD/model_repository:/models anime-vector-service-export:0.1.0 \
#     text BAAI/bge-m3 --out /models

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The CPU build of PyTorch from its own index (the default wheel pulls in several GB of CUDA
# libraries). Same version as the Makefile's TORCH_SPEC.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url ${TORCH_INDEX_URL} "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
COPY export/ export/
RUN pip install --prefer-binary ".[export]"

FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
RUN groupadd --system --gid ${APP_UID} app \
    && useradd --system --uid ${APP_UID} --gid app --create-home --home-dir /home/app \
       --shell /usr/sbin/nologin app \
    && mkdir -p /models \
    && chown app:app /models

COPY --from=build /opt/venv /opt/venv

# HF_HOME: where checkpoints are downloaded (mount a volume there to keep them between runs).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/home/app/.cache/huggingface

WORKDIR /home/app
USER ${APP_UID}:${APP_UID}

ENTRYPOINT ["python", "-m", "export"]
CMD ["--help"]
