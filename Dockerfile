# One image for every service of docker-compose.yml: Ray head and workers, the search driver
# and TensorBoard (see docs/cluster.md). CPU only: trials train on the CPU.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FSDD_CACHE=/cache \
    RAY_USAGE_STATS_ENABLED=0

# soundfile needs the libsndfile shared library; the synthetic voices (fsdd.synth) its speech engines.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libsndfile1 \
       espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user. The mount points exist in the image and belong to it, so that the
# named volumes docker creates for them (/results, /cache) start out writable by it.
RUN useradd --create-home --uid 1000 kws \
    && mkdir -p /app /results /cache /data/recordings \
    && chown kws:kws /results /cache

WORKDIR /app

# The dependencies first, in a layer of their own (torch is large): a change to the code
# does not reinstall them. The stub packages only let pip resolve pyproject.toml.
# ray[default] adds what the Ray dashboard needs (the project itself asks for ray[tune] only).
COPY pyproject.toml README.md ./
RUN mkdir fsdd search \
    && touch fsdd/__init__.py search/__init__.py \
    && pip install ".[piper]" "ray[default]" \
    && pip uninstall -y tinykws-search \
    && rm -rf fsdd search build ./*.egg-info

COPY fsdd ./fsdd
COPY search ./search
COPY configs ./configs
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && python -c "import fsdd.features, search.tuner, torchaudio, soundfile, aiohttp_cors"

USER kws
CMD ["python", "-m", "search.run", "--help"]
