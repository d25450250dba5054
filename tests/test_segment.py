"""Lines longer than the model was trained on: cut where sentences end, translated in parts."""

from __future__ import annotations

import dataclasses
import logging
import unicodedata

from nmt.segment import clauses, join_parts, split_long


def pieces(texts: list[str]) -> list[int]:  # a stand-in for the tokenizer: a piece a word, and </s>
    return [len(text.split()) + 1 for text in texts]


def test_clauses_end_at_sentence_marks_with_their_closing_quotes():
    assert clauses("Y dijo: «Ve.» Y fué. ¿Por qué?  Porque sí") == ["Y dijo:", "«Ve.»", "Y fué.", "¿Por qué?",
                                                                    "Porque sí"]
    assert clauses("Pesa 3.5 kilos.") == ["Pesa 3.5 kilos."]  # no space after the mark: not an end


def test_chinese_and_japanese_sentences_end_at_full_width_marks_without_a_space():
    assert clauses("神说：要有光。就有了光。「好！」他说") == ["神说：", "要有光。", "就有了光。", "「好！」", "他说"]
    assert clauses("光あれ。こうして光があった？ はい") == ["光あれ。", "こうして光があった？", "はい"]


def test_a_long_line_written_without_spaces_is_cut_without_putting_spaces_into_it():
    """A part is the line's own text: a space inserted between clauses of a Chinese line would
    change how it is tokenised."""
    line = "神说要有光。就有了光。神看光是好的。就把光暗分开了。"

    def characters(texts: list[str]) -> list[int]:
        return [len(text) + 1 for text in texts]

    parts = split_long(line, characters, 16)
    assert parts == ["神说要有光。", "就有了光。", "神看光是好的。", "就把光暗分开了。"]
    assert "".join(parts) == line


def test_a_line_within_the_model_s_length_is_never_cut():
    line = "Uno dos. Tres cuatro. Cinco seis."
    assert split_long(line, pieces, 7) == [line]


def test_a_long_line_is_cut_at_sentence_ends_into_parts_of_half_the_length_losing_no_word():
    line = " ".join(f"a{i} b{i}." for i in range(10))  # 21 pieces, sentences of 3
    parts = split_long(line, pieces, 10)
    assert parts == [f"a{i} b{i}. a{i + 1} b{i + 1}." for i in range(0, 10, 2)]  # 5 pieces each: half of 10
    assert " ".join(parts) == line


def test_a_clause_longer_than_the_model_s_length_is_cut_between_words_into_parts_of_half_of_it():
    long_clause = " ".join(f"w{i}" for i in range(20))  # no mark to cut at
    parts = split_long(f"Dijo así: {long_clause}", pieces, 8)
    assert pieces(parts) == [3, 4, 4, 4, 4, 4, 4, 3]
    assert " ".join(parts) == f"Dijo así: {long_clause}"


def _slices(parts: list[str], line: str) -> bool:
    """Whether the parts are the line's text in order, cut only where it has spaces or marks."""
    at = 0
    for part in parts:
        found = line.find(part, at)
        if found < 0 or line[at:found].strip():
            return False
        at = found + len(part)
    return not line[at:].strip()


def test_cutting_keeps_every_word_in_order_and_parts_within_their_size():
    """Random lines of words, marks and quotes: the parts are the line's own text, in order, cut
    only at spaces, and each part holds at most half the length unless one word or clause alone
    is longer."""
    import random

    rng = random.Random(0)
    marks = ["", "", "", ".", ",", ";", ":", "!", "?", "…", ".»", "?”", ")", "。", "！」"]
    for _ in range(300):
        words = [f"w{i}{rng.choice(marks)}" for i in range(rng.randint(1, 80))]
        line = "".join(word + rng.choice([" ", " ", "  ", "\t"]) for word in words).strip()
        longest = rng.randint(2, 40)
        parts = split_long(line, pieces, longest)
        assert " ".join(parts).split() == words and _slices(parts, line)
        if pieces([line])[0] <= longest:
            assert parts == [line]
        else:
            assert all(n <= longest // 2 or len(part.split()) == 1 or part in clauses(line)
                       for part, n in zip(parts, pieces(parts)))


def test_a_word_longer_than_the_model_s_length_is_cut_between_characters_into_parts_of_half_of_it():
    """A stretch with no mark or space (a run-together string; Thai, or Chinese without marks) was
    decoded whole: 100,000 such characters were still running after 11 minutes."""
    def characters(texts: list[str]) -> list[int]:
        return [len(text) + 1 for text in texts]

    glued = "x" * 1_000
    parts = split_long(f"Dijo: {glued} y fué.", characters, 100)
    assert parts[0] == "Dijo:" and "".join(parts).replace(" ", "") == f"Dijo:{glued}yfué."
    assert all(n <= 50 for n in characters(parts)) and len(parts) <= 2 + 22  # 1,000 x at ≤ 49 a part: 21
    for longest in (2, 3, 7, 64):  # parts of half the length, however the characters divide
        parts = split_long("神说要有光就有了光" * 30, characters, longest)
        assert "".join(parts) == "神说要有光就有了光" * 30 and max(characters(parts)) <= max(2, longest // 2)
    assert split_long("c" * 13, characters, 8) == ["ccc", "ccc", "ccc", "cc", "cc"]  # ≤ 4 pieces, as even as can be
    thai = "ที่นี่" * 20  # each letter a consonant and two combining marks (a vowel, a tone)
    parts = split_long(thai, characters, 10)
    assert "".join(parts) == thai and max(characters(parts)) <= 5
    assert all(unicodedata.category(part[0]) == "Lo" for part in parts)  # no part starts with a mark
    # letters each longer than a part stay whole (this cut nothing and tried again forever)
    assert split_long("x\u0301" * 2, characters, 4) == ["x\u0301", "x\u0301"]
    assert split_long("x" + "\u0301" * 9, characters, 4) == ["x" + "\u0301" * 9]
    assert split_long("pan " + "y" * 9 + " vino", characters, 10) == ["pan", "yyyyyyyyy", "vino"]  # 10 pieces: a word
    assert split_long("pan " + "y" * 10 + " vino", characters, 10) == ["pan", "yyyy", "yyyy", "yy", "vino"]


def _translator(tmp_path, **decode):
    """An untrained model (its translations run on, unlike the tiny run's, which stop at once)
    that has seen 12 source pieces at most."""
    from conftest import saved_tiny_model
    from nmt.translate import Translator

    config, tokenizer, model, _ = saved_tiny_model(tmp_path)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, max_train_len=12),
                                 decode=dataclasses.replace(config.decode, **decode))
    return Translator(model, tokenizer, config)


LONG = "Y dijo Dios: Sea la luz. Y fué la luz. Y vió Dios que la luz era buena; y apartó Dios la luz de las tinieblas."


def test_translate_writes_a_long_line_s_parts_one_after_the_other_on_its_line(tmp_path):
    """The output keeps the input's lines; progress counts lines, not parts."""
    translator = _translator(tmp_path)
    parts = split_long(LONG, translator.tokenizer.src_lengths, 12)
    assert len(parts) > 2
    for beam in (1, 3):
        found = translator.hypotheses(parts, beam=beam)
        expected = join_parts(translator.tokenizer.decode_tgt([hyps[0].tokens for hyps in found]))
        assert expected  # an untrained model runs on: something to compare
        done = []
        lines = ["Y fué la tarde", LONG, "", LONG]
        assert translator.translate(lines, beam=beam, progress=done.append) == [
            translator.translate(["Y fué la tarde"], beam=beam)[0], expected, "", expected]
        assert done == [1] * len(lines)


def test_decode_split_long_false_translates_the_whole_line_and_warns(tmp_path, caplog):
    translator = _translator(tmp_path, split_long=False)
    whole = translator.hypotheses([LONG], beam=1)[0][0].tokens
    with caplog.at_level(logging.WARNING, logger="nmt.translate"):
        assert translator.translate([LONG, "Y fué la tarde"], beam=1)[0] == translator.tokenizer.decode_tgt([whole])[0]
    assert "1 of 2 line(s) longer than the 12 source pieces the model was trained on" in caplog.text


def test_a_long_line_with_nowhere_to_cut_is_named_as_such_and_lines_are_counted_as_lines(tmp_path, caplog):
    """A stretch with no mark or space (a run-together string) is cut between characters, and said
    to be (it was decoded whole, with no end in sight for a long one); the warning had said it
    was decoded whole for want of decode.split_long, which was on, and counted parts as lines."""
    translator = _translator(tmp_path)
    glued = "Yfuélatarde" * 8  # no space, no mark: longer than 12 pieces whatever is done
    assert translator.tokenizer.src_lengths([glued])[0] > 12
    with caplog.at_level(logging.INFO, logger="nmt.translate"):
        out = translator.translate([LONG, glued, "Y fué la tarde"], beam=1)
    assert len(out) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "nmt.translate"]
    assert warnings == ["1 line(s) hold a stretch longer than the 12 source pieces the model was trained on with "
                        "no sentence mark or space to cut it at: cut between characters, which may split a word"]
    assert "decode.split_long, one" not in caplog.text
    parts, counts = translator._parts([glued], split=True)
    assert counts[0] > 1 and max(len(part) for part in parts) <= 12


def test_a_long_line_ending_in_characters_the_tokenizer_drops_gets_nothing_made_up_after_it(tmp_path):
    """Text after the last sentence mark that normalising drops (a zero-width space, a direction
    mark) was a part of its own, </s> alone, and the model's sentence for it was appended."""
    translator = _translator(tmp_path)
    expected = translator.translate([LONG], beam=1)
    for tail in (" \u200b", "\u200e", " \ufeff\u200b"):
        assert translator.translate([LONG + tail], beam=1) == expected
        assert translator.hypotheses([LONG + tail], beam=3)[0][0].tokens == translator.hypotheses([LONG], beam=3)[0][0].tokens


def test_a_long_line_s_hypothesis_is_its_parts_and_n_best_decodes_it_whole(tmp_path, caplog):
    """nmt report scores what nmt translate writes: the best hypothesis joins the parts' (tokens
    one after the other, log-probabilities summed); asked for two hypotheses or for attention, the
    search takes the whole line, with a warning."""
    import itertools
    import math

    translator = _translator(tmp_path)
    parts = split_long(LONG, translator.tokenizer.src_lengths, 12)
    alone = [hyps[0] for hyps in translator.hypotheses(parts, beam=3)]
    (best,) = translator.hypotheses([LONG], beam=3)[0]
    assert best.tokens == [t for h in alone for t in h.tokens]
    assert best.cuts == tuple(itertools.accumulate(len(h.tokens) for h in alone[:-1]))
    assert math.isclose(best.log_prob, sum(h.log_prob for h in alone), rel_tol=1e-6)
    whole = _translator(tmp_path, split_long=False)
    for asked in (dict(nbest=2), dict(keep_attention=True)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="nmt.translate"):
            found = translator.hypotheses([LONG], beam=3, **asked)[0]
        assert [h.tokens for h in found] == [h.tokens for h in whole.hypotheses([LONG], beam=3, **asked)[0]]
        assert "1 of 1 line(s) longer than the 12 source pieces" in caplog.text


def test_parts_translations_are_joined_by_a_space_but_after_chinese_or_japanese():
    assert join_parts(["Let there be light.", "And there was light."]) == "Let there be light. And there was light."
    assert join_parts(["要有光。", "就有了光。", "神看光是好的"]) == "要有光。就有了光。神看光是好的"
    assert join_parts(["光あれ。", "", "こうして光があった"]) == "光あれ。こうして光があった"
    assert join_parts(["「好！」", "He said."]) == "「好！」He said."  # a full-width mark ends the part
    assert join_parts(["He said:", "「好！」"]) == "He said: 「好！」"
    assert join_parts(["神说：“要有光。”", "就有了光。"]) == "神说：“要有光。”就有了光。"  # curly quotes close Chinese too
    assert join_parts(["He said “yes.”", "(Then he left.)", "Fine."]) == "He said “yes.” (Then he left.) Fine."
    assert join_parts(["The sign read “出口”", "He left."]) == "The sign read “出口” He left."  # a word, quoted
    assert join_parts(["ไปไหน", "ไปตลาด"]) == "ไปไหน ไปตลาด"  # Thai puts a space between sentences
    assert join_parts(["", ""]) == "" and join_parts(["Y fué."]) == "Y fué."


def test_a_long_line_translated_into_chinese_gets_no_space_where_it_was_cut(tmp_path):
    """A part's translation starts with SentencePiece's word-boundary piece, which decoded the
    joined parts as "要有光。 就有了光。": a space inside a Chinese line."""
    from nmt.config import TokenizerConfig
    from nmt.search import Hypothesis
    from nmt.tokenizer import Tokenizer, train_tokenizer

    chinese = ["起初神创造天地。", "地是空虚混沌，渊面黑暗；", "神的灵运行在水面上。", "神说：要有光。",
               "就有了光。", "神看光是好的，就把光暗分开了。"] * 20
    spanish = [f"Y dijo Dios {i}." for i in range(len(chinese))]
    train_tokenizer(spanish, chinese, TokenizerConfig(vocab_size=44, joint=False), tmp_path / "tok")
    translator = _translator(tmp_path)
    translator.tokenizer = tokenizer = Tokenizer.from_folder(tmp_path / "tok")
    first, second = tokenizer.encode_tgt(["神说要有光。", "就有了光。"])
    assert tokenizer.decode_tgt([first + second]) == ["神说要有光。 就有了光。"]  # the parts' tokens as one
    hyp = Hypothesis(first + second, 0.0, 0.0, cuts=(len(first),))
    assert translator.text(hyp) == "神说要有光。就有了光。"
    assert translator.text(Hypothesis(first, 0.0, 0.0)) == "神说要有光。"


def test_nmt_translate_cuts_a_long_line_unless_told_whole_lines(tiny_run, caplog):
    from typer.testing import CliRunner

    from nmt.cli import app

    long_line = " ".join([LONG] * 8)  # past the tiny run's 128 pieces
    args = ["translate", "--checkpoint", str(tiny_run.root / "best")]
    for extra, said in (([], "translated in"), (["--whole-lines"], "decoded whole")):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="nmt.translate"):
            result = CliRunner().invoke(app, args + extra, input=f"{long_line}\nY fué la tarde\n")
        assert result.exit_code == 0, result.output
        assert len(result.stdout.splitlines()) == 2 and said in caplog.text


def test_the_report_looks_for_search_errors_only_on_lines_decoded_whole(tmp_path):
    """Search errors compare a hypothesis's score with the reference's over the whole line: a line
    cut into parts has a summed score no whole-line search matches, so it is never among them."""
    from nmt.diagnostics import short_sentences

    translator = _translator(tmp_path)
    sources = ["Y fué la tarde", LONG, "Y dijo Dios"]
    assert short_sentences(translator, sources, max_pieces=1000, count=10) == [0, 2]


def test_the_report_draws_attention_only_for_lines_decoded_whole(tmp_path):
    """A cut line's translation comes from its parts; a heatmap of the whole line would sit beside
    text it did not produce, so the report's heatmaps leave such lines out, however long."""
    from nmt import diagnostics, evaluation

    translator = _translator(tmp_path)
    sources = ["Y fué la tarde", LONG, "Y dijo Dios"]
    cand = evaluation.Candidate("m", tmp_path, translator, 1, 0.0)
    cand.decoded[1] = diagnostics.decode(translator, sources, 1, 0.0)
    report, images = evaluation._attention([cand], sources, count=3)
    assert sorted(m["index"] for m in report["m"]) == [0, 2] and len(images) == 2


def _said(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "nmt.translate" and text in r.getMessage()]


def test_nmt_translate_says_a_long_file_s_notes_once_for_all_its_chunks(tiny_run, caplog, monkeypatch, tmp_path):
    """A file is translated 20,000 lines at a time: a 100,000-line file's warnings came five
    times, each counting its own fifth. Said once now, counting the whole file."""
    from typer.testing import CliRunner

    from nmt import cli

    monkeypatch.setattr(cli, "TRANSLATE_CHUNK", 2)
    long_line = " ".join([LONG] * 8)  # past the tiny run's 128 pieces
    source = tmp_path / "in.es"
    source.write_text("\n".join([long_line, "Y fué la tarde", long_line, "Y fué la mañana", long_line]) + "\n",
                      encoding="utf-8")
    args = ["translate", "--checkpoint", str(tiny_run.root / "best"), "--input", str(source)]
    for extra, said, count in (([], "translated in", "3 line(s) longer"), (["--whole-lines"], "decoded whole",
                                                                           "3 of 5 line(s) longer")):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="nmt.translate"):
            result = CliRunner().invoke(cli.app, args + extra)
        assert result.exit_code == 0, result.output
        assert len(result.stdout.splitlines()) == 5
        notes = _said(caplog, said)
        assert len(notes) == 1 and notes[0].startswith(count), notes


def test_evaluate_says_the_notes_on_its_source_once_not_once_a_system(tiny_run, caplog, tmp_path):
    from typer.testing import CliRunner

    from nmt.cli import app

    long_line = " ".join([LONG] * 8)
    (tmp_path / "src.es").write_text(f"{long_line}\nY fué la tarde\n", encoding="utf-8")
    (tmp_path / "ref.en").write_text("And God said\nAnd the evening\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="nmt.translate"):
        result = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tiny_run.root / "best"), "--src",
                                          str(tmp_path / "src.es"), "--ref", str(tmp_path / "ref.en"),
                                          "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "eval" / "src.beam3.en").exists()  # greedy and beam 3 both translated it …
    assert len(_said(caplog, "translated in")) == 1  # … and it was said once


def test_translator_noting_sums_says_the_first_or_says_nothing(tmp_path, caplog):
    translator = _translator(tmp_path)
    for calls, expected in (("summed", ["2 line(s)"]), ("first", ["1 line(s)"]), ("none", [])):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="nmt.translate"):
            with translator.noting(calls):
                translator.translate([LONG], beam=1)
                at_once = _said(caplog, "translated in")
                translator.translate(["Y fué la tarde", LONG], beam=1)
        assert [note.split(" longer")[0] for note in _said(caplog, "translated in")] == expected
        assert len(at_once) == (calls == "first")  # summed: at the end; first: as it comes
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="nmt.translate"):  # outside noting: at each call, as before
        translator.translate([LONG], beam=1)
        translator.translate([LONG], beam=1)
    assert len(_said(caplog, "translated in")) == 2


def test_training_says_the_dev_lines_notes_at_its_first_validation_only(tmp_path, caplog):
    from conftest import tiny_config
    from nmt import pipeline
    from nmt.config import run_paths

    config = tiny_config(tmp_path, "train.max_train_len=40", "train.max_steps=4", "train.valid_every=2")
    paths = run_paths(config, tmp_path)
    pipeline.prepare(config, paths)
    pipeline.tokenize(config, paths)
    with caplog.at_level(logging.INFO, logger="nmt"):
        pipeline.train(config, paths)
    validations = [r for r in caplog.records if r.name == "nmt.train" and ": dev loss " in r.getMessage()]
    assert len(validations) == 2  # at steps 2 and 4, each translating the dev lines, some of them cut …
    assert len(_said(caplog, "translated in")) == 1  # … said once
