"""A key/value cache reserved once per ``generate`` call, instead of one that grows by copying.

transformers' default ``DynamicCache`` appends each decode step's keys and
values with ``torch.cat``, which copies the whole cache of every layer at every
step: for a 4,000-token report on one CPU core that copying was ~10% of a
decode step of SmolLM2-135M (measured: 104 → 94 ms/step), and it grows with
the context, so it weighs most on long outputs.  ``ReservedCache`` allocates
each layer's buffer once for the prompt and the first new tokens (the backend
reserves 512: schema-constrained outputs mostly stop well before
``max_new_tokens``), writes new entries in place, doubles the buffer when a call
outgrows it (amortised: a few copies, not one a step), and hands attention a
view of the filled part.  The values attention sees are the same numbers in the same
order, so greedy outputs are unchanged (tests/knowledge/generate/test_kv_cache.py).

Only plain full-attention decoders use it (:func:`reserved_cache` returns None
for sliding-window, hybrid or linear-attention layers, which keep the default).

transformers before the per-layer cache API (``DynamicLayer``, 4.56) gets None
too.  :func:`cache_kwarg` names the keyword the installed release takes.

Imports: the standard library; torch and transformers lazily (the classes are
made on first use, since they subclass transformers' own).
"""
from __future__ import annotations

import functools
import inspect
from typing import Any


def _update(layer: Any, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``ReservedLayer.update``: write the new entries in place, return views of the filled part."""
    if not layer.is_initialized:
        layer.lazy_initialization(key_states, value_states)
    need = layer._n + key_states.shape[-2]
    if layer._k is None or need > layer._k.shape[-2]:
        _grow(layer, key_states, value_states, max(need, layer.reserve, 2 * layer._n))
    layer._k[..., layer._n : need, :] = key_states
    layer._v[..., layer._n : need, :] = value_states
    layer._n = need
    layer.keys, layer.values = layer._k[..., :need, :], layer._v[..., :need, :]
    return layer.keys, layer.values


def _grow(layer: Any, k: Any, v: Any, capacity: int) -> None:
    nk = k.new_empty((*k.shape[:-2], capacity, k.shape[-1]))
    nv = v.new_empty((*v.shape[:-2], capacity, v.shape[-1]))
    if layer._n:
        nk[..., : layer._n, :] = layer._k[..., : layer._n, :]
        nv[..., : layer._n, :] = layer._v[..., : layer._n, :]
    layer._k, layer._v = nk, nv


def _put_row(layer: Any, b: int, k: Any, v: Any, rows: int, longest: int) -> None:
    """``ReservedLayer.put_row``: one prefilled row's ``[1, H_kv, n, D]`` keys/values become row ``b``
    of a ``rows``-row batch holding ``longest`` positions, right-aligned (left padding).  The first
    row allocates the buffers; padded positions hold zeros: they are masked, and must be finite (a
    weight of 0 times NaN is NaN)."""
    if layer._k is None:
        layer.lazy_initialization(k, v)
        capacity = max(longest, layer.reserve)
        layer._k = k.new_zeros((rows, k.shape[1], capacity, k.shape[-1]))
        layer._v = v.new_zeros((rows, v.shape[1], capacity, v.shape[-1]))
    n = k.shape[-2]
    layer._k[b, :, longest - n : longest, :] = k[0]
    layer._v[b, :, longest - n : longest, :] = v[0]
    layer._n = longest
    layer.keys, layer.values = layer._k[..., :longest, :], layer._v[..., :longest, :]


def _adopt(layer: Any) -> None:
    # crop / reorder / batch selection replace keys and values with new tensors:
    # those become the buffer (full, so the next update regrows).
    layer._k, layer._v = layer.keys, layer.values
    layer._n = 0 if layer.keys is None else int(layer.keys.shape[-2])


def _then_adopt(method: Any) -> Any:
    """``DynamicLayer``'s ``method`` followed by :func:`_adopt`."""

    @functools.wraps(method)
    def run(layer: Any, *args: Any) -> None:
        method(layer, *args)
        _adopt(layer)

    return run


@functools.lru_cache(maxsize=1)
def cache_classes() -> tuple[type, type] | None:
    """``(ReservedLayer, ReservedCache)``, or None on transformers < 4.56 (no ``DynamicLayer``).

    ``ReservedLayer`` holds one layer's keys and values ``[B, H_kv, capacity, D]``, filled in
    place; ``keys``/``values`` are views ``[B, H_kv, n, D]`` of the filled part, so the rest of
    transformers (sequence length, masks) reads them as it reads a ``DynamicLayer``.  A call that
    outgrows the reservation doubles the buffer.
    """
    try:
        from transformers.cache_utils import Cache, DynamicCache, DynamicLayer  # lazy: heavy (torch)
    except ImportError:  # pragma: no cover - old transformers: the default cache stays
        return None

    class ReservedLayer(DynamicLayer):  # type: ignore[misc,valid-type]
        update = _update
        put_row = _put_row

        def __init__(self, reserve: int) -> None:
            super().__init__()
            self.reserve, self._k, self._v, self._n = int(reserve), None, None, 0

        def reset(self) -> None:
            super().reset()
            self._k, self._v, self._n = None, None, 0

    # crop / reorder / batch selection: transformers' own, then its new tensors become the buffer.
    for name in ("crop", "batch_repeat_interleave", "batch_select_indices", "reorder_cache"):
        setattr(ReservedLayer, name, _then_adopt(getattr(DynamicLayer, name)))

    class ReservedCache(DynamicCache):  # type: ignore[misc,valid-type]
        """A ``DynamicCache`` whose layers are ``ReservedLayer`` of ``reserve`` tokens."""

        def __init__(self, n_layers: int, reserve: int) -> None:
            Cache.__init__(self, layers=[ReservedLayer(reserve) for _ in range(n_layers)])

    return ReservedLayer, ReservedCache


def reserved_cache(config: Any, reserve: int) -> Any | None:
    """A ``ReservedCache`` for ``config``'s decoder, or None where the default cache must stay.

    Args:
        config: the model's ``PretrainedConfig``.
        reserve: the tokens a row's buffer is first allocated for (padded prompt + the new
            tokens reserved for); more double it.
    """
    classes = cache_classes()
    if classes is None or getattr(config, "is_encoder_decoder", False):
        return None
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    layer_types = getattr(text, "layer_types", None)
    if layer_types and any(t != "full_attention" for t in layer_types):
        return None
    if getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True) is not False:
        return None
    n_layers = getattr(text, "num_hidden_layers", None)
    if not n_layers:
        return None
    return classes[1](int(n_layers), reserve)


def prefill_rows(model: Any, ids: list[list[int]], reserve: int) -> Any | None:
    """Prefill each prompt alone into one left-padded batch cache, for one batched decode.

    On a CPU, a padded batch costs more than its rows: every row is computed to
    the longest prompt, and the padding mask takes attention off its causal fast
    path (measured on SmolLM2-135M, 2 threads: two rows of 3,994 and 2,253 tokens
    prefilled at 203 padded tokens/s together, 423 tokens/s alone).  Decoding is
    where a batch pays (each step reads the weights once for all rows), so this
    prefills row by row — all tokens but the last, no padding — and writes each
    row into the batch cache exactly as a left-padded batch would lay it out (then
    drops the row's own copy: peak memory is the batch plus one row): the caller's ``generate``
    then sees ``Lmax - 1`` cached positions, feeds the last column, and decodes
    the rows together.  Padded positions hold zeros and are masked.

    Args:
        model: a causal LM (transformers), in eval mode.
        ids: token ids per row ``[B][L_i]``, each ``L_i >= 2``.
        reserve: first cache capacity per row (longest prompt + the new tokens reserved for).

    Returns:
        the stacked cache, or None where :func:`reserved_cache` declines the model.
    """
    import torch  # lazy: heavy

    cache = reserved_cache(model.config, reserve)
    if cache is None or min(len(x) for x in ids) < 2:
        return None
    longest = max(len(x) for x in ids) - 1
    for b, row in enumerate(ids):
        one = reserved_cache(model.config, len(row) - 1)
        with torch.inference_mode():
            model(input_ids=torch.tensor([row[:-1]], device=model.device), use_cache=True, logits_to_keep=1,
                  **{cache_kwarg(model): one})
        for layer, mine in zip(cache.layers, one.layers):  # then drop the row's own copy: peak = batch + one row
            layer.put_row(b, mine.keys, mine.values, len(ids), longest)
    return cache


def cache_kwarg(model: Any) -> str:
    """The keyword that hands a cache to ``model``'s forward and ``generate``: ``cache`` where the
    model's forward takes it (transformers 5.25 on; ``past_key_values`` is deprecated there and
    leaves forward in 5.40), else ``past_key_values`` (every earlier release)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
