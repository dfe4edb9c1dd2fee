"""S3 requests, made by the driver (store.S3Store) and by the Spark tasks (task_output.py): the per-process
clients, one GET that survives a body cut off by the network, and the project's explained errors. Pure: no Dagster."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from desafio_dagster.core.errors import PublishError, TransientError, first_line
from desafio_dagster.core.settings import environment

# The standard variables an S3 store reads (never shown with their values): credentials, region, endpoint.
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
IN_FLIGHT = 8  # S3 requests a process keeps in flight: each waits on the network, not the GIL

_CLIENTS: dict = {}  # per process: one pyarrow filesystem and one boto3 client per endpoint, region and key id
_CLIENTS_LOCK = threading.Lock()


def _per_process(kind: str, make: Callable[[str, str], Any]) -> Any:
    """make(endpoint URL, or "" for AWS's, region), once per process for the standard AWS variables: the
    endpoint from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (https:// unless it names a scheme), the region
    from AWS_REGION or AWS_DEFAULT_REGION. Credentials are read by the SDKs from the environment."""
    endpoint = (environment("AWS_ENDPOINT_URL_S3") or environment("AWS_ENDPOINT_URL")).strip()
    endpoint = endpoint if not endpoint or "://" in endpoint else f"https://{endpoint}"
    region = (environment("AWS_REGION") or environment("AWS_DEFAULT_REGION") or "us-east-1").strip()
    key = (kind, endpoint, region, os.environ.get("AWS_ACCESS_KEY_ID", ""))
    with _CLIENTS_LOCK:  # a client is thread-safe once made; making one is not (tasks read from threads)
        if key not in _CLIENTS:
            _CLIENTS[key] = make(endpoint, region)
        return _CLIENTS[key]


def s3_filesystem() -> Any:  # pyarrow.fs.S3FileSystem, imported on first use
    """pyarrow's S3FileSystem (listings, records), which does not read the endpoint variables by itself."""
    from pyarrow import fs

    def make(endpoint: str, region: str) -> Any:
        # allow_delayed_open: a small file is one PutObject on close, not a three-request multipart upload.
        options = {"region": region, "connect_timeout": 10, "request_timeout": 60, "allow_delayed_open": True,
                   "check_directory_existence_before_creation": False}
        if endpoint:
            parts = urlsplit(endpoint)
            options |= {"endpoint_override": parts.netloc + parts.path.rstrip("/"), "scheme": parts.scheme}
        return fs.S3FileSystem(**options)

    return _per_process("pyarrow", make)


def s3_client() -> Any:  # boto3's S3 client, imported on first use
    """boto3's S3 client: for what pyarrow's filesystem cannot do in one request (a GET without a HEAD, a
    PUT with its MD5, a batch of deletes)."""
    import boto3.session
    from botocore.config import Config

    def make(endpoint: str, region: str) -> Any:
        # The endpoint is ours (blank variables unset). Checksums only where S3 requires them: the PUTs
        # carry their Content-MD5, and a streamed CRC32 trailer is refused by some S3-compatible servers.
        # Retries: S3's 503 SlowDown, 500s, resets and timeouts, with backoff, 5 attempts in all (standard mode's
        # max_attempts counts the retries; a GET cut off mid-body is read again by s3_get, as the SDK does not).
        config = Config(ignore_configured_endpoint_urls=True, connect_timeout=10, read_timeout=60,
                        max_pool_connections=4 * IN_FLIGHT, request_checksum_calculation="when_required",
                        response_checksum_validation="when_required", retries={"mode": "standard", "max_attempts": 4})
        return boto3.session.Session().client("s3", region_name=region, endpoint_url=endpoint or None, config=config)

    return _per_process("boto3", make)


def no_bucket(uri: str, bucket: str) -> PublishError:
    return PublishError(f"cannot use {uri}: the bucket {bucket} does not exist at the endpoint "
                        f"({', '.join(AWS_VARIABLES[-2:])}, else AWS's): create it, or fix DESAFIO_OUTPUT_DIR")


# S3's answers that a later attempt may not get: throttling and the service's own failures (botocore's error codes,
# and pyarrow's names for them).
_UNAVAILABLE = re.compile(r"\b(SlowDown|InternalError|ServiceUnavailable|RequestTimeout|SLOW_DOWN|INTERNAL_FAILURE|"
                          r"SERVICE_UNAVAILABLE|REQUEST_TIMEOUT)\b|HTTP status 5\d\d")


class StoreUnavailable(PublishError, TransientError):
    """S3 kept answering with a server error or throttling after the SDK's retries: the step is tried again."""


def s3_error(error: Exception, what: str) -> PublishError:
    names = ", ".join(AWS_VARIABLES)
    cause = first_line(error).rstrip(".")
    from botocore.exceptions import ConnectionError as NetworkError
    from botocore.exceptions import HTTPClientError

    status = (getattr(error, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    network = isinstance(error, (NetworkError, HTTPClientError)) or "NETWORK_CONNECTION" in str(error)
    if (status >= 500 and status != 501) or network or _UNAVAILABLE.search(str(error)):  # 501: not supported there
        return StoreUnavailable(f"{what}: {cause}. The store kept failing through every retry with backoff: the "
                                f"step is tried again later; the previous output is untouched")
    return PublishError(f"{what}: {cause}. "
                        f"Check the bucket exists and the credentials and endpoint in the environment ({names}) "
                        f"allow it; the previous output is untouched")


def server_time(answer: dict) -> datetime.datetime:
    """The time an S3 answer was sent, by the server's clock (its Date header; a proxy may have added a second one,
    joined after the first: an HTTP date is 29 characters); this machine's clock where there is none that parses."""
    try:
        sent = parsedate_to_datetime(answer["ResponseMetadata"]["HTTPHeaders"]["date"][:29])
    except (KeyError, TypeError, ValueError):
        return datetime.datetime.now(datetime.UTC)
    return sent if sent.tzinfo else sent.replace(tzinfo=datetime.UTC)  # "-0000": UTC, says RFC 5322


def content_md5(data: bytes) -> str:
    """A PUT's Content-MD5: S3 refuses the object if the bytes it received differ from those sent."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def s3_read(path: str) -> bytes:
    """An object's bytes (path: bucket/key) in one GET (pyarrow's streams send a HEAD first)."""
    return s3_get(path)[0]


def s3_get(path: str, attempts: int = 3) -> tuple[bytes, dict]:
    """An object's bytes and the GET's answer (ETag, LastModified, the server's Date...). A body cut off by the
    network is read again: the SDK retries a request that failed, not a body it handed over."""
    from botocore.exceptions import ClientError, IncompleteReadError, ResponseStreamingError

    bucket, _, key = path.partition("/")
    client = s3_client()
    for _ in range(attempts):
        try:
            answer = client.get_object(Bucket=bucket, Key=key)
            return answer["Body"].read(), answer
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code == "NoSuchBucket":
                raise no_bucket(f"s3://{path}", bucket) from None
            if code in ("NoSuchKey", "404"):  # "404": the error's body was lost, its status was not
                raise FileNotFoundError(f"s3://{path}") from None
            raise s3_error(error, f"cannot read s3://{path}") from None
        except (ResponseStreamingError, IncompleteReadError) as error:
            cut = error
        except Exception as error:  # botocore raises several kinds
            raise s3_error(error, f"cannot read s3://{path}") from None
    raise s3_error(cut, f"cannot read s3://{path} ({attempts} attempts)")


def prefetch(read: Callable[[str], bytes], files: list[str], ahead: int = 64) -> Iterator[bytes]:
    """read(file) of each file, in order, with IN_FLIGHT reads at a time and at most `ahead` files held."""
    with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
        for start in range(0, len(files), ahead):
            yield from pool.map(read, files[start : start + ahead])


def read_s3_files(uri: str, files: list[str]) -> Iterator[bytes]:
    """In a Spark task: the bytes of files under a version's uri, in order, several requests in flight."""
    path = uri.removeprefix("s3://")
    return prefetch(lambda file: s3_read(f"{path}/{file}"), files)
