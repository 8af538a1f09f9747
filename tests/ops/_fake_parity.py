"""The fake-kernel parity check every op's bad-input table goes through."""
import pytest
import torch


def assert_fake_raises_the_same(call, device, exc):
    """``call(device)`` runs an op on bad inputs placed on ``device``; the fake kernel (the same
    call on ``meta``) must raise the same exception type with the same text."""
    with pytest.raises(exc) as real:
        call(device)
    with pytest.raises(exc) as fake:
        call(torch.device("meta"))
    assert type(fake.value) is type(real.value)
    assert str(fake.value) == str(real.value)
