"""The fleet's storage in a local folder and in S3 over HTTP (moto's S3-compatible server, reached through s3fs as
any S3 or MinIO is): a file is there whole or not at all, reads back byte for byte, and a missing one is a
one-line error naming the job, the file and the storage."""

from __future__ import annotations

import uuid

import fsspec
import pytest
from fleet_harness import start_s3

from sonic_core.errors import SonicInputError
from sonic_core.fleet.storage import VIDEO, JobStorage


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    service, env = start_s3(tmp_path_factory.mktemp("s3"))
    try:
        yield env
    finally:
        service.stop()


@pytest.fixture(params=["folder", "s3"])
def storage(request, tmp_path, monkeypatch) -> JobStorage:
    if request.param == "folder":
        return JobStorage(str(tmp_path / "storage"))
    env = request.getfixturevalue("s3_env")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # this process imported fsspec before the variables were set: apply them as a fresh process would
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": env["FSSPEC_S3_ENDPOINT_URL"]})
    return JobStorage(f"s3://sonic-fleet-{uuid.uuid4().hex[:8]}/prefix")


def test_a_file_is_stored_whole_and_reads_back(storage, tmp_path):
    payload = bytes(range(256)) * 4099  # ~1 MiB, more than one S3 read block
    (tmp_path / "local.mp4").write_bytes(payload)
    stored = storage.put(tmp_path / "local.mp4", "job-1", VIDEO)
    assert storage.fs.ls(stored.rpartition("/")[0], detail=False) == [stored]  # no partial name left behind
    assert storage.exists("job-1", VIDEO) and storage.size("job-1", VIDEO) == len(payload)
    with storage.open("job-1", VIDEO) as handle:
        assert handle.read() == payload
    assert storage.get("job-1", VIDEO, tmp_path / "back.mp4").read_bytes() == payload
    storage.remove("job-1")
    assert not storage.exists("job-1", VIDEO)


def test_a_failed_write_leaves_no_file(storage, tmp_path):
    with pytest.raises(FileNotFoundError):
        storage.put(tmp_path / "absent.mp4", "job-2", VIDEO)
    assert not storage.exists("job-2", VIDEO)


@pytest.mark.parametrize("read", [lambda s, tmp: s.open("job-3", VIDEO), lambda s, tmp: s.size("job-3", VIDEO),
                                  lambda s, tmp: s.get("job-3", VIDEO, tmp / "out.mp4")], ids=["open", "size", "get"])
def test_a_missing_file_is_one_line_naming_it(storage, tmp_path, read):
    with pytest.raises(SonicInputError) as caught:
        read(storage, tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "job-3" in message and VIDEO in message and storage.url in message
