"""The MCQ reply parser on realistic free-text answers, including ones it must refuse to guess."""

import pytest

from merv.eval.parsing import ParsedAnswer, option_letters, parse_mcq_answer

NEXTQA_OPTIONS = ["bark at cat", "chase ball", "lie down", "greet owner", "eat food"]

# (reply, expected index or None, expected method)
TABLE = [
    # bare letters
    ("B", 1, "letter"),
    ("(C)", 2, "letter"),
    ("c", 2, "letter"),
    ("D.", 3, "letter"),
    ("**E**", 4, "letter"),
    ("A", 0, "letter"),
    ("  'b'  ", 1, "letter"),
    # answer phrases
    ("The answer is B.", 1, "phrase"),
    ("Best option: (A)", 0, "phrase"),
    ("Best option:(D) greet owner", 3, "phrase"),
    ("Answer: b", 1, "phrase"),
    ("The correct option is E", 4, "phrase"),
    ("I choose option C.", 2, "phrase"),
    ("the answer is (a)", 0, "phrase"),
    ("The answer is A because the dog barks at the cat.", 0, "phrase"),
    ("After watching the video, my final answer: D", 3, "phrase"),
    # marked letters at the start or inside the reply
    ("(B) chase ball", 1, "start"),
    ("B. chase ball", 1, "start"),
    ("C) lie down", 2, "start"),
    ("D: greet owner", 3, "start"),
    ("C because the dog looks tired", 2, "start"),
    ("A because it barks", 0, "start"),
    ("It is most likely (D).", 3, "marked"),
    ("Looking at the dog, option (E) fits best.", 4, "marked"),
    # lone letter at the end
    ("The dog chases the ball, so it should be B", 1, "end"),
    ("Option B", 1, "end"),
    # option text, longest wins
    ("The dog wants to chase ball", 1, "option_text"),
    ("The dog wants to eat food.", 4, "option_text"),
    ("He is likely to LIE DOWN", 2, "option_text"),
    # unparseable: empty, off-range letters, no mention, several options
    ("", None, "empty"),
    ("   ", None, "empty"),
    ("...", None, "empty"),
    ("F", None, "no_match"),
    ("The answer is F", None, "no_match"),
    ("I don't know", None, "no_match"),
    ("A man is walking a dog in the park", None, "no_match"),
    ("answer is a dog", None, "no_match"),
    ("(A) bark at cat (B) chase ball", None, "ambiguous"),
    ("I think it is A or B", None, "ambiguous"),
    ("It could be B, C or D", None, "ambiguous"),
    ("The answer is B. The answer is C.", None, "ambiguous"),
]


@pytest.mark.parametrize(("reply", "index", "method"), TABLE, ids=[repr(r[0])[:40] for r in TABLE])
def test_parser_table(reply, index, method):
    parsed = parse_mcq_answer(reply, NEXTQA_OPTIONS)
    assert parsed.index == index
    assert parsed.method == method
    assert parsed.parsed == (index is not None)


def test_table_is_large_and_covers_unparseable_replies():
    assert len(TABLE) >= 30
    assert sum(index is None for _, index, _ in TABLE) >= 10


def test_option_text_longest_match_wins():
    options = ["red", "red ball", "blue"]
    assert parse_mcq_answer("a red ball rolls away", options).index == 1


def test_separately_mentioned_options_are_ambiguous():
    parsed = parse_mcq_answer("it is red and then blue", ["red", "blue", "green"])
    assert parsed.index is None
    assert parsed.method == "ambiguous"
    assert parsed.candidates == (0, 1)


def test_leading_article_is_matched_as_option_text_not_letter():
    options = ["a man is walking", "a woman sings", "nothing happens"]
    parsed = parse_mcq_answer("A man is walking.", options)
    assert parsed == ParsedAnswer(0, "option_text", (0,))


def test_letters_beyond_the_option_count_are_ignored():
    assert parse_mcq_answer("D", ["x", "y", "z"]).index is None
    assert parse_mcq_answer("C", ["x", "y", "z"]).index == 2


def test_two_option_question_and_letter_property():
    parsed = parse_mcq_answer("(B) He hands her the file.", ["He drops the file.", "He hands her the file."])
    assert parsed.index == 1
    assert parsed.letter == "B"
    assert parse_mcq_answer("nothing", ["x", "y"]).letter is None


def test_parse_is_deterministic():
    replies = [r for r, _, _ in TABLE]
    first = [parse_mcq_answer(r, NEXTQA_OPTIONS) for r in replies]
    assert first == [parse_mcq_answer(r, NEXTQA_OPTIONS) for r in replies]


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one option"):
        parse_mcq_answer("A", [])
    assert option_letters(3) == "ABC"
    with pytest.raises(ValueError):
        option_letters(0)


def test_identical_options_are_ambiguous():
    parsed = parse_mcq_answer("the dog sits", ["the dog sits", "the dog sits", "it runs"])
    assert parsed.index is None
    assert parsed.candidates == (0, 1)
