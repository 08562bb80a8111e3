FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Runtime dependencies only: tests, lint, SDKs, Playwright and schemathesis are in
# requirements-dev.txt, which the image does not install.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Production settings build the manifest whitenoise serves from; they insist on secrets, so
# this step gets throwaway ones (nothing is encrypted or signed during collectstatic).
RUN SECRET_KEY=collectstatic-only \
    PORTICO_ENCRYPTION_KEY="$(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
    python manage.py collectstatic --noinput \
    && useradd --create-home --uid 1000 portico \
    && mkdir -p var/spool \
    && chown portico:portico /app \
    && chown -R portico:portico /app/var

# /app is writable for celery beat's schedule file; var/ holds the log spool.
USER portico

EXPOSE 8000
CMD ["uvicorn", "config.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--loop", "uvloop", "--http", "httptools", "--lifespan", "on"]
