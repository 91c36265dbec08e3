"""Reading a request body with a size cap and a deadline, before anything parses it."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from agent_pay.errors import MalformedPaymentError, OversizedRequestError, SlowRequestError

__all__ = ["read_body"]


async def read_body(request: Request, max_bytes: int, timeout: float) -> bytes:
    """The whole body of ``request``, at most ``max_bytes`` of it, read within ``timeout`` s.

    A declared ``Content-Length`` over the cap is refused before a byte is read; a body that
    grows past it is refused as soon as it does, so a server never buffers more than the cap.

    Raises:
        OversizedRequestError: (413) the body is larger than ``max_bytes``.
        SlowRequestError: (408) the body did not arrive within ``timeout`` seconds.
        MalformedPaymentError: (400) the Content-Length header is not a number.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedPaymentError("Content-Length is not a number")
        if int(declared) > max_bytes:
            raise OversizedRequestError(f"body is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise OversizedRequestError(f"body is larger than {max_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise SlowRequestError(f"body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:
        raise SlowRequestError("the client went away before its body arrived") from None
    return b"".join(chunks)
