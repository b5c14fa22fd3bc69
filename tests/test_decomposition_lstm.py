"""`run_lstm` (unpacked on CPU) gives what packing gives: outputs and gradients, both directions,
several layers, with dropout between layers in eval mode."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from modeling.decomposition_layers import reverse_within_lengths, run_lstm


def packed_lstm(lstm: torch.nn.LSTM, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    packed = pack_padded_sequence(hidden, lengths, batch_first=True, enforce_sorted=False)
    return pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=hidden.shape[1])[0]


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("layers", [1, 3])
def test_run_lstm_equals_packed_lstm(bidirectional, layers):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 7, num_layers=layers, batch_first=True, bidirectional=bidirectional, dropout=0.3)
    lstm.eval()
    x = torch.randn(3, 11, 5, requires_grad=True)
    lengths = torch.tensor([11, 4, 7])
    ours, reference = run_lstm(lstm, x, lengths), packed_lstm(lstm, x, lengths)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-5)
    assert ours[1, 4:].abs().max() == 0  # padded outputs are zero
    parameters = [x, *lstm.parameters()]
    ours_grad = torch.autograd.grad(ours.pow(2).sum(), parameters)
    reference_grad = torch.autograd.grad(reference.pow(2).sum(), parameters)
    for a, b in zip(ours_grad, reference_grad):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_reverse_within_lengths_keeps_padding_and_is_an_involution():
    hidden = torch.arange(12.0).view(2, 6, 1)
    lengths = torch.tensor([6, 3])
    reversed_ = reverse_within_lengths(hidden, lengths)
    assert reversed_[0, :, 0].tolist() == [5, 4, 3, 2, 1, 0]
    assert reversed_[1, :, 0].tolist() == [8, 7, 6, 9, 10, 11]
    torch.testing.assert_close(reverse_within_lengths(reversed_, lengths), hidden)


def test_run_lstm_refuses_projections():
    lstm = torch.nn.LSTM(4, 6, proj_size=2, batch_first=True)
    with pytest.raises(ValueError, match="projections"):
        run_lstm(lstm, torch.randn(1, 3, 4), torch.tensor([3]))
