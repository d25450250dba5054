"""The ``nmt`` command line. Thin: parse, call nmt.pipeline / nmt.translate, own the terminal.

torch, datasets and sentencepiece are imported inside the commands, so ``nmt --help`` is instant.
Errors the user can fix (``NmtError``) print one line on stderr and exit with status 1; a usage
error (an unknown option or command, a value out of range) prints one line and exits with 2
(``main``, the installed command).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from nmt.terminal import ProgressBar, fail, guarded, is_stdout, same_file, stdin_lines, write_in_chunks


class _PlainHelp:
    """--help shown as the switch it is: with click 8.2 and later, Typer's help table showed it as
    "--help <bool>", as if it took a value (as --version did before its metavar "")."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class _Command(_PlainHelp, TyperCommand):
    pass


class _Group(_PlainHelp, TyperGroup):
    pass


app = typer.Typer(add_completion=False, no_args_is_help=True, help="Neural machine translation with LSTMs.",
                  cls=_Group)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Experiment YAML file.")]
Overrides = Annotated[Optional[list[str]], typer.Argument(help="Config overrides: section.key=value …")]
RunsOpt = Annotated[Path, typer.Option("--runs", help="Folder that holds runs/<name>/.")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1 … (default: cuda if present)")]


def _version(value: bool) -> None:
    """--version: nmt's version, with Python's and the installed torch's (read from the package
    metadata: no import), the three a bug report needs."""
    if value:
        import platform

        from nmt import __version__
        from nmt.provenance import installed

        typer.echo(f"nmt {__version__} (Python {platform.python_version()}, torch {installed('torch')})")
        raise typer.Exit()


@app.callback()
def _options(
    # metavar "": a switch takes no value (Typer would show "<bool>", and --version true fails)
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, metavar="",
                                          help="Print the version and exit.")] = False,
) -> None:
    """Neural machine translation with LSTMs."""


def main(argv: list[str] | None = None) -> None:
    """The ``nmt`` command (``python -m nmt`` too): the Typer app, its usage errors made one line on
    stderr, naming the help to read, with click's exit status 2. Typer would draw them in a box of
    four to six lines; as one line they read like nmt's other errors, in a terminal and in a log.
    Help (``--help``, or ``nmt`` alone) stays Typer's."""
    # click's exception classes, found through a public one: Typer >= 0.2x carries its own copy of
    # click (typer._click), older Typer uses click itself
    classes = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
    usage_error, click_exception = classes["UsageError"], classes["ClickException"]
    try:
        code = app(args=argv, prog_name="nmt", standalone_mode=False)
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `nmt` alone: the help, as before
            exc.show()
        else:
            help_hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            typer.echo(f"error: {' '.join(exc.format_message().split())}{help_hint}", err=True)
        raise SystemExit(exc.exit_code) from None
    except click_exception as exc:
        typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)  # typer.Exit's status (--version, Ctrl-C: 130)


def _load(config: Path, overrides: list[str] | None):
    from nmt.config import load_config

    return load_config(config, overrides or [])


@app.command(cls=_Command)
@guarded
def prepare(config: ConfigOpt, overrides: Overrides = None, runs: RunsOpt = Path("runs")) -> None:
    """Load, normalise, filter and split the parallel text into runs/<name>/data/."""
    from nmt import pipeline
    from nmt.config import run_paths

    cfg = _load(config, overrides)
    typer.echo(pipeline.prepare(cfg, run_paths(cfg, runs)))


@app.command(cls=_Command)
@guarded
def tokenize(config: ConfigOpt, overrides: Overrides = None, runs: RunsOpt = Path("runs")) -> None:
    """Train SentencePiece on the training split into runs/<name>/tokenizer/."""
    from nmt import pipeline
    from nmt.config import run_paths

    cfg = _load(config, overrides)
    typer.echo(pipeline.tokenize(cfg, run_paths(cfg, runs)))


@app.command(cls=_Command)
@guarded
def train(
    config: ConfigOpt, overrides: Overrides = None, runs: RunsOpt = Path("runs"), device: DeviceOpt = None
) -> None:
    """Train the model (resumes from runs/<name>/last when it exists)."""
    import json

    from nmt import pipeline
    from nmt.config import run_paths

    cfg = _load(config, overrides)
    with ProgressBar() as bar:
        summary = pipeline.train(cfg, run_paths(cfg, runs), device, bar)
    typer.echo(json.dumps(summary, indent=2))


# Lines translated at a time by nmt translate (each chunk sorted by length into batches of its own),
# each chunk's translations written before the next is decoded. Held whole, a file's hypotheses
# took ~2.8 KiB a line: peak memory 891 MiB for 60,030 lines, 1,053 MiB for 120,060, so millions of
# lines would not fit; in chunks, 829 and 843 MiB (Luong model, bf16, the Intel AMX VM).
TRANSLATE_CHUNK = 20_000


def _in_alpha_range(value: float | None) -> float | None:
    """--alpha as given, a usage error outside decode.alpha's range (nmt.config: NaN, above 10 …)."""
    from nmt.configcheck import range_error

    if value is not None and (error := range_error("--alpha", value, "decode.alpha")):
        raise typer.BadParameter(error.removeprefix("--alpha "))  # click names the option itself
    return value


AlphaOpt = Annotated[Optional[float], typer.Option(
    callback=_in_alpha_range, help="Beam search's length penalty exponent (default: the checkpoint's decode.alpha).")]


def _one_of(choices: str):
    """A callback making an option outside ``nmt.config``'s Literal ``choices`` a usage error."""
    def check(value: str | None) -> str | None:
        from nmt import config

        if value is not None and (error := config.choice_error("", value, getattr(config, choices))):
            raise typer.BadParameter(error.strip())  # "must be a, b or c, not 'x'"; click names the option
        return value
    return check


# short_help: the command list in nmt --help would keep the docstring's line breaks
@app.command(cls=_Command, short_help="Translate one sentence per line; as many lines out as in.")
@guarded
def translate(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint folder, e.g. runs/<name>/best.")],
    # str, not Path: Path("./-") is Path("-"), and ./- names a file called "-", as it does to cat
    input: Annotated[Optional[str], typer.Option(
        "--input", "-i", metavar="<path>", help="Source file, or - for stdin (the default).")] = None,
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", metavar="<path>", help="Output file, or - for stdout (the default).")] = None,
    beam: Annotated[int, typer.Option(
        min=1, help="Beam size; 1 = greedy (the default, whatever decode.beam says).")] = 1,
    alpha: AlphaOpt = None,
    nbest: Annotated[int, typer.Option(min=1, help="Hypotheses per line; above 1, each with its score "
                                                   "(log-probability / length penalty), tab-separated.")] = 1,
    precision: Annotated[
        Optional[str],
        typer.Option(callback=_one_of("DecodePrecision"),
                     help="fp32, bf16 (autocast; faster on CPUs with avx512_bf16 or AMX), int8 (CPU: 8-bit "
                          "matrix products; fastest where the CPU has VNNI) or auto (bf16 where it is "
                          "native, else fp32). Default: config."),
    ] = None,
    stopping: Annotated[
        Optional[str],
        typer.Option(callback=_one_of("StoppingRule"),
                     help="Beam search stops a sentence at the 'bound' (exact: no live hypothesis can "
                          "still win) or once 'finished' has beam hypotheses (fairseq's rule, faster). "
                          "Default: config."),
    ] = None,
    whole_lines: Annotated[bool, typer.Option(
        "--whole-lines", metavar="", help="Decode a line longer than the model was trained on whole, not in parts cut "
                              "where its sentences end (decode.split_long: false).")] = False,
    device: DeviceOpt = None,
) -> None:
    """Translate one sentence per line; the output has exactly as many lines as the input. Typed at
    a terminal (stdin a terminal, no --input or --output), each line is translated as it is
    entered; Ctrl-D ends."""
    import dataclasses

    from nmt.atomic import check_destination
    from nmt.lines import read_lines
    from nmt.translate import Translator

    if nbest > beam:
        fail(f"--nbest {nbest} needs --beam of at least {nbest}")
    for option, value in (("--alpha", alpha), ("--stopping", stopping)):
        if value is not None and beam == 1:  # a user tuning it would otherwise compare identical outputs
            logging.getLogger(__name__).warning("%s is beam search's; greedy search (--beam 1, the default) "
                                                "ignores it", option)
    input, output = (None if name in (None, "-") else Path(name) for name in (input, output))  # -: stdin, stdout
    if output is not None and is_stdout(output):  # -o /dev/stdout: as -o -
        output = None
    if output is not None:  # found out before decoding, not after
        if output.suffix.lower() == ".zst":  # written plain under that name, it would not read back
            fail(f"--output {output}: zstd is not supported; name it .gz, .bz2 or .xz to compress, or plain")
        try:
            check_destination(output)
        except IsADirectoryError:
            fail(f"--output {output} is a folder; give a file name")
        if input is not None and same_file(input, output):  # the source would be replaced by its translation
            fail(f"--output {output} is the --input file; give another name")
    interactive = input is None and output is None and sys.stdin.isatty()
    lines = [] if interactive else (read_lines(input) if input is not None else stdin_lines())
    translator = Translator.from_checkpoint(checkpoint, device)
    if whole_lines:
        translator.config = dataclasses.replace(
            translator.config, decode=dataclasses.replace(translator.config.decode, split_long=False))

    def rendered(lines: list[str], progress=None) -> list[str]:
        if nbest == 1:
            return translator.translate(lines, beam=beam, alpha=alpha, precision=precision, stopping=stopping,
                                        progress=progress)
        found = translator.hypotheses(lines, beam=beam, alpha=alpha, nbest=nbest, precision=precision,
                                      stopping=stopping, progress=progress)
        return ["\t".join(f"{h.score:.4f}\t{translator.text(h)}" for h in hyps) for hyps in found]

    if interactive:  # a person typing: answer each line at once (a pipe or file is decoded in batches)
        typer.echo("Type a sentence and press Enter; Ctrl-D ends.", err=True)
        for raw in sys.stdin.buffer:  # bytes: in a C locale the text stream lets invalid UTF-8 through
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:  # a terminal in Latin-1, say: that line, not the session
                typer.echo(f"error: not valid UTF-8 (byte {exc.start + 1}); type it again", err=True)
                continue
            typer.echo(rendered([line.rstrip("\r\n")])[0])
        return
    with translator.noting():  # a long file's notes (lines cut …) once, summed over its chunks
        write_in_chunks(lines, rendered, output, TRANSLATE_CHUNK)


@app.command(cls=_Command)
@guarded
def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint folder, e.g. runs/<name>/best.")],
    src: Annotated[Optional[Path], typer.Option(help="Source file (default: the run's test split).")] = None,
    ref: Annotated[Optional[Path], typer.Option(help="Reference file (default: the run's test split).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Report folder (default: the run folder for its best checkpoint on its test split; else "
             "runs/<name>/eval/<checkpoint>[-<source>][-beamK][-alphaA]).")] = None,
    beam: Annotated[Optional[int], typer.Option(
        min=1, help="Beam size (default: the checkpoint's decode.beam); 1 = greedy only.")] = None,
    alpha: AlphaOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Decode the test set greedily and with beam search; write report.md and report.json."""
    from nmt import pipeline

    report = pipeline.evaluate(checkpoint, src, ref, out, beam, device, alpha=alpha)
    typer.echo(score_lines(report))


def score_lines(report: dict) -> str:
    """One line per system: BLEU, chrF and TER."""
    return "\n".join(
        f"{name}: " + "  ".join(f"{m.upper() if m != 'chrf' else 'chrF'} {v['score']:.2f}" for m, v in s["scores"].items())
        for name, s in report["systems"].items()
    )


# short_help: the command list in nmt --help would keep the docstring's line breaks
@app.command(cls=_Command, short_help="Average checkpoints' weights into a new checkpoint.")
@guarded
def average(
    checkpoints: Annotated[list[Path], typer.Argument(
        help="Checkpoint folders of one run, or a run folder (runs/<name>: its train.keep_checkpoints "
             "latest checkpoints).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder of the new checkpoint.")],
    last: Annotated[int, typer.Option(min=0, help="Only the N latest of them, by step (0: all).")] = 0,
) -> None:
    """Average the weights of checkpoints of one run (the last few: train.keep_checkpoints keeps
    them) into a new checkpoint that translates and evaluates like any other."""
    from nmt.average import average_checkpoints
    from nmt.checkpoint import MANIFEST, latest_checkpoints, read_manifest

    folders = []
    for path in checkpoints:  # a folder that is neither goes as it is: loading it says what it is
        if not path.exists():
            fail(f"checkpoint folder not found: {path}")
        # of a run, not its best when that is older: the mean of step 300 and step 2,700 is no recipe
        folders += [path] if (path / MANIFEST).is_file() else latest_checkpoints(path) or [path]
    if last and len(folders) < last:  # the mean of fewer, farther apart, is another model than asked for
        fail(f"--last {last}: only {len(folders)} checkpoint{'s' * (len(folders) != 1)} to average (a run keeps "
             f"its train.keep_checkpoints latest: set that to {last} or more)")
    if last:
        folders = sorted(folders, key=lambda path: read_manifest(path)["step"])[-last:]
    typer.echo(average_checkpoints(folders, output))


@app.command(cls=_Command, short_help="Evaluation report: report.html, report.md and report.json.")
@guarded
def report(
    checkpoint: Annotated[list[Path], typer.Option(help="Checkpoint folder; repeat to compare runs or cells.")],
    name: Annotated[Optional[list[str]], typer.Option(help="Name per --checkpoint (default: its run).")] = None,
    src: Annotated[Optional[Path], typer.Option(help="Source file (default: the first run's test split).")] = None,
    ref: Annotated[Optional[Path], typer.Option(help="Reference file (default: the first run's test split).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Report folder (default: runs/<name>/report for the run's best on its own test split and settings "
             "with the default knobs, "
             "else runs/<name>/eval/<checkpoint or names>[-…]/report; a checkpoint outside a run: its parent "
             "folder for runs/<name>).")] = None,
    beam: Annotated[Optional[int], typer.Option(
        min=1, help="Beam of the beam systems (default: each checkpoint's decode.beam).")] = None,
    alpha: AlphaOpt = None,
    beams: Annotated[str, typer.Option(callback=lambda text: _beam_sizes(text) and text,  # checked: a usage error
                                       help="Beam sizes of the sweep, comma-separated.")] = "1,2,5,10",
    sweep_sentences: Annotated[int, typer.Option(min=1, help="Test lines the sweep decodes.")] = 500,
    search_sentences: Annotated[int, typer.Option(min=0, help="Short lines checked for search errors.")] = 100,
    search_max_pieces: Annotated[int, typer.Option(min=2, help="Most source pieces of a short line.")] = 20,
    wide_beam: Annotated[int, typer.Option(min=2, help="Beam the search-error check compares with.")] = 50,
    heatmaps: Annotated[int, typer.Option(min=0, help="Attention heatmaps per checkpoint.")] = 4,
    examples: Annotated[int, typer.Option(min=0, help="Best and worst sentences shown.")] = 5,
    device: DeviceOpt = None,
) -> None:
    """Evaluation report: report.html (self-contained), report.md and report.json, with confidence
    intervals, paired significance, length buckets, a beam sweep, search errors, training curves,
    attention heatmaps and the best and worst sentences."""
    from nmt.evaluation import ReportOptions, build_report

    logging.getLogger("sacrebleu").setLevel(logging.WARNING)  # one log line per bootstrap test
    options = ReportOptions(
        beam=beam, alpha=alpha, sweep_beams=_beam_sizes(beams), sweep_sentences=sweep_sentences, search_sentences=search_sentences,
        search_max_pieces=search_max_pieces, wide_beam=wide_beam, heatmaps=heatmaps, examples=examples,
    )
    result = build_report(checkpoint, name, src, ref, out, options, device)
    typer.echo(score_lines(result))
    typer.echo(Path(result["output"]) / "report.html")


def _beam_sizes(text: str) -> tuple[int, ...]:
    """Every comma-separated entry a beam size, each once: "2,,3" is more likely a lost number than
    a wish for two, and a size given twice would decode the sweep's sentences twice."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1 or len(set(sizes)) < len(sizes):  # a usage error (status 2), as --beam 0 is
        raise typer.BadParameter(f"{text!r}: give distinct beam sizes like 1,2,5,10")
    return sizes


if __name__ == "__main__":  # pragma: no cover
    app()
