"""An SDK worker process of a multi-worker Beam run: Beam's ``sdk_worker_main``, set up as tidegate's runs are.

The pipeline process (``beam_worker``) starts one of these per worker the job asks for.
"""

from __future__ import annotations

import os
import sys

__all__ = ["anonymous_gcs_for_an_emulator", "main"]

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


def anonymous_gcs_for_an_emulator() -> None:
    """With a GCS emulator and no credentials configured, Beam's GCS client connects anonymously at once.

    Without this, Beam looks for Google's default credentials first and retries the search
    with backoff for about 16 s before it connects anonymously all the same. Credentials the
    user configured (``GOOGLE_APPLICATION_CREDENTIALS``) are left to Beam.
    """
    if not os.environ.get(EMULATOR_ENV) or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:  # Beam without its GCP extra: it connects anonymously anyway
        return
    credentials = auth._Credentials
    with credentials._credentials_lock:
        if not credentials._credentials_init:
            credentials._credentials = None
            credentials._credentials_init = True


def main() -> None:
    anonymous_gcs_for_an_emulator()
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
