"""The project's one slug function (engine/naming.py): file-name stems of prompts and adapter names."""
import pytest

from engine.naming import MAX_SLUG, slug


def test_short_text_reads_as_itself():
    assert slug("A Red Cube!") == "a_red_cube"
    assert slug("  ¿qué?  ") == "qu"
    assert slug("!!!") == "asset" and slug("", fallback="adapter") == "adapter"


def test_long_text_is_bounded_and_told_apart_by_a_hash_of_the_whole_text():
    long = ("a weathered bronze statue of a horse rearing on a marble plinth, " * 5)[:320]
    other = long + " at dusk"
    a, b = slug(long), slug(other)
    assert len(long) == 320 and len(a) == MAX_SLUG == 60 and len(b) == 60
    assert a != b and a[:40] == b[:40]  # same beginning, different endings: different names
    assert a == slug(long)  # stable: the same prompt always gets the same file name
    assert a.startswith("a_weathered_bronze_statue") and a[-9] == "_" and int(a[-8:], 16) >= 0
    assert len(slug("x" * 61)) == 60 and slug("x" * 60) == "x" * 60


def test_max_len_leaves_room_for_the_hash():
    assert len(slug("word " * 50, max_len=16)) == 16
    with pytest.raises(ValueError):
        slug("abc", max_len=8)
