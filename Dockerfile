# The resolver as a container: `elk-resolver run` against the Kafka and PostgreSQL in the
# environment (ELK_RESOLVER_*). The embedded broker and database are not used here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --system --create-home --uid 10001 resolver
WORKDIR /app

COPY pyproject.toml README.md ./
COPY elk_resolver ./elk_resolver
COPY streams ./streams
COPY handlers ./handlers
COPY schema ./schema
COPY bench ./bench
RUN pip install . && rm -rf /root/.cache

USER resolver
ENV ELK_RESOLVER_HTTP_HOST=0.0.0.0 ELK_RESOLVER_HTTP_PORT=8080 ELK_RESOLVER_LOG_JSON=true
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --retries=4 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health').status == 200 else 1)"
ENTRYPOINT ["elk-resolver"]
CMD ["run"]
