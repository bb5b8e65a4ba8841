"""Where a dataset lives: a local directory or an ``s3://bucket/prefix`` (AWS S3 or any
S3-compatible store). Credentials and region come from the usual AWS environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` or
``AWS_DEFAULT_REGION``); an S3-compatible server's address from ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL``, which boto and the AWS CLI read and pyarrow's S3 client does not, so
it is passed to pyarrow here. Keys set in the environment travel with the filesystem object
to the Ray tasks that read objects, so workers need no configuration; on a cluster whose
nodes hold their own credentials (an IAM role), leave them unset and the nodes' are used."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

S3 = "s3://"


def is_remote(location) -> bool:
    return isinstance(location, str) and location.startswith(S3)


def s3_filesystem():
    from pyarrow import fs
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    options = {"region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    if os.environ.get("AWS_ACCESS_KEY_ID"):  # explicit, so that Ray tasks given this filesystem hold them too
        options.update(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
                       session_token=os.environ.get("AWS_SESSION_TOKEN"))
    if endpoint:
        parsed = urlparse(endpoint)
        options.update(endpoint_override=parsed.netloc or parsed.path, scheme=parsed.scheme or "https")
    return fs.S3FileSystem(**options)


def resolve(location):
    """``s3://bucket/key`` -> (an S3 filesystem, "bucket/key"); a local path -> (None, Path)."""
    if is_remote(location):
        return s3_filesystem(), location[len(S3):].rstrip("/")
    return None, Path(location)

