"""The data side of scripts/train_bundled.py, the dev-only script that trains the bundled model: which
words of a play count as its characters' names, and the renamed copies its second stage trains on."""
import random
import re

import pytest

from conftest import load_script

pytest.importorskip("torch")
pytest.importorskip("transformers")
train_bundled = load_script("train_bundled")

# Three heading styles of the Gutenberg editions; "king", "first" and "lord" also occur in lower case, so
# they are titles, not names, and "Montague" is never a speaker here, so it stays.
PLAY = """ROMEO AND JULIET

ACT I.

[Enter Sampson and ROMEO.]

Sampson.
Good morrow, Romeo; the king is come. Romeo's house of Montague.

ROMEO.
Not I, Sampson: the first of them.

KING HENRY.
Sampson, Romeo, away!

FIRST LORD.
My king, my lord!
"""
COMMON = train_bundled.lower_case_words([PLAY])


def test_names_are_heading_words_never_written_in_lower_case():
    assert train_bundled.character_names(PLAY, COMMON) == ["HENRY", "ROMEO", "Sampson"]


def test_renaming_is_consistent_in_every_case_and_touches_nothing_else():
    renamed = train_bundled.rename_characters(PLAY, random.Random(0), COMMON)
    print(renamed)
    new_romeo = re.search(r"\n\n([A-Z]+)\.\nNot I", renamed).group(1)
    new_sampson = re.search(r"\n\n([A-Z][a-z]+)\.\nGood morrow", renamed).group(1)
    assert new_romeo != "ROMEO" and new_sampson != "Sampson"
    # Every occurrence, upper case and capitalised, possessives included; the play's title too.
    expected = (PLAY.replace("ROMEO", new_romeo).replace("Romeo", new_romeo.capitalize())
                .replace("Sampson", new_sampson).replace("HENRY", re.search(r"KING (\w+)\.", renamed).group(1)))
    assert renamed == expected
    assert "king" in renamed and "FIRST LORD." in renamed and "Montague" in renamed


def test_each_copy_invents_other_names():
    first = train_bundled.rename_characters(PLAY, random.Random("1234-0"), COMMON)
    again = train_bundled.rename_characters(PLAY, random.Random("1234-0"), COMMON)
    second = train_bundled.rename_characters(PLAY, random.Random("1234-1"), COMMON)
    assert first == again and first != second
