"""Hostile input on the facilitator service's channel endpoints, over real HTTP: odd channel ids,
odd numbers, duplicated keys, wrong methods, replayed releases and concurrent accepts. Every
answer is a 2xx/4xx with a machine-readable reason, never a 500; no release undoes a read that
was served, and no voucher pays twice. (`tests.test_channel_remote` holds the well-behaved
cases; its service is reused here.)
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from agent_pay.errors import Reason
from agent_pay.testing import TestAgent
from tests.test_channel_remote import (
    PRICE,
    Remote,
    _accept_body,
    _post,
    channel_agent,
    opened,
    remote,
)

__all__ = ["opened", "remote"]  # the fixtures, shared with tests.test_channel_remote

PATHS = ["/channels/accept", "/channels/release", "/channels/paid-read"]


def _release(accepted: dict[str, Any]) -> dict[str, Any]:
    keys = ("channelId", "cumulativeAmount", "price", "releaseToken")
    return {key: accepted[key] for key in keys}


@pytest.mark.parametrize(
    "channel_id",
    [
        "0x",
        "0x" + "ab" * 31,
        "0x" + "ab" * 33,
        "0x" + "zz" * 32,
        "ab" * 32,
        "0x" + "AB" * 32,
        "0x" + "f" * 10_000,
        "%C3%A9" * 32,
        "%00",
        "0x" + "ab" * 32 + "%0a",
    ],
)
def test_an_odd_channel_id_is_a_404_channel_unknown(remote: Remote, channel_id: str) -> None:
    with httpx.Client(base_url=remote.facilitator) as http:
        response = http.get(f"/channels/{channel_id}")
    assert response.status_code == 404
    assert response.json()["error"] == Reason.CHANNEL_UNKNOWN


@pytest.mark.parametrize(
    "path",
    ["/channels/../supported", "/channels/a/b", "/channels/", "/channels/..%2F..%2Fetc%2Fpasswd"],
)
def test_a_path_beyond_a_channel_id_is_no_500(remote: Remote, path: str) -> None:
    with httpx.Client(base_url=remote.facilitator) as http:
        response = http.get(path)
    assert response.status_code < 500


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_another_method_on_a_channel_endpoint_is_a_405(
    remote: Remote, path: str, method: str
) -> None:
    with httpx.Client(base_url=remote.facilitator) as http:
        response = http.request(method, path)
    assert response.status_code == 405


@pytest.mark.parametrize("path", PATHS)
def test_a_get_of_a_post_endpoint_is_a_channel_unknown(remote: Remote, path: str) -> None:
    with httpx.Client(base_url=remote.facilitator) as http:
        response = http.get(path)  # /channels/{channelId}, with a name for the id
    assert (response.status_code, response.json()["error"]) == (404, Reason.CHANNEL_UNKNOWN)


@pytest.mark.parametrize("path", [*PATHS, "/channels/0x" + "ab" * 32])
def test_head_and_options_are_no_500(remote: Remote, path: str) -> None:
    with httpx.Client(base_url=remote.facilitator) as http:
        for method in ("HEAD", "OPTIONS"):
            assert http.request(method, path).status_code < 500


@pytest.mark.parametrize(
    "amount",
    ["-1", "1.5", "1e3", " 1", "0x10", str(2**256), "١٢", "", 1.0, None, True, [], {}],
)
def test_an_odd_number_in_a_release_is_a_400(remote: Remote, amount: object) -> None:
    body = {
        "channelId": "0x" + "ab" * 32,
        "cumulativeAmount": amount,
        "price": "1",
        "releaseToken": "00" * 32,
    }
    response = _post(remote, "/channels/release", json=body)
    assert response.status_code == 400
    assert response.json()["error"] in (Reason.INVALID_PAYLOAD, Reason.CHANNEL_RELEASE_INVALID)


@pytest.mark.parametrize(
    "channel_id", ["0x" + "ab" * 31, "0x" + "zz" * 32, "0x" + "é" * 64, "0x" + "ab" * 32 + " "]
)
def test_an_odd_channel_id_in_a_release_is_a_400(remote: Remote, channel_id: str) -> None:
    body = {
        "channelId": channel_id,
        "cumulativeAmount": "1",
        "price": "1",
        "releaseToken": "00" * 32,
    }
    response = _post(remote, "/channels/release", json=body)
    assert (response.status_code, response.json()["error"]) == (400, Reason.INVALID_PAYLOAD)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_the_content_type_does_not_matter_to_a_paid_read_query(
    remote: Remote, content_type: str
) -> None:
    body = json.dumps({"payer": "0x" + "cd" * 20, "resource": "/articles/x"}).encode()
    response = _post(
        remote, "/channels/paid-read", content=body, headers={"Content-Type": content_type}
    )
    assert (response.status_code, response.json()) == (200, {})


def test_a_duplicated_key_is_read_as_one_value_not_a_500(remote: Remote) -> None:
    body = b'{"payer": "0x' + b"cd" * 20 + b'", "resource": "/a", "resource": 7}'
    response = _post(remote, "/channels/paid-read", content=body)
    assert response.status_code in (200, 400)
    body = b'{"payer": "0x' + b"cd" * 20 + b'", "resource": 7, "resource": "/a"}'
    response = _post(remote, "/channels/paid-read", content=body)
    assert response.status_code in (200, 400)


@pytest.mark.parametrize("content", [b"", b"null", b"\xff\xfe{}", b'"x"', b"1e999999", b"\x00"])
def test_a_body_that_is_not_an_object_is_a_400(remote: Remote, content: bytes) -> None:
    for path in PATHS:
        response = _post(remote, path, content=content)
        assert response.status_code == 400, (path, content)
        assert response.json()["error"] in (Reason.INVALID_HEADER, Reason.INVALID_PAYLOAD)


def test_a_huge_cumulative_amount_in_a_voucher_is_no_500(remote: Remote, opened: TestAgent) -> None:
    for cumulative in (2**256, 2**256 - 1, 2**255):
        body = _accept_body(remote, opened, "note-050", cumulative=PRICE)
        body["paymentPayload"]["payload"]["cumulativeAmount"] = str(cumulative)
        response = _post(remote, "/channels/accept", json=body)
        assert response.status_code in (200, 400), cumulative
        assert "acceptance" not in response.json(), cumulative


def test_a_release_replayed_after_the_read_was_paid_again_undoes_nothing(
    remote: Remote,
) -> None:
    """Accept, release (the read failed), accept the same voucher again (the read is served):
    the first release, sent again, must not undo the second acceptance, or the voucher would
    pay for yet another read."""
    agent = channel_agent(remote)
    with httpx.Client(base_url=remote.server, auth=agent.auth) as http:
        assert http.get("/articles/note-060").status_code == 200  # opens the channel
    body = _accept_body(remote, agent, "note-061", cumulative=2 * PRICE)
    first = _post(remote, "/channels/accept", json=body).json()["acceptance"]
    assert _post(remote, "/channels/release", json=_release(first)).status_code == 200
    second = _post(remote, "/channels/accept", json=body).json()["acceptance"]
    assert second["replayed"] is False  # paid anew, and served
    _post(remote, "/channels/release", json=_release(first))  # the old release, replayed
    third = _post(remote, "/channels/accept", json=body).json()["acceptance"]
    assert third["replayed"] is True  # a retry of the served read, paying nothing more


def test_releasing_a_replayed_acceptance_leaves_the_paid_read_paid(remote: Remote) -> None:
    agent = channel_agent(remote)
    with httpx.Client(base_url=remote.server, auth=agent.auth) as http:
        assert http.get("/articles/note-070").status_code == 200
    body = _accept_body(remote, agent, "note-071", cumulative=2 * PRICE)
    _post(remote, "/channels/accept", json=body)  # paid, and served
    retry = _post(remote, "/channels/accept", json=body).json()["acceptance"]
    assert retry["replayed"] is True
    _post(remote, "/channels/release", json=_release(retry))  # the retry could not be served
    again = _post(remote, "/channels/accept", json=body).json()["acceptance"]
    assert again["replayed"] is True  # still the one paid read, not a new one


def test_the_same_voucher_accepted_concurrently_pays_one_read(remote: Remote) -> None:
    agent = channel_agent(remote)
    with httpx.Client(base_url=remote.server, auth=agent.auth) as http:
        assert http.get("/articles/note-080").status_code == 200
    bodies = [
        _accept_body(remote, agent, f"note-{81 + i:03d}", cumulative=2 * PRICE) for i in range(8)
    ]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: _post(remote, "/channels/accept", json=b), bodies))
    assert all(a.status_code == 200 for a in answers)
    accepted = [a.json()["acceptance"] for a in answers if "acceptance" in a.json()]
    assert len(accepted) == 1
    refusals = [a.json()["refusal"]["reason"] for a in answers if "refusal" in a.json()]
    assert refusals == [Reason.CHANNEL_VOUCHER_USED] * 7
