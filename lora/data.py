"""Fine-tuning data: loading (hub, bundled samples, local files), Alpaca/plain formatting, label masking.

Two formats, as in the course report:
- "alpaca": rows with instruction / input / output. The prompt (the standard Alpaca template) is not
  trained on: its labels are -100; the response plus an EOS token is.
- "text": rows with a text field (IMDB reviews). Plain continuation: labels equal the input ids.
Padding is always labelled -100 and masked out of attention.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple

from bpe_fast.cliutil import UserError
from lora.config import DATA_FORMATS
from lora.resources import BUNDLED_DATASETS, bundled_file
from lora.sources import hub_reachable

if TYPE_CHECKING:
    import torch

    from lora.config import FinetuneConfig

IGNORE_INDEX = -100

# The Stanford Alpaca templates, verbatim (with and without an input field).
ALPACA_PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)

# Hub data sets the report used, and the bundled offline stand-in for each.
HUB_DATASETS: Dict[str, Tuple[str, str]] = {
    "alpaca": ("tatsu-lab/alpaca", "alpaca-sample"),
    "imdb": ("imdb", "imdb-sample"),
}


def alpaca_prompt(instruction: str, input_text: str = "") -> str:
    """The Alpaca prompt for one example (the part the model is not trained to produce)."""
    if input_text and input_text.strip():
        return ALPACA_PROMPT_WITH_INPUT.format(instruction=instruction, input=input_text)
    return ALPACA_PROMPT_NO_INPUT.format(instruction=instruction)


# ---------------------------------------------------------------------------------------------- loading


def _read_jsonl(path: Path) -> List[dict]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{line_number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def _read_json(path: Path) -> List[dict]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    # Accept a bare list, or the common {"data": [...]} / {"train": [...]} wrappers.
    if isinstance(document, dict):
        for key in ("data", "train", "rows"):
            if isinstance(document.get(key), list):
                document = document[key]
                break
    if not isinstance(document, list) or not all(isinstance(row, dict) for row in document):
        raise UserError(f"{path}: expected a list of objects (or {{'data': [...]}})")
    return document


def _read_csv(path: Path) -> List[dict]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [dict(row) for row in csv.DictReader(handle)]


def _read_parquet(path: Path) -> List[dict]:
    import pyarrow.parquet as parquet

    try:
        return parquet.read_table(path).to_pylist()
    except (ValueError, OSError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(
            f"{path}: not a readable parquet file ({str(error).strip().splitlines()[0]})"
        ) from None


LOCAL_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}


def read_local_rows(path: Path) -> List[dict]:
    """Rows of a local .jsonl / .json / .csv / .parquet file."""
    reader = LOCAL_READERS.get(path.suffix.lower())
    if reader is None:
        raise UserError(
            f"{path}: unsupported data file type {path.suffix!r}; use one of {sorted(LOCAL_READERS)}"
        )
    try:
        rows = reader(path)
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except csv.Error as error:
        raise UserError(f"{path}: not a readable CSV file ({error})") from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror or error})") from None
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows


def _load_hub_rows(hub_id: str) -> List[dict]:
    import datasets

    return datasets.load_dataset(hub_id, split="train").to_list()


def load_rows(data: str, log=print) -> Tuple[List[dict], str]:
    """Rows for --data, and a description of where they came from.

    `alpaca` / `imdb` load the hub data sets when the hub is reachable, else the bundled sample with a
    notice; `alpaca-sample` / `imdb-sample` always use the bundled files; anything else is a local path.
    """
    if data in BUNDLED_DATASETS:
        path = bundled_file(BUNDLED_DATASETS[data])
        return read_local_rows(path), f"{data} (bundled {path.name})"
    if data in HUB_DATASETS:
        hub_id, fallback = HUB_DATASETS[data]
        if hub_reachable():
            try:
                return _load_hub_rows(hub_id), f"{data} (hub {hub_id})"
            except Exception as error:  # any hub/datasets failure: fall back, but say why
                log(f"notice: loading {hub_id} from the hub failed ({type(error).__name__}: {error})")
        log(
            f"notice: the hub data set {hub_id} is not available offline; using the bundled sample {fallback!r}"
        )
        path = bundled_file(BUNDLED_DATASETS[fallback])
        return read_local_rows(path), f"{fallback} (bundled {path.name}, offline stand-in for {hub_id})"
    return read_local_rows(check_data_spec(data)), data


def check_data_spec(data: str) -> Optional[Path]:
    """The local file --data names (None for a bundled or hub data set); a one-line error when it is
    neither a known name nor an existing file of a supported type. Cheap: reads nothing."""
    if data in BUNDLED_DATASETS or data in HUB_DATASETS:
        return None
    path = Path(data).expanduser()
    if not path.is_file():
        names = ", ".join(sorted(HUB_DATASETS) + sorted(BUNDLED_DATASETS))
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise UserError(f"--data {data}: {what}, and not one of the data set names ({names})")
    if path.suffix.lower() not in LOCAL_READERS:
        raise UserError(
            f"--data {data}: unsupported file type {path.suffix!r}; use one of {sorted(LOCAL_READERS)}"
        )
    return path


def rows_fingerprint(rows: Sequence[dict]) -> str:
    """sha256 of the rows as JSON: two runs split the same rows alike exactly when this matches."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def detect_format(rows: Sequence[dict], where: str = "data") -> str:
    """'alpaca' when rows carry instruction+output, 'text' when they carry text."""
    first = rows[0]
    if "instruction" in first and "output" in first:
        return "alpaca"
    if "text" in first:
        return "text"
    raise UserError(
        f"{where}: cannot tell the format from the fields {sorted(first)}; expected instruction/input/output "
        "(Alpaca) or text (plain continuation)"
    )


def _field(row: dict, name: str, index: int, where: str, required: bool = True) -> str:
    value = row.get(name)
    if value is None:
        if required:
            raise UserError(f"{where}: row {index} has no {name!r} field")
        return ""
    if not isinstance(value, str):
        raise UserError(f"{where}: row {index} field {name!r} is {type(value).__name__}, expected a string")
    return value


# ------------------------------------------------------------------------------------------- tokenizing


@dataclass
class Example:
    """One tokenized training example: ids, and labels (-100 where no loss is taken)."""

    input_ids: List[int]
    labels: List[int]


def pad_token_id(tokenizer) -> int:
    """The id used for padding: the tokenizer's own, or EOS (no embedding resize needed)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has neither a pad nor an EOS token")
    return tokenizer.eos_token_id


def encode_alpaca(
    tokenizer, row: dict, max_length: int, index: int = 0, where: str = "data"
) -> Optional[Example]:
    """Prompt (labels -100) + response + EOS (labelled), truncated to max_length.

    The prompt and response are tokenized separately so that the label boundary is exact. Returns None
    when the prompt alone fills max_length (nothing would be trained on).
    """
    prompt = alpaca_prompt(
        _field(row, "instruction", index, where), _field(row, "input", index, where, False)
    )
    response = _field(row, "output", index, where)
    if tokenizer.eos_token_id is None:
        raise UserError("Alpaca formatting needs a tokenizer with an EOS token")
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(prompt_ids) >= max_length:
        return None
    input_ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
    return Example(input_ids, labels)


def encode_text(
    tokenizer, row: dict, max_length: int, index: int = 0, where: str = "data"
) -> Optional[Example]:
    """Plain continuation: every token is labelled. None for texts too short to predict anything."""
    ids = tokenizer(_field(row, "text", index, where), add_special_tokens=True)["input_ids"][:max_length]
    if len(ids) < 2:
        return None
    return Example(list(ids), list(ids))


def encode_rows(
    tokenizer, rows: Sequence[dict], data_format: str, max_length: int, where: str = "data"
) -> Tuple[List[Example], int]:
    """Tokenize rows; returns the examples and how many rows were dropped (nothing left to learn)."""
    if data_format == "auto":
        data_format = detect_format(rows, where)
    encode = {"alpaca": encode_alpaca, "text": encode_text}.get(data_format)
    if encode is None:
        raise ValueError(f"unknown data format {data_format!r}; expected one of {DATA_FORMATS}")
    examples, dropped = [], 0
    for index, row in enumerate(rows):
        example = encode(tokenizer, row, max_length, index, where)
        if example is None:
            dropped += 1
        else:
            examples.append(example)
    return examples, dropped


def split_rows(
    rows: Sequence[dict], eval_samples: int, max_samples: Optional[int], seed: int
) -> Tuple[List[dict], List[dict]]:
    """A seeded shuffle; the first eval_samples rows are held out, then up to max_samples for training.

    The held-out rows depend only on (rows, seed, eval_samples), so `lora.evaluate` with the same seed
    measures loss on rows the fine-tune never saw.
    """
    if eval_samples < 0:
        raise ValueError(f"eval_samples must be >= 0, got {eval_samples}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held_out = [rows[i] for i in order[:eval_samples]]
    train = [rows[i] for i in order[eval_samples:]]
    if max_samples is not None:
        train = train[:max_samples]
    if not train:
        raise UserError(f"no training rows left: {len(rows)} rows, {eval_samples} held out")
    return train, held_out


@dataclass
class DataSplit:
    """A run's rows after the seeded split, and what they are."""

    source: str
    fingerprint: str
    train_rows: List[dict]
    eval_rows: List[dict]
    data_format: str


def split_data(config: FinetuneConfig, log=print) -> DataSplit:
    """The rows of --data, held out and training, as the seeded split makes them. Needs no torch, so
    a bad --data is reported before the slow imports and the model load."""
    rows, source = load_rows(config.data, log)
    train_rows, eval_rows = split_rows(rows, config.eval_samples, config.max_samples, config.seed)
    fmt = config.data_format if config.data_format != "auto" else detect_format(rows, source)
    return DataSplit(source, rows_fingerprint(rows), train_rows, eval_rows, fmt)


def collate(examples: Iterable[Example], pad_id: int) -> Dict[str, torch.Tensor]:
    """Right-pad a batch: pad ids with pad_id, attention mask 0 and labels -100 on padding."""
    import torch

    examples = list(examples)
    width = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids)
        labels[row, :length] = torch.tensor(example.labels)
        attention_mask[row, :length] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def batches(examples: Sequence[Example], batch_size: int, pad_id: int) -> List[Dict[str, torch.Tensor]]:
    """Consecutive batches in the given order (the caller shuffles)."""
    return [collate(examples[i : i + batch_size], pad_id) for i in range(0, len(examples), batch_size)]
