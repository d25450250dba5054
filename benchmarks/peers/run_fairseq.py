"""fairseq (the fairseq-fixed 0.12.3.1 fork) on the matched model; run with its venv's python.

    prepare  fairseq-preprocess of the shared piece text with the shared vocabulary (dict.txt);
             its "test" subset is the text to decode (--split, --sentences)
    train    fairseq-train, --arch lstm; the clock wraps Trainer.train_step (--minutes: the
             budget is checked there and max_update lowered to stop the loop, which then saves)
    decode   fairseq-generate; the clock wraps SequenceGenerator.generate

Model mapping (fairseq's names): --encoder-hidden-size is per direction with
--encoder-bidirectional (outputs 2 × 256 = 512, as nmt). fairseq's lstm has Luong-style
("general") attention only, and refuses --encoder-layers != --decoder-layers: the model is built
with 2 decoder layers and the second is dropped before training (fairseq then starts the 1-layer
decoder from the encoder's first-layer final state through its own 512 → 256 projection).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402


def allow_fewer_decoder_layers() -> None:
    from torch import nn

    from fairseq.models.lstm import LSTMModel

    original = LSTMModel.build_model.__func__

    def build_model(cls, args, task):
        wanted = args.decoder_layers
        args.decoder_layers = args.encoder_layers
        model = original(cls, args, task)
        args.decoder_layers = wanted
        decoder = model.decoder
        decoder.layers = nn.ModuleList(list(decoder.layers)[:wanted])
        decoder.num_layers = wanted
        return model

    LSTMModel.build_model = classmethod(build_model)


def prepare(args) -> dict:
    from fairseq_cli import preprocess

    pw = args.peer_work
    dict_path = pw / "dict.txt"
    dict_path.write_text("".join(f"{p} {n}\n" for p, n in c.vocab(args)), encoding="utf-8")
    test_prefix = c.prefix(c.decode_source(args))  # what `decode` translates
    train_prefix = c.prefix(c.pieces(args, "train", c.SRC))
    dev_prefix = c.prefix(c.pieces(args, "dev", c.SRC))
    c.run_main(preprocess.cli_main, [
        "fairseq-preprocess", "--source-lang", c.SRC, "--target-lang", c.TGT,
        "--trainpref", train_prefix, "--validpref", dev_prefix, "--testpref", test_prefix,
        "--destdir", pw / "bin", "--srcdict", dict_path, "--tgtdict", dict_path, "--workers", 1,
    ])
    return {"vocab": len(c.vocab(args)) + 4, "bin": str(pw / "bin")}


def train(args) -> dict:
    import fairseq.trainer
    from fairseq_cli import train as fairseq_train

    allow_fewer_decoder_layers()
    clock = c.StepClock(args.warmup, args.steps)
    budget = c.Budget(args.minutes)
    original = fairseq.trainer.Trainer.train_step

    def train_step(self, samples, raise_oom=False):
        budget.begin()
        out = original(self, samples, raise_oom)
        real = [s for s in samples if s]
        n_tokens = sum(int(s["ntokens"]) for s in real)
        if args.minutes:
            budget.step_done(n_tokens)
            if budget.spent:  # validate_and_save reads max_update after every step: stop, save
                self.cfg.optimization.max_update = self.get_num_updates()
            return out
        pad = self.task.target_dictionary.pad()
        src = [s["net_input"]["src_lengths"].numpy() for s in real]  # with </s>
        tgt = [s["target"].ne(pad).sum(1).numpy() for s in real]  # with </s>
        clock.record(n_tokens, *(map(__import__("numpy").concatenate, (src, tgt))))
        return out

    fairseq.trainer.Trainer.train_step = train_step
    pw = args.peer_work
    c.run_main(fairseq_train.cli_main, [
        "fairseq-train", pw / "bin", "--task", "translation", "--source-lang", c.SRC, "--target-lang", c.TGT,
        "--arch", "lstm", "--encoder-embed-dim", c.EMB, "--encoder-hidden-size", c.ENC_HIDDEN,
        "--encoder-layers", c.ENC_LAYERS, "--encoder-bidirectional",
        "--decoder-embed-dim", c.EMB, "--decoder-hidden-size", c.DEC_HIDDEN, "--decoder-layers", c.DEC_LAYERS,
        "--decoder-out-embed-dim", c.EMB, "--decoder-attention", "1", "--share-decoder-input-output-embed",
        "--dropout", c.DROPOUT,
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.999)", "--lr", c.LR, "--lr-scheduler", "fixed",
        "--clip-norm", c.CLIP, "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", c.SMOOTHING,
        "--max-tokens", args.max_tokens, "--required-batch-size-multiple", 1,
        "--max-update", 10**9 if args.minutes else args.warmup + args.steps, "--disable-validation", "--num-workers", 0, "--cpu",
        "--seed", c.SEED, "--save-dir", pw / "ckpt", "--no-epoch-checkpoints",
        "--log-format", "simple", "--log-interval", 10,
    ])
    result = budget.result() if args.minutes else clock.result()
    result["model"] = {"attention": "luong-general", "enc_hidden_per_direction": c.ENC_HIDDEN,
                       "dec_hidden": c.DEC_HIDDEN, "batch": f"--max-tokens {args.max_tokens}"}
    return result


def decode(args) -> dict:
    from fairseq import sequence_generator
    from fairseq_cli import generate

    allow_fewer_decoder_layers()
    clock = c.SearchClock(args.repeats)
    sequence_generator.SequenceGenerator.generate = clock.wrap(sequence_generator.SequenceGenerator.generate)
    pw = args.peer_work
    out_dir = pw / f"gen-beam{args.beam}"
    c.run_main(generate.cli_main, [
        "fairseq-generate", pw / "bin", "--path", pw / "ckpt" / "checkpoint_last.pt", "--task", "translation",
        "--source-lang", c.SRC, "--target-lang", c.TGT, "--gen-subset", "test",
        "--beam", args.beam, "--nbest", 1, "--max-len-a", c.MAX_LEN_A, "--max-len-b", c.MAX_LEN_B,
        "--batch-size", args.decode_batch, "--required-batch-size-multiple", 1, "--cpu", "--num-workers", 0,
        "--results-path", out_dir,
    ])
    found = [line.split("\t", 2) for line in (out_dir / "generate-test.txt").read_text(encoding="utf-8").splitlines()
             if line.startswith("H-")]
    hyps = [text for _, _, text in sorted(found, key=lambda h: int(h[0][2:]))]  # by sentence id: input order
    (out_dir / f"hyp.{c.TGT}").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    sentences = len(c.decode_source(args).read_text(encoding="utf-8").splitlines())
    result = c.decode_result(args, clock, hyps, sentences)
    result["hyps"] = str(out_dir / f"hyp.{c.TGT}")
    return result


if __name__ == "__main__":
    arguments = c.parse()
    c.env_check()
    c.write(arguments, {"prepare": prepare, "train": train, "decode": decode}[arguments.what](arguments))
