"""The scraper's HTTP/1.1 response parser, fed byte strings the way sockets deliver them."""

from __future__ import annotations

import gzip

import pytest

from inferplane.picker.httpresponse import MAX_RESPONSE, ProtocolError, ResponseParser


def feed_in_pieces(raw: bytes, size: int) -> ResponseParser:
    parser = ResponseParser()
    done = False
    for i in range(0, len(raw), size):
        assert not done, "completed before the last piece"
        done = parser.feed(raw[i : i + size])
    assert done
    return parser


@pytest.mark.parametrize("size", [1, 7, 10_000])
def test_content_length_body_in_any_split(size: int) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world"
    parser = feed_in_pieces(raw, size)
    assert (parser.status, parser.body, parser.keep_alive) == (200, b"hello world", True)


@pytest.mark.parametrize("size", [1, 5, 10_000])
def test_chunked_body_with_extensions_and_trailers(size: int) -> None:
    raw = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: y\r\n\r\n")
    assert feed_in_pieces(raw, size).body == b"hello world"


def test_chunked_without_trailers() -> None:
    assert feed_in_pieces(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 4).body == b"abc"


def test_interim_response_is_skipped() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    parser = feed_in_pieces(raw, 3)
    assert (parser.status, parser.body) == (200, b"ok")


def test_body_read_until_the_server_closes() -> None:
    parser = ResponseParser()
    assert not parser.feed(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
    assert not parser.feed(b"part two")
    assert parser.eof()
    assert (parser.body, parser.keep_alive) == (b"part one, part two", False)


def test_eof_before_the_end_is_incomplete() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert not parser.eof()
    assert not parser.complete


def test_connection_close_and_error_status() -> None:
    parser = feed_in_pieces(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 100)
    assert (parser.status, parser.keep_alive, parser.body) == (503, False, b"")


def test_gzip_body_is_inflated() -> None:
    body = gzip.compress(b"vllm:num_requests_waiting 3\n")
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    assert feed_in_pieces(raw, 9).body == b"vllm:num_requests_waiting 3\n"


@pytest.mark.parametrize("raw", [
    b"SSH-2.0-OpenSSH_9\r\n\r\n",
    b"HTTP/1.1 2x0 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
])
def test_malformed_responses_raise(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        ResponseParser().feed(raw)


def test_oversized_response_raises() -> None:
    with pytest.raises(ProtocolError, match="larger than"):
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_RESPONSE + 1))
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(ProtocolError, match="larger than"):
        parser.feed(b"x" * (MAX_RESPONSE + 1))
