"""LoRA fine-tuning with peft: data formatting, fine-tuning, sweeps, evaluation, merging."""
