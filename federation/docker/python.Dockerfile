# Python 3.11 on the locally imported Debian, for the node and algorithm images: nothing is pulled.
# The build context is a temporary folder whose ca/ holds the machine's extra CA certificates, so
# pip and apt inside later builds trust the same TLS as the host. They never enter the repository.
ARG DEBIAN=local/debian:bookworm
FROM ${DEBIAN}
COPY ca/ /usr/local/share/ca-certificates/
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates python3 python3-venv \
 && update-ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
