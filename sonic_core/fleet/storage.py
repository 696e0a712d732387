"""The fleet's files (each job's inputs and its video) in a local folder or any fsspec URL (``s3://bucket/prefix``
for S3, MinIO or any S3-compatible server, through s3fs). A file is written under a temporary name and moved into
place when whole, so a file that exists is complete: that is how a worker knows a re-delivered job has already
finished.

An S3-compatible server other than AWS is named by fsspec's configuration, read from the environment of every
process: ``FSSPEC_S3_ENDPOINT_URL=http://minio:9000`` (or ``FSSPEC_S3='{"endpoint_url": ...}'``), with the
credentials in ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or any source botocore reads)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ..errors import SonicDependencyError, SonicInputError

VIDEO = "video.mp4"


class JobStorage:
    """Files of job ``job_id`` live under ``<url>/jobs/<job_id>/``."""

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ModuleNotFoundError:
            raise SonicDependencyError("the fleet's storage needs fsspec: pip install -r requirements-service.txt") \
                from None
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise SonicInputError(f"storage URL {url!r} cannot be used ({exc}): pass a folder or an fsspec URL "
                                  "whose filesystem is installed (s3:// needs s3fs)") from None
        self.url = url
        self.fs.makedirs(self.root, exist_ok=True)

    def path(self, job_id: str, name: str) -> str:
        return f"{self.root.rstrip('/')}/jobs/{job_id}/{name}"

    def exists(self, job_id: str, name: str) -> bool:
        path = self.path(job_id, name)
        self.fs.invalidate_cache(path)  # another process (a worker that died) may have written it since a listing
        return self.fs.exists(path)

    def put(self, local: str | Path, job_id: str, name: str) -> str:
        """Copy a local file in as ``name``, whole or not at all; returns its path in the storage."""
        final = self.path(job_id, name)
        partial = f"{final}.{uuid.uuid4().hex[:8]}.partial"
        self.fs.makedirs(final.rpartition("/")[0], exist_ok=True)
        self.fs.put_file(str(local), partial)
        self.fs.mv(partial, final)
        return final

    def get(self, job_id: str, name: str, local: str | Path) -> Path:
        with self._missing(job_id, name):
            self.fs.get_file(self.path(job_id, name), str(local))
        return Path(local)

    def open(self, job_id: str, name: str) -> IO[bytes]:
        with self._missing(job_id, name):
            return self.fs.open(self.path(job_id, name), "rb")

    def size(self, job_id: str, name: str) -> int:
        with self._missing(job_id, name):
            return int(self.fs.size(self.path(job_id, name)))

    @contextmanager
    def _missing(self, job_id: str, name: str) -> Iterator[None]:
        """A file that is not there as one line naming the job, the file and the storage."""
        try:
            yield
        except FileNotFoundError:
            raise SonicInputError(f"job {job_id} has no file {name!r} in the storage {self.url}: it was removed, or "
                                  "SONIC_FLEET_STORAGE differs between the gateway and the workers") from None

    def remove(self, job_id: str) -> None:
        """Every file of the job (a job refused after its inputs were stored)."""
        folder = self.path(job_id, "")
        if self.fs.exists(folder):
            self.fs.rm(folder, recursive=True)
