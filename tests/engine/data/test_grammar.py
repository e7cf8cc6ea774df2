import pytest

from engine.data.grammar import COLOURS, SHAPES, SIZES, Prompt, PromptError, all_colour_shape_prompts, parse_prompt, vocabulary_text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a red cube", Prompt("cube", "red")),
        ("A Tall Blue Cylinder", Prompt("cylinder", "blue", "tall")),
        ("torus", Prompt("torus")),
        ("the small green cone", Prompt("cone", "green", "small")),
        ("an orange sphere", Prompt("sphere", "orange")),
    ],
)
def test_parse_valid_prompts(text, expected):
    assert parse_prompt(text) == expected


@pytest.mark.parametrize("text", ["a shiny cube", "", "   ", "a red", "a cube red", "a red blue cube", "a tall sphere", "a cube cube"])
def test_bad_prompts_raise_with_vocabulary(text):
    with pytest.raises(PromptError) as info:
        parse_prompt(text)
    message = str(info.value)
    for word in (*SHAPES, *COLOURS, *SIZES):
        assert word in message


def test_prompt_text_round_trips():
    for p in all_colour_shape_prompts():
        assert parse_prompt(p.text) == p
    assert len(all_colour_shape_prompts()) == len(SHAPES) * len(COLOURS) >= 48


def test_vocabulary_lists_every_word():
    text = vocabulary_text()
    assert all(w in text for w in (*SHAPES, *COLOURS, *SIZES))
