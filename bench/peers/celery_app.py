"""The Celery application the comparison's workers load (`celery -A celery_app`).

Broker and result backend are the same Redis database, chosen by the driver
through GZ_BENCH_CELERY_URL so the run never touches keys of anything else on
that server. Settings stay at Celery's defaults except where noted.
"""

import os
import time

from celery import Celery

URL = os.environ.get("GZ_BENCH_CELERY_URL", "redis://127.0.0.1:6379/13")

app = Celery("gzbench", broker=URL, backend=URL)
app.conf.update(
    # Silences the 5.x deprecation warning; startup behaviour is unchanged.
    broker_connection_retry_on_startup=True,
    # Results are read once by the submitting client; the default of one day
    # would only leave keys behind if cleanup failed.
    result_expires=600,
    worker_hijack_root_logger=False,
)


@app.task
def noop(*_args):
    return None


@app.task
def sleep10ms(*_args):
    time.sleep(0.01)
    return None
