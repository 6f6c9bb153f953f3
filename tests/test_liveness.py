"""turbo_vaed.liveness: the peak of the buffers alive at once, on small graphs whose answer is known."""

from __future__ import annotations

import torch

from turbo_vaed.liveness import peak_live_bytes

N = 1024  # elements per buffer: 4 KiB in fp32
UNIT = 4 * N


def _peak(fn, *shapes) -> int:
    return peak_live_bytes(fn, [torch.zeros(*s, device="meta") for s in shapes]).peak


def test_a_chain_holds_two_buffers_at_a_time():
    # y = x*2 (1), z = y+1 (2: y and z), w = z*3 (2: z and w): the input is not counted
    assert _peak(lambda x: ((x * 2) + 1) * 3, (N,)) == 2 * UNIT


def test_a_buffer_lives_until_its_last_reader():
    def fn(x):
        a = x * 2
        b = a * 3
        c = b * 4
        return a + c  # a is alive until here: a, b, c at once before b is freed

    assert _peak(fn, (N,)) == 3 * UNIT


def test_reshapes_and_in_place_ops_share_their_input_and_slices_copy():
    assert _peak(lambda x: (x * 2).reshape(2, N // 2).add_(1), (N,)) == UNIT  # one buffer throughout
    assert _peak(lambda x: x.view(2, N // 2) * 2, (N,)) == UNIT  # a view of the input costs nothing
    # a slice is a copy (as ONNX Slice): y (1) + its half (0.5) alive at once, then y is freed
    assert _peak(lambda x: (x * 2)[: N // 2] * 3, (N,)) == UNIT + UNIT // 2


def test_multi_output_ops_count_once_and_unread_results_are_freed():
    def fn(x):
        parts = torch.split(x * 2, N // 4)  # four views of one buffer (the copy-free split)
        return sum(p * 1 for p in parts)

    peak = _peak(fn, (N,))
    assert UNIT <= peak <= 2 * UNIT

    def dead(x):
        x * 5  # never read: freed at once (and removed as dead code)
        return x * 2

    assert _peak(dead, (N,)) == UNIT
