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


class RawServer:
    """A loopback HTTP/1.1 server answering each request with the next of ``answers`` (raw bytes;
    ``None`` hangs up without answering), counting the connections it was opened."""

    def __init__(self, answers: list) -> None:  # type: ignore[type-arg]
        self.answers = list(answers)
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")][0])
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answers.pop(0)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def completion(text: str) -> bytes:
    return b'{"choices": [{"message": {"role": "assistant", "content": "%s"}}]}' % text.encode()


def sized(text: str, extra: bytes = b"") -> bytes:
    body = completion(text)
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s" % (
        extra, len(body), body)


async def test_answers_kept_alive_chunked_and_up_to_the_close_are_read_whole() -> None:
    """The three ways an HTTP/1.1 server frames a body; one connection serves every call until the
    server says it closes it, and a 100 Continue before the answer is skipped."""
    body = completion("分块")
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x;ext=1\r\n%s\r\n" % (10, body[:10]) + b"%x\r\n%s\r\n" % (len(body) - 10, body[10:])
               + b"0\r\nX-Trailer: yes\r\n\r\n")
    until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + completion("到关闭")
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + sized("继续")
    raw = RawServer([sized("一"), chunked, interim, sized("二", b"Connection: close\r\n"), until_close, sized("三")])
    async with raw as url:
        llm = llm_for(url, llm_max_retries=0, llm_timeout=5)
        try:
            answers = [await llm.complete(PROMPT) for _ in range(6)]
        finally:
            await llm.close()
    assert answers == ["一", "分块", "继续", "二", "到关闭", "三"]
    assert raw.connections == 3  # kept alive for the first four, then a new one after each close
    assert all(request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") for request in raw.requests)


async def test_a_server_that_hangs_up_or_cuts_the_body_is_a_connection_error_and_the_next_call_works() -> None:
    cut = sized("被截断的回答", b"Connection: close\r\n")[:-5]  # 5 bytes short, then the server closes
    raw = RawServer([None, cut, sized("好了")])
    async with raw as url:
        llm = llm_for(url, llm_max_retries=0, llm_timeout=5)
        try:
            with pytest.raises(LLMError, match="APIConnectionError"):
                await llm.complete(PROMPT)  # hung up without answering: never sent twice
            assert len(raw.requests) == 1
            with pytest.raises(LLMError, match="APIConnectionError"):
                await llm.complete(PROMPT)
            assert await llm.complete(PROMPT) == "好了"
        finally:
            await llm.close()
    assert len(raw.requests) == 3


async def test_a_bad_status_line_or_chunk_is_an_error_not_an_answer() -> None:
    raw = RawServer([b"HTTP/1.1 2OO OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                     sized("正常")])
    async with raw as url:
        llm = llm_for(url, llm_max_retries=0, llm_timeout=5)
        try:
            for _ in range(2):
                with pytest.raises(LLMError, match="APIConnectionError"):
                    await llm.complete(PROMPT)
            assert await llm.complete(PROMPT) == "正常"
        finally:
            await llm.close()


async def test_connections_are_given_back_to_the_pool_after_errors_and_unread_bodies() -> None:
    """With one connection allowed, every call finishes (a leaked slot would hang the next one,
    which the pool timeout turns into an error)."""
    import httpx2

    raw = RawServer([sized("一"), None, sized("二"), sized("三"), sized("四")])
    async with raw as url:
        client = lean_http_client(limits=httpx2.Limits(max_connections=1), timeout=httpx2.Timeout(2.0, pool=0.5))
        assert uses_lean_backend(client)
        try:
            endpoint = url + "/chat/completions"
            assert (await client.post(endpoint, content=b"{}")).json()["choices"][0]["message"]["content"] == "一"
            with pytest.raises(httpx2.RemoteProtocolError):
                await client.post(endpoint, content=b"{}")
            async with client.stream("POST", endpoint, content=b"{}") as response:
                assert response.status_code == 200  # closed without reading the body
            assert (await client.post(endpoint, content=b"{}")).json()["choices"][0]["message"]["content"] == "三"
            traced: list[str] = []

            async def trace(name: str, info: dict) -> None:  # type: ignore[type-arg]
                traced.append(name)

            # an extension the lean transport does not speak: httpx's own transport answers it
            response = await client.post(endpoint, content=b"{}", extensions={"trace": trace})
            assert response.json()["choices"][0]["message"]["content"] == "四" and traced
        finally:
            await client.aclose()


async def test_the_remembered_urls_follow_the_base_url() -> None:
    """The client and httpx remember a path's URL per base_url (llm_transport.UrlMemo): the URLs are
    the ones the libraries build, and a new base_url sends to the new server."""
    from openai import AsyncOpenAI

    one, two = RawServer([sized("一号"), sized("一号")]), RawServer([sized("二号")])
    async with one as url_one, two as url_two:
        llm = llm_for(url_one, llm_max_retries=0, llm_timeout=5)
        client = llm._client
        assert client is not None and isinstance(client, AsyncOpenAI)
        try:
            for path in ("/chat/completions", "chat/completions", "/models?x=1"):
                assert client._prepare_url(path) == AsyncOpenAI._prepare_url(client, path)
            assert [await llm.complete(PROMPT) for _ in range(2)] == ["一号", "一号"]
            client.base_url = url_two
            assert await llm.complete(PROMPT) == "二号"
            http = client._client
            assert type(http)._merge_url is not type(http).__mro__[1]._merge_url
            assert http._merge_url("https://elsewhere.example/v1/x") == type(http).__mro__[1]._merge_url(
                http, "https://elsewhere.example/v1/x")
        finally:
            await llm.close()
    assert len(one.requests) == 2 and len(two.requests) == 1
