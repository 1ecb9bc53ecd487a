"""LoRA fine-tuning of a causal LM with peft, in a plain PyTorch loop (the course report's part 3).

    python -m lora.finetune --model smollm2 --preset cpu-quick --out runs/smollm2-quick

Writes to --out: the adapter in peft's layout (adapter_model.safetensors + adapter_config.json),
run.json (settings, parameter counts, losses, timings, probe generations, the loss history),
tensorboard/ (unless --logdir says otherwise) and the marker that lets --overwrite replace it later.
OUT appears only when complete. Until then the run lives in OUT.partial, which keeps its resume state
(saved every --checkpoint-every steps and on SIGTERM): after an interruption, the same command with
--resume continues where it stopped, on the same loss curve.

The settings are lora.config.FinetuneConfig; the run itself is lora.training. This module checks the
command line (flags, paths, the output folder) before importing torch, so mistakes are answered at once.
"""

from __future__ import annotations

from typing import List, Optional

from bpe_fast.cliutil import run_main
from lora.config import build_parser, parse_config  # noqa: F401  (build_parser: the CLI's flags)
from lora.data import split_data
from lora.run_folder import TrainingInterrupted, prepare_run_folder
from lora.sources import resolve_model_source, resolve_tokenizer_source

PROG = "python -m lora.finetune"
EXIT_TERMINATED = 143  # 128 + SIGTERM: stopped on request, resumable


def main(argv: Optional[List[str]] = None) -> int:
    config = parse_config(argv)
    resolve_model_source(config.model)
    resolve_tokenizer_source(config.tokenizer)
    folder = prepare_run_folder(config)
    split = split_data(config)
    from lora import training  # torch and transformers: only once the command line is known to be sound

    try:
        training.finetune_model(config, folder=folder, split=split)
    except TrainingInterrupted:
        return EXIT_TERMINATED
    return 0


if __name__ == "__main__":
    run_main(main, PROG)
