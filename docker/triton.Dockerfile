# syntax=docker/dockerfile:1
# Triton with this project's model repository baked in: an image that serves the encoders without a
# volume (a registry push, a cluster without ReadWriteMany storage). docker-compose.yml and k8s/ mount
# the repository instead; both run the same official image and the same flags.
#
# The ONNX graphs are generated, never committed: export them into model_repository/ before building.
#   pip install -e ".[export]"
#   python -m export text BAAI/bge-m3 --out model_repository
#   python -m export clip jinaai/jina-clip-v2 --trust-remote-code --dim 1024 --out model_repository
#   docker build -f docker/triton.Dockerfile -t anime-vector-triton:0.1.0 .
# or, from the demo's repository (make export-demo):
#   docker build -f docker/triton.Dockerfile --build-arg MODEL_REPOSITORY=var/model_repository \
#     -t anime-vector-triton:demo .
#
# docker/triton.Dockerfile.dockerignore (BuildKit reads it instead of the root .dockerignore) lets the
# graphs into the build context, which the root .dockerignore keeps out of the façade's builds.
# The façade needs the same manifests and tokenizers: mount the same folder beside it.

ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}

ARG MODEL_REPOSITORY=model_repository
# Root-owned and world-readable: Triton only reads the repository.
COPY ${MODEL_REPOSITORY}/ /models/

# The official images ship this non-root user (uid 1000) for exactly this.
USER triton-server

# 8000 HTTP (health: /v2/health/live, /v2/health/ready), 8001 gRPC (the façade's TRITON_URL), 8002 metrics.
EXPOSE 8000 8001 8002

# python3 is part of the -py3 images (Python backend); curl is not guaranteed.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4)"]

# CMD, not ENTRYPOINT: the image's entrypoint (nvidia_entrypoint.sh) runs first and execs this.
CMD ["tritonserver", "--model-repository=/models", "--strict-readiness=true", "--allow-metrics=true"]
