from __future__ import annotations

import copy
import logging
import pickle

import pytest

from pytest_hokusai.errors import KeyFormatError
from pytest_hokusai.secret import Secret, mask, redact

BODY = "Ab3" * 10 + "wxyz"  # 34 alphanumerics, built at run time


def make_key(prefix: str = "hk_live_", body: str = BODY) -> str:
    return prefix + body


def test_repr_str_format_show_only_masked_form():
    raw = make_key()
    key = Secret(raw)
    for text in (repr(key), str(key), f"{key}", f"{key:>30}", "%s" % key, "{}".format(key)):
        assert raw not in text
        assert BODY not in text
        assert "hk_live_\u2026wxyz" in text


def test_reveal_returns_raw_value():
    raw = make_key()
    assert Secret(raw).reveal() == raw


def test_pickle_refused_and_copy_returns_same_object():
    key = Secret(make_key())
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)
    assert copy.copy(key) is key and copy.deepcopy(key) is key


def test_immutable():
    key = Secret(make_key())
    with pytest.raises(AttributeError):
        key._raw = "x"  # type: ignore[misc]


def test_fingerprint_stable_and_not_reversible():
    a, b = Secret(make_key()), Secret(make_key())
    assert a.fingerprint == b.fingerprint and a.fingerprint.startswith("sha256:")
    assert BODY not in a.fingerprint
    assert Secret(make_key(body="Z" * 32)).fingerprint != a.fingerprint


@pytest.mark.parametrize("prefix", ["hk_live_", "hk_test_", "hk_dev_"])
@pytest.mark.parametrize("length", [32, 40])
def test_well_formed(prefix, length):
    key = Secret(prefix + "a1B2" * 10)  # 40 chars, trimmed below
    key = Secret(prefix + ("a1B2" * 10)[:length])
    assert key.is_well_formed() and key.format_problem() is None
    assert key.validate() is key
    assert key.environment == prefix.split("_")[1]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("", "empty"),
        ("sk_live_" + "a" * 32, "does not start"),
        ("hk_prod_" + "a" * 32, "does not start"),
        ("hk_live_" + "a" * 31, "31 characters"),
        ("hk_live_" + "a" * 41, "41 characters"),
        ("hk_live_" + "a" * 30 + "!?", "only letters and digits"),
        ("hk_live_" + "a" * 30 + " b", "only letters and digits"),
    ],
)
def test_malformed_keys_explained_without_the_key(raw, fragment):
    key = Secret(raw, source="env HOKUSAI_API_KEY")
    problem = key.format_problem()
    assert problem is not None and fragment in problem
    with pytest.raises(KeyFormatError, match="env HOKUSAI_API_KEY") as info:
        key.validate()
    if len(raw) > 20:
        assert raw.strip() not in str(info.value)


def test_redact_replaces_full_key_and_secret_part():
    raw = make_key()
    Secret(raw)
    text = f"Authorization: Bearer {raw}; url=?api_key={raw}; part={BODY}"
    clean = redact(text)
    assert raw not in clean and BODY not in clean
    assert "Bearer hk_live_\u2026wxyz" in clean
    assert "part=\u2026wxyz" in clean


def test_redact_leaves_unrelated_text_alone():
    assert redact("nothing secret here") == "nothing secret here"
    assert redact("") == ""


def test_mask_short_values():
    assert mask("hk_live_abc") == "hk_live_\u2026"
    assert mask("short") == "\u2026"


def test_log_records_are_redacted(caplog):
    from pytest_hokusai.redaction import install_log_redaction

    install_log_redaction()
    raw = make_key(body="Q" * 28 + "wxyz")
    Secret(raw)
    with caplog.at_level(logging.INFO):
        logging.getLogger("hokusai.test").info("sending %s", raw)
    assert raw not in caplog.text
    assert "hk_live_\u2026wxyz" in caplog.text
