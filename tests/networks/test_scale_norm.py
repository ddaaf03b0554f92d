"""Per-scale batch norm in the encoder-decoder the multi-scale network's scales share."""

import pytest
import torch

from attnseg.losses import GuidedAttentionLoss
from attnseg.networks import MultiScaleGuidedAttentionNet
from attnseg.networks.blocks.scale_norm import ScaleBatchNorm, split_batch_norms
from attnseg.networks.utils import count_parameters

TINY = {"in_channels": 1, "out_channels": 3, "backbone": "resnet18", "backbone_width": 8, "head_channels": 16}


def test_parameter_count_is_three_more_copies_of_the_shared_norms():
    """A semantic module of input width d has batch norms over 2(2d + 4d + 2d + d) = 18d channels, with
    2 affine parameters each; per-scale norm adds 3 copies per refinement step."""
    shared = MultiScaleGuidedAttentionNet(**TINY)
    per_scale = MultiScaleGuidedAttentionNet(**TINY, scale_norm="per_scale")
    d, steps = 2 * 16, 2
    assert count_parameters(per_scale) - count_parameters(shared) == steps * 3 * 2 * 18 * d


def test_training_is_the_shared_network_when_the_copies_start_equal():
    """In training, batch norm uses each chunk's batch statistics either way: with equal affine
    parameters the per-scale network computes exactly what the shared one does."""
    torch.manual_seed(0)
    shared = MultiScaleGuidedAttentionNet(**TINY).train()
    per_scale = MultiScaleGuidedAttentionNet(**TINY, scale_norm="per_scale").train()
    state = shared.state_dict()
    own = per_scale.state_dict()
    for key in own:
        source = key.replace(".norms.0.", ".").replace(".norms.1.", ".").replace(".norms.2.", ".")
        source = source.replace(".norms.3.", ".")
        own[key] = state[source].clone()
    per_scale.load_state_dict(own)
    x = torch.randn(2, 1, 64, 64)
    torch.testing.assert_close(per_scale(x).logits, shared(x).logits)


def test_each_scale_keeps_its_own_running_statistics():
    torch.manual_seed(0)
    model = MultiScaleGuidedAttentionNet(**TINY, scale_norm="per_scale").train()
    x, target = torch.randn(4, 1, 64, 64), torch.randint(0, 3, (4, 64, 64))
    GuidedAttentionLoss()(model(x), target).backward()
    norms = [m for m in model.modules() if isinstance(m, ScaleBatchNorm)]
    assert len(norms) == 2 * 8  # 8 batch norms per encoder-decoder, 2 steps
    means = [n.running_mean for n in norms[0].norms]
    assert all(not torch.allclose(means[0], other) for other in means[1:])
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (4, 3, 64, 64)


def test_invalid_configurations_are_refused():
    with pytest.raises(ValueError, match="shared by the scales"):
        MultiScaleGuidedAttentionNet(**TINY, scale_norm="per_scale", share_semantic_module=False)
    with pytest.raises(ValueError, match="shared by the scales"):
        MultiScaleGuidedAttentionNet(**TINY, scale_norm="per_scale", norm="group")
    model = MultiScaleGuidedAttentionNet(**TINY, scale_norm="per_scale", batch_scales=False).train()
    with pytest.raises(ValueError, match="batch_scales"):
        model(torch.randn(2, 1, 64, 64))
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    assert split_batch_norms(module, 4) == 1
    with pytest.raises(ValueError, match="stacked scales"):
        module(torch.randn(3, 1, 4, 4))
