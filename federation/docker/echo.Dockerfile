# vantage6's own cost of a round, for comparison: the algorithm image with ppsdg swapped for an
# algorithm that hands its input's message straight back (echo/ppsdg_echo.py). The same base, the
# same vantage6 wrapper and entry point; no torch, no training.
ARG ALGORITHM=local/ppsdg:federation
FROM ${ALGORITHM}
COPY ppsdg_echo.py /opt/ppsdg-echo/
ENV PKG_NAME=ppsdg_echo PYTHONPATH=/opt/ppsdg-echo
