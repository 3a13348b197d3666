"""A config shrunk to a model of a few thousand parameters with the same module names: what layout discovery
runs, on the CPU, when the model at hand is too large to run or lives on the meta device.

Only the widths change (hidden sizes, heads, experts, vocabulary): the names of a block's projections and the
order they run in do not depend on them, so a tiny model traced is the large one traced. The depth is kept
unless `layers` is given, because hybrid families choose each block's kind from its index; with `layers`, the
blocks kept include one of every kind the per-layer lists (layer_types and the like) name.
"""
from __future__ import annotations

import copy

# field name -> its tiny value; a field at or below it already, zero or None is kept as it is
WIDTHS = dict.fromkeys((
    "hidden_size", "n_embd", "d_model", "embed_dim", "embedding_dim", "emb_dim", "word_embed_proj_dim",
    "attention_hidden_size", "lru_width", "backbone_hidden_size", "input_embedding_size", "output_embedding_size",
    "embedding_size", "ple_embed_dim", "dim_model", "n_embed", "model_dim", "router_hidden_size",
    "hidden_size_global"), 64)
FEED_FORWARD = dict.fromkeys((
    "intermediate_size", "ffn_dim", "n_inner", "dff", "dim_ff", "d_inner", "decoder_ffn_dim", "encoder_ffn_dim",
    "moe_intermediate_size", "shared_expert_intermediate_size", "shared_experts_intermediate_size",
    "expert_ffn_hidden_size", "ffn_hidden_size", "intermediate_size_mlp", "dense_intermediate_size",
    "moe_shared_expert_intermediate_size", "feed_forward_size", "shared_intermediate_size", "prompt_mid_dim"), 96)
HEADS = dict.fromkeys((
    "num_attention_heads", "n_head", "n_heads", "num_heads", "attention_heads", "decoder_attention_heads",
    "encoder_attention_heads", "num_decoder_attention_heads", "num_encoder_attention_heads",
    "swa_num_attention_heads", "linear_num_heads", "index_n_heads", "linear_num_value_heads"), 4)
# key/value heads -> the heads they divide: as many as those when they were as many, else 2 (or 1 if 1)
KV_HEADS = {"num_key_value_heads": "num_attention_heads", "num_kv_heads": "num_attention_heads",
            "num_query_groups": "num_attention_heads", "multi_query_group_num": "num_attention_heads",
            "swa_num_key_value_heads": "swa_num_attention_heads", "linear_num_key_heads": "linear_num_value_heads"}
HEAD_DIMS = dict.fromkeys((
    "head_dim", "attention_head_dim", "attention_head_size", "d_head", "dim_head", "kv_channels",
    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "swa_head_dim", "linear_head_dim", "linear_key_head_dim",
    "linear_value_head_dim", "mamba_d_head", "mamba_head_dim", "mamba_headdim", "index_head_dim"), 16)
RANKS = dict.fromkeys((
    "q_lora_rank", "kv_lora_rank", "o_lora_rank", "laurel_rank", "adapter_rank", "gated_norm_rank", "hc_lowrank",
    "time_step_rank", "mamba_dt_rank", "rotary_dim", "state_size", "mamba_d_state", "ssm_state_size",
    "hidden_size_per_layer_input"), 8)
TOP_K = dict.fromkeys(("num_experts_per_tok", "num_experts_per_token", "moe_k", "moe_topk", "top_k"), 2)
GROUPS = dict.fromkeys(("n_group", "topk_group", "num_expert_group", "n_shared_experts", "num_shared_experts",
                        "moe_num_shared_experts"), 1)
VOCAB = 128
VOCABS = dict.fromkeys(("vocab_size", "decoder_vocab_size", "vocab_size_per_layer_input", "shape_vocab_size",
                        "pronunciation_vocab_size", "unpadded_vocab_size", "encoder_hash_byte_group_vocab"), VOCAB)
SIZES = {**WIDTHS, **FEED_FORWARD, **HEADS, **HEAD_DIMS, **RANKS, **TOP_K, **GROUPS, **VOCABS}
# Every mixture of experts gets exactly this many, so a router is the projection with this many outputs.
EXPERTS = 6
EXPERT_COUNTS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
DEPTHS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers", "num_decoder_layers")
# lists of layer indices (not one entry per layer): renumbered when blocks are dropped
INDEX_LISTS = ("mlp_only_layers", "full_attn_idxs", "moe_layers", "hybrid_layer_ids", "ple_layer_ids")
# leading dense blocks of a mixture of experts: one, so that a shallow copy holds both kinds
LEADING_DENSE = ("first_k_dense_replace", "num_dense_layers")
# a state-space mixer's heads, head size and expansion: heads x head size = expansion x hidden size
MAMBA_HEADS = (("mamba_n_heads", "mamba_d_head", "mamba_expand"),
               ("mamba_num_heads", "mamba_head_dim", "mamba_expand"),
               ("n_mamba_heads", "mamba_headdim", "mamba_expand"), ("num_heads", "head_dim", "expand"))
# trailing blocks that reuse an earlier block's keys and values: none in a shallow copy (it may lack the earlier one)
SHARED_KV = ("num_kv_shared_layers",)


def tiny_config(config, layers: int | None = None):
    """A copy of `config` with every size it names made tiny (and about `layers` blocks when given), in plain
    float weights: a quantised checkpoint's settings would make the tiny copy quantise itself."""
    values = shrunk(config.to_dict(), layers)
    values.pop("quantization_config", None)
    return type(config).from_dict(values)


def shrunk(values: dict, layers: int | None) -> dict:
    """The dict form of a config, shrunk; nested configs (text_config, vision_config...) too."""
    out = copy.deepcopy(values)
    for key, value in values.items():
        if isinstance(value, dict) and key not in ("id2label", "label2id"):   # nested and per-layer configs
            out[key] = shrunk(value, layers)
        elif _is_count(value) and key in SIZES and value > SIZES[key]:
            out[key] = SIZES[key]
        elif isinstance(value, list) and key in SIZES and all(_is_count(v) for v in value):   # one per layer
            out[key] = [min(v, SIZES[key]) for v in value]
        elif _is_count(value) and key in EXPERT_COUNTS:
            out[key] = EXPERTS
    for key, heads in KV_HEADS.items():   # after the heads they divide are shrunk
        if _is_count(values.get(key)):
            out[key] = _kv_heads(values[key], values.get(heads), out.get(heads))
    _multiples_of_hidden(values, out)
    _latent_head_dims(values, out)
    _consistent(out)
    if layers is not None:
        _keep_layers(out, layers)
    _tokens_inside_vocabulary(out)
    return out


def _multiples_of_hidden(values: dict, out: dict) -> None:
    """Widths that were a small multiple of the hidden size stay that multiple (Zamba's attention reads the
    hidden state concatenated with the embeddings; an adapter's input is the hidden size by another name)."""
    hidden, tiny = values.get("hidden_size"), out.get("hidden_size")
    if not (_is_count(hidden) and _is_count(tiny)):
        return
    for key, value in values.items():
        named = key in WIDTHS or (key.endswith(("_dim", "_size")) and key not in SIZES)
        if named and not key.startswith("hidden_size") and _is_count(value) and value % hidden == 0:
            out[key] = tiny * (value // hidden) if value // hidden <= 4 else out[key]


def _latent_head_dims(values: dict, out: dict) -> None:
    """A head size that was the sum of the latent attention's no-rope and rope parts stays that sum."""
    parts = ("qk_nope_head_dim", "qk_rope_head_dim")
    if not all(_is_count(values.get(k)) for k in parts):
        return
    for key in ("qk_head_dim", "swa_head_dim", "head_dim"):
        if values.get(key) == values[parts[0]] + values[parts[1]]:
            out[key] = out[parts[0]] + out[parts[1]]


def _kv_heads(kv: int, heads, tiny_heads) -> int:
    """Multi-head latent attention and plain multi-head attention need as many key/value heads as heads."""
    if kv == heads and _is_count(tiny_heads):
        return tiny_heads
    return min(kv, 2)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _consistent(values: dict) -> None:
    """Sizes the families check against each other, recomputed from the tiny ones."""
    for key, default in (("head_dim", 16), ("num_key_value_heads", values.get("num_attention_heads"))):
        if key in values and values[key] is None:   # some defaults leave them to a checkpoint
            values[key] = default
    hidden = values.get("hidden_size")
    if not _is_count(hidden):
        return
    if _is_count(values.get("mamba_d_ssm")):
        values["mamba_d_ssm"] = (values.get("mamba_expand") or 2) * hidden
    for heads, width, expand in MAMBA_HEADS:   # heads x head size = expand x hidden
        if all(_is_count(values.get(k)) for k in (heads, width, expand)):
            values[heads] = max(1, values[expand] * hidden // values[width])


def _keep_layers(values: dict, layers: int) -> None:
    key = next((k for k in DEPTHS if _is_count(values.get(k))), None)
    if key is None or values[key] <= layers:
        return
    depth = values[key]
    for name in LEADING_DENSE + SHARED_KV:
        if _is_count(values.get(name)):
            values[name] = 1 if name in LEADING_DENSE else 0
    kept = _chosen_layers(values, depth, layers)
    values[key] = len(kept)
    for name, value in list(values.items()):
        if name in INDEX_LISTS and isinstance(value, list):
            values[name] = [kept.index(i) for i in value if i in kept]
        elif isinstance(value, list) and len(value) == depth:
            values[name] = [value[i] for i in kept]
        elif isinstance(value, dict) and name.startswith("per_layer") and all(str(k).isdigit() for k in value):
            values[name] = {str(kept.index(int(k))): v for k, v in value.items() if int(k) in kept}


def _chosen_layers(values: dict, depth: int, layers: int) -> list[int]:
    """The first `layers` blocks, plus the first block of every other kind that the per-layer lists name."""
    lists = [v for v in values.values()
             if isinstance(v, list) and len(v) == depth and all(isinstance(x, str) for x in v)]
    chosen = list(range(layers))
    kinds = {tuple(v[i] for v in lists) for i in chosen}
    for i in range(layers, depth):
        kind = tuple(v[i] for v in lists)
        if kind not in kinds:
            chosen.append(i)
            kinds.add(kind)
    return chosen


def _tokens_inside_vocabulary(values: dict) -> None:
    """Special token ids of a large vocabulary point past a tiny one (embeddings check padding_idx)."""
    vocab = values.get("vocab_size")
    if not _is_count(vocab):
        return
    for key, value in values.items():
        if key.endswith(("token_id", "token_index", "token_ids")):
            values[key] = _inside(value, vocab)


def _inside(value, vocab: int):
    if isinstance(value, list):
        return [_inside(v, vocab) for v in value]
    if _is_count(value) and value >= vocab:
        return vocab - 1 - value % 8
    return value
