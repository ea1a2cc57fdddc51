"""The LLM client's network backend (wxhelper.llm_transport): the same requests, answers and errors
as httpx's own, with a request's head and body in one send; against real servers on loopback."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest

from wxhelper.fake_llm import FakeLLM
from wxhelper.llm import LLM, LLMError
from wxhelper.llm_transport import lean_http_client, uses_lean_backend
from wxhelper.settings import Settings

PROMPT = [{"role": "user", "content": "你好"}]


def llm_for(url: str, **settings) -> LLM:  # type: ignore[no-untyped-def]
    return LLM(Settings(openai_api_key="test-key", openai_base_url=url, **settings))


async def test_the_llm_client_sends_through_the_lean_backend(fake_llm: FakeLLM) -> None:
    """If an httpx upgrade stops the backend from being installed, this fails rather than the host
    silently losing the speed (lean_http_client then leaves httpx's default in place)."""
    llm = llm_for(fake_llm.base_url)
    try:
        assert uses_lean_backend(llm._client._client)  # type: ignore[union-attr]
        assert await llm.complete(PROMPT) == "LLM-ANSWER: 你好"
        assert [await llm.complete([{"role": "user", "content": f"第{i}次"}]) for i in range(3)] == \
            [f"LLM-ANSWER: 第{i}次" for i in range(3)]
        assert len(fake_llm.chat_requests()) == 4
    finally:
        await llm.close()


async def test_a_request_goes_out_in_one_send() -> None:
    """The server's first read holds the whole request, head and JSON body (httpx's own backend
    sends them in two writes: two wake-ups of the LLM's process per call)."""
    first_reads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            first_reads.append(data)
            while b"\r\n\r\n" not in data:  # (only if a request came in pieces)
                data += await reader.read(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")][0])
            while len(body) < length:
                body += await reader.read(65536)
            answer = b'{"choices": [{"message": {"role": "assistant", "content": "ok"}}]}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(answer)).encode() + b"\r\n\r\n" + answer)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    llm = llm_for(f"http://127.0.0.1:{port}/v1")
    try:
        for i in range(3):
            assert await llm.complete([{"role": "user", "content": f"问题{i}" * 50}]) == "ok"
    finally:
        await llm.close()
        server.close()
    assert len(first_reads) == 3
    for data in first_reads:
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"POST /v1/chat/completions HTTP/1.1") and body.endswith(b"}")
        assert b'"model"' in body and "问题".encode() in body


async def test_a_connection_the_llm_closed_while_idle_is_replaced_not_failed() -> None:
    """The server hangs up a kept-alive connection (a restart, an idle timeout): the next call opens a
    new one instead of failing on the dead one (no retries allowed here)."""
    first = FakeLLM(reply=lambda body: "一号").start()
    port = int(first.base_url.rsplit(":", 1)[1].split("/")[0])
    llm = llm_for(first.base_url, llm_max_retries=0)
    try:
        assert await llm.complete(PROMPT) == "一号"
        first.stop()  # closes every keep-alive connection
        with FakeLLM(reply=lambda body: "二号", port=port):
            await asyncio.sleep(0.05)
            assert await llm.complete(PROMPT) == "二号"
    finally:
        await llm.close()
        first.stop()


async def test_read_timeouts_and_refused_connections_are_the_usual_errors(fake_llm: FakeLLM) -> None:
    fake_llm.delay_next(2.0)
    llm = llm_for(fake_llm.base_url, llm_timeout=0.3, llm_max_retries=0)
    try:
        with pytest.raises(LLMError, match="APITimeoutError"):
            await llm.complete(PROMPT)
    finally:
        await llm.close()
    refused = llm_for("http://127.0.0.1:9/v1", llm_max_retries=0)  # the discard port: nothing listens
    try:
        with pytest.raises(LLMError, match="APIConnectionError"):
            await refused.complete(PROMPT)
    finally:
        await refused.close()


async def test_a_stream_comes_through_piece_by_piece(fake_llm: FakeLLM) -> None:
    llm = llm_for(fake_llm.base_url)
    try:
        pieces = [piece async for piece in llm.stream(PROMPT)]
    finally:
        await llm.close()
    assert len(pieces) > 1 and "".join(pieces) == "LLM-ANSWER: 你好"


async def test_https_verifies_the_server_certificate(tmp_path: Path) -> None:
    """TLS goes through loop.start_tls with httpx's SSL context: a certificate the client trusts
    works, and one it does not trust is refused."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await reader.readuntil(b"\r\n\r\n")
            length = int([line.split(b":")[1] for line in data.split(b"\r\n")
                          if line.lower().startswith(b"content-length")][0])
            await reader.readexactly(length)
            answer = b'{"choices": [{"message": {"role": "assistant", "content": "tls ok"}}]}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: " + str(len(answer)).encode() + b"\r\n\r\n" + answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    trusting = ssl.create_default_context(cafile=str(cert))
    try:
        client = lean_http_client(verify=trusting)
        assert uses_lean_backend(client)
        response = await client.post(f"https://localhost:{port}/v1/chat/completions", json={"model": "m"})
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "tls ok"
        await client.aclose()
        strict = lean_http_client()  # the system's CAs: the self-signed certificate is refused
        with pytest.raises(Exception, match="(?i)certificate|ssl"):
            await strict.post(f"https://localhost:{port}/v1/chat/completions", json={"model": "m"})
        await strict.aclose()
    finally:
        server.close()
