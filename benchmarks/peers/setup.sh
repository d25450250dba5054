#!/usr/bin/env bash
# Install the peer toolkits, each in its own virtual environment under benchmarks/.peers/<peer>/venv.
#
#   bash benchmarks/peers/setup.sh [fairseq|opennmt|joeynmt ...]     (default: all three)
#
# torch==2.13.0 (the local CPU wheel on our machines; from $TORCH_INDEX where set, as make passes it)
# goes in first and stays pinned by a constraints file, so no peer can pull another torch. Each peer's own torch pin is bypassed with
# --no-deps and its dependencies are listed here by hand. A stamp file per peer makes a second run
# skip the install; delete benchmarks/.peers/<peer> to reinstall. A peer that fails to install is
# reported and skipped; the others still install (exit status 0 if at least one installed).
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PEERS="$ROOT/benchmarks/.peers"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
NICE="${NICE:-nice -n 19}"  # installs (fairseq compiles C++/Cython) never compete with a measurement
mkdir -p "$PEERS"
CONSTRAINTS="$PEERS/constraints.txt"
# numpy<2: fairseq 0.12 and its compiled extensions predate the numpy 2 ABI.
printf 'torch==2.13.0\nnumpy<2\n' > "$CONSTRAINTS"

venv_for() {  # venv_for PEER → creates the venv with torch first; prints nothing
    local dir="$PEERS/$1"
    test -x "$dir/venv/bin/python" || "$PYTHON" -m venv "$dir/venv"
    ls "$dir"/venv/lib/python*/site-packages/torch-2.13.0*.dist-info > /dev/null 2>&1 ||
        $NICE "$dir/venv/bin/python" -m pip install --quiet -c "$CONSTRAINTS" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} \
            torch==2.13.0
}

pipi() {  # pipi PEER ARGS… → pip install inside the peer's venv, torch pinned
    local peer="$1"; shift
    $NICE "$PEERS/$peer/venv/bin/python" -m pip install --quiet -c "$CONSTRAINTS" "$@"
}

install_fairseq() {
    # Official fairseq 0.12.2 neither builds nor imports on Python 3.11 (mutable dataclass
    # defaults); the PyPI fork fairseq-fixed 0.12.3.1 does, with hydra-core 1.3.2 / omegaconf
    # 2.3.0 (the old hydra-core 1.0.x fails on Python 3.11 the same way). It is built against the venv's torch
    # and numpy (--no-build-isolation), so those and the build tools come first. torchaudio is
    # left out (it would pull another torch); the LSTM translation path does not use it.
    venv_for fairseq &&
    pipi fairseq "numpy<2" "cython<3.1" "setuptools>=77" wheel cffi &&
    pipi fairseq "hydra-core==1.3.2" "omegaconf==2.3.0" \
        regex "sacrebleu>=1.4.12" tqdm bitarray scikit-learn packaging sentencepiece &&
    pipi fairseq --no-build-isolation --no-deps fairseq-fixed==0.12.3.1 &&
    "$PEERS/fairseq/venv/bin/python" -c "import fairseq, fairseq.models.lstm; print('fairseq', fairseq.__version__)"
}

install_opennmt() {
    # OpenNMT-py 3.5.1 declares torch<2.3: installed with --no-deps, its dependencies by hand.
    # Its transform registry imports every transform module, so spacy, pyahocorasick and fasttext
    # are needed just to start; ctranslate2 (an inference engine of its own) is left out.
    venv_for opennmt &&
    pipi opennmt "numpy<2" configargparse pyyaml sacrebleu rapidfuzz six tensorboard flask waitress \
        "pyonmttok>=1.37,<2" spacy pyahocorasick fasttext-wheel sentencepiece &&
    pipi opennmt --no-deps OpenNMT-py==3.5.1 &&
    "$PEERS/opennmt/venv/bin/python" -c "import onmt, onmt.bin.train, onmt.bin.translate; print('onmt', onmt.__version__)"
}

install_joeynmt() {
    # JoeyNMT 2.3.0 imports importlib_metadata and works with sentencepiece 0.1.99.
    venv_for joeynmt &&
    pipi joeynmt "numpy<2" importlib_metadata "sentencepiece==0.1.99" joeynmt==2.3.0 &&
    "$PEERS/joeynmt/venv/bin/python" -c "import joeynmt, joeynmt.training; print('joeynmt', joeynmt.__version__)"
}

ok=0
for peer in "${@:-fairseq opennmt joeynmt}"; do
  for p in $peer; do
    stamp="$PEERS/$p/.installed"
    if [ -f "$stamp" ]; then echo "$p: already installed ($stamp)"; ok=1; continue; fi
    mkdir -p "$PEERS/$p"
    echo "$p: installing into $PEERS/$p/venv (log: $PEERS/$p/install.log)"
    if "install_$p" > "$PEERS/$p/install.log" 2>&1; then
        "$PEERS/$p/venv/bin/python" -m pip freeze > "$stamp"; ok=1; echo "$p: ok"
    else
        echo "$p: FAILED — see $PEERS/$p/install.log (last lines below); the other peers go on" >&2
        tail -5 "$PEERS/$p/install.log" >&2
    fi
  done
done
[ "$ok" = 1 ]
