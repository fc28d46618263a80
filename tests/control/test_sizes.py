"""``qemu_strtosz`` semantics and the three QEMU wordings of size errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control.sizes import (
    SIZE_HINT,
    SizeError,
    json_to_uint64,
    parse_option_size,
    parse_property_size,
    strtosz,
)

M, G = 1 << 20, 1 << 30


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("512M", 512 * M), ("1G", G), ("1g", G), ("1.5G", 3 * G // 2),
    ("0x20000000", 0x20000000), ("134217728", 134217728), ("4k", 4096), ("2048B", 2048),
    ("1E", 1 << 60), ("0.5M", M // 2), ("16E", None),
])
def test_strtosz_values(text: str, value: int | None) -> None:
    if value is None:
        with pytest.raises(SizeError) as err:
            strtosz(text)
        assert err.value.out_of_range
    else:
        assert strtosz(text) == value


@pytest.mark.parametrize("text", ["", "-1", "-512M", "abc", "''", "1.5", "0x10M", "0x1.5",
                                  "12Q", "1G ", " -0"])
def test_strtosz_invalid(text: str) -> None:
    with pytest.raises(SizeError) as err:
        strtosz(text)
    assert not err.value.out_of_range


def test_mib_default_suffix() -> None:
    assert strtosz("2048", default_suffix="M") == 2 * G


def test_hmp_wording() -> None:
    with pytest.raises(ValueError) as err:
        parse_option_size("requested-size", "-1")
    assert str(err.value) == ("Parameter 'requested-size' expects a non-negative number below "
                              "2^64\n" + SIZE_HINT)
    assert SIZE_HINT == ("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, "
                         "peta-\nand exabytes, respectively.")
    with pytest.raises(ValueError) as err:
        parse_option_size("requested-size", "99999999999999999999")
    assert str(err.value) == ("Value '99999999999999999999' is out of range for parameter "
                              "'requested-size'")


def test_property_and_json_wording() -> None:
    with pytest.raises(ValueError, match=r"^Parameter 'block-size' expects size$"):
        parse_property_size("block-size", "-2M")
    assert json_to_uint64("requested-size", -1) == (1 << 64) - 1
    for bad in ("1G", 1.5, None, True, 1 << 64, -(1 << 63) - 1):
        with pytest.raises(ValueError, match=r"^Parameter 'requested-size' expects uint64$"):
            json_to_uint64("requested-size", bad)


@given(st.text(max_size=30))
def test_strtosz_never_crashes(text: str) -> None:
    try:
        value = strtosz(text)
    except SizeError:
        return
    assert 0 <= value < 1 << 64


@given(st.integers(min_value=0, max_value=(1 << 54)), st.sampled_from(["", "K", "M", "G"]))
def test_strtosz_roundtrip(n: int, suffix: str) -> None:
    mul = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[suffix]
    if n * mul < 1 << 64:
        assert strtosz(f"{n}{suffix}") == n * mul
