"""Checkpoints: self-contained, safe, identical after reload; resuming changes nothing."""

import dataclasses
import json
import logging
import os
import re
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import nmt
from conftest import SPM200, TINY_TSV, saved_tiny_model, tiny_config
from nmt import pipeline
from nmt.checkpoint import LONGEST_SOURCE, CheckpointError, load_checkpoint, save_checkpoint
from nmt.config import run_paths
from nmt.errors import NmtError
from nmt.provenance import versions
from nmt.translate import Translator

LINES = ["Y dijo Dios: Sea la luz.", "", "Y vió Dios que la luz era buena.", "En el principio"]


def test_save_then_load_translates_identically(tmp_path):
    config, tokenizer, model, folder = saved_tiny_model(tmp_path)
    before = Translator(model, tokenizer, config).translate(LINES, beam=3)
    loaded = load_checkpoint(folder)
    after = Translator(loaded.model, loaded.tokenizer, loaded.config).translate(LINES, beam=3)
    assert before == after and loaded.step == 7
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor, rtol=0, atol=0)
    # Loading needs nothing beside the folder: the config and tokenizer travel with it.
    moved = tmp_path / "elsewhere"
    shutil.copytree(folder, moved)
    assert Translator.from_checkpoint(moved).translate(LINES, beam=3) == before


@pytest.mark.parametrize("beam", [1, 3])
def test_translations_keep_their_lines_whatever_the_batch_size(tmp_path, beam):
    """Decoding takes at most batch_size sentences at a time, sorted by length, each finished one's
    place given to the next: every line still gets its own translation, in input order, empty
    lines empty, and the same one as in a batch holding every line."""
    config, tokenizer, model, _ = saved_tiny_model(tmp_path)
    lines = [line for n in range(1, 4) for line in (" ".join(LINES[0].split()[:n] * n), "", LINES[2][: 8 * n])] + LINES

    def translator(batch_size: int) -> Translator:
        decode = dataclasses.replace(config.decode, batch_size=batch_size)
        return Translator(model, tokenizer, dataclasses.replace(config, decode=decode))

    whole = translator(len(lines)).translate(lines, beam=beam)
    assert [line for line, source in zip(whole, lines) if not source.strip()] == ["", "", "", ""]
    for size in (1, 2, 5):
        assert translator(size).translate(lines, beam=beam) == whole
    assert [translator(2).translate([line], beam=beam)[0] for line in lines] == whole


def test_checkpoint_holds_no_pickle(tmp_path):
    *_, folder = saved_tiny_model(tmp_path)
    for path in folder.iterdir():
        assert not path.read_bytes().startswith(b"\x80"), f"{path.name} looks like a pickle"
    assert "decoder.embed.weight" in load_file(folder / "model.safetensors") or "generator.weight" in load_file(
        folder / "model.safetensors"
    )


class _Planted:
    """A pickle that runs code when unpickled: it creates the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_of_pickles_runs_no_code_when_loaded_translated_or_resumed(tmp_path):
    """torch.save writes a zip of pickles (not starting with \\x80), and torch.load of an untrusted
    one runs its code. Each weights file replaced by such a file is refused in one line, and the
    code it holds never runs."""
    from typer.testing import CliRunner

    from nmt.checkpoint import load_checkpoint
    from nmt.cli import app
    from nmt.errors import NmtError
    from nmt.trainstate import load_trainer_state

    *_, folder = saved_tiny_model(tmp_path)
    marker = tmp_path / "ran"
    planted = tmp_path / "planted.pt"
    torch.save({"weights": _Planted(marker)}, planted)
    for name in ("model.safetensors", "trainer.safetensors"):
        shutil.copy(planted, folder / name)
    (folder / "trainer.json").write_text(json.dumps({}), encoding="utf-8")
    assert (folder / "model.safetensors").read_bytes()[:2] == b"PK"  # as torch.save writes it
    with pytest.raises(NmtError):
        load_checkpoint(folder)
    with pytest.raises(NmtError):
        load_trainer_state(folder)
    result = CliRunner().invoke(app, ["translate", "--checkpoint", str(folder)], input="Y dijo Dios\n")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert not marker.exists()
    torch.load(planted, weights_only=False)  # where unpickled, the planted code runs:
    assert marker.exists()  # the check above can fail


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_every_checkpoint_file_gets_the_permissions_the_umask_gives_a_new_file(tmp_path):
    """safetensors 0.8 writes its files 0600: the weights of a checkpoint shared with a group, or
    copied for another user, could not be read, while its other files could."""
    import stat

    from nmt.checkpoint import save_checkpoint

    umask = os.umask(0)
    os.umask(umask)
    config, tokenizer, model, _ = saved_tiny_model(tmp_path)
    folder = save_checkpoint(tmp_path / "shared", model, config, tokenizer, step=3,
                             trainer_tensors={"m": torch.zeros(2)}, trainer_state={"step": 3})
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()}
    assert {"model.safetensors", "trainer.safetensors", "checkpoint.json", "src.model"} <= set(modes)
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_a_checkpoint_that_cannot_be_written_is_named_not_its_temporary(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    config, tokenizer, model, _ = saved_tiny_model(tmp_path)

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(OSError) as raised:
        save_checkpoint(tmp_path / "avg", model, config, tokenizer, step=3)
    assert (raised.value.errno, raised.value.filename) == (errno.EROFS, str(tmp_path / "avg"))


def test_incomplete_checkpoint(tmp_path):
    *_, folder = saved_tiny_model(tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="incomplete checkpoint.*model.safetensors"):
        load_checkpoint(folder)


def test_weights_held_as_views_of_one_buffer_save_and_reload(tmp_path):
    """On a GPU cuDNN keeps each LSTM's weights as views of one flat buffer (safetensors' save_model
    refused those: every checkpoint of a CUDA run failed). Made here on the CPU the same way."""
    config, tokenizer, model, _ = saved_tiny_model(tmp_path)
    for rnn in (model.encoder.rnn, model.decoder.rnn):
        params = list(rnn.parameters())
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        offset = 0
        for p in params:
            p.data = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        assert rnn.weight_hh_l0.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
    folder = save_checkpoint(tmp_path / "flat", model, config, tokenizer, step=1)
    loaded = load_checkpoint(folder)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor, rtol=0, atol=0)
    assert loaded.model.generator.weight is loaded.model.decoder.embed.weight  # the tie survives
    assert len(load_file(folder / "model.safetensors")) == len(model.state_dict()) - 1  # stored once


@pytest.mark.parametrize("message", ["Error while serializing: I/O error: No space left on device (os error 28)",
                                     "Error while serializing: something else"])
def test_a_full_disk_while_saving_is_one_line_and_leaves_nothing_half_written(tmp_path, monkeypatch, message):
    """safetensors raises its own error for a failed write, which no handler took for the OSError
    it is: training on a full disk ended in a 60-line traceback."""
    from safetensors import SafetensorError

    from nmt import checkpoint
    from nmt.terminal import guarded

    config, tokenizer, model, _ = saved_tiny_model(tmp_path)
    before = sorted(tmp_path.iterdir())

    def full(tensors, path):
        with open(path, "wb") as half:
            half.write(b"half")
        raise SafetensorError(message)

    monkeypatch.setattr(checkpoint, "save_file", full)
    command = guarded(lambda: save_checkpoint(tmp_path / "new", model, config, tokenizer, step=3))
    with pytest.raises(SystemExit) as exited:
        command()
    assert exited.value.code == 1
    assert sorted(tmp_path.iterdir()) == before  # no temporary folder, no half checkpoint
    with pytest.raises(OSError if "os error" in message else CheckpointError) as raised:
        save_checkpoint(tmp_path / "new", model, config, tokenizer, step=3)
    if "os error" in message:
        assert (raised.value.errno, raised.value.filename) == (28, str(tmp_path / "new" / "model.safetensors"))
    else:
        assert str(raised.value) == f"{tmp_path / 'new' / 'model.safetensors'}: cannot be written ({message})"


def test_incompatible_version(tmp_path):
    *_, folder = saved_tiny_model(tmp_path)
    manifest = json.loads((folder / "checkpoint.json").read_text())
    assert manifest["nmt_version"] == nmt.__version__
    assert manifest.get("nmt_commit") == versions().get("commit")  # the code that wrote it (where nmt is a checkout)
    manifest["format_version"], manifest["nmt_version"] = 99, "7.0.0"
    (folder / "checkpoint.json").write_text(json.dumps(manifest))
    expected = rf"format version 99 \(written by nmt 7\.0\.0\); this nmt \({re.escape(nmt.__version__)}\) reads version 1"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(folder)


def _one_line_error(result) -> str:
    """The error a command ended with: exit status 1 and one line on stderr, no traceback."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0].removeprefix("error: ")


@pytest.mark.parametrize("tamper, says", [
    (lambda m: m.pop("step"), '"step" is missing'),
    (lambda m: m.update(step="12k"), "\"step\" must be a whole number, not '12k'"),
    (lambda m: m.update(step=None), '"step" must be a whole number, not None'),
    (lambda m: m.update(files=5), '"files" must be a list of file names, not 5'),
    (lambda m: m.update(config=[]), '"config" must be an object (the settings), not []'),
    (lambda m: m["config"].update(train=3), '"config" section "train" must be an object, not 3'),
])
def test_a_checkpoint_json_edited_out_of_shape_is_one_line_naming_the_field(tmp_path, tamper, says):
    """A hand-edited checkpoint.json (a step that is not a number, files or config of the wrong
    type) ended every command that reads it in a KeyError, ValueError, TypeError or AttributeError."""
    from typer.testing import CliRunner

    from nmt.cli import app

    *_, good = saved_tiny_model(tmp_path)
    run = tmp_path / "run" / "checkpoints"
    shutil.copytree(good, run / "step-0000007")
    folder = shutil.copytree(good, run / "step-0000008")
    manifest = json.loads((folder / "checkpoint.json").read_text())
    tamper(manifest)
    (folder / "checkpoint.json").write_text(json.dumps(manifest))
    (tmp_path / "src.es").write_text("hola\n")
    (tmp_path / "ref.en").write_text("hello\n")
    test_set = ["--src", str(tmp_path / "src.es"), "--ref", str(tmp_path / "ref.en")]
    expected = f"{folder}: unusable checkpoint (checkpoint.json: {says})"
    runner = CliRunner()
    assert _one_line_error(runner.invoke(app, ["translate", "--checkpoint", str(folder)], input="hola\n")) == expected
    for command in ("evaluate", "report"):
        result = runner.invoke(app, [command, "--checkpoint", str(folder), *test_set, "--out", str(tmp_path / command)])
        assert _one_line_error(result) == expected, command
    result = runner.invoke(app, ["average", str(tmp_path / "run"), "--last", "2", "-o", str(tmp_path / "mean")])
    assert _one_line_error(result) == expected


def test_weights_that_do_not_fit_the_config(tmp_path):
    *_, folder = saved_tiny_model(tmp_path)
    manifest = json.loads((folder / "checkpoint.json").read_text())
    manifest["config"]["model"]["emb_dim"] = 48
    manifest["config"]["model"]["dec_hidden"] = 48
    (folder / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="do not fit|do not match"):
        load_checkpoint(folder)


def test_weights_stored_as_integers_are_refused_not_converted(tmp_path):
    """A weights file of int64 tensors (written by some other tool) loaded as float32 without a word."""
    from safetensors.torch import save_file

    *_, folder = saved_tiny_model(tmp_path)
    stored = load_file(str(folder / "model.safetensors"))
    save_file({k: (v * 1000).to(torch.int64) for k, v in stored.items()}, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model weights do not fit the config \(.* is I64 in model.safetensors, "
                                              r"not floating point\)"):
        load_checkpoint(folder)
    save_file({k: v.to(torch.bfloat16) for k, v in stored.items()}, str(folder / "model.safetensors"))
    assert load_checkpoint(folder).model.generator.weight.dtype == torch.float32  # bf16 weights: still weights


@pytest.mark.parametrize("edit, says", [
    ("attention", r"holds 3 tensors \(decoder.attention.query_proj.bias, decoder.attention.query_proj.weight, "
                  r"decoder.attention.v.weight\) the config does not ask for\)$"),
    ("extra", r"holds 1 tensor \(decoder.extra.weight\) the config does not ask for\)$"),
    ("many", r"holds 5 tensors \(extra.0, extra.1, extra.2 and 2 more\) the config does not ask for\)$"),
    ("missing", r"lacks 1 tensor \(decoder.combine.weight\) the config asks for\)$"),
], ids=["luong", "extra", "many", "missing"])
def test_weights_left_over_or_missing_are_named(tmp_path, edit, says):
    """A config edited to Luong attention, or a tensor added to model.safetensors, was refused with
    "weights do not match the model (missing [])": it named the empty list, not the tensors."""
    from safetensors.torch import save_file

    *_, folder = saved_tiny_model(tmp_path)
    weights = load_file(folder / "model.safetensors")
    if edit == "attention":
        _edit_config(folder, "model", "attention", "luong")
    elif edit == "missing":
        del weights["decoder.combine.weight"]
    else:
        added = ["decoder.extra.weight"] if edit == "extra" else [f"extra.{i}" for i in range(5)]
        weights |= {name: torch.zeros(2) for name in added}
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(folder))}: model weights do not fit the config "
                                              rf"\(model.safetensors {says}"):
        load_checkpoint(folder)


def test_resuming_from_weights_of_another_shape_names_the_tensor(tmp_path):
    """Resuming loads the weights into the model the run's config builds; weights of another shape
    (a model.safetensors copied from another run) were refused with the first line of PyTorch's
    paragraph, "Error(s) in loading state_dict for Seq2Seq:", which names nothing."""
    from nmt.model import build_model

    _, paths = _train(tmp_path, "train.max_steps=8")
    config = tiny_config(tmp_path)
    wider = dataclasses.replace(config.model, enc_hidden=config.model.enc_hidden + 2)
    last = (paths.root / "last").resolve()
    tokenizer = load_checkpoint(last).tokenizer
    other = build_model(wider, tokenizer.src_vocab, tokenizer.tgt_vocab)
    save_checkpoint(tmp_path / "other", other, config, tokenizer, step=8)
    shutil.copy(tmp_path / "other" / "model.safetensors", last / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model weights do not fit the config \(encoder.rnn.weight_ih_l0 is "
                                              r"\[\d+, \d+\] in model.safetensors, \[\d+, \d+\] by the config\)"):
        _train(tmp_path, "train.max_steps=16")


@pytest.mark.parametrize("side", ["source", "target"])
def test_a_tokenizer_of_another_size_than_the_weights_is_named(side, tmp_path):
    """A tokenizer.model swapped in from another run was refused as weights that "do not fit the
    config", which sent the user to a config that was right."""
    from safetensors.torch import save_model

    from nmt.model import build_model

    config, tokenizer, _, folder = saved_tiny_model(tmp_path)
    sizes = {"source": tokenizer.src_vocab, "target": tokenizer.tgt_vocab}
    other = build_model(config.model, *(n + 3 if s == side else n for s, n in sizes.items()))
    save_model(other, str(folder / "model.safetensors"))
    name = "encoder.embed.weight" if side == "source" else "decoder.embed.weight"
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(folder))}: model weights do not fit the tokenizer "
                                              rf"\({name} has {sizes[side] + 3:,} rows in model.safetensors, for "
                                              rf"{sizes[side]:,} {side} pieces in the tokenizer\)$"):
        load_checkpoint(folder)


def test_a_config_asking_for_more_memory_than_there_is_is_refused_before_building(tmp_path):
    """enc_hidden 200,000 in a hand-edited checkpoint.json: building the model asked the allocator
    for terabytes, and its failure came out as a traceback."""
    *_, folder = saved_tiny_model(tmp_path)
    manifest = json.loads((folder / "checkpoint.json").read_text())
    hidden = manifest["config"]["model"]["enc_hidden"]
    manifest["config"]["model"]["enc_hidden"] = 200_000
    (folder / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=rf"do not fit the config \(encoder.rnn.weight_ih_l0 is \[{4 * hidden}, "
                                              rf"\d+\] in model.safetensors, \[800000, \d+\] by the config\)"):
        load_checkpoint(folder)


def _edit_config(folder, section, key, value):
    manifest = json.loads((folder / "checkpoint.json").read_text())
    manifest["config"][section][key] = value
    (folder / "checkpoint.json").write_text(json.dumps(manifest))


def test_a_checkpoint_loads_whatever_its_training_settings(tmp_path):
    """Loading checks the settings decoding uses, so a range check added to training later (as
    train.patience >= 1 and train.clip_norm > 0 were) does not orphan checkpoints made before it."""
    config, tokenizer, model, folder = saved_tiny_model(tmp_path)
    for section, key, value in (("train", "patience", 0), ("train", "clip_norm", 0.0), ("data", "max_ratio", 0.5)):
        _edit_config(folder, section, key, value)
    loaded = load_checkpoint(folder)
    assert loaded.config.train.patience == 0
    assert Translator(loaded.model, loaded.tokenizer, loaded.config).translate(LINES, beam=3) == \
        Translator(model, tokenizer, config).translate(LINES, beam=3)


@pytest.mark.parametrize("section, key, value, message", [
    ("decode", "beam", 0, "decode.beam must be at least 1"),
    ("model", "enc_layers", 9, "between 1 and 4"),
    # decoding cuts lines longer than it: at 0 every word became a part of its own, and garbage
    ("train", "max_train_len", 0, "train.max_train_len must be at least 1, not 0"),
    ("train", "max_train_len", -3, "train.max_train_len must be at least 1, not -3")])
def test_a_checkpoint_with_decoding_settings_out_of_range_is_refused(tmp_path, section, key, value, message):
    *_, folder = saved_tiny_model(tmp_path)
    _edit_config(folder, section, key, value)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(folder)


def test_a_link_moved_by_training_while_loading_does_not_mix_two_checkpoints(tmp_path, monkeypatch):
    """Training moves runs/<name>/last from one checkpoint to the next; a translate loading it at
    that moment read the manifest and tokenizer of one and, before, the weights of the other."""
    from nmt import checkpoint
    from nmt.checkpoint import point

    config, tokenizer, model, first = saved_tiny_model(tmp_path / "a", step=7)
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "b" / "ckpt", type(model)(config.model, tokenizer.src_vocab,
                            tokenizer.tgt_vocab), config, tokenizer, step=8)
    link = tmp_path / "last"
    point(link, first)
    from_folder = checkpoint.Tokenizer.from_folder

    def moved_meanwhile(folder):
        point(link, other)  # the trainer saves step 8 while step 7 is being read
        return from_folder(folder)

    monkeypatch.setattr(checkpoint.Tokenizer, "from_folder", moved_meanwhile)
    loaded = load_checkpoint(link)
    assert loaded.step == 7
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor, rtol=0, atol=0)


def test_missing_checkpoint_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")


def _train(runs, *overrides, on_progress=None):
    config = tiny_config(runs, "train.valid_every=8", *overrides)
    paths = run_paths(config, runs)
    if not paths.data.exists():
        pipeline.prepare(config, paths)
        shutil.copytree(SPM200, paths.tokenizer)
    return pipeline.train(config, paths, on_progress=on_progress), paths


class Interrupted(Exception):
    pass


def _interrupt_at(step):
    def on_progress(progress):
        if progress.step == step:
            raise Interrupted  # as Ctrl-C or a killed job would, between two checkpoints
    return on_progress


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    summary, straight = _train(tmp_path / "a", "train.max_steps=24")
    with pytest.raises(Interrupted):
        _train(tmp_path / "b", "train.max_steps=24", on_progress=_interrupt_at(13))
    assert load_checkpoint(tmp_path / "b" / "tiny" / "last").step == 8  # the last checkpoint before
    resumed_summary, resumed = _train(tmp_path / "b", "train.max_steps=24")  # picks up from last
    assert resumed_summary["steps"] == summary["steps"] == 24
    a = load_file(straight.root / "last" / "model.safetensors")
    b = load_file(resumed.root / "last" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    # metrics.jsonl: each line once, and the same: the first line after the resume covered only the
    # steps since the checkpoint (its window was not saved), so loss and gradient norms differed
    logged = lambda p: [{k: v for k, v in json.loads(l).items() if "second" not in k and k not in  # noqa
                         ("tokens_per_s", "elapsed_s")} for l in (p.root / "metrics.jsonl").read_text().splitlines()]
    assert logged(straight) == logged(resumed)


def _batches_per_epoch(paths, config) -> int:
    from nmt.batching import token_batches
    from nmt.tokenizer import Tokenizer
    from nmt.trainset import load_training_data

    data = load_training_data(paths.data, Tokenizer.from_folder(paths.tokenizer), paths.tokenizer, config)
    rng = np.random.default_rng([config.train.seed, 0])
    return len(token_batches(data.train_src.lengths, data.train_tgt.lengths, config.train.max_tokens, rng))


def test_a_run_ending_on_an_epochs_last_batch_counts_that_epoch(tmp_path):
    """The count went up only when the loop came round again, so a run stopping on an epoch's last
    batch reported one epoch fewer than it trained, and so did its progress line."""
    big = ("train.max_tokens=3200", "train.valid_every=1000")  # a short epoch, validated once at the end
    _, paths = _train(tmp_path, "train.max_steps=1", *big)
    n = _batches_per_epoch(paths, tiny_config(tmp_path, *big))
    shutil.rmtree(paths.root)
    epochs = {}
    summary, _ = _train(tmp_path, f"train.max_steps={n}", *big, on_progress=lambda p: epochs.update({p.step: p.epoch}))
    assert summary["epochs_completed"] == 1 and epochs[n] == 1 and epochs[n - 1] == 0
    resumed, _ = _train(tmp_path, f"train.max_steps={n + 2}", *big)  # goes on with the second epoch
    assert resumed["epochs_completed"] == 1 and resumed["steps"] == n + 2


@pytest.mark.parametrize("changed", ["train.max_tokens=1300", "train.seed=5", "train.max_train_len=60"])
def test_a_run_resumed_mid_epoch_under_other_batch_settings_still_sees_each_pair_once(monkeypatch, tiny_run, tmp_path,
                                                                                      changed):
    """The position saved (9 batches into the epoch) was counted in a batch list made under the new
    train.max_tokens (lowered after running out of memory, say), seed or max_train_len: the rest of
    the epoch skipped some pairs and repeated others (155 never seen, 25 twice of 500, in review).
    A second resume inside that rest, under the same settings, keeps to it."""
    import signal

    from nmt import train

    seen = []
    real = train.make_batch
    monkeypatch.setattr(train, "make_batch", lambda src, index, tgt: seen.append((src, index)) or real(src, index, tgt))

    def trainer(*overrides):
        config = tiny_config(tmp_path, "train.valid_every=1000", "train.max_steps=1000", *overrides)
        return train.Trainer(config, tiny_run.data, tiny_run.tokenizer, tmp_path / "run")

    def stop_at(step=None):
        def on_progress(progress):
            if progress.step == step:
                os.kill(os.getpid(), signal.SIGINT)  # saved: the next resume starts here
            elif progress.epoch == 1:
                raise Interrupted
        return on_progress

    runs = [trainer("train.max_steps=9")]
    runs[0].train()
    runs.append(trainer(changed))  # resumes at step 9
    with pytest.raises(KeyboardInterrupt):
        runs[1].train(on_progress=stop_at(12))
    assert load_checkpoint(tmp_path / "run" / "last").step == 12
    runs.append(trainer(changed))
    with pytest.raises(Interrupted):
        runs[2].train(on_progress=stop_at())
    lines = [[int(line) for src, index in seen if src is run.train_src for line in run.train_ids[index]] for run in runs]
    epoch = sum(lines, [])  # stopped as the epoch's last batch completed it
    assert len(epoch) == len(set(epoch))  # none twice
    # each once: those seen before the change, and the rest that the new max_train_len keeps
    assert set(epoch) == set(lines[0]) | (set(runs[0].train_ids.tolist()) & set(runs[2].train_ids.tolist()))
    assert len(runs[0].train_ids) == 500 and (len(runs[2].train_ids) < 500) == changed.endswith("len=60")


def test_same_seed_same_loss_curve(tmp_path):
    _train(tmp_path / "a", "train.max_steps=16")
    _train(tmp_path / "b", "train.max_steps=16")
    curve = lambda r: [l for l in (r / "tiny" / "metrics.jsonl").read_text().splitlines()]  # noqa
    strip = lambda lines: [{k: v for k, v in json.loads(l).items() if "second" not in k and k not in ("tokens_per_s", "elapsed_s")} for l in lines]  # noqa
    assert strip(curve(tmp_path / "a")) == strip(curve(tmp_path / "b"))


def test_a_file_where_the_checkpoints_go_is_refused_before_the_first_step(tmp_path):
    in_the_way = tmp_path / "tiny" / "checkpoints"
    in_the_way.parent.mkdir()
    in_the_way.write_text("kept\n")
    with pytest.raises(NotADirectoryError) as refused:
        _train(tmp_path, "train.max_steps=8", on_progress=lambda progress: pytest.fail("trained first"))
    assert refused.value.filename == str(in_the_way)
    assert in_the_way.read_text() == "kept\n"


def test_best_and_last_are_complete_checkpoints(tiny_run):
    for name in ("best", "last"):
        loaded = load_checkpoint(tiny_run.root / name)
        assert loaded.step > 0
    summary = json.loads((tiny_run.root / "train_summary.json").read_text())
    assert summary["best_step"] == load_checkpoint(tiny_run.root / "best").step
    assert summary["versions"] == versions()
    leftovers = [p for p in (tiny_run.root / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not leftovers  # no temporary folders left behind
    assert os.path.islink(tiny_run.root / "best")


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_saves_the_step_it_came_in_and_the_resumed_run_gives_the_same_weights(tmp_path, signum):
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM at step 13 (no checkpoint is due before 16): the
    trainer finishes that step, saves it and raises KeyboardInterrupt; resumed, the run ends with an
    uninterrupted run's weights."""
    import signal

    signum = getattr(signal, signum)
    _, straight = _train(tmp_path / "a", "train.max_steps=24")
    handler = signal.getsignal(signum)

    def ctrl_c_at_13(progress):
        if progress.step == 13:
            os.kill(os.getpid(), signum)

    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b", "train.max_steps=24", on_progress=ctrl_c_at_13)
    assert load_checkpoint(tmp_path / "b" / "tiny" / "last").step == 13
    assert signal.getsignal(signum) is handler  # the handler from before is back
    _, resumed = _train(tmp_path / "b", "train.max_steps=24")
    a = load_file(straight.root / "last" / "model.safetensors")
    b = load_file(resumed.root / "last" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_a_second_sigterm_while_the_interrupted_step_is_saved_does_not_stop_the_save(tmp_path, monkeypatch):
    """make passes a process group's SIGTERM on to training, so a second one can come as the step
    the first stopped is being saved: the save ran after the stop requests were let go, and the
    second SIGTERM ended it half-way, with no checkpoint of the steps since the last."""
    import signal

    from nmt import train
    from nmt.interrupt import terminate_as_interrupt

    save = train.Trainer._save

    def save_with_a_second_sigterm(self, is_best):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0.05)  # (a handler runs between two bytecodes: give it some)
        save(self, is_best)

    monkeypatch.setattr(train.Trainer, "_save", save_with_a_second_sigterm)

    def sigterm_at_5(progress):
        if progress.step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    with terminate_as_interrupt(), pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "train.max_steps=24", on_progress=sigterm_at_5)
    assert load_checkpoint(tmp_path / "tiny" / "last").step == 5


def test_a_stop_signal_during_the_final_validation_saves_the_steps_since_the_last_checkpoint(tmp_path, monkeypatch):
    """The validation after the last step ran outside the signal handling: a Ctrl-C (or a
    scheduler's SIGTERM at its time limit) there lost every step since the last checkpoint."""
    import signal

    from nmt.train import Trainer

    validate = Trainer.validate

    def ctrl_c_at_12(self):
        if self.state.step == 12:  # max_steps 12, valid_every 8: the final validation
            os.kill(os.getpid(), signal.SIGINT)
        return validate(self)

    monkeypatch.setattr(Trainer, "validate", ctrl_c_at_12)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "train.max_steps=12")
    assert load_checkpoint(tmp_path / "tiny" / "last").step == 12
    monkeypatch.setattr(Trainer, "validate", validate)
    assert _train(tmp_path, "train.max_steps=12")[0]["steps"] == 12  # done: summed up, nothing trained again


def test_an_early_stopped_run_run_again_stays_stopped_unless_patience_is_raised(tmp_path):
    """The early stop was not in the checkpoint: the run trained valid_every more steps (and
    halved its rate again) each time it was run again, as make train does after any train.* edit."""
    first, paths = _train(tmp_path, "train.max_steps=400", "train.patience=1", "train.lr=1e-9")
    assert first["stopped"] == "early stopping: no dev BLEU gain in 1 validations" and first["steps"] == 16
    log = (paths.root / "metrics.jsonl").read_text()
    again, _ = _train(tmp_path, "train.max_steps=400", "train.patience=1", "train.lr=1e-9")
    assert again == first and (paths.root / "metrics.jsonl").read_text() == log
    assert _train(tmp_path, "train.max_steps=400", "train.patience=2", "train.lr=1e-9")[0]["steps"] == 24


def test_the_elapsed_time_a_checkpoint_keeps_holds_its_validation(tmp_path, monkeypatch):
    """The time was taken after each step only: a checkpoint (saved after its validation) left
    the validation out, so each resume forgot one, and the budget was checked before it. On a
    clock of the test's own: a step takes 1 s, a validation 100 s."""
    import types

    import nmt.train
    from nmt.train import Trainer
    from nmt.trainstate import load_trainer_state

    now = [0.0]

    def tick() -> float:  # each reading of the clock in a step: a second passes between two
        now[0] += 0.5
        return now[0]

    validate = Trainer.validate

    def slow_validate(self):
        now[0] += 100.0
        return validate(self)

    monkeypatch.setattr(nmt.train, "time", types.SimpleNamespace(perf_counter=tick))
    monkeypatch.setattr(Trainer, "validate", slow_validate)
    # a budget of 1.5 min: spent during the validation at step 8, so training stops there, not after a
    # step 9 and a second validation
    summary, paths = _train(tmp_path, "train.max_steps=400", "train.max_minutes=1.5")
    assert summary["steps"] == 8 and summary["train_minutes"] * 60 >= 100
    assert load_trainer_state(paths.root / "last")[1]["trainer"]["elapsed_s"] >= 100


def test_resuming_under_changed_train_settings_says_which(tmp_path, caplog):
    _train(tmp_path, "train.max_steps=8")
    with caplog.at_level(logging.INFO, logger="nmt.train"):
        _train(tmp_path, "train.max_steps=12", "train.lr=0.002")
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resumed from")]
    assert resumed == [f"resumed from {tmp_path / 'tiny' / 'last'} at step 8; changed since: "
                       f"train.lr 0.005 → 0.002, train.max_steps 8 → 12"]


def test_resuming_with_another_train_lr_trains_at_it_and_otherwise_at_the_runs_own(tmp_path):
    """Editing train.lr resumes at the new rate (it had resumed at the checkpoint's, while the log
    said "changed since: train.lr"); left as it was, the run's own rate goes on, halved or not."""
    def rates(*overrides):
        seen = []
        _train(tmp_path, *overrides, on_progress=lambda progress: seen.append(progress.lr))
        return set(seen)

    _train(tmp_path, "train.max_steps=8")  # tiny.yaml: lr 0.005
    assert rates("train.max_steps=10", "train.lr=0.002") == {0.002}
    last = tmp_path / "tiny" / "last"
    trainer = json.loads((last / "trainer.json").read_text())
    trainer["trainer"]["lr"] = 0.001  # as halving on a dev plateau leaves it
    (last / "trainer.json").write_text(json.dumps(trainer))
    assert rates("train.max_steps=12", "train.lr=0.002") == {0.001}
    assert rates("train.max_steps=14", "train.lr=0.002", "train.min_lr=0.0015") == {0.0015}  # a floor raised


def test_a_damaged_log_line_does_not_stop_the_run_resuming(tmp_path, caplog):
    """Half a line (a full disk, a crash) or NUL bytes (a power cut) at the end of metrics.jsonl:
    resuming cut the log back by parsing every line, and failed on it with a traceback, every time."""
    _train(tmp_path, "train.max_steps=8")
    metrics = tmp_path / "tiny" / "metrics.jsonl"
    before = metrics.read_text().splitlines()
    with open(metrics, "a") as log:
        log.write('{"kind": "train", "step": 9, "train_lo\n\0\0\0\n')
    with caplog.at_level(logging.WARNING, logger="nmt.trainlog"):
        _train(tmp_path, "train.max_steps=10")
    assert [r.getMessage() for r in caplog.records if r.name == "nmt.trainlog"] == [
        f"{metrics}: 2 damaged lines dropped"]
    after = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [json.dumps(r) for r in after[: len(before)]] == before and after[-1]["step"] == 10


def test_a_finished_run_resumed_and_interrupted_keeps_no_summary_of_its_earlier_end(tmp_path):
    """train_summary.json says training has finished: a finished run resumed with a larger budget
    and stopped kept the old one, and evaluate reported "8 steps, reached train.max_steps=8" beside
    a checkpoint of a later step."""
    _train(tmp_path, "train.max_steps=8")
    summary = tmp_path / "tiny" / "train_summary.json"
    assert json.loads(summary.read_text())["steps"] == 8
    with pytest.raises(Interrupted):
        _train(tmp_path, "train.max_steps=24", on_progress=_interrupt_at(13))
    assert not summary.exists()
    _train(tmp_path, "train.max_steps=24")
    assert json.loads(summary.read_text())["steps"] == 24


def test_a_run_resumed_under_a_smaller_step_budget_says_it_is_past_it(tmp_path):
    """It said "reached train.max_steps=3" of a run at step 8, which had reached 8."""
    _train(tmp_path, "train.max_steps=8")
    summary, _ = _train(tmp_path, "train.max_steps=3")
    assert (summary["steps"], summary["stopped"]) == (8, "already past train.max_steps=3: at step 8")
    summary, _ = _train(tmp_path, "train.max_steps=8")
    assert summary["stopped"] == "reached train.max_steps=8"


def test_training_says_how_many_pairs_max_train_len_leaves_out(tmp_path, caplog):
    from nmt.lines import read_lines
    from nmt.tokenizer import Tokenizer

    with caplog.at_level(logging.INFO, logger="nmt.trainset"):
        _, paths = _train(tmp_path, "train.max_steps=1", "train.max_train_len=20")
    tokenizer = Tokenizer.from_folder(paths.tokenizer)
    src = tokenizer.src_lengths(read_lines(paths.data / "train.es"))
    tgt = [len(ids) for ids in tokenizer.encode_tgt(read_lines(paths.data / "train.en"))]
    left = sum(s > 20 or t >= 20 for s, t in zip(src, tgt))  # t + </s> > 20
    assert 0 < left < len(src)
    assert [r.getMessage() for r in caplog.records if "left out" in r.getMessage()] == [
        f"{left} of {len(src)} training pairs left out: longer than train.max_train_len=20 pieces"]


def test_a_run_killed_before_its_first_checkpoint_logs_each_step_once(tmp_path, monkeypatch):
    """A killed process (no Ctrl-C: the OOM killer, a power cut) leaves metrics.jsonl lines and no
    checkpoint; the next run starts afresh and logged the same steps a second time."""
    import nmt.train

    monkeypatch.setattr(nmt.train, "LOG_EVERY", 5)  # a line before the first checkpoint (step 8)
    with pytest.raises(Interrupted):
        _train(tmp_path, "train.max_steps=12", on_progress=_interrupt_at(7))
    metrics = tmp_path / "tiny" / "metrics.jsonl"
    assert metrics.exists() and not (tmp_path / "tiny" / "last").exists()
    _train(tmp_path, "train.max_steps=12")
    steps = [(json.loads(line)["kind"], json.loads(line)["step"]) for line in metrics.read_text().splitlines()]
    assert len(steps) == len(set(steps)) and ("train", 5) in steps


def test_a_run_another_process_trains_is_refused_and_left_as_it_was(tmp_path, monkeypatch):
    """Two make train in two terminals: the second resumed the first's checkpoint, cut its log back
    to that step and wrote its own checkpoints over the first's. It is refused before it loads the
    data (it logged "resumed from" and then refused)."""
    import nmt.train
    from nmt.atomic import folder_lock

    _, paths = _train(tmp_path, "train.max_steps=8")
    metrics, last = (paths.root / "metrics.jsonl").read_text(), os.readlink(paths.root / "last")
    loads = []
    plain = nmt.train.load_training_data
    monkeypatch.setattr(nmt.train, "load_training_data", lambda *args: loads.append(1) or plain(*args))
    with folder_lock(paths.root):  # as the other process holds it
        with pytest.raises(NmtError, match=rf"tiny is being trained by another process \(held by process "
                                           rf"{os.getpid()}\); wait for it or stop it"):
            _train(tmp_path, "train.max_steps=16")
    assert not loads
    assert (paths.root / "metrics.jsonl").read_text() == metrics and os.readlink(paths.root / "last") == last
    assert _train(tmp_path, "train.max_steps=16")[0]["steps"] == 16  # the lock goes with its holder


def test_preparing_or_tokenizing_a_run_another_process_trains_is_refused(tmp_path):
    """The training lock did not stop nmt prepare: it rewrote a run's splits (data.min_words=3)
    while the run trained."""
    from nmt.atomic import folder_lock

    _, paths = _train(tmp_path, "train.max_steps=4")
    before = {path.name: path.read_bytes() for path in (*paths.data.iterdir(), *paths.tokenizer.iterdir())}
    with folder_lock(paths.root):  # as a training process holds it
        for stage, run in (("nmt prepare", pipeline.prepare), ("nmt tokenize", pipeline.tokenize)):
            config = tiny_config(tmp_path, "train.valid_every=8", *(["data.min_words=3"] if "prepare" in stage else []))
            with pytest.raises(NmtError, match=rf"^{re.escape(str(paths.root))} is in use by another process \(held by "
                                               rf"process {os.getpid()}\): {stage} would rewrite the files it reads; "
                                               rf"wait for it or stop it$"):
                run(config, paths)
    assert {path.name: path.read_bytes() for path in (*paths.data.iterdir(), *paths.tokenizer.iterdir())} == before
    pipeline.prepare(tiny_config(tmp_path, "data.min_words=3"), paths)  # the lock goes with its holder
    assert (paths.data / "stats.json").read_bytes() != before["stats.json"]
    fresh = tiny_config(tmp_path / "fresh", "data.source=nowhere.tsv")
    with pytest.raises(NmtError, match="data file not found"):
        pipeline.prepare(fresh, run_paths(fresh, tmp_path / "fresh"))
    assert not (tmp_path / "fresh").exists()  # a failed stage leaves no run folder (nor a lock in one)


def _poisoned(monkeypatch, bad_calls):
    """batch_loss whose loss is NaN at the given calls (1, 2, …), as an overflow would make it."""
    import nmt.train

    plain, calls = nmt.train.batch_loss, []

    def batch_loss(*args, **kwargs):
        loss, n = plain(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) in bad_calls else loss), n

    monkeypatch.setattr(nmt.train, "batch_loss", batch_loss)


def test_a_step_without_a_finite_gradient_is_skipped_not_applied(tmp_path, monkeypatch, caplog):
    """An update from a NaN gradient made every weight NaN, and every checkpoint after it."""
    _poisoned(monkeypatch, {3, 4})
    with caplog.at_level(logging.WARNING, logger="nmt.train"):
        summary, paths = _train(tmp_path, "train.max_steps=8")
    assert summary["steps"] == 8 and summary["skipped_updates"] == 2
    assert [r.getMessage() for r in caplog.records] == [f"step {k}: gradient norm nan, update skipped" for k in (3, 4)]
    weights = load_file(paths.root / "last" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_training_that_has_diverged_stops_in_one_line(tmp_path, monkeypatch):
    _poisoned(monkeypatch, set(range(3, 100)))
    with pytest.raises(NmtError, match=r"training diverged: no finite gradient in 10 steps \(to step 12\); "):
        _train(tmp_path, "train.max_steps=40")


def test_a_last_checkpoint_deleted_by_hand_is_refused_not_restarted(tmp_path):
    _, paths = _train(tmp_path, "train.max_steps=8")
    shutil.rmtree(paths.root / "checkpoints")
    with pytest.raises(NmtError, match=r"last points to checkpoints/step-0000008, which is missing; delete"):
        _train(tmp_path, "train.max_steps=16")


def test_training_refuses_splits_or_pieces_made_under_other_settings(tmp_path):
    """nmt train after an edit of data.* or tokenizer.* (without make, which reruns the stages)
    trained on the old splits or pieces, and the checkpoint recorded the new settings."""
    _, paths = _train(tmp_path, "train.max_steps=8")
    with pytest.raises(NmtError, match=r"data was made with other settings \(data.max_words 40 → 30\); run nmt "
                                       r"prepare again"):  # nor does nmt tokenize learn pieces of the old splits
        pipeline.tokenize(tiny_config(tmp_path, "data.max_words=30"), paths)
    with pytest.raises(NmtError, match=r"data was made with other settings \(data.max_words 40 → 30\); run nmt "
                                       r"prepare again \(make train does it itself\)"):
        _train(tmp_path, "train.max_steps=8", "data.max_words=30")
    from nmt.lines import read_lines
    from nmt.tokenizer import train_tokenizer

    config = tiny_config(tmp_path, "tokenizer.vocab_size=150")  # (nmt tokenize refuses to replace a trained run's)
    src, tgt = (read_lines(paths.data / f"train.{side}") for side in ("es", "en"))
    train_tokenizer(src, tgt, config.tokenizer, paths.tokenizer)  # a tokenizer folder that records its settings
    with pytest.raises(NmtError, match=r"tokenizer was made with other settings \(tokenizer.vocab_size 150 → 200\); "
                                       r"run nmt tokenize again"):
        _train(tmp_path, "train.max_steps=8")


def test_resume_goes_on_after_a_data_edit_that_left_the_splits_as_they_were(tmp_path, caplog):
    """Any edit of data.* blocked resuming (\"delete the run\"), though the splits' fingerprint
    showed nothing the model learned from had changed: the corpus's path written another way, or
    moved; data.dev_size when groups split. An edit that changes the splits is refused, named."""
    _, paths = _train(tmp_path, "train.max_steps=8")
    same = f"data.source={TINY_TSV.parent / '..' / TINY_TSV.parent.name / TINY_TSV.name}"
    for steps, edit, said in ((16, same, f"data.source {TINY_TSV} → {same[12:]}"),
                              (24, "data.dev_size=7", "data.dev_size 1000 → 7")):
        pipeline.prepare(tiny_config(tmp_path, edit), paths)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="nmt.train"):
            summary, _ = _train(tmp_path, f"train.max_steps={steps}", edit)
        assert summary["steps"] == steps and f"resumed from {paths.root / 'last'} at step {steps - 8}" in caplog.text
        assert f"{said} (the same splits and pieces)" in caplog.text
    before = {p.name: p.read_bytes() for p in paths.data.iterdir()}
    with pytest.raises(NmtError, match=rf"^{re.escape(str(paths.root / 'last'))} was trained on the splits this would "
                                       rf"replace \(train.es, train.en, .*; settings changed: data.max_words 40 → 12\); "
                                       rf"delete {re.escape(str(paths.root))} or choose a new name"):
        pipeline.prepare(tiny_config(tmp_path, "data.dev_size=7", "data.max_words=12"), paths)
    assert {p.name: p.read_bytes() for p in paths.data.iterdir()} == before  # refused before it wrote


def test_a_corpus_edited_in_place_after_training_is_refused_before_the_runs_splits_are_replaced(tmp_path):
    corpus = tmp_path / "corpus.tsv"
    shutil.copy(TINY_TSV, corpus)
    config = tiny_config(tmp_path, f"data.source={corpus}", "train.max_steps=8", "train.valid_every=8")
    paths = run_paths(config, tmp_path)
    pipeline.prepare(config, paths)
    shutil.copytree(SPM200, paths.tokenizer)
    pipeline.train(config, paths)
    pipeline.prepare(config, paths)  # the same corpus again: nothing changes, nothing refused
    corpus.write_text(corpus.read_text(encoding="utf-8").replace("Dios", "Señor"), encoding="utf-8")
    before = {p.name: p.read_bytes() for p in paths.data.iterdir()}
    with pytest.raises(NmtError, match=r"was trained on the splits this would replace \(train.es, dev.es; the corpus "
                                       r"changed\); delete"):
        pipeline.prepare(config, paths)
    assert {p.name: p.read_bytes() for p in paths.data.iterdir()} == before


def test_a_run_tokenized_by_another_version_goes_on_with_its_own_tokenizer(tmp_path, monkeypatch):
    """A SentencePiece model records the options it was trained with: one made by an nmt that passed
    other options (input_sentence_size, shuffling) has other bytes for the same pieces, and every
    such run was refused as if its training split had changed."""
    import sentencepiece as spm

    config = tiny_config(tmp_path, "train.max_steps=8", "train.valid_every=8")
    paths = run_paths(config, tmp_path)
    pipeline.prepare(config, paths)
    train = spm.SentencePieceTrainer.train
    with monkeypatch.context() as older:  # the options nmt passed before 87164b4
        older.setattr(spm.SentencePieceTrainer, "train",
                      lambda **kw: train(**{**kw, "input_sentence_size": 2_000_000, "shuffle_input_sentence": True}))
        pipeline.tokenize(config, paths)
    pipeline.train(config, paths)
    before = {name: (paths.tokenizer / name).read_bytes() for name in ("src.model", "tgt.model")}
    pipeline.tokenize(tiny_config(tmp_path, "tokenizer.max_sentences=100000"), paths)  # same pieces, other bytes
    assert {name: (paths.tokenizer / name).read_bytes() for name in before} == before  # the run's own, kept
    summary = pipeline.train(tiny_config(tmp_path, "train.max_steps=16", "train.valid_every=8",
                                         "tokenizer.max_sentences=100000"), paths)
    assert summary["steps"] == 16


def test_a_tokenizer_edit_after_training_is_refused_before_the_runs_tokenizer_is_replaced(tmp_path):
    """tokenizer.vocab_size 200 → 150 on a trained run: make trained the run's tokenizer again, and
    only then did training refuse to resume, the run's tokenizer replaced. The same settings
    again (make after an edit that was undone) go on."""
    config = tiny_config(tmp_path, "train.max_steps=8", "train.valid_every=8")
    paths = run_paths(config, tmp_path)
    pipeline.prepare(config, paths)
    pipeline.tokenize(config, paths)
    pipeline.train(config, paths)
    before = {p.name: p.read_bytes() for p in paths.tokenizer.iterdir()}
    other = tiny_config(tmp_path, "train.max_steps=8", "train.valid_every=8", "tokenizer.vocab_size=150")
    with pytest.raises(NmtError, match=rf"^{re.escape(str(paths.root / 'last'))} was trained on the tokenizer this "
                                       rf"would replace \(src.model, tgt.model; settings changed: tokenizer.vocab_size "
                                       rf"200 → 150\); delete "):
        pipeline.tokenize(other, paths)
    assert {p.name: p.read_bytes() for p in paths.tokenizer.iterdir()} == before
    assert [p.name for p in paths.root.iterdir() if p.name.startswith(".tokenizer")] == []  # no temporary left
    pipeline.tokenize(config, paths)  # the same pieces: made again, and training goes on
    assert {p.name: p.read_bytes() for p in paths.tokenizer.iterdir()} == before
    pipeline.train(tiny_config(tmp_path, "train.max_steps=16", "train.valid_every=8"), paths)


def test_resume_refuses_a_run_with_another_model(tmp_path):
    _train(tmp_path, "train.max_steps=8")
    with pytest.raises(Exception, match="trained with other model settings"):
        _train(tmp_path, "train.max_steps=16", "model.cell=gru")


@pytest.mark.parametrize("edit", ["drop optimizer", "drop trainer", "unknown trainer key", "no rng", "epoch_rest"])
def test_resume_refuses_trainer_state_edited_out_of_shape_in_one_line(tmp_path, edit):
    """A hand-edited trainer.json (or trainer.safetensors without its tensors) ended the resume in a
    KeyError or TypeError traceback."""
    import json

    from safetensors.torch import load_file, save_file

    _, paths = _train(tmp_path, "train.max_steps=8")
    folder = (paths.root / "last").resolve()
    state = json.loads((folder / "trainer.json").read_text(encoding="utf-8"))
    if edit == "no rng":
        tensors = {k: v for k, v in load_file(str(folder / "trainer.safetensors")).items() if k != "rng.torch"}
        save_file(tensors, str(folder / "trainer.safetensors"))
    else:
        if edit == "unknown trainer key":
            state["trainer"]["steps_done"] = 3
        elif edit == "epoch_rest":  # the epoch's rest would match no pair: skipped, without a word
            state["trainer"]["epoch_rest"] = [1, "x", 2.5]
        else:
            del state[edit.split()[1]]
        (folder / "trainer.json").write_text(json.dumps(state), encoding="utf-8")
    with pytest.raises(NmtError, match=r"cannot resume, trainer state unusable \((KeyError|TypeError|epoch_rest)"):
        _train(tmp_path, "train.max_steps=16")


@pytest.mark.parametrize("edited", ["data", "tokenizer"])
def test_resume_refuses_a_run_whose_data_or_tokenizer_changed(tmp_path, edited):
    """The same config over a corpus edited in place: make prepares the data and trains the
    tokenizer again, and training resumed the old weights on the new pieces' ids without a word."""
    _, paths = _train(tmp_path, "train.max_steps=8")
    if edited == "tokenizer":  # SentencePiece trained again, same settings, on an edited text
        from nmt.lines import read_lines
        from nmt.tokenizer import train_tokenizer

        src, tgt = (read_lines(paths.data / f"train.{side}") for side in ("es", "en"))
        train_tokenizer([line.replace("Dios", "Señor") for line in src], tgt, tiny_config(tmp_path).tokenizer,
                        paths.tokenizer)
    else:  # one word of the prepared training text
        path = paths.data / "train.en"
        path.write_text(path.read_text(encoding="utf-8").replace("the", "thee", 1), encoding="utf-8")
    with pytest.raises(NmtError, match="trained on other data or another tokenizer"):
        _train(tmp_path, "train.max_steps=16")


@pytest.mark.parametrize("beam", [1, 3])
def test_attention_maps_have_a_row_per_target_piece_and_a_column_per_source_piece(tmp_path, beam):
    """What the report's heatmaps plot: every map fits its labels, whatever the batch held."""
    from nmt.diagnostics import attention_maps

    config, tokenizer, model, _ = saved_tiny_model(tmp_path)
    decode = dataclasses.replace(config.decode, batch_size=2)  # places refilled from a longer batch
    translator = Translator(model, tokenizer, dataclasses.replace(config, decode=decode))
    lines = [LINES[3], LINES[0], LINES[2], LINES[0] + " " + LINES[2]]
    maps = attention_maps(translator, lines, [0, 1, 2, 3], beam, 0.6)
    assert [m["index"] for m in maps] == [0, 1, 2, 3]
    for m in maps:
        assert m["weights"].shape == (len(m["target_pieces"]), len(m["source_pieces"]))
        assert np.allclose(m["weights"].sum(axis=1), 1.0, atol=1e-5)


def test_keep_checkpoints_keeps_the_latest_and_the_best(tmp_path):
    _, paths = _train(tmp_path, "train.max_steps=40", "train.keep_checkpoints=3")
    kept = sorted(p.name for p in (paths.root / "checkpoints").iterdir())
    best = (paths.root / "best").resolve().name
    assert kept == sorted({"step-0000024", "step-0000032", "step-0000040", best})
    assert (paths.root / "last").resolve().name == "step-0000040"


def test_an_interrupted_run_keeps_the_checkpoints_an_uninterrupted_one_keeps(tmp_path):
    """The checkpoint a Ctrl-C saves (step 29, between the validations of 24 and 32) counted among
    the latest kept: resumed, the run kept 29, 32 and 40 where an uninterrupted run keeps 24, 32
    and 40, so nmt average of the same run meant other weights."""
    import signal

    from typer.testing import CliRunner

    from nmt.cli import app

    settings = ("train.max_steps=40", "train.keep_checkpoints=3")
    _, straight = _train(tmp_path / "a", *settings)

    def stop_at_29(progress):
        if progress.step == 29:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "b", *settings, on_progress=stop_at_29)
    stopped = tmp_path / "b" / "tiny"
    assert (stopped / "last").resolve().name == "step-0000029"  # while stopped, the latest is the stop's
    _, resumed = _train(tmp_path / "b", *settings)
    names = lambda run: sorted(p.name for p in (run / "checkpoints").iterdir())  # noqa: E731
    assert names(resumed.root) == names(straight.root)
    for run in (straight.root, resumed.root):
        result = CliRunner().invoke(app, ["average", str(run), "--last", "3", "-o", str(run / "mean")])
        assert result.exit_code == 0, result.output
    a, b = (load_file(run / "mean" / "model.safetensors") for run in (straight.root, resumed.root))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_a_checkpoint_records_the_longest_source_it_trained_on_and_translation_warns_past_it(tmp_path, caplog):
    """A model trained on sentences of up to 7 pieces wrote 17 words for a line of 71 pieces, where
    60 were due: within train.max_train_len, nothing was cut, and nothing was said."""
    import logging

    import numpy as np

    from nmt.checkpoint import read_manifest
    from nmt.lines import read_lines
    from nmt.tokenizer import Tokenizer
    from nmt.trainset import fits

    _, paths = _train(tmp_path, "train.max_steps=16", "train.keep_checkpoints=2", "train.max_train_len=40")
    tokenizer = Tokenizer.from_folder(paths.tokenizer)
    src = [len(ids) for ids in tokenizer.encode_src(read_lines(paths.data / "train.es"))]
    tgt = [len(ids) for ids in tokenizer.encode_tgt(read_lines(paths.data / "train.en"))]
    longest = int(np.array(src)[fits(np.array(src), np.array(tgt), 40)].max())
    assert read_manifest(paths.root / "last")[LONGEST_SOURCE] == longest <= 40
    translator = Translator.from_checkpoint(paths.root / "last")
    assert translator.longest_source == longest
    words = "y dijo Dios sea la luz y fue la luz".split()
    lines = [" ".join(words[: 1 + i % len(words)] * 4) for i in range(40)]
    pieces = {len(ids) for ids in tokenizer.encode_src(lines)}
    translator.longest_source = min(pieces)  # as if trained on shorter sentences than these
    decoded = [len(ids) for ids in translator._parts(lines, split=True)[0]]  # lines past 40 pieces: their parts
    over = [n for n in decoded if min(pieces) < n <= 40]
    caplog.clear()  # (_parts said it already)
    with caplog.at_level(logging.WARNING, logger="nmt.translate"):
        assert len(translator.translate(lines)) == len(lines)
    said = [r.getMessage() for r in caplog.records if "longer than any source" in r.getMessage()]
    assert said == [f"{len(over)} line(s) or parts are longer than any source the model was trained on ({min(pieces)} "
                    f"pieces; these up to {max(over)}): an RNN decoder tends to stop early on them, leaving words "
                    f"out; one sentence a line translates best"]
    caplog.clear()
    translator.longest_source = max(pieces)
    with caplog.at_level(logging.WARNING, logger="nmt.translate"):
        translator.translate(lines)
    assert "longer than any source" not in caplog.text
    long_line = ". ".join([" ".join(words)] * 12)  # past max_train_len: cut into parts of up to 20 pieces
    parts = translator._parts([long_line], split=True)[0]
    assert len(tokenizer.encode_src([long_line])[0]) > 40 and len(parts) > 1
    translator.longest_source = min(len(part) for part in parts) - 1  # parts longer than anything trained on
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nmt.translate"):
        translator.translate([long_line])
    assert f"{len(parts)} line(s) or parts are longer than any source" in caplog.text
    from typer.testing import CliRunner

    from nmt.cli import app

    averaged = CliRunner().invoke(app, ["average", str(paths.root), "--last", "2", "-o", str(tmp_path / "mean")])
    assert averaged.exit_code == 0, averaged.output
    assert read_manifest(tmp_path / "mean")[LONGEST_SOURCE] == longest  # an average warns as its steps do


def test_average_is_the_mean_of_the_weights_and_translates(tmp_path):
    from typer.testing import CliRunner

    from nmt.checkpoint import read_manifest
    from nmt.cli import app

    _, paths = _train(tmp_path, "train.max_steps=40", "train.keep_checkpoints=3")
    result = CliRunner().invoke(app, ["average", str(paths.root), "--last", "3", "-o", str(tmp_path / "mean")])
    assert result.exit_code == 0, result.output
    sources = [load_checkpoint(paths.root / "checkpoints" / f"step-00000{step}") for step in (24, 32, 40)]
    mean = load_checkpoint(tmp_path / "mean")
    for name, tensor in mean.model.state_dict().items():
        expected = torch.stack([s.model.state_dict()[name].double() for s in sources]).mean(0).float()
        assert torch.equal(tensor, expected), name
        assert not torch.equal(tensor, sources[-1].model.state_dict()[name]), name  # the mean, not the latest
    assert mean.model.generator.weight is mean.model.decoder.embed.weight  # still tied
    manifest = read_manifest(tmp_path / "mean")
    assert mean.step == 40 and [s["step"] for s in manifest["averaged"]] == [24, 32, 40]
    assert "trainer.json" not in manifest["files"]  # it translates; it does not resume
    assert len(Translator.from_checkpoint(tmp_path / "mean").translate(["Y dijo Dios", ""])) == 2
    report = pipeline.evaluate(tmp_path / "mean", paths.data / "test.es", paths.data / "test.en", tmp_path / "eval")
    assert report["step"] == 40 and report["averaged_steps"] == [24, 32, 40]
    assert "(step 40, the mean of the weights of steps 24, 32, 40)" in (tmp_path / "eval" / "report.md").read_text()
    shutil.copytree(tmp_path / "mean", tmp_path / "mean3")
    again = CliRunner().invoke(app, ["average", str(paths.root), "--last", "2", "-o", str(tmp_path / "mean")])
    assert again.exit_code == 0, again.output  # an earlier average is replaced
    assert [s["step"] for s in read_manifest(tmp_path / "mean")["averaged"]] == [32, 40]
    fewer = CliRunner().invoke(app, ["average", str(paths.root), "--last", "9", "-o", str(tmp_path / "mean9")])
    assert fewer.exit_code == 1 and not (tmp_path / "mean9").exists()  # not the mean of the 3 or 4 there are
    assert "error: --last 9: only " in fewer.stderr and "set that to 9 or more" in fewer.stderr
    folders = [str(paths.root / "checkpoints" / f"step-00000{step}") for step in (40, 24, 32)]  # any order
    listed = CliRunner().invoke(app, ["average", *folders, "-o", str(tmp_path / "listed")])
    assert listed.exit_code == 0, listed.output
    assert load_checkpoint(tmp_path / "listed").step == 40  # the latest's step and config, not the last named
    assert (tmp_path / "listed" / "model.safetensors").read_bytes() == (tmp_path / "mean3" / "model.safetensors"
                                                                       ).read_bytes()


def test_a_checkpoint_without_optimizer_state_translates_evaluates_and_averages_but_does_not_resume(tmp_path):
    """trainer.safetensors and trainer.json are two thirds of a checkpoint (optimizer moments),
    which a model shipped to translate leaves out; translating one asked for them ("incomplete
    checkpoint (missing trainer.safetensors, trainer.json)")."""
    from typer.testing import CliRunner

    from nmt.cli import app

    # checkpoints at steps 4 and 8, however slow a busy machine makes them (tiny.yaml: 5 minutes)
    settings = ("train.valid_every=4", "train.valid_max_sentences=10", "train.keep_checkpoints=2",
                "train.max_minutes=60")
    _, paths = _train(tmp_path, "train.max_steps=8", *settings)
    for folder in (paths.root / "checkpoints").iterdir():
        for name in ("trainer.safetensors", "trainer.json"):
            (folder / name).unlink()
    runner, last = CliRunner(), paths.root / "last"
    translated = runner.invoke(app, ["translate", "--checkpoint", str(last)], input="Y dijo Dios\n\nla luz\n")
    assert translated.exit_code == 0 and len(translated.stdout.splitlines()) == 3, translated.output
    for side in ("es", "en"):  # a few lines of the test split: loading is what is tested, not decoding
        lines = (paths.data / f"test.{side}").read_text(encoding="utf-8").splitlines(keepends=True)
        (tmp_path / f"test.{side}").write_text("".join(lines[:5]), encoding="utf-8")
    evaluated = runner.invoke(app, ["evaluate", "--checkpoint", str(last), "--src", str(tmp_path / "test.es"),
                                    "--ref", str(tmp_path / "test.en"), "--out", str(tmp_path / "eval")])
    assert evaluated.exit_code == 0 and (tmp_path / "eval" / "report.json").exists(), evaluated.output
    averaged = runner.invoke(app, ["average", str(paths.root), "-o", str(tmp_path / "mean")])
    assert averaged.exit_code == 0 and load_checkpoint(tmp_path / "mean").step == 8, averaged.output
    with pytest.raises(NmtError) as refused:
        _train(tmp_path, "train.max_steps=12", *settings)
    assert str(refused.value) == (f"{last} holds no optimizer state to resume training from (missing "
                                  f"trainer.safetensors, trainer.json; it translates and evaluates without them); "
                                  f"delete {paths.root} or choose a new name to start afresh")


def test_a_run_folder_averages_its_latest_checkpoints_not_an_older_best(tmp_path):
    """Training keeps best besides the train.keep_checkpoints latest: `--last 2` of a run keeping
    one averaged best (step 300) with last (step 2,700), a model nobody asked for."""
    from typer.testing import CliRunner

    from nmt.checkpoint import point, read_manifest
    from nmt.cli import app

    config, tokenizer, model, _ = saved_tiny_model(tmp_path)
    for keep, steps in ((1, (300, 2700)), (2, (300, 2400, 2700))):
        run = tmp_path / f"keep{keep}"
        kept = dataclasses.replace(config, train=dataclasses.replace(config.train, keep_checkpoints=keep))
        for step in steps:
            save_checkpoint(run / "checkpoints" / f"step-{step:07d}", model, kept, tokenizer, step)
        point(run / "best", run / "checkpoints" / "step-0000300")
        point(run / "last", run / "checkpoints" / "step-0002700")
        for last in ("2", "0"):
            result = CliRunner().invoke(app, ["average", str(run), "--last", last, "-o", str(run / "mean")])
            if keep == 1:
                assert result.exit_code == 1 and not (run / "mean").exists(), result.output
            else:
                assert result.exit_code == 0, result.output
                assert [s["step"] for s in read_manifest(run / "mean")["averaged"]] == [2400, 2700]
    three = CliRunner().invoke(app, ["average", str(tmp_path / "keep2"), "--last", "3", "-o", str(tmp_path / "m")])
    assert "error: --last 3: only 2 checkpoints to average" in three.stderr
    missing = CliRunner().invoke(app, ["average", str(tmp_path / "nope"), "-o", str(tmp_path / "m")])
    assert missing.exit_code == 1 and missing.stderr == f"error: checkpoint folder not found: {tmp_path / 'nope'}\n"


def test_average_refuses_what_is_not_one_model(tmp_path):
    from nmt.average import average_checkpoints
    from nmt.model import build_model
    from nmt.tokenizer import Tokenizer, train_tokenizer

    config, tokenizer, model, one = saved_tiny_model(tmp_path)
    two = save_checkpoint(tmp_path / "two", model, config, tokenizer, step=9)
    with pytest.raises(CheckpointError, match=r"needs two checkpoints or more, not 1 \(a run keeps its train.keep_checkpoints latest"):
        average_checkpoints([one], tmp_path / "out")
    os.symlink(two, tmp_path / "link")
    with pytest.raises(CheckpointError, match="link is given twice"):
        average_checkpoints([one, two, tmp_path / "link"], tmp_path / "out")
    with pytest.raises(CheckpointError, match="is one of the checkpoints to average"):
        average_checkpoints([one, two], two)
    (tmp_path / "run" / "data").mkdir(parents=True)  # `-o runs/x`: replacing it would delete the run
    for taken in (tmp_path / "run", tmp_path / "link", tmp_path / "run" / "data"):
        with pytest.raises(CheckpointError, match="exists and is not an earlier average"):
            average_checkpoints([one, saved_tiny_model(tmp_path / "three")[3]], taken)
    assert (tmp_path / "run" / "data").is_dir() and (tmp_path / "link").is_symlink()
    apart = save_checkpoint(tmp_path / "apart", model, dataclasses.replace(config, name="other"), tokenizer, step=9)
    with pytest.raises(CheckpointError, match=r"are of different runs \(other and tiny\)"):
        average_checkpoints([one, apart], tmp_path / "out")
    reseeded = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=config.train.seed + 1))
    average_checkpoints([one, save_checkpoint(tmp_path / "resumed", model, reseeded, tokenizer, step=9)],
                        tmp_path / "resumed-mean")  # a seed changed on resume: still one run
    wider = dataclasses.replace(config, model=dataclasses.replace(config.model, dec_hidden=48, emb_dim=48))
    other = save_checkpoint(tmp_path / "wider", build_model(wider.model, 200, 200), wider, tokenizer, step=9)
    with pytest.raises(CheckpointError, match=r"are different models \(emb_dim, dec_hidden differ\)"):
        average_checkpoints([one, other], tmp_path / "out")
    lines = [row.split("\t")[1] for row in TINY_TSV.read_text(encoding="utf-8").splitlines()]
    train_tokenizer(lines, lines, dataclasses.replace(config.tokenizer, vocab_size=200), tmp_path / "spm")
    other_pieces = Tokenizer.from_folder(tmp_path / "spm")  # as many pieces, other ones (Spanish only)
    pieces = save_checkpoint(tmp_path / "pieces", model, config, other_pieces, step=9)
    with pytest.raises(CheckpointError, match="different SentencePiece models"):
        average_checkpoints([one, pieces], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_average_refuses_an_average_among_its_checkpoints(tmp_path):
    """An average given again beside one of its own checkpoints made the mean of steps 7 and 9
    with step 9 weighted 9 at 3/4, and checkpoint.json listed the average as step 9 alone."""
    from nmt.average import average_checkpoints

    config, tokenizer, model, seven = saved_tiny_model(tmp_path)
    nine = save_checkpoint(tmp_path / "nine", model, config, tokenizer, step=9)
    eleven = save_checkpoint(tmp_path / "eleven", model, config, tokenizer, step=11)
    mean = average_checkpoints([seven, nine], tmp_path / "mean")
    for given in ([mean, nine], [seven, mean], [mean, eleven]):
        says = (f"{mean} is itself an average (of steps 7, 9); average the checkpoints it was made from, with the "
                f"others, each once")
        with pytest.raises(CheckpointError, match=f"^{re.escape(says)}$"):
            average_checkpoints(given, tmp_path / "again")
    assert not (tmp_path / "again").exists()
    average_checkpoints([seven, nine, eleven], tmp_path / "again")


def test_a_checkpoint_of_a_higher_step_never_costs_the_one_just_saved(tmp_path):
    """An average written as checkpoints/step-0999999 sorts after every step: saving the next
    checkpoint kept it and pruned the one just saved, leaving `last` pointing at nothing."""
    from nmt.average import average_checkpoints
    from nmt.checkpoint import load_checkpoint

    _, paths = _train(tmp_path, "train.max_steps=16", "train.keep_checkpoints=2")
    average_checkpoints([paths.root / "checkpoints" / "step-0000008", paths.root / "checkpoints" / "step-0000016"],
                        paths.root / "checkpoints" / "step-0999999")
    _train(tmp_path, "train.max_steps=24")  # keeping 1 besides best: the latest by step was the average
    assert load_checkpoint(paths.root / "last").step == 24


@pytest.mark.parametrize("link", ["last", "best"])
def test_a_run_whose_last_or_best_link_was_deleted_is_refused_not_started_over(tmp_path, link):
    """Without `last` a run with checkpoints started again from step 0 over the old one (its
    metrics.jsonl overwritten, its checkpoints pruned); without `best`, resuming pruned the real
    best checkpoint and never linked it again."""
    _, paths = _train(tmp_path, "train.max_steps=16")
    (paths.root / link).unlink()
    kept = sorted(p.name for p in (paths.root / "checkpoints").iterdir())
    with pytest.raises(NmtError, match=rf"{link}.* (is missing|link to resume from).*; delete .* or choose a new name"):
        _train(tmp_path, "train.max_steps=24")
    assert sorted(p.name for p in (paths.root / "checkpoints").iterdir()) == kept


def test_training_a_finished_run_again_changes_nothing(tmp_path):
    """A run whose last step was not a validation step was validated again at every rerun (make
    reruns the stage when train.threads changes): duplicate log rows, and the unchanged BLEU
    counted as a plateau, halving the learning rate with no step trained."""
    import json

    _, paths = _train(tmp_path, "train.max_steps=12")  # validated at 8, and at 12 as the final weights
    before = (paths.root / "metrics.jsonl").read_text(encoding="utf-8")
    state = json.loads((paths.root / "last" / "trainer.json").read_text(encoding="utf-8"))["trainer"]
    for _ in range(2):
        summary, _ = _train(tmp_path, "train.max_steps=12")
    assert summary["steps"] == 12 and (paths.root / "metrics.jsonl").read_text(encoding="utf-8") == before
    again = json.loads((paths.root / "last" / "trainer.json").read_text(encoding="utf-8"))["trainer"]
    assert (again["lr"], again["bad_validations"]) == (state["lr"], state["bad_validations"])
