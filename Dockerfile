# The studentperf prediction API. Build from the repository root:
#   docker build -t studentperf-api .
#   docker run -p 8000:8000 -e WORKERS=2 -v "$PWD/outputs/models/registry/<version>:/model:ro" studentperf-api
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HOST=0.0.0.0 PORT=8000 WORKERS=1 STUDENTPERF_MODEL=/model \
    STUDENTPERF_KEYS=/secrets/keys.json STUDENTPERF_MONITORING_STORE=sqlite:////data/predictions.sqlite STUDENTPERF_AUDIT=/data/audit.jsonl
RUN useradd --create-home --uid 10001 app
WORKDIR /app
# only what installing and serving need (see .dockerignore)
COPY settings.ini setup.py README.md params.yaml ./
COPY studentperf ./studentperf
COPY deploy ./deploy
RUN sh deploy/app.sh install && chown -R app /app
USER app
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health', timeout=2)" || exit 1
# mount the model at /model, a key store (`studentperf keys create --store keys.json`) at /secrets/keys.json and a volume at
# /data for the prediction log; or set STUDENTPERF_MONITORING_STORE to a PostgreSQL URL shared by several replicas
CMD ["sh", "deploy/app.sh", "serve"]
