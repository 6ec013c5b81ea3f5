import pytest

from gfvc.bits import BitReader, BitWriter, unzigzag, zigzag
from gfvc.errors import BitstreamError


def test_zigzag_matches_reference_mapping():
    assert [zigzag(v) for v in (0, 1, -1, 2, -2)] == [0, 1, 2, 3, 4]
    assert all(unzigzag(zigzag(v)) == v for v in range(-300, 300))


def test_exp_golomb_hand_computed():
    w = BitWriter()
    for v in (0, 1, 2, 3, 7):
        w.ue(v)
    # 1 | 010 | 011 | 00100 | 0001000  -> 1010 0110 0100 0001 000(0 pad)
    assert w.getvalue() == bytes([0b10100110, 0b01000001, 0b00000000])
    assert len(w) == 1 + 3 + 3 + 5 + 7


def test_round_trip_mixed_codes():
    w = BitWriter()
    w.u(5, 3)
    w.se(-17)
    w.rice(13, 2)
    w.ue(123456)
    w.align()
    w.u(255, 8)
    r = BitReader(w.getvalue())
    assert r.u(3) == 5
    assert r.se() == -17
    assert r.rice(2) == 13
    assert r.ue() == 123456
    r.align()
    assert r.u(8) == 255


def test_reading_past_the_end_is_an_error():
    r = BitReader(b"\x00", "test data")
    with pytest.raises(BitstreamError, match="truncated test data"):
        r.ue()


def test_u_rejects_values_that_do_not_fit():
    with pytest.raises(ValueError):
        BitWriter().u(8, 3)
