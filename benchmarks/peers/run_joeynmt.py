"""JoeyNMT 2.3.0 on the matched model; run with its venv's python.

    prepare  the shared vocabulary as a JoeyNMT vocab file (one piece a line) and a tiny dev file
    train    `python -m joeynmt train … --skip-test`; the clock wraps TrainManager._train_step
             (--minutes: the first step that finds the budget spent raises KeyboardInterrupt,
             which JoeyNMT answers by saving the weights and ending training)
    decode   `python -m joeynmt test …` (--split, --sentences); the clock wraps the search function

Model mapping: recurrent encoder, hidden_size 256 per direction with bidirectional (outputs 512,
as nmt), recurrent decoder with input feeding, Bahdanau attention, a tanh bridge from the
encoder's final states (init_hidden: bridge), tied softmax. JoeyNMT's token batches are filled
from randomly ordered sentences (no length bucketing), so they carry more padding than the other
toolkits' batches; that padding is JoeyNMT's own cost. The training loop validates on a
4-sentence dev file only after the timed steps (it needs one).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402


def config(args, test_prefix: Path | None = None, checkpoint: Path | None = None) -> dict:
    pw = args.peer_work
    steps = 10**9 if args.minutes else args.warmup + args.steps
    side = lambda lang: {  # noqa: E731
        "lang": lang,
        "level": "word",  # pre-tokenised piece text: split on spaces, nothing else
        "lowercase": False,
        "normalize": False,
        "max_length": 128,  # as nmt's train.max_train_len
        "voc_file": str(pw / "vocab.txt"),
        "voc_min_freq": 1,
    }
    data = {
        "train": str(c.pieces(args, "train", c.SRC))[: -len(c.SRC) - 1],
        "dev": str(pw / "tinydev"),
        "dataset_type": "plain",
        "src": side(c.SRC),
        "trg": side(c.TGT),
    }
    if test_prefix is not None:  # decoding: only the split to translate
        data.pop("dev")
        data["test"] = str(test_prefix)
    testing = {
        "n_best": 1,
        "beam_size": args.beam,
        "beam_alpha": c.ALPHA,
        "batch_size": args.decode_batch,
        "batch_type": "sentence",
        "eval_metrics": ["bleu"],
    }
    if checkpoint is not None:
        testing["load_model"] = str(checkpoint)
    model_dir = str(pw / "model")
    return {
        "name": "bench",
        "joeynmt_version": "2.3.0",
        "model_dir": model_dir,
        "use_cuda": False,
        "fp16": False,
        "random_seed": c.SEED,
        "num_workers": 0,
        "data": data,
        "testing": testing,
        "training": {
            "model_dir": model_dir,
            "overwrite": True,
            "optimizer": "adam",
            "adam_betas": [0.9, 0.999],
            "learning_rate": c.LR,
            "learning_rate_min": 1.0e-8,
            # constant lr: JoeyNMT needs a scheduler, and its `plateau` fails on torch 2.x
            "scheduling": "exponential",
            "decrease_factor": 1.0,
            "clip_grad_norm": c.CLIP,
            "label_smoothing": c.SMOOTHING,
            "normalization": "tokens",
            "batch_size": args.max_tokens,
            "batch_type": "token",
            "epochs": 100,
            "updates": steps,
            "validation_freq": 10 * steps,
            "logging_freq": 10,
            "early_stopping_metric": "ppl",
            "keep_best_ckpts": 1,
            "print_valid_sents": [],
            "shuffle": True,
            "use_cuda": False,
            "random_seed": c.SEED,
        },
        "model": {
            "tied_embeddings": False,
            "tied_softmax": True,
            "encoder": {
                "type": "recurrent",
                "rnn_type": "lstm",
                "embeddings": {"embedding_dim": c.EMB, "dropout": c.DROPOUT},
                "hidden_size": c.ENC_HIDDEN,
                "bidirectional": True,
                "num_layers": c.ENC_LAYERS,
                "dropout": c.DROPOUT,
            },
            "decoder": {
                "type": "recurrent",
                "rnn_type": "lstm",
                "embeddings": {"embedding_dim": c.EMB, "dropout": c.DROPOUT},
                "hidden_size": c.DEC_HIDDEN,
                "num_layers": c.DEC_LAYERS,
                "dropout": c.DROPOUT,
                "hidden_dropout": c.DROPOUT,
                "attention": "bahdanau",
                "input_feeding": True,
                "init_hidden": "bridge",
            },
        },
    }


def prepare(args) -> dict:
    pw = args.peer_work
    (pw / "vocab.txt").write_text("".join(f"{p}\n" for p, _ in c.vocab(args)), encoding="utf-8")
    for lang in (c.SRC, c.TGT):
        lines = c.pieces(args, "dev", lang).read_text(encoding="utf-8").splitlines(keepends=True)
        (pw / f"tinydev.{lang}").write_text("".join(lines[:4]), encoding="utf-8")
    return {"vocab": str(pw / "vocab.txt")}


def run_joey(argv: list) -> None:
    from joeynmt import __main__ as joey_main

    c.run_main(joey_main.main, ["joeynmt", *argv])


def train(args) -> dict:
    import joeynmt.training as training

    cfg_path = args.peer_work / "train.yaml"
    cfg_path.write_text(yaml.safe_dump(config(args)), encoding="utf-8")
    clock = c.StepClock(args.warmup, args.steps)
    budget = c.Budget(args.minutes)
    original = training.TrainManager._train_step

    def train_step(self, batch):
        if args.minutes and budget.spent:  # the previous step's update is done; JoeyNMT saves, stops
            raise KeyboardInterrupt
        budget.begin()
        out = original(self, batch)
        pad = self.model.pad_index
        tgt = batch.trg.ne(pad).sum(1)  # y </s>
        if args.minutes:
            budget.step_done(int(tgt.sum()))
            return out
        clock.record(int(tgt.sum()), batch.src_length.cpu().numpy(), tgt.cpu().numpy())
        return out

    training.TrainManager._train_step = train_step
    run_joey(["train", cfg_path, "--skip-test"])
    result = budget.result() if args.minutes else clock.result()
    result["model"] = {"attention": "bahdanau", "enc_hidden_per_direction": c.ENC_HIDDEN,
                       "dec_hidden": c.DEC_HIDDEN, "batch": f"batch_type token, batch_size {args.max_tokens}"}
    return result


def latest_checkpoint(model_dir: Path) -> Path:
    steps = sorted((int(p.stem), p) for p in model_dir.glob("*.ckpt") if p.stem.isdigit())
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {model_dir}")
    return steps[-1][1]


def decode(args) -> dict:
    import joeynmt.prediction as prediction

    clock = c.SearchClock(args.repeats)
    prediction.search = clock.wrap(prediction.search)
    src = c.decode_source(args)
    prefix = c.prefix(src)
    cfg_path = args.peer_work / f"decode.beam{args.beam}.yaml"
    checkpoint = latest_checkpoint(args.peer_work / "model")
    cfg_path.write_text(yaml.safe_dump(config(args, prefix, checkpoint)), encoding="utf-8")
    out = args.peer_work / f"hyp.beam{args.beam}"
    run_joey(["test", cfg_path, "--output-path", out])
    hyps = Path(f"{out}.test").read_text(encoding="utf-8").splitlines()
    result = c.decode_result(args, clock, hyps, len(src.read_text(encoding="utf-8").splitlines()))
    result["hyps"] = f"{out}.test"
    return result


if __name__ == "__main__":
    arguments = c.parse()
    c.env_check()
    c.write(arguments, {"prepare": prepare, "train": train, "decode": decode}[arguments.what](arguments))
