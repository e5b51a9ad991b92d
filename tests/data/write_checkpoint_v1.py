"""Writes ``checkpoint_v1/last.ckpt``: a checkpoint of config_version 1, kept in the repository so that
later versions are tested to load and resume what this one wrote (tests/test_checkpoint_safety.py).

Run once, by the version that introduced config_version 1 (``python tests/data/write_checkpoint_v1.py``);
never regenerate it with a later version: the point is to keep what an old version wrote."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from odeon_job.config import config_from_dict  # noqa: E402
from odeon_job.tasks.train import train  # noqa: E402

from conftest import stored_checkpoint_config, stored_checkpoint_dataset  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        csv = stored_checkpoint_dataset(Path(folder) / "ds")
        config = config_from_dict(stored_checkpoint_config(csv, str(Path(folder) / "out"), epochs=1))
        result = train(config)
        target = Path(__file__).parent / "checkpoint_v1"
        target.mkdir(exist_ok=True)
        shutil.copy(Path(result.run_folder) / "odeon_val_loss_ckpt" / "last.ckpt", target / "last.ckpt")


if __name__ == "__main__":
    main()
