"""The body rules of modelyard.web.body, on a WSGI environ without a server."""

from __future__ import annotations

import io
from typing import Any

import pytest

from modelyard.registry.errors import TooLarge
from modelyard.web.body import DRAIN_MAX_BYTES, read_body


class Counting(io.BytesIO):
    """A body stream that remembers how much of it was read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.taken = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.taken += len(data)
        return data


def _environ(body: bytes, *, declared: bool) -> tuple[dict[str, Any], Counting]:
    stream = Counting(body)
    environ: dict[str, Any] = {"wsgi.input": stream}
    if declared:
        environ["CONTENT_LENGTH"] = str(len(body))
    else:
        environ["wsgi.input_terminated"] = True
    return environ, stream


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_within_the_limit_is_returned_whole(declared: bool) -> None:
    environ, _ = _environ(b'{"a": 1}', declared=declared)
    assert read_body(environ, 100) == b'{"a": 1}'


@pytest.mark.parametrize("declared", [True, False])
def test_a_refused_body_of_modest_size_is_read_to_its_end(declared: bool) -> None:
    """So the client has sent it all when the 413 goes out, and reads the answer instead of a
    reset."""
    environ, stream = _environ(b"x" * 300_000, declared=declared)
    with pytest.raises(TooLarge) as caught:
        read_body(environ, 20_000)
    assert caught.value.errors == {"max_body_bytes": 20_000}
    assert stream.taken == 300_000


def test_a_declared_length_past_the_drain_bound_is_refused_unread() -> None:
    environ, stream = _environ(b"x" * (20_000 + DRAIN_MAX_BYTES + 1), declared=True)
    with pytest.raises(TooLarge):
        read_body(environ, 20_000)
    assert stream.taken == 0


def test_a_chunked_body_past_the_drain_bound_is_read_no_further_than_the_bound() -> None:
    environ, stream = _environ(b"x" * (3 * DRAIN_MAX_BYTES), declared=False)
    with pytest.raises(TooLarge):
        read_body(environ, 20_000)
    assert stream.taken == 20_001 + DRAIN_MAX_BYTES


def test_a_stream_that_fails_while_draining_still_answers_413() -> None:
    class Failing(Counting):
        def read(self, size: int | None = -1) -> bytes:
            if self.taken >= 30_000:
                raise ConnectionResetError("gone")
            return super().read(size)

    stream = Failing(b"x" * 100_000)
    with pytest.raises(TooLarge):
        read_body({"wsgi.input": stream, "wsgi.input_terminated": True}, 20_000)
