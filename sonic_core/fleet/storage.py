"""The fleet's files (each job's inputs and its video) in a local folder or any fsspec URL (``s3://bucket/prefix``
for S3 or MinIO, with s3fs installed). A file is written under a temporary name and moved into place when whole,
so a file that exists is complete: that is how a worker knows a re-delivered job has already finished."""

from __future__ import annotations

import uuid
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
        return self.fs.exists(self.path(job_id, name))

    def put(self, local: str | Path, job_id: str, name: str) -> str:
        """Copy a local file in as ``name``, whole or not at all; returns its path in the storage."""
        final = self.path(job_id, name)
        partial = f"{final}.{uuid.uuid4().hex[:8]}.partial"
        self.fs.makedirs(final.rpartition("/")[0], exist_ok=True)
        self.fs.put_file(str(local), partial)
        self.fs.mv(partial, final)
        return final

    def get(self, job_id: str, name: str, local: str | Path) -> Path:
        self.fs.get_file(self.path(job_id, name), str(local))
        return Path(local)

    def open(self, job_id: str, name: str) -> IO[bytes]:
        return self.fs.open(self.path(job_id, name), "rb")

    def size(self, job_id: str, name: str) -> int:
        return int(self.fs.size(self.path(job_id, name)))

    def remove(self, job_id: str) -> None:
        """Every file of the job (a job refused after its inputs were stored)."""
        folder = self.path(job_id, "")
        if self.fs.exists(folder):
            self.fs.rm(folder, recursive=True)
