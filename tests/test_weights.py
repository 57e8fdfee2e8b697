"""The GGUF -> safetensors conversion cache: complete or absent, never half-written."""

import os
import subprocess
import sys
from pathlib import Path

CONVERT = "from mulcot_batch.weights import smollm2_folder; print(smollm2_folder())"


def test_concurrent_first_use_converts_once_into_a_complete_cache(tmp_path: Path):
    env = {**os.environ, "MULCOT_BATCH_CACHE": str(tmp_path / "cache")}
    env.pop("XDG_CACHE_HOME", None)
    procs = [
        subprocess.Popen([sys.executable, "-c", CONVERT], env={**env, "RANK": str(rank)}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    outputs, errors = zip(*(p.communicate(timeout=600) for p in procs))
    outputs = [out.strip() for out in outputs]
    assert [p.returncode for p in procs] == [0, 0]
    # one process converts and says so in one line; the libraries' progress bars stay out of the log
    assert sum("first use: converting" in err for err in errors) == 1
    assert not any("de-quantizing" in err or "Loading weights" in err for err in errors)
    folder = tmp_path / "cache" / "smollm2-135m-instruct"
    assert outputs == [str(folder)] * 2
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    assert (folder / "model.safetensors").stat().st_size > 500_000_000
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".convert-")]
