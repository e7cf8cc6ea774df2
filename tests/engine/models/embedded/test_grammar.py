import pytest

from engine.models.embedded.grammar import COLOURS, SHAPES, SIZES, Prompt, PromptError, all_colour_shape_prompts, parse_prompt, vocabulary_text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a red cube", Prompt("cube", "red")),
        ("A Tall Blue Cylinder", Prompt("cylinder", "blue", "tall")),
        ("torus", Prompt("torus")),
        ("the small green cone", Prompt("cone", "green", "small")),
        ("an orange sphere", Prompt("sphere", "orange")),
        ("an object", Prompt(None)),
        ("The Red Object", Prompt(None, "red")),
    ],
)
def test_parse_valid_prompts(text, expected):
    assert parse_prompt(text) == expected


@pytest.mark.parametrize("text", ["a shiny cube", "", "   ", "a red", "a cube red", "a red blue cube", "a tall sphere", "a cube cube",
                                  "a tall object", "a cube object", "an object cube", "an object object", "object red"])
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
    for p in (Prompt(None), Prompt(None, "red")):
        assert parse_prompt(p.text) == p
    assert Prompt(None).text == "an object"


def test_object_leaves_the_shape_open_and_a_missing_shape_says_so():
    from engine.models.embedded.text import prompt_ids

    assert prompt_ids(parse_prompt("an object")) == prompt_ids(None) == [0, 0, 0]  # the unconditional prompt
    assert prompt_ids(parse_prompt("a red object"))[2] == 0
    with pytest.raises(PromptError, match="a size word needs a shape"):
        parse_prompt("a small object")
    with pytest.raises(PromptError, match="names no shape .say 'object' for any shape"):
        parse_prompt("a red")


def test_vocabulary_lists_every_word():
    text = vocabulary_text()
    assert all(w in text for w in (*SHAPES, *COLOURS, *SIZES))


def test_grammar_is_the_registrys_prompt_rules_and_imports_first_without_torch():
    import subprocess
    import sys

    from engine.models import prompt_rules
    from engine.models.embedded.grammar import Grammar
    from engine.models.prompts import PromptError as AnyModelsPromptError

    assert isinstance(prompt_rules("embedded"), Grammar)
    Grammar().validate(["a red cube", "tall blue cylinder"])
    with pytest.raises(AnyModelsPromptError, match="'plaid' is not in the vocabulary"):
        Grammar().validate(["a red cube", "a plaid cube"])
    assert Grammar().vocabulary() == vocabulary_text()
    # Imported on its own, first: no import circle with engine/models/prompts.py, and no torch.
    code = "import sys, engine.models.embedded.grammar as g; g.parse_prompt('a cube'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
