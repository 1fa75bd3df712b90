"""What an async call's attempt means (gateway/async_policy.py): table-driven."""

import pytest

from bus_schemas.functions import AsyncPolicy
from gateway.async_policy import backoff_s, verdict

POLICY = AsyncPolicy(max_attempts=3, backoff_s=1.0, max_backoff_s=3.0)


@pytest.mark.parametrize("attempt,status,from_worker,want", [
    (1, 200, True, ("succeeded", 0)),
    (1, 302, True, ("succeeded", 0)),
    (1, 400, True, ("failed", 0)),  # the worker refused it: no retry
    (1, 422, True, ("failed", 0)),
    (1, 500, True, ("retry", 1.0)),
    (2, 503, True, ("retry", 2.0)),
    (3, 500, True, ("dead", 0)),  # the last attempt
    (1, 503, False, ("retry", 1.0)),  # no worker
    (1, 504, False, ("retry", 1.0)),  # timeout
    (1, 502, False, ("retry", 1.0)),  # worker broke off
    (1, 429, False, ("retry", 1.0)),  # overloaded gateway
    (3, 504, False, ("dead", 0)),
    (1, 404, False, ("failed", 0)),  # the function is gone
    (1, 401, False, ("failed", 0)),
    (1, 413, False, ("failed", 0)),
])
def test_verdict(attempt, status, from_worker, want):
    v = verdict(POLICY, attempt, status, from_worker)
    assert (v.status, v.delay_s) == want


def test_backoff_doubles_and_is_capped():
    assert [backoff_s(POLICY, n) for n in range(1, 6)] == [1.0, 2.0, 3.0, 3.0, 3.0]


@pytest.mark.parametrize("doc,field", [
    ({"async": {"max_attempts": 0}}, "$.async.max_attempts"),
    ({"async": {"max_attempts": 21}}, "$.async.max_attempts"),
    ({"async": {"backoff_s": "1s"}}, "$.async.backoff_s"),
    ({"async": {"tries": 3}}, "$.async.tries"),
    ({"async": {"backoff_s": 10, "max_backoff_s": 5}}, "$.async.max_backoff_s"),
])
def test_a_bad_async_policy_names_its_field(doc, field):
    from bus_schemas.codec import DecodeError, convert
    from bus_schemas.functions import FunctionSpec, SpecError, check_function_spec

    with pytest.raises((DecodeError, SpecError)) as bad:
        check_function_spec(convert({"name": "f", "command": ["x"], **doc}, FunctionSpec))
    assert bad.value.field == field


def test_a_function_file_sets_its_async_policy(tmp_path):
    from thaw.functions_file import load_function_file

    path = tmp_path / "f.toml"
    path.write_text('name = "f"\ncommand = ["x"]\n[async]\nmax_attempts = 5\nbackoff_s = 0.5\n')
    assert load_function_file(path).async_ == AsyncPolicy(max_attempts=5, backoff_s=0.5)
