"""`nmt report`: rendered from a tiny trained run (two checkpoints), checked the way a reader would
— every section there, every picture showing, every number the one sacreBLEU's own CLI prints."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import ROOT, TINY_TSV
from nmt.cli import app
from nmt.report import SECTION_IDS

SECTION_TITLES = ("Scores", "Paired significance", "Scores by source length", "Beam-size sweep", "Search errors",
                  "Training curves", "Attention", "Best and worst sentences")
JSON_KEYS = ("systems", "significance", "length_buckets", "beam_sweep", "search_errors", "curves", "attention",
             "examples")
SWEEP = (1, 2, 3)  # the tiny config decodes with beam 3


@pytest.fixture(scope="module")
def report_dir(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    args = [
        "report", "--checkpoint", str(tiny_run.root / "best"), "--checkpoint", str(tiny_run.root / "last"),
        "--name", "best", "--name", "last", "--out", str(out), "--beams", ",".join(map(str, SWEEP)),
        "--sweep-sentences", "8", "--search-sentences", "4", "--search-max-pieces", "80", "--wide-beam", "4",
        "--heatmaps", "2", "--examples", "3",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def report(report_dir) -> dict:
    def no_nan(name: str):
        raise AssertionError(f"report.json holds {name}, which is not JSON")

    return json.loads((report_dir / "report.json").read_text(encoding="utf-8"), parse_constant=no_nan)


def _sacrebleu(ref: Path, hyp: Path, *extra: str) -> list[dict]:
    cmd = [sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-m", "bleu", "chrf", "ter", "-w", "4",
           "--format", "json", *extra]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def test_every_section_is_in_html_markdown_and_json(report_dir, report):
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    markdown = (report_dir / "report.md").read_text(encoding="utf-8")
    for section_id in SECTION_IDS:
        assert f'<section id="{section_id}">' in html
        assert f'href="#{section_id}"' in html
    for title in SECTION_TITLES:
        assert f"\n## {title}\n" in markdown
    for key in JSON_KEYS:
        assert report[key], key
    assert html.count("How to read this.") == len(SECTION_IDS)


def test_html_is_self_contained_and_every_image_decodes(report_dir, report):
    from base64 import b64decode

    from matplotlib.image import imread

    html = (report_dir / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"(?:src|href)=\"(?!data:|#)", html), "a link or file outside the page"
    assert "http://" not in html and "https://" not in html
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == len(report["figures"]) >= 6  # scores, lengths, sweep, training, 2+ heatmaps
    for data in images:
        png = b64decode(data, validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        pixels = imread(io.BytesIO(png), format="png")
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 50
    markdown = (report_dir / "report.md").read_text(encoding="utf-8")
    for name in report["figures"]:
        assert f"](figures/{name}.png)" in markdown
        assert (report_dir / "figures" / f"{name}.png").is_file()


def test_scores_equal_the_sacrebleu_command_line(report_dir, report):
    import hashlib

    ref = Path(report["reference"])
    assert report["sha256"] == {"source": hashlib.sha256(Path(report["source"]).read_bytes()).hexdigest(),
                                "reference": hashlib.sha256(ref.read_bytes()).hexdigest()}  # of the text scored
    for name, system in report["systems"].items():
        cli = _sacrebleu(ref, report_dir / system["hypotheses"])
        ours = system["scores"]
        for metric, line in zip(("bleu", "chrf", "ter"), cli):
            assert ours[metric]["score"] == pytest.approx(line["score"], abs=1e-4), (name, metric)
            assert ours[metric]["signature"] == line["signature"]


def test_intervals_and_significance_match_sacrebleu_on_real_text(tmp_path):
    """The tiny model scores 0; damaged references give intervals worth comparing."""
    from nmt.analysis import confidence_intervals, paired_test
    from nmt.metrics import corpus_scores

    refs = [line.split("\t")[2] for line in TINY_TSV.read_text(encoding="utf-8").splitlines()[:60]]
    hyps = [" ".join(w for j, w in enumerate(r.split()) if (i + j) % 4) for i, r in enumerate(refs)]
    worse = [" ".join(r.split()[: len(r.split()) // 2]) for r in refs]
    (tmp_path / "ref").write_text("\n".join(refs) + "\n")
    (tmp_path / "hyp").write_text("\n".join(hyps) + "\n")
    cli = _sacrebleu(tmp_path / "ref", tmp_path / "hyp", "--confidence")
    ours = confidence_intervals({"damaged": hyps}, refs)["damaged"]
    plain = corpus_scores(hyps, refs)
    for metric, line in zip(("bleu", "chrf", "ter"), cli):
        assert ours[metric]["score"] == pytest.approx(line["score"], abs=1e-4)
        assert plain[metric]["score"] == pytest.approx(line["score"], abs=1e-4)
        assert ours[metric]["mean"] == pytest.approx(line["confidence_mean"], abs=1e-4)
        assert ours[metric]["ci"] == pytest.approx(line["confidence_var"], abs=1e-4)
        assert ours[metric]["low"] < ours[metric]["score"] < ours[metric]["high"]
    (tmp_path / "worse").write_text("\n".join(worse) + "\n")
    # a system after the first is resampled in the paired test, yet gets the CLI's own interval
    second = confidence_intervals({"damaged": hyps, "halved": worse}, refs)["halved"]
    for metric, line in zip(("bleu", "chrf", "ter"), _sacrebleu(tmp_path / "ref", tmp_path / "worse", "--confidence")):
        assert (second[metric]["mean"], second[metric]["ci"]) == pytest.approx(
            (line["confidence_mean"], line["confidence_var"]), abs=1e-4)
    test = paired_test(("damaged", hyps), ("halved", worse), refs)["metrics"]
    cmd = [sys.executable, "-m", "sacrebleu", str(tmp_path / "ref"), "-i", str(tmp_path / "hyp"),
           str(tmp_path / "worse"), "-m", "bleu", "chrf", "ter", "--paired-bs", "-w", "4", "--format", "text"]
    table = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cli_p = [float(p) for p in re.findall(r"\(p = ([0-9.]+)\)", table)]
    assert [test[m]["p_value"] for m in ("bleu", "chrf", "ter")] == pytest.approx(cli_p, abs=1e-4)
    assert test["chrf"]["better"] == "damaged" and test["ter"]["better"] == "damaged"  # lower TER wins


def test_intervals_bracket_every_score(report):
    for system in report["systems"].values():
        for metric in ("bleu", "chrf", "ter"):
            s = system["scores"][metric]
            assert s["low"] - 1e-9 <= s["score"] <= s["high"] + 1e-9
    for bucket in report["length_buckets"]:
        for scores in bucket["systems"].values():
            for metric in ("bleu", "chrf"):
                assert scores[metric]["low"] - 1e-9 <= scores[metric]["score"] <= scores[metric]["high"] + 1e-9


def test_greedy_and_beam_are_tested_for_significance(report):
    pairs = {(p["baseline"], p["system"]): p for p in report["significance"]["pairs"]}
    assert set(pairs) == {("best greedy", "best beam3"), ("last greedy", "last beam3"), ("best beam3", "last beam3")}
    for pair in pairs.values():
        for metric in ("bleu", "chrf", "ter"):
            result = pair["metrics"][metric]
            assert 0 < result["p_value"] <= 1
            assert result["delta"] == pytest.approx(result["system"] - result["baseline"], abs=1e-3)


def test_identical_systems_are_not_significantly_different():
    from nmt.analysis import paired_test

    refs = ["the cat sat on the mat", "a dog barked"]
    result = paired_test(("a", ["the cat", ""]), ("b", ["the cat", ""]), refs)
    for metric in result["metrics"].values():
        assert metric["delta"] == 0 and metric["p_value"] == 1.0 and not metric["significant"]


def test_best_and_worst_are_ranked_by_sentence_chrf(report):
    from nmt.metrics import sentence_chrf

    for ranked in report["examples"].values():
        best, worst = [r["chrf"] for r in ranked["best"]], [r["chrf"] for r in ranked["worst"]]
        assert best == sorted(best, reverse=True) and worst == sorted(worst)
        assert min(best) >= max(worst)
        for row in ranked["best"] + ranked["worst"]:
            assert row["chrf"] == pytest.approx(sentence_chrf(row["hypothesis"], row["reference"]), abs=0.01)


def test_best_and_worst_order_on_known_scores():
    from nmt.analysis import best_and_worst

    refs = ["one two three four", "alpha beta gamma", "red green blue", "sun moon star"]
    hyps = ["one two three four", "alpha", "red green", "xyz"]
    ranked = best_and_worst(["s"] * 4, refs, hyps, 2)
    assert [r["index"] for r in ranked["best"]] == [0, 2]
    assert [r["index"] for r in ranked["worst"]] == [3, 1]


def test_sweep_search_errors_curves_and_attention(report):
    for run in report["beam_sweep"].values():
        assert [r["beam"] for r in run["rows"]] == list(SWEEP)
        assert all(r["mean_log_prob"] <= 0 for r in run["rows"])
    for run in report["search_errors"]["checkpoints"].values():
        assert run["sentences"] > 0 and [r["beam"] for r in run["rows"]] == list(SWEEP)
        for row in run["rows"]:
            assert 0 <= row["beaten_by_wide_beam"] <= row["search_errors"] <= 1
    (curves,) = report["curves"].values()  # both checkpoints come from one run
    assert curves["train"] and curves["valid"] and len(curves["checkpoint_steps"]) == 2
    assert [r["step"] for r in curves["valid"]] == sorted(r["step"] for r in curves["valid"])
    lengths = {name: [len(m["source_pieces"]) for m in maps] for name, maps in report["attention"].items()}
    assert all(len(v) == 2 for v in lengths.values())
    longest = max(len(s.split()) for s in Path(report["source"]).read_text(encoding="utf-8").splitlines())
    first = report["attention"]["best"][0]
    assert len(first["source"].split()) == longest  # the longest sentence is always shown


def test_a_checkpoint_without_a_training_log_is_named_not_left_out_silently():
    """A checkpoint copied out of its run folder has no metrics.jsonl: the training table showed the
    other runs only, without a word about it."""
    from nmt.report import render_markdown

    run = {"train": [{"step": 20, "clipped_steps": 1}], "valid": [{"step": 20, "dev_bleu": 3.0}],
           "summary": None, "checkpoint_steps": [20]}
    scores = {m: {"score": 1.5, "signature": f"{m}-sig", "text": ""} for m in ("bleu", "chrf", "ter")}
    report = {"source": "test.es", "reference": "test.en", "sentences": 1, "curves": {"tiny": run},
              "systems": {"greedy": {"beam": 1, "scores": scores, "sentences_per_s": 3.0}},
              "no_training_log": ["lone"]}
    text = render_markdown(report)
    assert "No metrics.jsonl beside lone: not in the table or the figure." in text
    assert "| tiny | 20 | 20 | 3.00 |" in text


def test_markdown_of_an_evaluate_report_still_renders():
    from nmt.report import render_markdown

    scores = {m: {"score": 1.5, "signature": f"{m}-sig", "text": ""} for m in ("bleu", "chrf", "ter")}
    report = {
        "checkpoint": "runs/x/best", "step": 10, "source": "test.es", "reference": "test.en", "sentences": 1,
        "systems": {"greedy": {"beam": 1, "scores": scores, "sentences_per_s": 3.0}},
        "samples": [{"index": 0, "source": "hola", "reference": "hello", "greedy": "hi | there"}],
    }
    text = render_markdown(report)
    assert "| greedy | 1 | 1.50 | 1.50 | 1.50 | 3.0 |" in text
    assert "bleu-sig" in text and "hi \\| there" in text


def test_sentences_are_shown_as_written_in_both_reports():
    """Backticks in a sentence made <code> in the HTML report, and <i>…</i> in a subtitle was italic
    in a Markdown viewer: the reports showed sentences the model never wrote, and differed."""
    from markdown_it import MarkdownIt

    from nmt.report import render_html, render_markdown

    said = ["He said ``so'' to me", "Don`t * go <i>x</i> & _y_ | [z](w) $1 \\ ~~q~~"]
    scores = {m: {"score": 1.5, "signature": f"{m}-sig", "text": ""} for m in ("bleu", "chrf", "ter")}
    ranked = [{"index": 0, "chrf": 10.0, "source": said[0], "reference": said[1], "hypothesis": said[1]}]
    report = {
        "checkpoint": "runs/x/best", "step": 10, "source": "test.es", "reference": "test.en", "sentences": 1,
        "systems": {"greedy": {"beam": 1, "scores": scores, "sentences_per_s": 3.0}},
        "samples": [{"index": 0, "source": said[0], "reference": said[1], "greedy": said[1]}],
        "examples": {"greedy": {"best": ranked, "worst": ranked}},
        "attention": {"greedy": [{"index": 0, "source_pieces": [1], "source": said[0], "hypothesis": said[1],
                                  "figure": "none"}]},
    }
    markdown = MarkdownIt("commonmark").enable("table").enable("strikethrough").render(render_markdown(report))
    for shown in (render_html(report, {}), markdown):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", shown)
        for text in said:
            assert html.escape(text, quote=False) in [cell.replace("&quot;", '"').replace("&#x27;", "'") for cell in cells]
        assert f"{html.escape(said[0], quote=False)} → {html.escape(said[1], quote=False)}" in (
            shown.replace("&quot;", '"').replace("&#x27;", "'"))
        assert "<i>" not in shown and "<s>" not in shown and "<em>" not in shown


def test_a_checkpoint_trained_under_other_data_settings_is_not_scored_on_the_first_s_test_split(tiny_run, tmp_path):
    """Only the first checkpoint was checked against the test split: a second run prepared with
    another seed (36 of 40 of the first's test sentences in its training split) was compared on it,
    significance and all, without a word."""
    import dataclasses

    from nmt.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(tiny_run.root / "best")
    reseeded = dataclasses.replace(loaded.config, data=dataclasses.replace(loaded.config.data, seed=7))
    other = save_checkpoint(tmp_path / "other" / "best", loaded.model, reseeded, loaded.tokenizer, loaded.step)
    result = CliRunner().invoke(app, ["report", "--checkpoint", str(tiny_run.root / "best"), "--checkpoint",
                                      str(other), "--out", str(tmp_path / "r"), "--beams", "1,2"])
    assert result.exit_code == 1 and not (tmp_path / "r").exists()
    assert f"was prepared with other settings than {other} was trained on (data.seed " in " ".join(result.output.split())


@pytest.mark.parametrize("args, message", [
    (["--beams", "1,x"], "--beams"),
    (["--beams", "2,,3"], "--beams"),
    (["--beams", "2,5,2"], "--beams"),
    (["--name", "a", "--name", "b"], "--name"),
])
def test_bad_options_fail_with_one_line(tiny_run, tmp_path, args, message):
    """A mistyped option is a usage error, status 2, as --beam 0 is (--beams exited 1)."""
    result = CliRunner().invoke(app, ["report", "--checkpoint", str(tiny_run.root / "best"), "--out", str(tmp_path),
                                      *args])
    assert result.exit_code == (2 if message == "--beams" else 1)
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_chromium_renders_the_report(request, tmp_path):
    from matplotlib.image import imread

    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    report_dir = request.getfixturevalue("report_dir")  # only now: skipping should cost nothing
    png = tmp_path / "shot.png"
    subprocess.run(["bash", str(ROOT / "scripts/screenshot_report.sh"), str(report_dir / "report.html"), str(png),
                    "1200", "1600"], check=True, capture_output=True, timeout=120)
    pixels = imread(png)
    assert pixels.shape[:2] == (1600, 1200)
    dark = (pixels[..., :3].mean(axis=-1) < 0.5).mean()
    assert 0.005 < dark < 0.5, "the page rendered blank (or black)"


def test_a_report_removes_only_the_figures_an_earlier_report_wrote(report, tmp_path):
    """Reporting again into a folder replaces the earlier report's figures and removes those it no
    longer draws; a picture the user keeps in figures/ is never touched."""
    from nmt.evaluation import _write

    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "mine.png").write_bytes(b"the user's")
    _write(tmp_path, {**report, "figures": ["curves", "heatmap_1"]}, {"curves": b"a", "heatmap_1": b"b"})
    _write(tmp_path, {**report, "figures": ["curves"]}, {"curves": b"c"})
    assert sorted(p.name for p in figures.iterdir()) == ["curves.png", "mine.png"]
    assert (figures / "curves.png").read_bytes() == b"c" and (figures / "mine.png").read_bytes() == b"the user's"


def test_a_report_again_into_its_folder_removes_the_earlier_reports_hypotheses(tiny_run, tmp_path):
    """hyps/ kept the systems of an earlier report into the same folder, and the report's own
    "reproduce with" command (sacrebleu ref -i hyps/*) then scored old systems with the new."""
    out = tmp_path / "r"
    (out / "hyps").mkdir(parents=True)
    (out / "hyps" / "notes.txt").write_text("the user's")
    small = ["--out", str(out), "--beams", "1", "--sweep-sentences", "1", "--search-sentences", "0", "--heatmaps", "0"]
    for names in (["a", "b"], ["c"]):
        args = [arg for name in names for arg in ("--checkpoint", str(tiny_run.root / "best"), "--name", name)]
        result = CliRunner().invoke(app, ["report", *args, *small])
        assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert sorted(p.name for p in (out / "hyps").iterdir()) == sorted(
        [Path(s["hypotheses"]).name for s in report["systems"].values()] + ["notes.txt"])


def test_runs_named_alike_as_file_names_are_numbered_and_a_bare_folder_is_named_by_itself(tmp_path, monkeypatch):
    """--name x/y and --name x_y both wrote hyps/x_y_greedy.en (the second overwrote the first, and
    report.json pointed both systems at it); a checkpoint given as `avg1` was named "/avg1"."""
    from nmt.evaluation import _names, _slug

    names = _names([tmp_path / "a", tmp_path / "b"], ["x/y", "x_y"])
    assert len({_slug(f"{n} greedy") for n in names}) == 2
    monkeypatch.chdir(tmp_path)
    assert _names([Path("avg1"), Path("runs/enc/best")], None) == [f"{tmp_path.name}/avg1", "enc"]


def test_a_sweep_of_one_beam_and_no_search_check_say_so():
    """--beams 1 read "BLEU is the same at every beam size; from beam 1 to 1 …", and
    --search-sentences 0 "No test sentence is short enough."."""
    from nmt.report import _search_section, _sweep_summary

    assert _sweep_summary([{"beam": 1, "bleu": 12.5, "mean_log_prob": -7.25}]) == (
        "One beam size, 1: BLEU 12.50, mean log-probability -7.25.")
    errors = {"sentences_asked": 0, "max_source_pieces": 20, "wide_beam": 50, "tolerance": 1e-3,
              "checkpoints": {"m": {"sentences": 0, "alpha": 0.6, "rows": []}}}
    texts = [block.text for block in _search_section({"search_errors": errors}).blocks if hasattr(block, "text")]
    assert "None checked (--search-sentences 0)." in texts and not any("short enough" in t for t in texts)


def test_figures_show_dollar_signs_as_written():
    """matplotlib reads $…$ as math: a piece "▁$$" from a LaTeX-bearing corpus, or a system named
    "price $$", ended `nmt report` in a traceback after all its decoding."""
    import numpy as np

    from nmt import plots

    png = b"\x89PNG\r\n\x1a\n"
    pieces = ["▁$$", "▁x", "^", "2", "▁$$", "</s>"]
    assert plots.attention_figure(pieces, pieces[1:], np.full((5, 6), 1 / 6), "price $$ x^2 $").startswith(png)
    interval = {"score": 1.0, "low": 0.5, "high": 1.5}
    assert plots.scores_figure({"price $$": {m: interval for m in ("bleu", "chrf", "ter")}}).startswith(png)


def test_log_axes_keep_their_numbers_when_names_hold_dollar_signs(monkeypatch):
    """Turning matplotlib's math off for the whole figure (to show a name's $ as written) printed
    the log axes' labels as raw $\\mathdefault{10^{1}}$ (dev perplexity, learning rate)."""
    from nmt import plots

    drawn = []
    monkeypatch.setattr(plots, "to_png", lambda fig: drawn.append(fig) or b"")
    train = [{"step": s, "train_loss": 5.0 / s, "lr": 0.01 / s, "grad_norm": 1.0, "grad_norm_max": 2.0}
             for s in (1, 10, 100)]
    valid = [{"step": s, "dev_loss": 4.0 / s, "dev_ppl": 1000.0 / s, "dev_bleu": float(s)} for s in (1, 10, 100)]
    plots.training_figure({"price $$": {"train": train, "valid": valid, "clip_norm": 1.0}}, {})
    (figure,) = drawn
    figure.canvas.draw()
    labels = [label for ax in figure.axes for label in ax.get_yticklabels() if "mathdefault" in label.get_text()]
    assert labels and all(label.get_parse_math() for label in labels)  # drawn as 10^1, not as the text
    legend = [text.get_text() for ax in figure.axes if ax.get_legend() for text in ax.get_legend().get_texts()]
    assert "price \\$\\$ train" in legend  # the name's $ shown as a $


def test_chinese_sources_are_bucketed_by_their_letters_not_as_one_word_each():
    """Unspaced Chinese sentences counted as one word each: every one fell in the first bucket,
    and the figure's "source length (words)" showed one point."""
    from nmt.analysis import length_buckets
    from nmt.diagnostics import heatmap_sentences

    sources = ["要有光", "神说要有光就有了光神看光是好的就把光暗分开了", "起初神创造天地"]
    refs = ["let there be light", "and god said let there be light and there was light", "in the beginning"]
    buckets = length_buckets(sources, refs, {"greedy": refs}, n=10, lang="en")
    assert [(b["label"], b["sentences"]) for b in buckets] == [("1–10", 2), ("21–30", 1)]
    assert heatmap_sentences(sources, 1) == [1]  # the longest


def test_the_reproduce_command_scores_as_the_report_does():
    """The command had no -tok: for a Chinese target it printed 13a BLEU, not the report's."""
    from nmt.report import render_markdown

    scores = {m: {"score": 1.5, "signature": f"{m}-sig", "text": "", "low": 1.0, "high": 2.0}
              for m in ("bleu", "chrf", "ter")}
    report = {"checkpoint": "runs/x/best", "step": 10, "source": "test.es", "reference": "test.zh", "sentences": 1,
              "systems": {"greedy": {"beam": 1, "scores": scores, "sentences_per_s": 3.0}},
              "bootstrap": {"resamples": 10, "seed": "12345", "hypotheses_dir": "hyps",
                            "sacrebleu_options": "-tok zh --ter-normalized --ter-asian-support"}}
    assert ("`sacrebleu test.zh -i HYP -m bleu chrf ter -tok zh --ter-normalized --ter-asian-support --confidence`"
            in render_markdown(report))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_a_reference_equal_to_the_output_is_no_search_error_in_any_precision(tmp_path, precision):
    """The output was scored in the search's arithmetic (bf16 autocast, int8 products) and the
    reference in fp32: with the reference set to the output itself, 94 % of bf16 lines and 25 % of
    int8 lines were "beaten by the reference"."""
    import dataclasses

    import torch

    from conftest import saved_tiny_model
    from nmt import diagnostics
    from nmt.config import DecodeConfig
    from nmt.tokenizer import EOS
    from nmt.translate import Translator

    config, tokenizer, model, _ = saved_tiny_model(tmp_path)
    with torch.no_grad():
        model.generator.bias[EOS] += 4.0  # an untrained model that ends its sentences after a few pieces
    sources = [row.split("\t")[1] for row in TINY_TSV.read_text(encoding="utf-8").splitlines()[:40]]
    decode = DecodeConfig(beam=3, batch_size=16, precision=precision)
    translator = Translator(model, tokenizer, dataclasses.replace(config, decode=decode), "cpu")
    out = diagnostics.decode(translator, sources, 3, 0.6)
    index = [i for i in diagnostics.short_sentences(translator, sources, 40, 40)
             if out.best[i] and tokenizer.encode_tgt([out.texts[i]])[0] == out.best[i].tokens]
    assert len(index) >= 10
    (row,) = diagnostics.search_errors(translator, sources, out.texts, (3,), 0.6, index, wide=3)
    assert row == {"beam": 3, "beaten_by_wide_beam": 0.0, "beaten_by_reference": 0.0, "search_errors": 0.0}


def test_an_interval_stays_within_the_metric_s_range():
    """mean ± half-width of a 3-sentence test set gave BLEU [34.65, 101.55]: a BLEU above 100."""
    from nmt.analysis import confidence_intervals

    refs = ["我们今天去公园玩了很久。", "他是一个非常好的人。", "这本书很有意思。"]
    hyps = ["我们今天去公园玩了。", "他是一个好人。", "这本书很有意思。"]
    intervals = confidence_intervals({"greedy": hyps}, refs, lang="zh")["greedy"]
    assert intervals["bleu"]["mean"] + intervals["bleu"]["ci"] > 100  # sacreBLEU's own ends
    for name, interval in intervals.items():
        assert 0 <= interval["low"] <= interval["score"] <= interval["high"], name
        assert name == "ter" or interval["high"] <= 100, name


def test_a_source_file_given_alone_is_the_one_scored(tiny_run, tmp_path):
    """--src without --ref (the run's test references) was dropped for the run's own test source."""
    from nmt.evaluation import Candidate, _test_set
    from nmt.translate import Translator

    given = tmp_path / "mine.es"
    given.write_text((tiny_run.root / "data" / "test.es").read_text(encoding="utf-8"), encoding="utf-8")
    best = tiny_run.root / "best"
    cand = Candidate("best", best, Translator.from_checkpoint(best), 3, 0.6)
    src, ref, sources, refs = _test_set([cand], given, None)
    assert (src, ref) == (given, tiny_run.root / "data" / "test.en") and len(sources) == len(refs)


def test_a_model_of_fewer_target_pieces_than_the_wide_beam_gets_its_report(tmp_path):
    """A model of 41 target pieces: the search-error check's default beam of 50 failed the report
    (and make report, which cannot pass --wide-beam) after all its decoding."""
    import dataclasses
    import random

    from conftest import TINY_CONFIG
    from nmt.checkpoint import save_checkpoint
    from nmt.config import TokenizerConfig, load_config
    from nmt.evaluation import ReportOptions, build_report
    from nmt.model import build_model
    from nmt.tokenizer import Tokenizer, train_tokenizer

    words = {"uno": "one", "dos": "two", "tres": "three", "cuatro": "four", "cinco": "five"}
    draw = random.Random(0)
    pairs = [[draw.choice(list(words)) for _ in range(draw.randint(1, 4))] for _ in range(300)]
    src, tgt = [" ".join(p) for p in pairs], [" ".join(words[w] for w in p) for p in pairs]
    train_tokenizer(src, tgt, TokenizerConfig(vocab_size=30), tmp_path / "tok")
    tokenizer = Tokenizer.from_folder(tmp_path / "tok")
    assert tokenizer.tgt_vocab < 50
    config = load_config(TINY_CONFIG)
    model = build_model(config.model, tokenizer.src_vocab, tokenizer.tgt_vocab)
    save_checkpoint(tmp_path / "ckpt", model, config, tokenizer, step=1)
    (tmp_path / "test.es").write_text("".join(line + "\n" for line in src[:4]), encoding="utf-8")
    (tmp_path / "test.en").write_text("".join(line + "\n" for line in tgt[:4]), encoding="utf-8")
    options = ReportOptions(sweep_beams=(1, 2, 5, 10, 40), sweep_sentences=2, search_sentences=2, heatmaps=0,
                            examples=1, bootstrap=10)
    report = build_report([tmp_path / "ckpt"], src=tmp_path / "test.es", ref=tmp_path / "test.en",
                          out_dir=tmp_path / "out", options=options)
    widest = tokenizer.tgt_vocab - 2  # <pad> and <s> are never chosen
    assert report["search_errors"]["wide_beam"] == widest
    (sweep,) = report["beam_sweep"].values()
    assert [row["beam"] for row in sweep["rows"]] == [b for b in (1, 2, 5, 10, 40) if b <= widest]
    assert f"output of a beam of {widest}" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    from nmt.errors import NmtError

    with pytest.raises(NmtError, match=rf"^--beams: every beam of the sweep is wider than the {widest} target pieces"):
        build_report([tmp_path / "ckpt"], src=tmp_path / "test.es", ref=tmp_path / "test.en", out_dir=tmp_path / "none",
                     options=dataclasses.replace(options, sweep_beams=(40, 45)))
    assert not (tmp_path / "none").exists()  # refused before any decoding


def test_the_report_says_the_notes_on_its_source_once_for_all_its_passes(tiny_run, tmp_path, caplog):
    """The report decodes its source greedily, with the beam, then in the sweep: a line cut into
    parts was said at each pass."""
    import logging

    from test_segment import LONG, _said

    long_line = " ".join([LONG] * 8)  # past the tiny run's 128 pieces
    (tmp_path / "src.es").write_text(f"{long_line}\nY fué la tarde\n", encoding="utf-8")
    (tmp_path / "ref.en").write_text("And God said\nAnd the evening\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="nmt.translate"):
        result = CliRunner().invoke(app, ["report", "--checkpoint", str(tiny_run.root / "best"), "--src",
                                          str(tmp_path / "src.es"), "--ref", str(tmp_path / "ref.en"), "--out",
                                          str(tmp_path / "r"), "--beams", "1,2", "--search-sentences", "0",
                                          "--heatmaps", "0"])
    assert result.exit_code == 0, result.output
    assert len(_said(caplog, "translated in")) == 1
