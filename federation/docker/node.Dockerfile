# The vantage6 4.15.2 node, built here because the official image cannot be pulled on this machine.
ARG PYTHON=local/python:3.11
FROM ${PYTHON} AS build
# The node pins psutil==5.9.0, which has no wheel for Python 3.11: it is compiled, so gcc is needed.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev python3-dev \
 && rm -rf /var/lib/apt/lists/*
# flask is imported by the node's proxy server but listed only as a development extra. Without
# websocket-client the node's socket falls back to long polling, whose batched log lines the server
# rejects ("Too many packets in payload").
RUN python3 -m venv /opt/vantage6 \
 && /opt/vantage6/bin/pip install --no-cache-dir --disable-pip-version-check \
        vantage6-node==4.15.2 flask==3.1.3 websocket-client==1.9.2

FROM ${PYTHON}
COPY --from=build /opt/vantage6 /opt/vantage6
ENV PATH=/opt/vantage6/bin:$PATH PROXY_SERVER_PORT=80
