"""Scores equal the sacrebleu command line's on the same files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nmt.errors import NmtError
from nmt.metrics import cli_options, corpus_scores

HYPS = ["The cat sat on the mat.", "He said, “Let there be light.”", "", "Go now!"]
REFS = ["The cat sat on a mat.", "God said, “Let there be light,” and there was light.", "Nothing.", "Go now!"]


ZH_HYPS = ["要有光，就有了光。", "神看光是好的。", "神称光为昼。"]
ZH_REFS = ["神说：要有光，就有了光。", "神看光是好的，就把光暗分开了。", "神称光为昼，称暗为夜。"]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_scores_equal_the_sacrebleu_command_line(tmp_path, lang):
    """Into Chinese too, with the options the report names (cli_options): zh BLEU tokens (13a
    had scored these 0.00), and TER split into characters (split at spaces, each unspaced sentence
    was one word: TER 100 for a letter off)."""
    hyps, refs = (HYPS, REFS) if lang == "en" else (ZH_HYPS, ZH_REFS)
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("\n".join(hyps) + "\n", encoding="utf-8")
    ref.write_text("\n".join(refs) + "\n", encoding="utf-8")
    cli = Path(sys.executable).with_name("sacrebleu")
    out = subprocess.run(
        [str(cli), str(ref), "-i", str(hyp), "-m", "bleu", "chrf", "ter", "-f", "json", "-w", "4", *cli_options(lang).split()],
        capture_output=True, text=True, check=True,
    ).stdout
    expected = {item["name"]: item for item in json.loads(out)}
    ours = corpus_scores(hyps, refs, lang=lang)
    assert ours["bleu"]["score"] > 20  # not the near-zero of words that are whole sentences
    assert ours["bleu"]["score"] == pytest.approx(expected["BLEU"]["score"], abs=1e-4)
    assert ours["chrf"]["score"] == pytest.approx(expected["chrF2"]["score"], abs=1e-4)
    assert ours["ter"]["score"] == pytest.approx(expected["TER"]["score"], abs=1e-4)
    assert ours["bleu"]["signature"] == expected["BLEU"]["signature"]
    assert ours["ter"]["signature"] == expected["TER"]["signature"] and ours["ter"]["score"] < 70


def test_line_count_mismatch_is_an_error():
    with pytest.raises(NmtError, match="line counts must match"):
        corpus_scores(HYPS, REFS[:-1])


def test_a_byte_order_mark_at_the_start_of_a_reference_file_does_not_change_the_score(tmp_path):
    """Windows editors start a UTF-8 file with one; it was read as part of the first reference's
    first word (BLEU 32.88 fell to 32.69 on the Bible test split with the same translations)."""
    from nmt.lines import read_lines

    ref = tmp_path / "ref.en"
    ref.write_text("\ufeff" + "".join(line + "\n" for line in REFS), encoding="utf-8")
    assert read_lines(ref) == REFS
    assert corpus_scores(REFS, read_lines(ref))["bleu"]["score"] == 100.0


def test_japanese_without_mecab_is_scored_on_characters_and_says_so(monkeypatch):
    """sacreBLEU's ja-mecab needs MeCab, which is not installed with nmt: characters, not 13a's
    whole sentences, and the signature names the tokeniser."""
    import importlib.util

    from sacrebleu.metrics import BLEU

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "MeCab" else object())
    hyps, refs = ["光あれ。", "神は光を見て、良しとされた。"], ["光あれ。こうして、光があった。", "神はその光を見て、良しとされた。"]
    ours = corpus_scores(hyps, refs, ("bleu",), lang="ja")["bleu"]
    assert "tok:char" in ours["signature"]
    assert ours["score"] == pytest.approx(BLEU(tokenize="char").corpus_score(hyps, [refs]).score, abs=1e-4)
    assert ours["score"] > 20


TH_HYPS = ["พระเจ้าตรัสว่า ให้มีความสว่าง", "พระเจ้าทรงเห็นว่าความสว่างนั้นดี"]
TH_REFS = ["พระเจ้าตรัสว่า ให้มีความสว่าง แล้วความสว่างก็เกิดขึ้น", "พระเจ้าทรงเห็นว่าความสว่างนั้นดี"]


@pytest.mark.parametrize("lang", ["th", "tha", "th_TH"])
def test_thai_is_scored_on_characters_as_the_command_line_scores_it(tmp_path, lang):
    """13a splits at spaces and punctuation only: an unspaced Thai sentence was one word, BLEU 0.00
    whatever the translation, so training's dev BLEU never moved and best stayed the first
    checkpoint."""
    from sacrebleu.metrics import BLEU

    ours = corpus_scores(TH_HYPS, TH_REFS, ("bleu",), lang=lang)["bleu"]
    assert "tok:char" in ours["signature"] and cli_options(lang) == "-tok char"
    assert ours["score"] == pytest.approx(BLEU(tokenize="char").corpus_score(TH_HYPS, [TH_REFS]).score, abs=1e-4)
    assert ours["score"] > 40 and BLEU().corpus_score(TH_HYPS, [TH_REFS]).score < ours["score"] / 2


@pytest.mark.parametrize(("lang", "tokenizer"), [("zho_Hans", "zh"), ("cmn", "zh"), ("zh-TW", "zh"), ("yue", "zh"),
                                                 ("lao", "char"), ("km", "char"), ("mya", "char"), ("en", "13a"),
                                                 ("eng_Latn", "13a"), ("deu", "13a")])
def test_three_letter_and_script_codes_pick_the_languages_tokens(lang, tokenizer):
    """Hub datasets name languages as FLORES-200 does (zho_Hans, tha_Thai) or by ISO 639-3 (cmn):
    they were scored with 13a, Chinese next to nothing."""
    from nmt.metrics import bleu_tokenizer

    assert bleu_tokenizer(lang) == tokenizer


def test_the_reports_intervals_and_length_ratio_use_the_languages_tokens():
    from nmt.analysis import confidence_intervals, length_buckets, length_ratio

    scores = corpus_scores(ZH_HYPS, ZH_REFS, lang="zh")
    assert confidence_intervals({"zh": ZH_HYPS}, ZH_REFS, n=20, lang="zh")["zh"]["bleu"]["score"] == \
        scores["bleu"]["score"]
    assert length_ratio(ZH_HYPS, ZH_REFS, "zh")["ref_len"] > 3 * length_ratio(ZH_HYPS, ZH_REFS)["ref_len"]
    bucket = length_buckets(["a b"] * 3, ZH_REFS, {"zh": ZH_HYPS}, n=20, lang="zh")[0]
    assert bucket["systems"]["zh"]["bleu"]["score"] == scores["bleu"]["score"]
