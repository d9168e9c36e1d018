"""Reading staged files: bad URLs are INVALID_ARGUMENT, never an internal error."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tidegate.errors import InvalidArgument
from tidegate.service.staging import read_staged, read_staged_if_present


@pytest.mark.parametrize("read", [read_staged, read_staged_if_present])
@pytest.mark.parametrize("url", ["/tmp/pipeline\x00.pb", "file:///tmp/pipeline\x00.pb", "gs://bucket/a\x00b"])
def test_a_nul_in_a_staging_url_is_invalid_argument(read: Callable[[str], bytes | None], url: str) -> None:
    with pytest.raises(InvalidArgument, match="NUL"):
        read(url)
