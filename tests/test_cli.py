"""The nmt command line through Typer's runner: happy paths and the bad inputs users meet."""

import json
import logging
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import nmt
from conftest import ROOT, TINY_CONFIG, TINY_TSV
from nmt.cli import app
from nmt.provenance import versions

runner = CliRunner()
# the fewest decodings each command makes: greedy only; a report with a one-line sweep and no probes
QUICK = {"evaluate": ["--beam", "1"],
         "report": ["--beams", "1", "--sweep-sentences", "1", "--search-sentences", "0", "--heatmaps", "0"]}


@pytest.mark.parametrize("error", [OSError(28, "No space left on device", "runs/x/report.json"),
                                   PermissionError(13, "Permission denied", "runs/x")])
def test_file_system_errors_are_one_line_naming_the_path(error, capsys):
    from nmt.terminal import guarded

    def command():
        raise error

    with pytest.raises(SystemExit) as exited:
        guarded(command)()
    assert exited.value.code == 1
    assert capsys.readouterr().err == f"error: {error.strerror}: {error.filename}\n"


def test_an_os_error_without_a_path_is_not_hidden():
    from nmt.terminal import guarded

    def command():
        raise OSError("something inside a library")

    with pytest.raises(OSError, match="inside a library"):
        guarded(command)()


def _translate_into(tiny_run, tmp_path, *output: str, stdout=subprocess.PIPE):
    source = tmp_path / "in.es"
    source.write_text("Y dijo Dios: Sea la luz.\n" * 50, encoding="utf-8")
    return subprocess.Popen([sys.executable, "-m", "nmt", "translate", "--checkpoint", str(tiny_run.root / "best"),
                             "-i", str(source), *output], stdout=stdout, stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
def test_a_reader_that_goes_away_stops_translate_quietly(tiny_run, tmp_path):
    """nmt translate … | head -3: the reader closes the pipe; the translator stops with a shell's
    status for SIGPIPE and no traceback (there was one, and a second as Python exited)."""
    process = _translate_into(tiny_run, tmp_path)
    process.stdout.close()  # the reader is gone before the first line is written
    stderr = process.communicate(timeout=120)[1]
    assert (process.returncode, stderr) == (141, "")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("to_stdout", [True, False])
def test_a_full_disk_is_one_line_naming_what_was_written(tiny_run, tmp_path, to_stdout):
    with open("/dev/full", "w") as full:  # every write fails with ENOSPC
        args = () if to_stdout else ("-o", "/dev/full")
        process = _translate_into(tiny_run, tmp_path, *args, stdout=full if to_stdout else subprocess.PIPE)
        stderr = process.communicate(timeout=120)[1]
    named = "stdout" if to_stdout else "/dev/full"
    assert (process.returncode, stderr) == (1, f"error: No space left on device: {named}\n")


def test_a_full_disk_while_replacing_a_file_names_it_and_leaves_it_as_it_was(tmp_path, monkeypatch, capsys):
    import errno

    from nmt.atomic import atomic_write_text
    from nmt.terminal import guarded

    out = tmp_path / "report.json"
    out.write_text("earlier\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a real fsync's: no file name

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SystemExit) as exited:
        guarded(atomic_write_text)(out, "new\n")
    assert exited.value.code == 1
    assert capsys.readouterr().err == f"error: No space left on device: {out}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"] and out.read_text() == "earlier\n"


def test_a_full_disk_without_a_file_name_is_one_line_too(capsys):
    """An ENOSPC that names no file (an fsync's, a flush's) is still one line, not a traceback."""
    import errno

    from nmt.terminal import guarded

    def fill():
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(SystemExit) as exited:
        guarded(fill)()
    assert (exited.value.code, capsys.readouterr().err) == (1, "error: No space left on device\n")


def test_a_replaced_file_s_bytes_are_synced_before_it_takes_the_name(tmp_path, monkeypatch):
    """Renamed into place unsynced, a file can be empty after a crash: the new file itself is
    fsynced (its directory as well), not only the folder."""
    from nmt.atomic import atomic_write_text

    synced, fsync = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino) or fsync(fd))
    out = tmp_path / "report.json"
    atomic_write_text(out, "new\n")
    assert out.stat().st_ino in synced


def test_help_does_not_import_torch():
    code = "import sys; from nmt.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n" \
           "assert 'torch' not in sys.modules and 'datasets' not in sys.modules, 'heavy import'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "translate" in result.stdout and "evaluate" in result.stdout


def test_help_lists_each_command_on_one_line():
    """On a wide terminal, each command's summary in nmt --help is one line, not a docstring's
    lines broken where the source broke them."""
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    panel = result.stdout.split("Commands")[1].split("╰")[0]
    rows = [line.strip("│ ") for line in panel.splitlines() if line.startswith("│")]
    names = [command.name or command.callback.__name__ for command in app.registered_commands]
    assert [row.split()[0] for row in rows] == names  # no continuation rows between them


def test_translate_keeps_line_count_and_order(tiny_run, tmp_path):
    source = tmp_path / "in.es"
    lines = ["Y dijo Dios: Sea la luz.", "", "   ", "Y fué la tarde y la mañana el día primero."]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.en"
    for beam, precision in (("1", "fp32"), ("3", "fp32"), ("1", "bf16"), ("3", "bf16"), ("1", "int8"), ("3", "int8")):
        result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best"), "--input",
                                     str(source), "--output", str(out), "--beam", beam, "--precision", precision])
        assert result.exit_code == 0, result.output
        produced = out.read_text(encoding="utf-8").split("\n")[:-1]
        assert len(produced) == len(lines)
        assert produced[1] == "" and produced[2] == ""


# Characters str.splitlines() takes for line ends, each inside a sentence; a CRLF line; a lone CR
ODD_LINES = ["Y dijo\u2028Dios.", "Y dijo\x85Dios.", "Y dijo\x0cDios.", "Y dijo\x1eDios.", "Y dijo Dios.\r",
             "Y\rdijo Dios."]


@pytest.mark.parametrize("via", ["file", "stdin"])
def test_translate_ends_lines_at_newlines_only(tiny_run, tmp_path, via):
    text = "\n".join(ODD_LINES) + "\n"  # six lines, as wc -l and sacreBLEU count them
    args = ["translate", "--checkpoint", str(tiny_run.root / "best")]
    if via == "file":
        (tmp_path / "in.es").write_bytes(text.encode())
        args += ["--input", str(tmp_path / "in.es")]
    result = runner.invoke(app, args, input=text if via == "stdin" else None)
    assert result.exit_code == 0, result.output
    produced = result.stdout.split("\n")[:-1]
    assert len(produced) == len(ODD_LINES)
    # the input is normalised as the training data was: every odd space is a space
    plain = runner.invoke(app, args[:3], input="Y dijo Dios.\n").stdout
    assert produced[:5] == [plain.rstrip("\n")] * 5


def test_translate_reads_stdin_and_writes_stdout(tiny_run):
    result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best")],
                           input="Y dijo Dios\n\nEn el principio\n")
    assert result.exit_code == 0
    assert len(result.stdout.split("\n")[:-1]) == 3
    assert result.stderr == ""  # no progress bar where stderr is not a terminal


def test_a_dash_for_input_or_output_is_stdin_or_stdout(tiny_run, tmp_path, monkeypatch):
    """As Unix tools read it; ./- is still a file called "-"."""
    monkeypatch.chdir(tmp_path)
    text = "Y dijo Dios\n\nEn el principio\n"
    args = ["translate", "--checkpoint", str(tiny_run.root / "best")]
    plain = runner.invoke(app, args, input=text).stdout
    result = runner.invoke(app, args + ["-i", "-", "-o", "-"], input=text)
    assert result.exit_code == 0, result.output
    assert result.stdout == plain and plain.count("\n") == 3
    assert list(tmp_path.iterdir()) == []  # no file called "-"
    (tmp_path / "-").write_text(text)
    result = runner.invoke(app, args + ["-i", "./-", "-o", "./-.en"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "-.en").read_text() == plain


@pytest.mark.skipif(sys.platform == "win32", reason="/dev/stdout")
def test_output_to_dev_stdout_goes_where_the_shell_sends_stdout(tiny_run, tmp_path):
    """{ echo header; nmt translate -o /dev/stdout; echo footer; } > f: the translation was
    written to a new file put in f's place (atomically), which the shell's footer then wrote
    over, leaving "header, footer" and the rest of a line."""
    with open(tmp_path / "f", "w") as out:
        out.write("header\n")
        out.flush()
        process = _translate_into(tiny_run, tmp_path, "-o", "/dev/stdout", stdout=out)
        assert process.communicate(timeout=120)[1] == "" and process.returncode == 0
        out.write("footer\n")
    piped = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best"), "-i",
                                str(tmp_path / "in.es"), "-o", "-"]).stdout  # as -o - writes it
    assert piped.count("\n") == 50 and (tmp_path / "f").read_text() == "header\n" + piped + "footer\n"


def test_translate_decodes_a_long_input_in_chunks_and_writes_the_same_lines(tiny_run, tmp_path, monkeypatch):
    """Memory stays bounded on a file of millions of lines: at most TRANSLATE_CHUNK lines are
    decoded at a time, each chunk's lines written before the next; the output is what one call
    over all of them gives (fp32: a translation does not depend on its batch)."""
    import nmt.cli
    from nmt.translate import Translator

    lines = ["Y dijo Dios", "", "En el principio", "Y dijo Dios: Sea la luz", "   ", "Y fué la tarde", "Y vió Dios"]
    source = tmp_path / "in.es"
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    whole = Translator.from_checkpoint(tiny_run.root / "best").translate(lines)
    sizes = []
    translate = Translator.translate
    monkeypatch.setattr(Translator, "translate", lambda self, some, *a, **k: sizes.append(len(some))
                        or translate(self, some, *a, **k))
    monkeypatch.setattr(nmt.cli, "TRANSLATE_CHUNK", 3)
    for output in (None, tmp_path / "out.en"):
        sizes.clear()
        args = ["translate", "--checkpoint", str(tiny_run.root / "best"), "-i", str(source)]
        result = runner.invoke(app, args + (["-o", str(output)] if output else []))
        assert result.exit_code == 0, result.output
        written = output.read_text(encoding="utf-8") if output else result.stdout
        assert written == "".join(line + "\n" for line in whole)
        assert sizes == [3, 3, 1]


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
def test_translate_reads_and_writes_compressed_files_by_their_names(tiny_run, tmp_path, suffix):
    from nmt.lines import COMPRESSED

    text = "Y dijo Dios\n\nEn el principio\n"
    plain = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best")], input=text).stdout
    source, out = tmp_path / f"in.es{suffix}", tmp_path / f"out.en{suffix}"
    with COMPRESSED[suffix](source, "wt", encoding="utf-8") as handle:
        handle.write(text)
    result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best"), "-i", str(source),
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    with COMPRESSED[suffix](out, "rt", encoding="utf-8") as handle:
        assert handle.read() == plain and plain.count("\n") == 3


def test_translate_refuses_a_zstd_output_name_before_decoding(tiny_run, tmp_path):
    """-o out.zst wrote plain text under that name, which -i out.zst (and zstd) then refused."""
    result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best"), "-o",
                                 str(tmp_path / "out.en.ZST")], input="Y dijo Dios\n")
    assert result.exit_code == 1 and not (tmp_path / "out.en.ZST").exists()
    assert "out.en.ZST: zstd is not supported; name it .gz, .bz2 or .xz to compress, or plain" in result.output


@pytest.mark.parametrize("to_file", [False, True, "fifo"])
def test_ctrl_c_while_translating_says_what_the_output_holds(tiny_run, tmp_path, monkeypatch, to_file):
    """stdout (or a FIFO, written as it is: the pipe behind -o /dev/stdout) already has the chunks
    done before Ctrl-C; --output is left as it was."""
    import nmt.cli
    from nmt.translate import Translator

    calls = []
    translate = Translator.translate

    def interrupted_second_time(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return translate(self, *a, **k)

    monkeypatch.setattr(Translator, "translate", interrupted_second_time)
    monkeypatch.setattr(nmt.cli, "TRANSLATE_CHUNK", 2)
    out = tmp_path / "out.en"
    out.write_text("earlier output\n", encoding="utf-8")
    if to_file == "fifo":
        out = tmp_path / "fifo"
        os.mkfifo(out)
        reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)  # there before the writer: its open does not block
    args = ["translate", "--checkpoint", str(tiny_run.root / "best")] + (["-o", str(out)] if to_file else [])
    result = runner.invoke(app, args, input="Y dijo Dios\nEn el principio\nY vió Dios\n")
    assert result.exit_code == 130
    if to_file == "fifo":
        assert result.stderr == f"interrupted: {out} has the first 2 of 3 lines\n"
        assert os.read(reader, 4096).count(b"\n") == 2
        os.close(reader)
    elif to_file:
        assert result.stderr == f"interrupted: nothing written to {out}, which is as it was\n"
        assert out.read_text(encoding="utf-8") == "earlier output\n" and result.stdout == ""
    else:
        assert result.stderr == "interrupted: stdout has the first 2 of 3 lines\n"
        assert result.stdout.count("\n") == 2


def test_translation_progress_counts_every_line_once_as_sentences_finish(tiny_run):
    from nmt.translate import Translator

    translator = Translator.from_checkpoint(tiny_run.root / "best")
    lines = ["Y dijo Dios", "", "En el principio", "   ", "Y dijo Dios: Sea la luz", "Y fué la tarde"]
    for beam in (1, 3):
        done = []
        translator.translate(lines, beam=beam, progress=done.append)
        assert done == [1] * len(lines)  # each line as it finishes (the empty ones first)


def test_a_line_of_invisible_characters_translates_to_an_empty_line(tmp_path):
    """Zero-width spaces, direction marks, a stray BOM or a control character look blank and
    normalising drops them: the model would get a source of </s> alone and make up a sentence (an
    untrained one, whose translations run on, wrote words for each)."""
    from conftest import saved_tiny_model
    from nmt.translate import Translator

    config, tokenizer, model, _ = saved_tiny_model(tmp_path)
    translator = Translator(model, tokenizer, config)
    invisible = ["\u200b", "\x01", "\u200e \ufeff", "\x7f"]
    for beam in (1, 3):
        out = translator.translate(invisible + ["Y dijo Dios"], beam=beam)
        assert out[:4] == [""] * 4 and out[4] == translator.translate(["Y dijo Dios"], beam=beam)[0] != ""
    assert translator.hypotheses(invisible, beam=3, nbest=2) == [[]] * 4
    from nmt.diagnostics import search_errors, short_sentences

    sources = invisible + ["Y dijo Dios"]
    index = short_sentences(translator, sources, max_pieces=20, count=10)  # the report's search-error lines
    assert index == [4] and search_errors(translator, sources, sources, (1,), 0.0, index, wide=2)


def _read_until(fd, text: str, seconds: float = 60.0) -> str:
    import os
    import select
    import time

    seen, end = b"", time.monotonic() + seconds
    while text not in seen.decode(errors="replace") and time.monotonic() < end:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
    return seen.decode(errors="replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_translate_at_a_terminal_answers_each_line_as_it_is_typed(tiny_run):
    """A person typing sees each translation before typing the next line; a pipe is read whole."""
    import os
    import pty

    batch = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best")],
                          input="Y dijo Dios\nEn el principio\n").stdout.splitlines()
    pid, fd = pty.fork()
    if pid == 0:  # the child: nmt with a terminal as stdin and stdout
        os.execv(sys.executable, [sys.executable, "-c", "from nmt.cli import main; main()",
                                  "translate", "--checkpoint", str(tiny_run.root / "best")])
    try:
        assert "Ctrl-D ends" in _read_until(fd, "Ctrl-D ends")
        for source, translation in zip(["Y dijo Dios", "En el principio"], batch):
            os.write(fd, f"{source}\n".encode())
            answer = f"{source}\r\n{translation}\r\n"  # the terminal's echo, then nmt's line
            assert answer in _read_until(fd, answer)  # before the next line is typed
        os.write(fd, b"caf\xe9 malo\n")  # a Latin-1 terminal: that line is refused, the session goes on
        assert "error: not valid UTF-8 (byte 4); type it again" in _read_until(fd, "type it again")
        os.write(fd, b"Y dijo Dios\n")
        assert f"\r\n{batch[0]}\r\n" in _read_until(fd, f"\r\n{batch[0]}\r\n")
        os.write(fd, b"\x04")  # Ctrl-D
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(fd)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_translating_a_file_shows_its_progress_on_a_terminal_and_clears_it(tiny_run, tmp_path):
    import fcntl
    import os
    import pty
    import struct
    import termios

    source, out = tmp_path / "in.es", tmp_path / "out.en"
    source.write_text("Y dijo Dios\n\nEn el principio\n", encoding="utf-8")
    pid, fd = pty.fork()
    if pid == 0:  # the child: stderr a terminal 80 columns wide (a fresh pseudo-terminal has 0: no bar)
        fcntl.ioctl(2, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        os.execv(sys.executable, [sys.executable, "-c", "from nmt.cli import main; main()", "translate",
                                  "--checkpoint", str(tiny_run.root / "best"), "-i", str(source), "-o", str(out)])
    try:
        seen = _read_until(fd, "never printed")  # all the child writes, until it closes the terminal
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, seen
    finally:
        os.close(fd)
    assert "0/3 [" in seen and "line/s" in seen  # the bar, counting lines
    assert seen.rstrip(" ").endswith("\r")  # cleared at the end: nothing left on the terminal's line
    assert len(out.read_text(encoding="utf-8").split("\n")[:-1]) == 3


def test_translate_refuses_an_unknown_precision(tiny_run, tmp_path):
    out = tmp_path / "out.en"
    out.write_text("earlier output\n", encoding="utf-8")
    result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best"), "--precision", "fp16",
                                 "--output", str(out)], input="Y dijo Dios\n")
    assert result.exit_code == 2  # a usage error: its line in test_usage_errors_are_one_line_naming_the_help…
    assert out.read_text(encoding="utf-8") == "earlier output\n"


def test_translate_on_a_device_nmt_does_not_run_on_is_one_line(tiny_run):
    result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best"), "--device", "mps"],
                           input="Y dijo Dios\n")
    assert result.exit_code == 1
    assert result.output.strip() == "error: device 'mps' is not supported: nmt runs on cpu, cuda or cuda:N"


def test_version_names_nmt_torch_and_python_without_importing_torch():
    """What a bug report needs, in a process of its own: instant (torch is not imported for it)."""
    import platform

    import torch

    import nmt

    code = ("import sys; from nmt.cli import main\n"
            "try: main(['--version'])\n"
            "except SystemExit as exit: assert exit.code == 0, exit.code\n"
            "assert 'torch' not in sys.modules")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown == f"nmt {nmt.__version__} (Python {platform.python_version()}, torch {torch.__version__})\n"


@pytest.mark.parametrize("argv, message", [
    (["translate"], "Missing option '--checkpoint'."),
    (["translate", "--checkpoint", "x", "--bem", "3"], "No such option: --bem (Possible options: --beam, --nbest)"),
    (["translate", "--checkpoint", "x", "--beam", "0"], "Invalid value for '--beam'"),
    (["translate", "--checkpoint", "x", "--beam", "five"], "Invalid value for '--beam'"),
    (["trnslate"], "No such command 'trnslate'. Did you mean 'translate'?"),
    # the length penalty ((5 + n) / 6) ** alpha overflowed at 300 (a traceback); inf made every score -0.0
    (["translate", "--checkpoint", "x", "--alpha", "300"], "Invalid value for '--alpha': must be between 0 and 10"),
    (["translate", "--checkpoint", "x", "--alpha", "inf"], "Invalid value for '--alpha': must be a finite number"),
    (["translate", "--checkpoint", "x", "--alpha", "nan"], "Invalid value for '--alpha': must be a number, not nan"),
    # a setting outside its choices was status 1 without the help (a range error was 2, naming it)
    (["translate", "--checkpoint", "x", "--stopping", "early"],
     "Invalid value for '--stopping': must be bound or finished, not 'early'"),
    (["translate", "--checkpoint", "x", "--precision", "fp16"],
     "Invalid value for '--precision': must be auto, fp32, bf16 or int8, not 'fp16'"),
])
def test_usage_errors_are_one_line_naming_the_help_with_status_2(argv, message, capsys):
    """A mistyped option or command reads like nmt's other errors (Typer boxed it in 4-6 lines)."""
    from nmt.cli import main

    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"error: {message}")
    assert err.endswith(f"(see 'nmt{' translate' if argv[0] == 'translate' else ''} --help')\n")


def test_help_and_python_dash_m():
    """``python -m nmt`` is the command; help still goes to stdout with status 0, and ``nmt`` alone
    shows it (status 2, as before)."""
    shown = subprocess.run([sys.executable, "-m", "nmt", "translate", "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "--checkpoint" in shown.stdout and shown.stderr == ""
    bare = subprocess.run([sys.executable, "-m", "nmt"], capture_output=True, text=True)
    assert bare.returncode == 2 and "translate" in bare.stdout + bare.stderr


@pytest.mark.parametrize("command", ["", "prepare", "tokenize", "train", "translate", "evaluate", "average", "report"])
def test_help_shows_switches_without_a_value(command):
    """With click 8.2 and later, Typer's help table showed "--help <bool>", as if it took a value."""
    shown = runner.invoke(app, [*filter(None, [command]), "--help"], env={"COLUMNS": "120"})
    assert shown.exit_code == 0 and "Show this message and exit." in shown.stdout
    assert "<bool>" not in shown.stdout


def test_translate_nbest(tiny_run):
    result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best"), "--beam", "4",
                                 "--nbest", "2"], input="Y dijo Dios\n")
    assert result.exit_code == 0, result.output
    fields = result.stdout.rstrip("\n").split("\t")
    assert len(fields) == 4 and float(fields[0]) >= float(fields[2])


def test_evaluate_writes_reports_for_greedy_and_beam(tiny_run, tmp_path):
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(tiny_run.root / "best"), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert set(report["systems"]) == {"greedy", "beam3"}
    for system in report["systems"].values():
        assert set(system["scores"]) == {"bleu", "chrf", "ter"}
        assert system["scores"]["bleu"]["signature"].startswith("nrefs:1|")
    assert "| greedy |" in (tmp_path / "report.md").read_text(encoding="utf-8")
    assert report["versions"] == versions()  # the code the numbers came from
    import hashlib

    assert report["sha256"] == {side: hashlib.sha256((tiny_run.data / f"test.{lang}").read_bytes()).hexdigest()
                                for side, lang in (("source", "es"), ("reference", "en"))}  # and the text scored
    import platform

    import torch

    commit = report["versions"].get("commit")  # where the tests run from a git checkout
    at = f" at {commit[:12]}{'+changes' if commit.endswith('+changes') else ''}" if commit else ""
    made = (f"- made with nmt {nmt.__version__}{at} (torch {torch.__version__}, SentencePiece "
            f"{report['versions']['sentencepiece']}, Python {platform.python_version()})")
    assert made in (tmp_path / "report.md").read_text(encoding="utf-8")  # the head says what made it too
    hyps = (tmp_path / "test.greedy.en").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(hyps) == report["sentences"] == 34


def test_evaluate_refuses_to_write_a_translation_over_its_own_reference_or_source(tiny_run, tmp_path):
    """--out the folder of a reference called a.greedy.en replaced the reference with the greedy
    translation, and the next evaluation scored BLEU 100."""
    source = tiny_run.data.joinpath("test.es").read_text(encoding="utf-8")
    reference = tiny_run.data.joinpath("test.en").read_text(encoding="utf-8")
    for src, ref, role, over in (("a.es", "a.greedy.en", "reference", "a.greedy.en"),
                                 ("a.es", "a.beam3.en", "reference", "a.beam3.en"),
                                 ("a.es", "report.md", "reference", "report.md"),
                                 ("report.json", "b.en", "source", "report.json")):
        (tmp_path / src).write_text(source, encoding="utf-8")
        (tmp_path / ref).write_text(reference, encoding="utf-8")
        result = runner.invoke(app, ["evaluate", "--checkpoint", str(tiny_run.root / "best"), "--src",
                                     str(tmp_path / src), "--ref", str(tmp_path / ref), "--out", str(tmp_path)])
        assert _error(result) == (f"error: {tmp_path / over} would be written over the {role} file "
                                  f"{tmp_path / over}; give another --out, or rename the {role} file")
        assert (tmp_path / src).read_text(encoding="utf-8") == source
        assert (tmp_path / ref).read_text(encoding="utf-8") == reference
        (tmp_path / src).unlink()
        (tmp_path / ref).unlink()
    assert list(tmp_path.iterdir()) == []


def test_evaluate_finds_the_run_of_a_checkpoint_in_its_checkpoints_folder(tiny_run, tmp_path):
    """runs/x/checkpoints/step-N (nmt report found its run; evaluate looked for runs/x/checkpoints/data)."""
    import shutil

    run = tmp_path / "tiny"
    shutil.copytree(tiny_run.root, run, symlinks=True)
    step = run / "checkpoints" / os.readlink(run / "best").rpartition("/")[2]
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(step), "--beam", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((run / "eval" / f"{step.name}-beam1" / "report.json").read_text(encoding="utf-8"))
    assert (report["source"], report["sentences"]) == (str(run / "data" / "test.es"), 34)
    assert report["training"] == json.loads((run / "train_summary.json").read_text(encoding="utf-8"))


def test_evaluate_writes_another_checkpoint_or_source_beside_the_runs_report_not_over_it(tiny_run, tmp_path):
    """nmt evaluate of an average (or any step, or another test set) wrote the run's report.md,
    report.json and test.*.en over the best checkpoint's, and make then took them as its own."""
    import shutil

    run = tmp_path / "tiny"
    shutil.copytree(tiny_run.root, run, symlinks=True)
    shutil.copytree(run / "best", run / "average")  # a checkpoint of the run that is not its best
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(run / "average")])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "eval" / "average" / "report.json").read_text())["checkpoint"] == str(run / "average")
    assert (run / "eval" / "average" / "test.greedy.en").is_file()
    given = runner.invoke(app, ["evaluate", "--checkpoint", str(run / "best"), "--beam", "1",
                                "--src", str(run / "data" / "dev.es"), "--ref", str(run / "data" / "dev.en")])
    assert given.exit_code == 0, given.output
    step = os.readlink(run / "best").rpartition("/")[2]
    report = json.loads((run / "eval" / f"{step}-dev-beam1" / "report.json").read_text())
    assert report["source"] == str(run / "data" / "dev.es")
    beam = runner.invoke(app, ["evaluate", "--checkpoint", str(run / "best"), "--beam", "2", "--alpha", "1.5"])
    assert beam.exit_code == 0, beam.output  # make's report is of the checkpoint's own beam and alpha
    assert (run / "eval" / f"{step}-beam2-alpha1.5" / "test.beam2.en").is_file()
    other = tmp_path / "other.en"  # other references for the test split: scores of their own (--ref alone wrote
    other.write_text((run / "data" / "test.en").read_text(encoding="utf-8").upper(), encoding="utf-8")  # over
    ref = runner.invoke(app, ["evaluate", "--checkpoint", str(run / "best"), "--ref", str(other)])  # make's report)
    assert ref.exit_code == 0, ref.output
    assert json.loads((run / "eval" / f"{step}-ref-other" / "report.json").read_text())["reference"] == str(other)
    other_dev = tmp_path / "other-dev.en"  # dev.es with other references: not over the dev.es/dev.en report above
    other_dev.write_text((run / "data" / "dev.en").read_text(encoding="utf-8").upper(), encoding="utf-8")
    both = runner.invoke(app, ["evaluate", "--checkpoint", str(run / "best"), "--beam", "1", "--ref", str(other_dev),
                               "--src", str(run / "data" / "dev.es")])
    assert both.exit_code == 0, both.output
    assert json.loads((run / "eval" / f"{step}-dev-ref-other-dev-beam1" / "report.json").read_text())["reference"] \
        == str(other_dev)
    assert json.loads((run / "eval" / f"{step}-dev-beam1" / "report.json").read_text())["reference"] \
        == str(run / "data" / "dev.en")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_a_source_of_the_same_name_in_another_folder_does_not_replace_the_first_report(command, tiny_run, tmp_path):
    """--src /tmp/a/x.es, then --src /tmp/b/x.es: the default folder is named by the stem, and the
    second report replaced the first without a word."""
    import shutil

    run = tmp_path / "tiny"
    shutil.copytree(tiny_run.root, run, symlinks=True)
    for folder, text in (("a", str.lower), ("b", str.upper)):
        (tmp_path / folder).mkdir()
        for lang in ("es", "en"):
            lines = (run / "data" / f"test.{lang}").read_text(encoding="utf-8")
            (tmp_path / folder / f"x.{lang}").write_text(text(lines), encoding="utf-8")
    quick = QUICK[command]
    ask = lambda folder, *more: runner.invoke(app, [  # noqa: E731
        command, "--checkpoint", str(run / "best"), "--src", str(tmp_path / folder / "x.es"),
        "--ref", str(tmp_path / folder / "x.en"), *quick, *more])
    first = ask("a")
    assert first.exit_code == 0, first.output
    step = os.readlink(run / "best").rpartition("/")[2]
    folder = run / "eval" / (f"{step}-x-beam1" if command == "evaluate" else f"{step}-x") / \
        ("report" if command == "report" else "")
    made = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert json.loads(made["report.json"])["source"] == str(tmp_path / "a" / "x.es")
    assert _error(ask("b")) == (f"error: {folder} holds the report of the source file {tmp_path / 'a' / 'x.es'}, "
                                f"not of {tmp_path / 'b' / 'x.es'}; give --out to keep both")
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == made
    again = ask("a")  # the same files again: the report is made anew, in its place
    assert again.exit_code == 0, again.output
    elsewhere = ask("b", "--out", str(tmp_path / "b-report"))
    assert elsewhere.exit_code == 0, elsewhere.output
    assert json.loads((tmp_path / "b-report" / "report.json").read_text())["source"] == str(tmp_path / "b" / "x.es")
    shutil.move(tmp_path / "a", tmp_path / "a-moved")  # the first report's files gone: nothing to tell apart
    moved = ask("b")
    assert moved.exit_code == 0, moved.output
    assert json.loads((folder / "report.json").read_text())["source"] == str(tmp_path / "b" / "x.es")
    shutil.copytree(tmp_path / "b", tmp_path / "c")  # another file with the same bytes: the same report
    same = ask("c")
    assert same.exit_code == 0, same.output


def test_a_copied_run_evaluates_its_own_test_split_into_its_own_folder(tiny_run, tmp_path):
    """The run folder's report names the run's own test split, so a copy of the run (cp -r runs/x
    runs/y) held a report of another existing file, x's: the same-name check refused make eval."""
    import shutil

    run = tmp_path / "x"
    shutil.copytree(tiny_run.root, run, symlinks=True)
    first = runner.invoke(app, ["evaluate", "--checkpoint", str(run / "best")])
    assert first.exit_code == 0, first.output
    shutil.copytree(run, tmp_path / "y", symlinks=True)
    (tmp_path / "y" / "data" / "test.en").write_text((run / "data" / "test.en").read_text().upper())
    copied = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "y" / "best")])
    assert copied.exit_code == 0, copied.output
    assert json.loads((tmp_path / "y" / "report.json").read_text())["reference"] == str(tmp_path / "y" / "data" / "test.en")


def test_a_comparison_or_other_settings_report_beside_the_runs_report_not_over_it(tiny_run, tmp_path):
    """nmt report of two checkpoints, or of the best with another beam, wrote runs/<name>/report,
    make report's folder, which make then took as its own up-to-date report."""
    import shutil

    run = tmp_path / "tiny"
    shutil.copytree(tiny_run.root, run, symlinks=True)
    shutil.copytree(run / "best", run / "average")
    quick = QUICK["report"]
    (run / "report").mkdir()
    (run / "report" / "report.json").write_text("{}")  # make report's (the default knobs: its folder, below)
    own = runner.invoke(app, ["report", "--checkpoint", str(run / "best"), *quick])
    assert own.exit_code == 0, own.output  # the run's best alone, with other knobs than make report's
    step = os.readlink(run / "best").rpartition("/")[2]
    assert json.loads((run / "eval" / step / "report" / "report.json").read_text())["options"]["sweep_sentences"] == 1
    both = runner.invoke(app, ["report", "--checkpoint", str(run / "best"), "--checkpoint", str(run / "average"), *quick])
    assert both.exit_code == 0, both.output
    compared = json.loads((run / "eval" / "tiny+tiny_average" / "report" / "report.json").read_text(encoding="utf-8"))
    assert len(compared["checkpoints"]) == 2
    beam = runner.invoke(app, ["report", "--checkpoint", str(run / "best"), "--beam", "2", *quick])
    assert beam.exit_code == 0, beam.output
    assert (run / "eval" / f"{step}-beam2" / "report" / "report.html").is_file()
    assert (run / "report" / "report.json").read_text() == "{}"
    assert sorted(p.name for p in (run / "report").iterdir()) == ["report.json"]


def test_the_runs_report_folder_is_make_reports_only_with_its_knobs(tiny_run, tmp_path):
    """nmt report of the run's best with make report's knobs (the defaults) writes make report's
    folder; a quick one (--sweep-sentences 3) was taken by make as the run's report too."""
    import dataclasses
    import shutil

    from nmt.evaluation import Candidate, ReportOptions, _report_dir

    run = tmp_path / "tiny"
    shutil.copytree(tiny_run.root, run, symlinks=True)
    step = os.readlink(run / "best").rpartition("/")[2]
    best = [Candidate("tiny", run / "best", None, 3, 0.6)]
    assert _report_dir(best, None, None, ReportOptions()) == run / "report"
    assert _report_dir(best, None, None, dataclasses.replace(ReportOptions(), sweep_beams=(10, 5, 2, 1, 5))) == \
        run / "report"  # the same sweep, given in another order
    assert _report_dir(best, None, None, dataclasses.replace(ReportOptions(), beam=2)) == \
        run / "eval" / f"{step}-beam2" / "report"
    for knob, value in (("sweep_sentences", 3), ("heatmaps", 0), ("sweep_beams", (1, 2)), ("bootstrap", 10)):
        custom = dataclasses.replace(ReportOptions(), **{knob: value})
        assert _report_dir(best, None, None, custom) == run / "eval" / step / "report", knob


def test_evaluate_and_report_take_a_length_penalty_and_show_it(tiny_run, tmp_path):
    """A length-penalty sweep needed config edits or pipelines/evaluate.py with decode.alpha=…,
    and report.md's table showed the beam but not the alpha its scores were made with."""
    from nmt.translate import Translator

    lines = (tiny_run.root / "data" / "test.es").read_text(encoding="utf-8").splitlines()
    for alpha in ("0", "2.5"):
        result = runner.invoke(app, ["evaluate", "--checkpoint", str(tiny_run.root / "best"), "--beam", "3",
                                     "--alpha", alpha, "--out", str(tmp_path / alpha)])
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / alpha / "report.json").read_text(encoding="utf-8"))
        assert report["systems"]["beam3"]["alpha"] == report["decode"]["alpha"] == float(alpha)
        assert f"| beam3 | 3 (α {alpha}) |" in (tmp_path / alpha / "report.md").read_text(encoding="utf-8")
        expected = Translator.from_checkpoint(tiny_run.root / "best").translate(lines, beam=3, alpha=float(alpha))
        assert (tmp_path / alpha / "test.beam3.en").read_text(encoding="utf-8").splitlines() == expected
    result = runner.invoke(app, ["report", "--checkpoint", str(tiny_run.root / "best"), "--alpha", "2.5", "--beams", "1",
                                 "--sweep-sentences", "1", "--search-sentences", "0", "--heatmaps", "0",
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    systems = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))["systems"]
    assert [s["alpha"] for s in systems.values() if s["beam"] > 1] == [2.5]
    assert runner.invoke(app, ["evaluate", "--checkpoint", str(tiny_run.root / "best"), "--alpha", "11"]).exit_code == 2


def test_evaluate_refuses_a_test_split_prepared_under_other_data_settings(tiny_run, tmp_path):
    """nmt prepare run again (another seed, other groups or filters) rewrote the splits under a
    trained run, and evaluate scored the model on a test split that could hold its training
    sentences, without a word. Given --src and --ref, it evaluates those."""
    import shutil

    from conftest import tiny_config
    from nmt import data, pipeline
    from nmt.config import run_paths

    run = tmp_path / "tiny"
    shutil.copytree(tiny_run.root, run, symlinks=True)
    config = tiny_config(tmp_path, "data.max_words=20")  # written as it stands (nmt prepare refuses on a trained run)
    data.write_splits(data.prepare(config.data), run_paths(config, tmp_path).data, config.data)
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(run / "best"), "--beam", "1"])
    assert "was prepared with other settings than the checkpoint was trained on (data.max_words 20 → 40" in \
        _error(result)
    given = runner.invoke(app, ["evaluate", "--checkpoint", str(run / "best"), "--beam", "1", "--out", str(tmp_path / "e"),
                                "--src", str(run / "data" / "test.es"), "--ref", str(run / "data" / "test.en")])
    assert given.exit_code == 0, given.output
    # settings that read otherwise but made the same splits (the corpus's path written another way, a
    # dev_size where groups split): the model trained on this train split, so its test split is safe
    from conftest import TINY_TSV

    same = tiny_config(tmp_path, f"data.source={TINY_TSV.parent / '..' / TINY_TSV.parent.name / TINY_TSV.name}",
                       "data.dev_size=7")
    pipeline.prepare(same, run_paths(same, tmp_path))
    for command in ("evaluate", "report"):
        result = runner.invoke(app, [command, "--checkpoint", str(run / "best"), "--out", str(tmp_path / command),
                                     *(["--beam", "1"] if command == "evaluate" else ["--beams", "1,2"])])
        assert result.exit_code == 0, result.output


def test_evaluate_with_beam_1_decodes_greedy_once(tiny_run, tmp_path):
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(tiny_run.root / "best"), "--out", str(tmp_path),
                                 "--beam", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert list(report["systems"]) == ["greedy"]  # not a second, identical "beam1" row
    assert report["decode"]["beam"] == 1  # the settings recorded are the ones used (the config says 3)
    assert sorted(p.name for p in tmp_path.glob("test.*")) == ["test.greedy.en"]


def test_evaluate_again_with_another_beam_removes_the_translations_its_report_no_longer_scores(tiny_run, tmp_path):
    """decode.beam=1 after a beam-3 evaluation left test.beam3.en beside a report that no longer
    scored it: an output that read as current. Files of another source's report, and files nmt
    did not write, stay."""
    best = str(tiny_run.root / "best")
    first = runner.invoke(app, ["evaluate", "--checkpoint", best, "--out", str(tmp_path), "--beam", "2"])
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in tmp_path.glob("test.*")) == ["test.beam2.en", "test.greedy.en"]
    (tmp_path / "test.beam7.en").write_text("mine\n")  # not in the report: the user's
    again = runner.invoke(app, ["evaluate", "--checkpoint", best, "--out", str(tmp_path), "--beam", "1"])
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in tmp_path.glob("test.*")) == ["test.beam7.en", "test.greedy.en"]
    wider = runner.invoke(app, ["evaluate", "--checkpoint", best, "--out", str(tmp_path), "--beam", "2"])
    assert wider.exit_code == 0, wider.output
    other = tmp_path / "other.es"  # another source's report in the same folder: the test.* files are not its
    other.write_text((tiny_run.data / "test.es").read_text(encoding="utf-8"), encoding="utf-8")
    third = runner.invoke(app, ["evaluate", "--checkpoint", best, "--out", str(tmp_path), "--beam", "1",
                                "--src", str(other), "--ref", str(tiny_run.data / "test.en")])
    assert third.exit_code == 0, third.output
    assert sorted(p.name for p in tmp_path.glob("*.en")) == ["other.greedy.en", "test.beam2.en", "test.beam7.en",
                                                             "test.greedy.en"]


def _error(result):
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_prepare_missing_data_file(tmp_path):
    result = runner.invoke(app, ["prepare", "-c", str(TINY_CONFIG), "--runs", str(tmp_path),
                                 "data.source=nowhere/x.tsv"])
    assert "data file not found" in _error(result)
    assert not (tmp_path / "tiny" / "data" / "stats.json").exists()


def test_a_stage_run_before_the_one_it_needs_names_that_stage(tmp_path):
    """The quick tour's commands out of order: one line naming the stage to run, not the first
    file the missing stage would have written ("file not found: …/train.es")."""
    run = ["-c", str(TINY_CONFIG), "--runs", str(tmp_path)]
    data, tokenizer = tmp_path / "tiny" / "data", tmp_path / "tiny" / "tokenizer"
    for stage in ("tokenize", "train"):
        assert _error(runner.invoke(app, [stage, *run])) == (
            f"error: {data} is not ready (stats.json missing): run `nmt prepare` first with this config "
            f"(make runs every stage in order)")
    assert runner.invoke(app, ["prepare", *run]).exit_code == 0
    assert _error(runner.invoke(app, ["train", *run])) == (
        f"error: {tokenizer} is not ready (tokenizer.json missing): run `nmt tokenize` first with this config "
        f"(make runs every stage in order)")
    assert not (tmp_path / "tiny" / "last").exists()


def test_unknown_config_key_on_the_command_line(tmp_path):
    result = runner.invoke(app, ["prepare", "-c", str(TINY_CONFIG), "--runs", str(tmp_path), "model.colour=red"])
    assert "unknown config key model.colour" in _error(result)


def test_translate_with_a_bad_checkpoint_leaves_output_untouched(tmp_path):
    (tmp_path / "ckpt").mkdir()
    out = tmp_path / "out.txt"
    out.write_text("precious\n")
    src = tmp_path / "in.txt"
    src.write_text("hola\n")
    result = runner.invoke(app, ["translate", "--checkpoint", str(tmp_path / "ckpt"), "-i", str(src), "-o", str(out)])
    assert "is not a checkpoint (no checkpoint.json)" in _error(result)
    assert out.read_text() == "precious\n"


@pytest.mark.parametrize("given, says", [
    ("", "is a run folder, not a checkpoint: give {run}/best (or {run}/last)"),
    ("checkpoints", "holds checkpoints and is not one: give one of them, as {run}/checkpoints/step-"),
])
def test_a_run_folder_given_for_a_checkpoint_names_the_checkpoint_to_give(tiny_run, given, says):
    run = tiny_run.root
    result = runner.invoke(app, ["translate", "--checkpoint", str(run / given)], input="hola\n")
    assert result.exit_code == 1 and says.format(run=run) in _error(result)


def test_translate_invalid_utf8_input_names_its_line(tiny_run, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"uno\ncaf\xe9\n")
    for args, given in ((["-i", str(src)], None), ([], src.read_bytes())):  # a file, and stdin
        result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best"), *args], input=given)
        assert "not valid UTF-8 (line 2, byte 7)" in _error(result)


def test_empty_training_set(tmp_path):
    result = runner.invoke(app, ["prepare", "-c", str(TINY_CONFIG), "--runs", str(tmp_path),
                                 f"data.source={TINY_TSV}", "data.min_words=1000", "data.max_words=2000"])
    assert "training set is empty" in _error(result)


def test_training_with_no_pair_short_enough_is_refused_in_one_line(tiny_run):
    """Before, the loop turned through empty epochs for ever; the progress bar shows only once
    training has begun, so the error is stderr's only line."""
    result = runner.invoke(app, ["train", "-c", str(TINY_CONFIG), "--runs", str(tiny_run.root.parent),
                                 f"data.source={TINY_TSV}", "train.max_train_len=2", "train.max_tokens=2"])
    assert "no training pair fits train.max_train_len=2 pieces" in _error(result)


def test_training_with_an_empty_dev_split_is_refused(tiny_run, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run.data, runs / "tiny" / "data")
    shutil.copytree(tiny_run.tokenizer, runs / "tiny" / "tokenizer")
    for side in ("es", "en"):
        (runs / "tiny" / "data" / f"dev.{side}").write_text("")
    result = runner.invoke(app, ["train", "-c", str(TINY_CONFIG), "--runs", str(runs), f"data.source={TINY_TSV}"])
    assert "the dev split is empty" in _error(result)


def test_train_prints_its_summary_on_stdout_and_logs_above_the_bar(tiny_run, tmp_path):
    """stdout is the summary alone (it was mixed with a line per validation); each log line is a line
    of its own on stderr, and a stderr that is not a terminal (a log file) gets no progress bar."""
    import re
    import shutil

    runs = tmp_path / "runs"
    for part in ("data", "tokenizer"):
        shutil.copytree(tiny_run.root / part, runs / "tiny" / part)
    result = subprocess.run(
        [sys.executable, "-c", "from nmt.cli import main; main()", "train", "-c", str(TINY_CONFIG), "--runs", str(runs),
         f"data.source={TINY_TSV}", "train.max_steps=40", "train.valid_every=20", "train.threads=2"],
        capture_output=True, cwd=tmp_path)  # bytes: text mode would turn the bar's "\r" into "\n"
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, stderr
    assert json.loads(stdout)["steps"] == 40
    assert "\r" not in stderr  # stderr is a pipe here, as a log file is: no bar redrawn in it
    logged = [line for line in stderr.split("\n") if " nmt.train: " in line]
    assert any("step 20: dev loss" in line for line in logged)
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d", line) for line in logged), logged


def test_ctrl_c_during_training_saves_the_step_and_says_where_the_run_resumes(tiny_run, tmp_path):
    """Ctrl-C (SIGINT) during pipelines/train_model.py: the step it came in is saved as the last
    checkpoint, the process exits 130 without a traceback, and its last word names that checkpoint."""
    import shutil
    import signal
    import time

    for part in ("data", "tokenizer"):
        shutil.copytree(tiny_run.root / part, tmp_path / "runs" / "tiny" / part)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "pipelines" / "train_model.py"), str(config), f"data.source={TINY_TSV}",
         "train.max_steps=100000", "train.valid_every=10", "train.patience=1000", "train.threads=2"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background shell ignores it
    deadline = time.monotonic() + 120
    while not (tmp_path / "runs" / "tiny" / "last").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    note = next(line for line in stderr.splitlines() if "interrupted (SIGINT) at step" in line)
    saved = int(os.readlink(tmp_path / "runs" / "tiny" / "last").rpartition("-")[2])
    assert note.endswith(f"interrupted (SIGINT) at step {saved}, saved as runs/tiny/last; training again resumes there")


def _terminated_while_writing(argv: list[str], out) -> subprocess.CompletedProcess:
    """Run ``argv``, send it SIGTERM once its temporary for ``out`` is there (it is writing), and
    return how it ended."""
    import signal
    import time

    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.parent.glob(f".{out.name}.*.tmp")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_sigterm_while_writing_cleans_up_as_ctrl_c_does_and_says_so(tmp_path):
    """timeout(1) or a scheduler: the temporary goes, the file is as it was, one line, status 130
    (not -15 with a .tmp left beside the file). Any guarded command: evaluate, report, the scripts."""
    out = tmp_path / "report.json"
    out.write_text("earlier\n")
    code = ("import sys, time\nfrom nmt.atomic import atomic_open\nfrom nmt.terminal import guarded\n"
            "@guarded\ndef command():\n    with atomic_open(sys.argv[1]) as handle:\n        handle.write('half')\n"
            "        time.sleep(60)\ncommand()\n")
    ended = _terminated_while_writing([sys.executable, "-c", code, str(out)], out)
    assert (ended.returncode, ended.stderr) == (130, "interrupted (SIGTERM)\n")
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"] and out.read_text() == "earlier\n"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGPIPE's status is POSIX")
@pytest.mark.parametrize("unbuffered", [True, False])
def test_a_reader_that_goes_away_ends_translation_with_status_141_unbuffered_too(unbuffered):
    """Under PYTHONUNBUFFERED (python -u: containers, CI) a chunk longer than the pipe holds was
    written in part and the rest dropped without an error: `nmt translate … | head` exited 0."""
    import os

    code = ("from nmt.terminal import guarded, write_in_chunks\n@guarded\ndef command():\n"
            "    write_in_chunks(['x' * 1000] * 300, lambda lines, done: lines, None, 1000)\ncommand()\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    process = subprocess.Popen([sys.executable, *(["-u"] if unbuffered else []), "-c", code], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.read(10)  # `head -c 10`: then the reader is gone, 300 KB unread
    process.stdout.close()
    assert (process.wait(timeout=60), process.stderr.read()) == (141, b"")


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_unbuffered_stdout_writes_what_the_buffered_one_does(encoding):
    """The whole-writes path (PYTHONUNBUFFERED) encoded each chunk afresh: utf-8-sig or utf-16
    put a byte-order mark before every chunk, in the middle of the output."""
    import os

    code = ("from nmt.terminal import guarded, write_in_chunks\nprint('before')\n@guarded\ndef command():\n"
            "    write_in_chunks(['a', 'b', 'c'], lambda lines, done: lines, None, 2)\ncommand()\nprint('after')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | {"PYTHONIOENCODING": encoding}
    written = [subprocess.run([sys.executable, *flag, "-c", code], env=env, capture_output=True, check=True).stdout
               for flag in ([], ["-u"])]
    assert written[1] == written[0] and written[0].decode(encoding) == "before\na\nb\nc\nafter\n"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to oneself is POSIX")
def test_a_second_ctrl_c_while_python_shuts_down_prints_no_traceback():
    """After an interrupted command, a second Ctrl-C landing in Python's exit handlers (torch's,
    registered at import) printed "Exception ignored in atexit callback … KeyboardInterrupt". Here
    an exit handler registered before the command's stands in for torch's and sends the second."""
    code = ("import atexit, os, signal, time\nfrom nmt.terminal import guarded\n"
            "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.2)))\n"
            "@guarded\ndef command():\n    raise KeyboardInterrupt\ncommand()\n")
    ended = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (ended.returncode, ended.stderr) == (130, "")


def test_ctrl_c_while_torch_is_imported_prints_none_of_its_log_lines():
    """Ctrl-C in a command's first second or two (torch being imported) printed three lines of
    "torch._subclasses.fake_tensor: FakeTensor cache stats: …" from torch's exit handler: torch had
    not yet set its loggers to warnings only, and they took the root logger's INFO. Here the torch
    logger is put back to that state by hand."""
    code = ("import logging\nfrom nmt.terminal import guarded\n"
            "@guarded\ndef command():\n    import torch._subclasses.fake_tensor\n"
            "    logging.getLogger('torch').setLevel(logging.NOTSET)\n    raise KeyboardInterrupt\ncommand()\n")
    ended = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (ended.returncode, ended.stderr) == (130, "")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_sigterm_while_translating_to_a_file_leaves_it_as_it_was(tiny_run, tmp_path):
    source, out = tmp_path / "in.es", tmp_path / "out.en"
    source.write_text("Y dijo Dios: Sea la luz. Y fué la luz.\n" * 20_000, encoding="utf-8")
    out.write_text("earlier output\n", encoding="utf-8")
    ended = _terminated_while_writing([sys.executable, "-m", "nmt", "translate", "--checkpoint",
                                       str(tiny_run.root / "best"), "-i", str(source), "-o", str(out)], out)
    assert ended.returncode == 130, ended.stderr
    assert ended.stderr == f"interrupted (SIGTERM): nothing written to {out}, which is as it was\n"
    assert out.read_text(encoding="utf-8") == "earlier output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.es", "out.en"]


def test_translate_to_a_folder_is_refused_before_decoding(tiny_run, tmp_path, monkeypatch):
    from nmt.translate import Translator

    monkeypatch.setattr(Translator, "from_checkpoint", lambda *a: pytest.fail("decoded before refusing"))
    result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best"), "-o", str(tmp_path)],
                           input="hola\n")
    assert f"--output {tmp_path} is a folder" in _error(result)


@pytest.mark.parametrize("output", ["in.es", "link.es"])
def test_translate_refuses_to_write_over_its_input_before_decoding(tiny_run, tmp_path, monkeypatch, output):
    from nmt.translate import Translator

    (tmp_path / "in.es").write_text("Y dijo Dios\n")
    (tmp_path / "link.es").symlink_to("in.es")
    monkeypatch.setattr(Translator, "from_checkpoint", lambda *a: pytest.fail("decoded before refusing"))
    result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best"), "-i",
                                 str(tmp_path / "in.es"), "-o", str(tmp_path / output)])
    assert _error(result) == f"error: --output {tmp_path / output} is the --input file; give another name"
    assert (tmp_path / "in.es").read_text() == "Y dijo Dios\n"


def test_translate_to_a_path_under_a_file_is_refused_before_decoding(tiny_run, tmp_path, monkeypatch):
    from nmt.translate import Translator

    (tmp_path / "notes.txt").write_text("kept\n")
    monkeypatch.setattr(Translator, "from_checkpoint", lambda *a: pytest.fail("decoded before refusing"))
    result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best"),
                                 "-o", str(tmp_path / "notes.txt" / "out.en")], input="hola\n")
    assert _error(result) == f"error: Not a directory: {tmp_path / 'notes.txt'}"


@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_a_report_folder_that_is_a_file_is_refused_before_decoding(command, tiny_run, tmp_path, monkeypatch):
    from nmt import evaluation, translate

    out = tmp_path / "report.txt"
    out.write_text("kept\n")
    fail = lambda *a, **k: pytest.fail("decoded before refusing")  # noqa: E731
    monkeypatch.setattr(translate.Translator, "translate", fail)
    monkeypatch.setattr(evaluation, "_decode_systems", fail)
    result = runner.invoke(app, [command, "--checkpoint", str(tiny_run.root / "best"), "--out", str(out)])
    assert _error(result) == f"error: Not a directory: {out}"
    assert out.read_text() == "kept\n"


def test_translate_refuses_a_negative_length_penalty(tiny_run):
    result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best"), "--beam", "3",
                                 "--alpha", "-1"], input="hola\n")
    assert result.exit_code != 0 and "--alpha" in result.output


def test_a_checkpoint_whose_alpha_would_overflow_is_refused_in_one_line(tmp_path):
    """decode.alpha: 300 in a checkpoint (written before alpha had an upper bound) ended beam search
    in an OverflowError from the length penalty once a hypothesis reached 59 pieces."""
    from conftest import saved_tiny_model

    *_, folder = saved_tiny_model(tmp_path)
    manifest = json.loads((folder / "checkpoint.json").read_text())
    manifest["config"]["decode"]["alpha"] = 300.0
    (folder / "checkpoint.json").write_text(json.dumps(manifest))
    src, ref = tmp_path / "test.es", tmp_path / "test.en"
    src.write_text(" ".join(["hola"] * 40) + "\n")  # the untrained model writes up to its length limit
    ref.write_text("hello\n")
    says = f"error: {folder}: unusable checkpoint (decode.alpha must be between 0 and 10, not 300.0)"
    assert _error(runner.invoke(app, ["translate", "--checkpoint", str(folder), "--beam", "5", "-i", str(src)])) == says
    assert _error(runner.invoke(app, ["evaluate", "--checkpoint", str(folder), "--src", str(src), "--ref", str(ref),
                                      "--out", str(tmp_path / "report")])) == says


def test_a_language_that_is_not_a_plain_name_is_refused_before_anything_is_written(tmp_path):
    """data.src_lang ends the split files' names (train.<lang>): ../../../escape wrote outside the
    run's data folder. A checkpoint's languages name evaluate's outputs, so it is refused too."""
    from conftest import saved_tiny_model

    runs = tmp_path / "deep" / "runs"
    result = runner.invoke(app, ["prepare", "-c", str(TINY_CONFIG), "--runs", str(runs), f"data.source={TINY_TSV}",
                                 "data.src_lang=../../../escape"])
    assert _error(result).startswith("error: data.src_lang ends file names (train.<lang>), so it must be a plain name")
    assert list(tmp_path.iterdir()) == []
    *_, folder = saved_tiny_model(tmp_path / "ck")
    manifest = json.loads((folder / "checkpoint.json").read_text())
    manifest["config"]["data"]["tgt_lang"] = "../../escape"
    (folder / "checkpoint.json").write_text(json.dumps(manifest))
    (tmp_path / "test.es").write_text("hola\n")
    (tmp_path / "test.en").write_text("hello\n")
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(folder), "--src", str(tmp_path / "test.es"),
                                 "--ref", str(tmp_path / "test.en"), "--out", str(tmp_path / "out" / "report")])
    assert _error(result).startswith(f"error: {folder}: unusable checkpoint (data.tgt_lang ends file names")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape").exists()


def test_nbest_larger_than_beam(tiny_run):
    result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best"), "--nbest", "3"],
                           input="hola\n")
    assert "--nbest 3 needs --beam" in _error(result)


def test_a_beam_wider_than_the_target_vocabulary_is_refused_in_one_line(tiny_run, tmp_path):
    """--beam 100000 on a 6,000-piece model took 8 GB and 28 s for one line; eight lines ran out
    of memory, in a traceback of 205 lines."""
    from nmt.translate import Translator

    pieces = Translator.from_checkpoint(tiny_run.root / "best").model.generator.out_features - 2  # <pad>, <s>
    for beam in (pieces + 1, 100_000):
        result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best"), "--beam", str(beam)],
                               input="hola\n")
        assert _error(result) == (f"error: a beam of {beam} is wider than the {pieces:,} target pieces the model "
                                  f"chooses from: give a beam of at most {pieces:,} (5–10 is usual)")
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(tiny_run.root / "best"), "--beam", str(pieces + 1),
                                 "--out", str(out)])
    assert _error(result).startswith(f"error: a beam of {pieces + 1} is wider than")
    assert not out.exists()
    result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best"), "--beam", str(pieces)],
                           input="hola\n")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 1


@pytest.mark.parametrize("error, asked", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 400000000000000 bytes. Error code 12 (Cannot allocate memory)"), " (363.80 TiB"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:114] data. DefaultCPUAllocator: not enough memory: you tried to "
                  "allocate 1610612736 bytes."), " (1.50 GiB"),
    (type("OutOfMemoryError", (RuntimeError,), {})(
        "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 3.06 GiB "
        "is free."), " (20.00 GiB"),
    (type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory. Tried to allocate 512 bytes."), " (512 bytes"),
    (RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"), ""),
    (RuntimeError("MPS backend out of memory (MPS allocated: 1.2 GB, other allocations: 3 MB)."), ""),
    (MemoryError(), ""),
    (RuntimeError("shape '[3, 4]' is invalid for input of size 10"), None),
])
def test_out_of_memory_errors_are_told_from_others_with_what_was_asked_for(error, asked):
    from nmt.terminal import _memory_asked

    said = _memory_asked(error)
    assert said == asked if asked in ("", None) else said == asked + " more asked for)"


def test_running_out_of_memory_is_one_line_and_leaves_the_output_as_it_was(tiny_run, tmp_path, monkeypatch):
    """torch's CPU allocator raises a RuntimeError ("[enforce fail at alloc_cpu.cpp:127] … can't
    allocate memory: you tried to allocate N bytes"), which came out as a traceback."""
    import torch

    from nmt.translate import Translator

    monkeypatch.setattr(Translator, "translate", lambda *args, **kwargs: torch.empty(2**60, dtype=torch.uint8))
    out = tmp_path / "out.en"
    out.write_text("earlier\n")
    result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best"), "-o", str(out)],
                           input="hola\n")
    assert _error(result) == ("error: out of memory (1,048,576.00 TiB more asked for): smaller batches need "
                              "less (train.batch_tokens, decode.batch_size), and so does a smaller beam")
    assert out.read_text() == "earlier\n" and list(tmp_path.iterdir()) == [out]

    def broken(*args, **kwargs):
        raise RuntimeError("shape mismatch")  # not memory: a bug's traceback stays

    monkeypatch.setattr(Translator, "translate", broken)
    result = runner.invoke(app, ["translate", "--checkpoint", str(tiny_run.root / "best")], input="hola\n")
    assert isinstance(result.exception, RuntimeError) and str(result.exception) == "shape mismatch"


@pytest.mark.parametrize("argv, words", [
    (["prepare", "-c", "{tmp}"], "{tmp} is a folder, not a config file"),
    (["translate", "--checkpoint", "{best}", "-i", "{tmp}"], "{tmp} is a folder, not a file"),
    (["translate", "--checkpoint", "{best}/model.safetensors"], "{best}/model.safetensors is a file, not a "
                                                                "checkpoint folder"),
])
def test_a_folder_for_a_file_or_a_file_for_a_folder_is_named_as_such(tiny_run, tmp_path, argv, words):
    """Not "not found": the path is there, and the user needs to know it is the wrong kind."""
    paths = {"tmp": tmp_path, "best": tiny_run.root / "best"}
    result = runner.invoke(app, [arg.format(**paths) for arg in argv], input="hola\n")
    assert _error(result) == "error: " + words.format(**paths)


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="needs /dev/fd")
def test_translate_and_evaluate_read_a_pipe_given_for_a_file(tiny_run, tmp_path):
    """``-i <(zcat in.gz)``, ``-i /dev/stdin``: a pipe is read (once: it cannot be read again), not
    called a folder."""
    opened = []

    def pipe(text: str) -> str:  # a pipe holding text, by the name a shell's <(command) gives one
        read, write = os.pipe()
        os.write(write, text.encode())
        os.close(write)
        opened.append(read)
        return f"/dev/fd/{read}"

    text = "Y dijo Dios\n\nEn el principio\n"
    best = str(tiny_run.root / "best")
    plain = runner.invoke(app, ["translate", "--checkpoint", best], input=text).stdout
    try:
        result = runner.invoke(app, ["translate", "--checkpoint", best, "-i", pipe(text)])
        assert result.exit_code == 0, result.output
        assert result.stdout == plain and plain.count("\n") == 3
        result = runner.invoke(app, ["evaluate", "--checkpoint", best, "--src", pipe(text), "--ref",
                                     pipe("And God said\n\nIn the beginning\n"), "--out", str(tmp_path), "--beam", "1"])
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
        assert report["sentences"] == 3  # a pipe is read once: not opened again to hash it
        assert report["sha256"] == {"source": None, "reference": None}
    finally:
        for fd in opened:
            os.close(fd)


@pytest.mark.parametrize("stage", ["prepare_data", "train_tokenizer"])
def test_pipeline_scripts_report_errors_in_one_line(stage, tmp_path):
    result = subprocess.run([sys.executable, f"pipelines/{stage}.py", str(tmp_path / "missing.yaml")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: config file not found: {tmp_path / 'missing.yaml'}"]


def test_a_config_whose_name_is_not_its_make_name_fails_at_the_first_stage(tmp_path):
    """make NAME=x looks for runs/x/best after training; a config naming its run otherwise used to
    train into runs/<its name> and fail only then."""
    config = tmp_path / "mytiny.yaml"
    config.write_text(TINY_CONFIG.read_text().replace("name: tiny", "name: other"))
    stamp = lambda run: subprocess.run([sys.executable, str(ROOT / "pipelines" / "stamp_config.py"), "--run", run,  # noqa: E731
                                        str(config)], capture_output=True, text=True, cwd=tmp_path)
    result = stamp("runs/mytiny")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {config}: name is 'other', so the run would go to runs/other, not runs/mytiny; "
        "make NAME=X needs configs/X.yaml with name: X"]
    assert not (tmp_path / "runs").exists()
    assert stamp("runs/other").returncode == 0 and (tmp_path / "runs/other/config/resolved.json").is_file()


@pytest.mark.parametrize("stage", ["stamp_config", "prepare_data", "train_tokenizer", "train_model", "evaluate",
                                   "report"])
def test_pipeline_scripts_without_arguments_say_their_usage(stage):
    script = f"pipelines/{stage}.py"
    result = subprocess.run([sys.executable, script], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: usage: python {script} ")
    helped = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert helped.returncode == 0 and f"python {script}" in helped.stdout


@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_a_checkpoint_away_from_its_run_asks_for_a_test_set(command, tiny_run, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(tiny_run.root / "best", tmp_path / "lone")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [command, "--checkpoint", "lone"])
    assert _error(result) == "error: no test split at data/test.es (the checkpoint's run): give --src and --ref"


def test_evaluate_with_mismatched_files(tiny_run, tmp_path):
    src, ref = tmp_path / "s.es", tmp_path / "r.en"
    src.write_text("uno\ndos\n")
    ref.write_text("one\n")
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(tiny_run.root / "best"), "--src", str(src),
                                 "--ref", str(ref), "--out", str(tmp_path / "out")])
    assert "has 2 lines but" in _error(result)
    assert not (tmp_path / "out" / "report.json").exists()



def test_a_run_folder_with_only_last_is_not_told_to_give_best(tmp_path):
    """A run stopped before its first validation has `last` but no `best`: the hint named the one
    that was not there."""
    from conftest import saved_tiny_model

    *_, folder = saved_tiny_model(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "last").symlink_to(folder)
    result = runner.invoke(app, ["translate", "--checkpoint", str(run)], input="hola\n")
    assert _error(result) == f"error: {run} is a run folder, not a checkpoint: give {run}/last"


@pytest.mark.parametrize("option", [["--alpha", "1.0"], ["--stopping", "finished"]])
def test_a_beam_search_option_with_greedy_search_says_it_is_ignored(tiny_run, caplog, option):
    """--alpha and --stopping are beam search's; given with the default --beam 1, its outputs were the
    same for every value, without a word."""
    args = ["translate", "--checkpoint", str(tiny_run.root / "best"), *option]
    for beam, warned in (("1", True), ("2", False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="nmt.cli"):
            result = runner.invoke(app, args + ["--beam", beam], input="hola\n")
        assert result.exit_code == 0, result.output
        assert (f"{option[0]} is beam search's; greedy search (--beam 1, the default) ignores it" in caplog.text) \
            is warned


@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_a_source_other_than_the_test_split_s_needs_its_own_reference(command, tiny_run, tmp_path):
    """--src of other lines without --ref scored them against the run's test references: it
    printed a BLEU of 0.69 and exited 0. The test source under another name needs none."""
    import shutil

    quick = QUICK[command]
    other = tmp_path / "other.es"
    other.write_text((tiny_run.data / "test.es").read_text(encoding="utf-8").upper(), encoding="utf-8")
    ask = lambda src, out: runner.invoke(app, [command, "--checkpoint", str(tiny_run.root / "best"),  # noqa: E731
                                               "--src", str(src), "--out", str(out), *quick])
    assert _error(ask(other, tmp_path / "a")) == (f"error: --src {other} is not the run's test source, and no --ref "
                                                  f"was given for it: give --ref, its reference file (the run's test "
                                                  f"references are {tiny_run.data / 'test.en'})")
    assert not (tmp_path / "a").exists()
    shutil.copy(tiny_run.data / "test.es", tmp_path / "copy.es")
    result = ask(tmp_path / "copy.es", tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b" / "report.json").read_text())["reference"] == str(tiny_run.data / "test.en")


def test_translate_s_alpha_reaches_the_search_and_its_options_reach_the_translator(tmp_path, monkeypatch):
    """--alpha, --precision and --stopping changed nothing anyone checked: the tiny run's
    translations are empty lines whatever they say. An untrained model's run on, so its scores
    show the length penalty it was searched with; the command hands its options on as given."""
    from conftest import saved_tiny_model
    from nmt.translate import Translator

    folder = saved_tiny_model(tmp_path)[3]
    translator = Translator.from_checkpoint(folder)
    lines = ["Y dijo Dios: Sea la luz.", "Y fué la tarde y la mañana el día primero."]
    for alpha in (0.0, 2.0):
        for hyps in translator.hypotheses(lines, beam=3, alpha=alpha, nbest=2):
            for h in hyps:
                assert h.score == pytest.approx(h.log_prob / ((5 + len(h.tokens) + 1) / 6) ** alpha, rel=1e-5)
    source = tmp_path / "in.es"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    asked = []
    monkeypatch.setattr(Translator, "translate", lambda self, lines, **options: asked.append(options) or lines)
    result = runner.invoke(app, ["translate", "--checkpoint", str(folder), "--input", str(source), "--beam", "3",
                                 "--alpha", "2", "--precision", "int8", "--stopping", "finished"])
    assert result.exit_code == 0, result.output
    assert [{k: v for k, v in options.items() if k != "progress"} for options in asked] == [
        {"beam": 3, "alpha": 2.0, "precision": "int8", "stopping": "finished"}]


def test_evaluate_s_scores_are_sacrebleu_s_on_the_translations_it_wrote(tmp_path):
    """Hypotheses and references the right way round: BLEU's brevity penalty, chrF's recall
    weight and TER's reference length all change when they are swapped. The tiny run writes empty
    lines, which score 0 either way; an untrained model's lines, against references that add words
    to them, do not."""
    import sacrebleu

    from conftest import saved_tiny_model
    from nmt.translate import Translator

    folder = saved_tiny_model(tmp_path)[3]
    lines = ["Y dijo Dios: Sea la luz.", "Y fué la tarde y la mañana el día primero.", "En el principio"]
    hyps = Translator.from_checkpoint(folder).translate(lines, beam=1)
    refs = [f"{hyp[: len(hyp) // 2]} and the light was good" for hyp in hyps]
    (tmp_path / "s.es").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "r.en").write_text("\n".join(refs) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["evaluate", "--checkpoint", str(folder), "--src", str(tmp_path / "s.es"), "--ref",
                                 str(tmp_path / "r.en"), "--beam", "1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    written = (tmp_path / "out" / "s.greedy.en").read_text(encoding="utf-8").splitlines()
    assert written == hyps
    expected = {"bleu": sacrebleu.corpus_bleu(written, [refs]).score, "chrf": sacrebleu.corpus_chrf(written, [refs]).score,
                "ter": sacrebleu.corpus_ter(written, [refs]).score}
    swapped = sacrebleu.corpus_ter(refs, [written]).score
    assert abs(swapped - expected["ter"]) > 1  # the check below can tell the two apart
    for name, score in expected.items():
        assert report["systems"]["greedy"]["scores"][name]["score"] == pytest.approx(score, abs=1e-3), name
