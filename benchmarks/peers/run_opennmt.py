"""OpenNMT-py 3.5.1 on the matched model; run with its venv's python.

    prepare  the shared vocabulary as an OpenNMT vocab file, and the training config (YAML)
    train    onmt_train; the clock wraps Trainer._gradient_accumulation (one optimizer step);
             with --minutes, the step that finds the budget spent saves the weights and stops
    decode   onmt_translate (--split, --sentences); the clock wraps Translator.translate_batch

Model mapping: brnn encoder (enc_hid_size is the sum over both directions), rnn decoder with
input feeding, "mlp" (Bahdanau) global attention, tied decoder embeddings and generator.
OpenNMT-py's attention and decoder start state need the encoder output size to equal the decoder
hidden size, so with a 256 decoder the encoder is 2 × 128 (nmt: 2 × 256): less encoder work than
nmt's model, which favours OpenNMT-py in the ratios. Its 1-layer decoder starts from the
encoder's first-layer final state (OpenNMT-py's own rule when the layer counts differ).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

ENC_HID_SIZE = c.DEC_HIDDEN  # both directions together: 128 each


def config(args) -> dict:
    pw = args.peer_work
    steps = 10**9 if args.minutes else args.warmup + args.steps
    return {
        "save_data": str(pw / "run"),
        "src_vocab": str(pw / "vocab.txt"),
        "tgt_vocab": str(pw / "vocab.txt"),
        "share_vocab": True,
        "src_vocab_size": 100000,
        "tgt_vocab_size": 100000,
        "vocab_size_multiple": 1,
        "data": {"corpus_1": {"path_src": str(c.pieces(args, "train", c.SRC)),
                              "path_tgt": str(c.pieces(args, "train", c.TGT))}},
        "overwrite": True,
        "save_model": str(pw / "model"),
        "save_checkpoint_steps": steps,
        "train_steps": steps,
        "valid_steps": 10 * steps,
        "seed": c.SEED,
        "encoder_type": "brnn",
        "decoder_type": "rnn",
        "rnn_type": "LSTM",
        "enc_layers": c.ENC_LAYERS,
        "dec_layers": c.DEC_LAYERS,
        "enc_hid_size": ENC_HID_SIZE,
        "dec_hid_size": c.DEC_HIDDEN,
        "word_vec_size": c.EMB,
        "global_attention": "mlp",
        "input_feed": 1,
        "share_decoder_embeddings": True,
        "dropout": [c.DROPOUT],
        "optim": "adam",
        "learning_rate": c.LR,
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "decay_method": "none",
        "max_grad_norm": c.CLIP,
        "label_smoothing": c.SMOOTHING,
        "batch_type": "tokens",
        "batch_size": args.max_tokens,
        "batch_size_multiple": 1,
        "accum_count": [1],
        "normalization": "tokens",
        "num_workers": 0,
        "world_size": 1,
        "gpu_ranks": [],
        "report_every": 10,
        "model_dtype": "fp32",
    }


def prepare(args) -> dict:
    pw = args.peer_work
    (pw / "vocab.txt").write_text("".join(f"{p}\t{n}\n" for p, n in c.vocab(args)), encoding="utf-8")
    (pw / "train.yaml").write_text(yaml.safe_dump(config(args)), encoding="utf-8")
    return {"config": str(pw / "train.yaml")}


def train(args) -> dict:
    import onmt.trainer
    from onmt.bin import train as onmt_train

    (args.peer_work / "train.yaml").write_text(yaml.safe_dump(config(args)), encoding="utf-8")
    clock = c.StepClock(args.warmup, args.steps)
    budget = c.Budget(args.minutes)
    original = onmt.trainer.Trainer._gradient_accumulation

    def gradient_accumulation(self, true_batches, normalization, total_stats, report_stats):
        if args.minutes and budget.spent:  # training_step - 1 steps are done: keep them, stop
            self.model_saver.save(self.optim.training_step - 1, moving_average=self.moving_average)
            raise c.BudgetSpent
        budget.begin()
        out = original(self, true_batches, normalization, total_stats, report_stats)
        pad = self.train_loss.padding_idx
        # tgt is <s> y </s> <pad>…; the predicted positions are tgt[:, 1:]: y and </s>
        tgt = __import__("torch").cat([b["tgt"][:, 1:, 0].ne(pad).sum(1) for b in true_batches])
        if args.minutes:
            budget.step_done(int(tgt.sum()))
            return out
        src = __import__("torch").cat([b["srclen"] for b in true_batches])
        clock.record(int(tgt.sum()), src.numpy(), tgt.numpy())
        return out

    onmt.trainer.Trainer._gradient_accumulation = gradient_accumulation
    try:
        c.run_main(onmt_train.main, ["onmt_train", "-config", args.peer_work / "train.yaml"])
    except c.BudgetSpent:
        pass
    result = budget.result() if args.minutes else clock.result()
    result["model"] = {"attention": "mlp (Bahdanau)", "enc_hidden_per_direction": ENC_HID_SIZE // 2,
                       "dec_hidden": c.DEC_HIDDEN, "batch": f"batch_type tokens, batch_size {args.max_tokens}"}
    return result


def decode(args) -> dict:
    import onmt.translate.translator as translator
    from onmt.bin import translate as onmt_translate

    clock = c.SearchClock(args.repeats)
    translator.Translator.translate_batch = clock.wrap(translator.Translator.translate_batch)
    src = c.decode_source(args)
    out = args.peer_work / f"hyp.beam{args.beam}.{c.TGT}"
    saved = sorted((int(p.stem.rsplit("_", 1)[1]), p) for p in args.peer_work.glob("model_step_*.pt"))
    c.run_main(onmt_translate.main, [
        "onmt_translate", "-model", saved[-1][1], "-src", src, "-output", out,
        "-beam_size", args.beam, "-n_best", 1, "-batch_size", args.decode_batch, "-batch_type", "sents",
        "-max_length", 1000, "-max_length_ratio", c.MAX_LEN_A, "-length_penalty", "wu", "-alpha", c.ALPHA,
        "-gpu", -1, "-seed", c.SEED,
    ])
    hyps = out.read_text(encoding="utf-8").splitlines()
    result = c.decode_result(args, clock, hyps, len(src.read_text(encoding="utf-8").splitlines()))
    result["hyps"] = str(out)
    return result


if __name__ == "__main__":
    arguments = c.parse()
    c.env_check()
    c.write(arguments, {"prepare": prepare, "train": train, "decode": decode}[arguments.what](arguments))
