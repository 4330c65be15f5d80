"""Prompt cleaning matches Wan2.1 / upstream LongVie (ftfy, HTML unescape twice, whitespace collapse)."""
import pytest

from longvie.sampling.conditioning import clean_prompt


@pytest.mark.parametrize("raw, expected", [
    # HTML entities, also double-escaped ones (unescaped twice upstream)
    ("A horse &amp; its rider", "A horse & its rider"),
    ("fish &amp;amp; chips", "fish & chips"),
    ("&lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot;", '<b>bold</b> "quoted"'),
    ("caf&eacute; at dusk", "café at dusk"),
    # curly quotes become straight ASCII quotes (changes umT5 token ids)
    ("The rider says \u201chello\u201d, it\u2019s \u2018sunny\u2019", "The rider says \"hello\", it's 'sunny'"),
    # full-width punctuation and letters become ASCII
    ("a horse\uff0ca rider\uff0ca field", "a horse,a rider,a field"),
    ("\uff21\uff22\uff23 123\uff01", "ABC 123!"),
    # runs of whitespace of any kind collapse to one space; ends are stripped
    ("  a   man \t rides\n\n a  horse  ", "a man rides a horse"),
    ("line one\r\nline two", "line one line two"),
    # mojibake (UTF-8 read as Latin-1) is repaired
    ("caf\u00c3\u00a9", "café"),
    # ligatures are expanded
    ("\ufb01eld", "field"),
    # Chinese text (the standard negative prompt) keeps its characters; full-width commas become ASCII
    ("\u8272\u8c03\u8273\u4e3d\uff0c\u8fc7\u66dd", "\u8272\u8c03\u8273\u4e3d,\u8fc7\u66dd"),
    ("", ""),
])
def test_clean_prompt_expected_strings(raw, expected):
    assert clean_prompt(raw) == expected


def test_clean_prompt_is_idempotent():
    text = "  \u201cA\u201d &amp;amp; b\uff0c  c  "
    assert clean_prompt(clean_prompt(text)) == clean_prompt(text)


def test_ftfy_is_a_declared_dependency():
    from pathlib import Path
    setup_py = (Path(__file__).resolve().parents[2] / "setup.py").read_text()
    assert '"ftfy>=' in setup_py
