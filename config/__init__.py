from config import checks  # noqa: F401 - registers Portico's deploy checks
from config.celery import app as celery_app

__all__ = ["celery_app"]
