# The ppsdg vantage6 algorithm image: a node runs it with the task's input and its own database.
#
#   docker build -t ppsdg .                                  # from a registry's python image
#   docker build --build-arg BASE=local/python:3.11 \
#       --build-arg TORCH_INDEX=http://127.0.0.1:8000/ --network host -t ppsdg .   # offline
#
# BASE must provide python3 (>= 3.10) with pip and venv, and setpriv (util-linux). TORCH_INDEX, when
# set, is a --find-links location holding the torch wheel (for example /opt/wheels served over http),
# so no CUDA build is downloaded; without it torch comes from PyTorch's CPU index.
ARG BASE=python:3.11-slim
FROM ${BASE}

RUN useradd --create-home --uid 10001 ppsdg
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=
ENV VIRTUAL_ENV=/opt/ppsdg PATH=/opt/ppsdg/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv "$VIRTUAL_ENV" \
 && if [ -n "$TORCH_INDEX" ]; then \
        pip install --find-links "$TORCH_INDEX" "torch==${TORCH_VERSION}"; \
    else \
        pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"; \
    fi

WORKDIR /opt/ppsdg-src
# The dependencies first, from setup.py alone (empty packages stand in for the code), so that a code
# change rebuilds only the small layers below.
COPY setup.py pyproject.toml ./
RUN mkdir ppsdg backends && touch ppsdg/__init__.py backends/__init__.py \
 && pip install . && pip uninstall --yes ppsdg && rm -rf ppsdg backends build ./*.egg-info
COPY README.md ./
COPY ppsdg ppsdg
COPY backends backends
COPY train.py main.py ./
RUN pip install --no-deps . && python -c "import ppsdg.algorithm, ppsdg.synthesizers, train, backends.vantage6"

# The work runs as ppsdg; the entry point starts as root only to make the node's output file writable.
COPY docker-entrypoint.sh /usr/local/bin/ppsdg-entrypoint
ENV PKG_NAME=ppsdg HOME=/home/ppsdg
ENTRYPOINT ["ppsdg-entrypoint"]
CMD ["python", "-c", "from vantage6.algorithm.tools.wrap import wrap_algorithm; wrap_algorithm()"]
