"""The convolution blocks' fast paths compute the plain formulas: a convolution of channel parts equals
the convolution of their concatenation, an eval-mode batch norm folded into its convolution equals
the two applied in turn, and the resize of few-channel maps does not depend on the layout."""

import pytest
import torch
import torch.nn.functional as F

from attnseg.networks.blocks.conv import (
    ConvNormAct,
    conv_layer,
    convolve,
    folded_conv_norm,
    prelu_for_training,
    resize_to,
)

CONV = {2: F.conv2d, 3: F.conv3d}


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if not channels_last:
        return x
    return x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_convolving_channel_parts_equals_convolving_their_concatenation(dims, channels_last):
    conv = conv_layer(dims, 7, 5, kernel_size=3)
    size = (9, 11) if dims == 2 else (5, 6, 7)
    parts = [_layout(torch.randn(2, c, *size), channels_last).requires_grad_() for c in (3, 4)]
    weight = conv.weight.detach().clone().requires_grad_()
    expected = CONV[dims](torch.cat(parts, 1), weight, conv.bias, padding=1)
    expected.square().sum().backward()
    reference_grads = [p.grad.clone() for p in parts] + [weight.grad.clone()]
    for p in parts:
        p.grad = None

    got = convolve(conv, parts)
    got.square().sum().backward()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for grad, reference in zip([p.grad for p in parts] + [conv.weight.grad], reference_grads, strict=True):
        torch.testing.assert_close(grad, reference, rtol=1e-4, atol=1e-4)


def test_channel_parts_must_add_up_to_the_input_channels():
    with pytest.raises(ValueError, match="do not add up to the 7 input channels"):
        convolve(conv_layer(2, 7, 5), [torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)])


@pytest.mark.parametrize("dims", [2, 3])
def test_eval_batch_norm_is_folded_into_the_convolution(dims):
    block = ConvNormAct(dims, 3, 6, kernel_size=3)
    conv, norm, _ = block
    with torch.no_grad():  # running statistics and affine parameters far from the identity
        norm.running_mean.uniform_(-2, 2)
        norm.running_var.uniform_(0.1, 3)
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(2, 3, *((10, 12) if dims == 2 else (6, 7, 8)))
    block.eval()
    normalised = (conv(x) - norm.running_mean.view(1, -1, *[1] * dims)) / torch.sqrt(
        norm.running_var.view(1, -1, *[1] * dims) + norm.eps
    ) * norm.weight.view(1, -1, *[1] * dims) + norm.bias.view(1, -1, *[1] * dims)
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(normalised), rtol=1e-5, atol=1e-5)
        weight, bias = folded_conv_norm(conv, norm)
        torch.testing.assert_close(CONV[dims](x, weight, bias, padding=1), normalised, rtol=1e-5, atol=1e-5)


def test_training_mode_and_other_norms_are_not_folded():
    block = ConvNormAct(2, 3, 4, norm="batch").train()
    x = torch.randn(4, 3, 8, 8)
    conv, norm, _ = block
    reference = torch.relu(F.batch_norm(conv(x), None, None, norm.weight, norm.bias, training=True))
    torch.testing.assert_close(block(x), reference)  # batch statistics, not the running ones
    instance = ConvNormAct(2, 3, 4, norm="instance", act=None).eval()
    conv, norm = instance
    torch.testing.assert_close(instance(x), norm(conv(x)))


@pytest.mark.parametrize("channels", [1, 2, 3, 5])
def test_resize_does_not_depend_on_the_layout(channels):
    x = torch.randn(2, channels, 9, 13)
    expected = F.interpolate(x, size=[20, 31], mode="bilinear", align_corners=False)
    torch.testing.assert_close(resize_to(_layout(x, True), (20, 31)), expected)
    assert resize_to(x, (9, 13)) is x


@pytest.mark.parametrize("slopes", [1, 5])
@pytest.mark.parametrize("dims", [2, 3])
def test_prelu_for_training_has_torch_prelus_values_and_gradients(slopes, dims):
    size = (9, 11) if dims == 2 else (5, 6, 7)
    x = torch.randn(3, 5, *size)
    x[0, 0, 0] = 0.0  # torch's gradient at x = 0 is a·grad
    grad = torch.randn_like(x)
    results = []
    for function in (F.prelu, prelu_for_training):
        inputs = x.clone().requires_grad_()
        weight = torch.linspace(-0.3, 0.7, slopes).requires_grad_()
        y = function(inputs, weight)
        y.backward(grad)
        results.append((y.detach(), inputs.grad, weight.grad))
    for expected, actual in zip(*results, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_conv_norm_act_uses_the_fast_prelu_only_when_a_gradient_is_needed():
    block = ConvNormAct(2, 3, 4, act=torch.nn.PReLU)
    x = torch.randn(2, 3, 8, 8)
    y = block(x)
    assert "PReLUWithFastBackward" in type(y.grad_fn).__name__
    with torch.no_grad():
        reference = F.prelu(block[1](block[0](x)), block[2].weight)
        torch.testing.assert_close(block(x), reference)  # no gradient: torch's own PReLU
    torch.testing.assert_close(y.detach(), reference, rtol=1e-5, atol=1e-5)
