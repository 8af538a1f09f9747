"""Weight conversion: torchvision parity (same detections from the same weights) and
ssd.pytorch's key layout."""
import pytest
import torch
import torch.nn.functional as F
import torchvision

from ssd_fast.models import convert, ssd300_vgg16
from ssd_fast.models.priors import PRESETS

from model_helpers import postprocess  # noqa: F401  (fixture)

BACKGROUND_BIAS = 7.0  # ~1% of the scores pass the 0.01 threshold: ~70 candidates per class and image
LOGIT_STD, OFFSET_STD = 1.0, 0.5  # head outputs: unsaturated scores, small box offsets


def parity_images():
    gen = torch.Generator().manual_seed(1)
    return [torch.rand(3, 300, 300, generator=gen) for _ in range(2)]


@pytest.fixture(scope="module")
def torchvision_ssd():
    """torchvision's ssd300_vgg16 (91 classes) with random weights of our choosing.

    Built on the meta device (which skips initialising the 138M-parameter VGG16 it starts
    from), then given its own random tensors: kaiming-normal backbone convs, random biases,
    random L2Norm scales around 20. The head convs are scaled to the feature maps they read
    (on the test images) so that the logits have std LOGIT_STD (softmax scores far from 0 and
    1) and the offsets OFFSET_STD (torchvision's BoxCoder clamps dw/dh at log(1000/16) before
    exp; ours does not, so parity needs offsets well below that); the background logit gets
    BACKGROUND_BIAS so that a few boxes per class pass the 0.01 score threshold.
    """
    gen = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        tv = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None)
    tv.to_empty(device="cpu").eval()
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_out) ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.05)
        tv.backbone.scale_weight.copy_(20 + torch.randn(512, generator=gen))
        features = tv.backbone(tv.transform(parity_images())[0].tensors).values()
        head = tv.head
        for f, reg, cls in zip(features, head.regression_head.module_list, head.classification_head.module_list):
            scale = (f.pow(2).mean().sqrt() * (f.shape[1] * 9) ** 0.5).item()
            reg.weight.normal_(0, OFFSET_STD / scale, generator=gen)
            cls.weight.normal_(0, LOGIT_STD / scale, generator=gen)
            cls.bias.view(-1, 91)[:, 0] += BACKGROUND_BIAS
    return tv


def test_torchvision_keys_are_torchvisions(torchvision_ssd):
    assert set(convert.torchvision_keys().values()) == set(torchvision_ssd.state_dict())
    assert set(convert.torchvision_keys()) == set(ssd300_vgg16(91, "torchvision").state_dict())


def test_torchvision_priors_are_torchvisions(torchvision_ssd):
    images = torchvision_ssd.transform([torch.zeros(3, 300, 300)])[0]
    features = [torch.zeros(1, 1, s, s) for s in (38, 19, 10, 5, 3, 1)]
    anchors = torchvision_ssd.anchor_generator(images, features)[0]
    assert torch.equal(PRESETS["torchvision", 300].generate() * 300, anchors)


def test_torchvision_parity(torchvision_ssd, postprocess):
    """Our detect() on torchvision's normalized input gives torchvision's detections.

    Head weights are shrunk so that scores are not saturated and box offsets stay small:
    torchvision's BoxCoder clamps dw/dh at log(1000/16) before exp and ours does not, so the two
    differ only for offsets no trained model produces. Scores come from the same logits;
    boxes differ by float rounding (torchvision decodes in pixels, we in [0, 1], then scale).
    """
    images = parity_images()
    with torch.no_grad():
        expected = torchvision_ssd(images)
        x = torchvision_ssd.transform(images)[0].tensors  # torchvision's normalized input
    ours = convert.load_torchvision(torchvision_ssd.state_dict()).eval()
    assert ours.postprocess_defaults["clip"] is True
    boxes, scores, labels, num = ours.detect(x)
    max_score_diff = max_box_diff = 0.0
    for b, exp in enumerate(expected):
        n = int(num[b])
        assert n == exp["scores"].numel() > 50
        assert torch.equal(labels[b, :n], exp["labels"])
        assert (labels[b, n:] == -1).all()
        torch.testing.assert_close(scores[b, :n], exp["scores"], rtol=0, atol=1e-5)
        torch.testing.assert_close(boxes[b, :n], exp["boxes"], rtol=0, atol=1e-2)
        max_score_diff = max(max_score_diff, float((scores[b, :n] - exp["scores"]).abs().max()))
        max_box_diff = max(max_box_diff, float((boxes[b, :n] - exp["boxes"]).abs().max()))
    print(f"\ntorchvision parity ({postprocess}): {int(num.sum())} detections, max |score diff| "
          f"{max_score_diff:.2e}, max |box diff| {max_box_diff:.2e} px")


# ---------------------------------------------------------------------------------------------
# ssd.pytorch (github.com/amdegroot/ssd.pytorch): their SSD300 module, as key names and shapes.

SSD_PYTORCH_VGG = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256),
                   14: (256, 256), 17: (256, 512), 19: (512, 512), 21: (512, 512), 24: (512, 512),
                   26: (512, 512), 28: (512, 512), 31: (512, 1024), 33: (1024, 1024)}
SSD_PYTORCH_EXTRAS = [(1024, 256, 1), (256, 512, 3), (512, 128, 1), (128, 256, 3), (256, 128, 1), (128, 256, 3),
                      (256, 128, 1), (128, 256, 3)]
SOURCES, BOXES = [512, 1024, 512, 256, 256, 256], [4, 6, 6, 6, 4, 4]


def ssd_pytorch_state_dict(num_classes=21, seed=0):
    """Their key names and shapes, every tensor random."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {}
    for i, (cin, cout) in SSD_PYTORCH_VGG.items():
        shapes[f"vgg.{i}"] = (cout, cin, 1 if i == 33 else 3, 1 if i == 33 else 3)
    shapes["L2Norm"] = (512,)
    for i, (cin, cout, k) in enumerate(SSD_PYTORCH_EXTRAS):
        shapes[f"extras.{i}"] = (cout, cin, k, k)
    for k, (c, a) in enumerate(zip(SOURCES, BOXES)):
        shapes[f"loc.{k}"] = (a * 4, c, 3, 3)
        shapes[f"conf.{k}"] = (a * num_classes, c, 3, 3)
    sd = {}
    for name, shape in shapes.items():
        if name == "L2Norm":
            sd["L2Norm.weight"] = 20 + torch.randn(shape, generator=gen)
            continue
        fan_in = shape[1] * shape[2] * shape[3]
        sd[f"{name}.weight"] = torch.randn(shape, generator=gen) * (2 / fan_in) ** 0.5
        sd[f"{name}.bias"] = torch.randn(shape[0], generator=gen) * 0.01
    return sd


def ssd_pytorch_forward(sd, x):
    """Their SSD.forward (phase 'train': raw loc and conf), written with functional ops."""
    conv = lambda x, name, **kw: F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"], **kw)  # noqa: E731
    sources = []
    for i in range(35):
        if i in SSD_PYTORCH_VGG:
            x = conv(x, f"vgg.{i}", padding=0 if i == 33 else (6 if i == 31 else 1), dilation=6 if i == 31 else 1)
        elif i in (4, 9, 16, 23):
            x = F.max_pool2d(x, 2, 2, ceil_mode=i == 16)
        elif i == 30:
            x = F.max_pool2d(x, 3, 1, 1)
        else:
            x = F.relu(x)
        if i == 22:  # L2Norm: x / (||x|| + 1e-10) * weight
            sources.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) * sd["L2Norm.weight"].view(1, -1, 1, 1))
    sources.append(x)
    for k, (_, _, size) in enumerate(SSD_PYTORCH_EXTRAS):
        x = F.relu(conv(x, f"extras.{k}", stride=2 if k in (1, 3) else 1, padding=1 if k in (1, 3) else 0))
        if k % 2 == 1:
            sources.append(x)
    B = x.shape[0]
    loc = torch.cat([conv(s, f"loc.{k}", padding=1).permute(0, 2, 3, 1).reshape(B, -1) for k, s in enumerate(sources)], 1)
    conf = torch.cat([conv(s, f"conf.{k}", padding=1).permute(0, 2, 3, 1).reshape(B, -1) for k, s in enumerate(sources)], 1)
    return loc.view(B, -1, 4), conf.view(B, loc.shape[1] // 4, -1)


def test_ssd_pytorch_tensors_land_in_place():
    sd = ssd_pytorch_state_dict()
    model = convert.load_ssd_pytorch(sd)
    assert model.num_classes == 21 and model.prior_spec.name == "ssd_pytorch"
    bb = model.backbone
    for i in SSD_PYTORCH_VGG:
        assert torch.equal(bb.vgg[i].weight, sd[f"vgg.{i}.weight"]) and torch.equal(bb.vgg[i].bias, sd[f"vgg.{i}.bias"])
    assert torch.equal(bb.l2norm.weight, sd["L2Norm.weight"])
    for k in range(4):
        assert torch.equal(bb.extras[k][0].weight, sd[f"extras.{2 * k}.weight"])
        assert torch.equal(bb.extras[k][2].bias, sd[f"extras.{2 * k + 1}.bias"])
    for k in range(6):
        assert torch.equal(model.loc_head[k].weight, sd[f"loc.{k}.weight"])
        assert torch.equal(model.conf_head[k].bias, sd[f"conf.{k}.bias"])


def test_ssd_pytorch_forward_matches():
    """Same outputs as their forward: the structure (pools, dilation, extras' strides, L2Norm,
    head layout) is theirs, not only the key names."""
    sd = ssd_pytorch_state_dict(num_classes=4)
    model = convert.load_ssd_pytorch(sd).eval()
    x = torch.randn(1, 3, 300, 300, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, theirs = model(x), ssd_pytorch_forward(sd, x)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_conversion_errors():
    sd = ssd_pytorch_state_dict()
    del sd["extras.7.bias"]
    sd["extras.8.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"not a ssd.pytorch SSD300-VGG16 state dict: 1 missing key\(s\) "
                                         r"\['extras.7.bias'\]; 1 unexpected key\(s\) \['extras.8.weight'\]"):
        convert.from_ssd_pytorch(sd)
    with pytest.raises(ValueError, match=r"not a torchvision SSD300-VGG16 state dict: 71 missing key\(s\) "
                                         r"\['backbone.extra.0.1.bias', .*\] ... and 59 more; 71 unexpected "
                                         r"key\(s\) \['L2Norm.weight', "):
        convert.from_torchvision(ssd_pytorch_state_dict())
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        convert.from_torchvision([1, 2])


def test_data_parallel_prefix():
    sd = ssd_pytorch_state_dict()
    converted = convert.from_ssd_pytorch({f"module.{k}": v for k, v in sd.items()})
    assert converted["backbone.l2norm.weight"] is sd["L2Norm.weight"]
