# vmemlab browser sandbox: `docker build -t vmemlab . && docker run -p 5000:5000 vmemlab`
# Mirrors the README's set-up (`make run`): a venv with `pip install -e '.[web]'`, the vendor
# assets from npm (`npm ci` + scripts/vendor.sh); it serves with gunicorn (one gthread worker
# process, deploy/gunicorn.conf.py) on 0.0.0.0:5000, and `docker stop` (SIGTERM) closes every
# machine. Several of these behind nginx: docker-compose.yml. The committed guest image is
# used as is: no compilers in either stage's output, none in the final image.

# ---- vendor assets (socket.io-client, plotly.js-dist-min) from npm -------------------------
FROM node:20-bookworm-slim AS vendor
WORKDIR /src
COPY package.json package-lock.json ./
COPY scripts/vendor.sh scripts/vendor.sh
RUN sh scripts/vendor.sh

# ---- the server ------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 vmemlab && mkdir -p /app && chown vmemlab:vmemlab /app
WORKDIR /app
COPY --chown=vmemlab:vmemlab . .
COPY --from=vendor --chown=vmemlab:vmemlab /src/static/vendor static/vendor
USER vmemlab
RUN python -m venv .venv && .venv/bin/pip install -q -e '.[web]'
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/app/.venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/healthz', timeout=4)"]
ENV VMEMLAB_BIND=0.0.0.0:5000
STOPSIGNAL SIGTERM
CMD ["/app/.venv/bin/gunicorn", "-c", "deploy/gunicorn.conf.py"]
