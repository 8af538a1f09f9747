"""multibox_loss and its backward on every device: against the reference composition
(log_softmax, reference mining, cross-entropy, smooth L1) in float64, float32 at dtype-scaled
tolerances, edge cases (empty, no positives, ties, huge logits, ignored labels), gradients
(autograd of the reference, gradcheck), registration (opcheck, torch.compile) and errors."""
import re

import pytest
import torch

from ssd_fast import ops
from ssd_fast.ops import reference as ref

from _fake_parity import assert_fake_raises_the_same
from emu_device import opcheck
from _target_cases import INF, NAN, dtype_id, on, one_thread

DTYPES = [torch.float32, torch.float64]
# float64: only the order of the additions differs. float32: each term carries a few ulp
# (exp/log polynomials), the sums are in float64 against the reference's float64 sums.
RTOL = {torch.float64: 1e-11, torch.float32: 2e-6}
ATOL = {torch.float64: 1e-12, torch.float32: 1e-6}


def make_case(gen, B, P, C, dtype=torch.float64, pos_prob=0.1, scale=3.0, ignore_prob=0.0):
    """Head outputs, targets and labels (0..C-1, some -1 when ignore_prob > 0), built on the CPU
    in float64 and cast."""
    loc = torch.randn(B, P, 4, generator=gen, dtype=torch.float64) * 1.5
    conf = torch.randn(B, P, C, generator=gen, dtype=torch.float64) * scale
    loc_t = torch.randn(B, P, 4, generator=gen, dtype=torch.float64)
    labels = torch.randint(1, C, (B, P), generator=gen)
    labels[torch.rand(B, P, generator=gen) >= pos_prob] = 0
    labels[torch.rand(B, P, generator=gen) < ignore_prob] = -1
    return loc.to(dtype), conf.to(dtype), loc_t.to(dtype), labels


def run(device, loc, conf, loc_t, labels, ratio=3.0):
    out = ops.multibox_loss(*on([loc, conf, loc_t, labels], device), ratio)
    loc_loss, conf_loss, mask = out
    assert loc_loss.shape == () and conf_loss.shape == () and loc_loss.dtype == conf.dtype
    assert mask.dtype == torch.bool and mask.shape == labels.shape
    assert all(t.device.type == device.type for t in out)
    return [t.cpu() for t in out]


def reference(loc, conf, loc_t, labels, ratio=3.0):
    with one_thread():
        return ref.multibox_loss(loc, conf, loc_t, labels, ratio)


def check_against_reference(got, case, ratio=3.0):
    loc, conf, loc_t, labels = case
    dtype = conf.dtype
    # the mask: mining on -log_softmax in the input dtype; the losses: in float64
    expected_mask = reference(loc, conf, loc_t, labels, ratio)[2]
    bad = (got[2] != expected_mask).nonzero()[:5].tolist()
    assert torch.equal(got[2], expected_mask), bad
    expected = reference(loc.double(), conf.double(), loc_t.double(), labels, ratio)
    for g, e in zip(got[:2], expected[:2]):
        torch.testing.assert_close(g.double(), e, rtol=RTOL[dtype], atol=ATOL[dtype])


# ---------------------------------------------------------------------------------------------
# Values

@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("C", [2, 5, 13, 21, 81])
def test_matches_reference(device, gen, dtype, C):
    case = make_case(gen, 3, 1000, C, dtype)  # P = 1000: not a multiple of the 64-prior tiles
    check_against_reference(run(device, *case), case)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_ssd300_batch(device, gen, dtype):
    case = make_case(gen, 4, 8732, 21, dtype, pos_prob=0.02, scale=2.0)
    check_against_reference(run(device, *case), case)


@pytest.mark.parametrize("ratio", [0.0, 1.0, 2.5, 1e6])
def test_ratios(device, gen, ratio):
    case = make_case(gen, 3, 300, 7)
    check_against_reference(run(device, *case, ratio=ratio), case, ratio)


def test_ignored_labels_are_neither_positive_nor_negative(device, gen):
    case = make_case(gen, 3, 500, 6, pos_prob=0.05, ignore_prob=0.3)
    got = run(device, *case, ratio=1e6)  # every eligible negative is mined
    assert not got[2][case[3] < 0].any()
    assert got[2][case[3] >= 0].all()
    check_against_reference(got, case, 1e6)


@pytest.mark.parametrize("B,P", [(0, 10), (3, 0), (0, 0)])
def test_empty(device, B, P):
    case = make_case(torch.Generator().manual_seed(0), B, P, 4)
    loc_loss, conf_loss, mask = run(device, *case)
    assert loc_loss == 0 and conf_loss == 0 and mask.shape == (B, P)
    loc, conf = (t.to(device).requires_grad_() for t in case[:2])
    sum(ops.multibox_loss(loc, conf, *on(case[2:], device))[:2]).backward()
    assert loc.grad.shape == loc.shape and conf.grad.shape == conf.shape


def test_no_positives(device, gen):
    loc, conf, loc_t, labels = make_case(gen, 2, 300, 5)
    labels.zero_()
    loc, conf = (t.to(device).requires_grad_() for t in (loc, conf))
    loc_loss, conf_loss, mask = ops.multibox_loss(loc, conf, loc_t.to(device), labels.to(device))
    assert loc_loss.item() == 0 and conf_loss.item() == 0 and not mask.any()
    (loc_loss + conf_loss).backward()
    assert not loc.grad.any() and not conf.grad.any()


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_ties_go_to_the_lower_prior(device, gen, dtype):
    """Priors with identical logits have identical background losses: the lower index wins."""
    loc, conf, loc_t, labels = make_case(gen, 2, 400, 5, dtype, pos_prob=0.05)
    conf = conf[:, torch.arange(400) % 7]  # 7 distinct rows, repeated
    labels[:, torch.arange(400) % 7 == 0] = 0
    got = run(device, loc, conf, loc_t, labels, 1.5)
    check_against_reference(got, (loc, conf, loc_t, labels), 1.5)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_large_logits_stay_finite(device, gen, dtype):
    loc, conf, loc_t, labels = make_case(gen, 2, 200, 6, dtype, pos_prob=0.2)
    big = torch.rand(conf.shape, generator=gen) < 0.3
    conf = torch.where(big, torch.where(torch.rand(conf.shape, generator=gen) < 0.5, 1e4, -1e4),
                       conf.double()).to(dtype)
    got = run(device, loc, conf, loc_t, labels)
    assert all(torch.isfinite(t) for t in got[:2])
    check_against_reference(got, (loc, conf, loc_t, labels))


def test_minus_inf_logits(device, gen):
    """A class with logit -inf has probability 0 (not NaN)."""
    loc, conf, loc_t, labels = make_case(gen, 2, 100, 4)
    conf[..., 3] = -INF
    labels[labels == 3] = 1
    got = run(device, loc, conf, loc_t, labels)
    check_against_reference(got, (loc, conf, loc_t, labels))


def test_nan_logit_gives_nan_loss(device, gen):
    loc, conf, loc_t, labels = make_case(gen, 1, 50, 4)
    labels[0, 7] = 2
    conf[0, 7, 1] = NAN
    assert run(device, loc, conf, loc_t, labels)[1].isnan()


@pytest.mark.parametrize("B", [1, 3, 4])
def test_independent_of_thread_count(gen, B):
    """1-3 threads, fewer, as many and more images than threads: the same bits."""
    case = make_case(gen, B, 3000, 21, torch.float32, pos_prob=0.03)
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(ops.multibox_loss(*case))
    finally:
        torch.set_num_threads(threads)
    for out in outs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(out, outs[0]))


def test_bad_label(device, gen):
    """A label >= C: on the CPU a ValueError naming it; on CUDA, which must not synchronise to
    look, conf_loss is NaN, never a device assertion (which would end the CUDA context: the
    emulated device fails such a launch), and the device works on."""
    loc, conf, loc_t, labels = make_case(gen, 2, 10, 4)
    labels[1, 3] = 4
    if device.type == "cpu":
        with pytest.raises(ValueError, match=re.escape(
                "multibox_loss: labels must be < C = 4 (the classes of conf_logits), got 4")):
            ops.multibox_loss(loc, conf, loc_t, labels)
        return
    loc_loss, conf_loss, _ = ops.multibox_loss(*on([loc, conf, loc_t, labels], device))
    assert torch.isnan(conf_loss.cpu()) and torch.isfinite(loc_loss.cpu())
    labels[1, 3] = 3
    check_against_reference(run(device, loc, conf, loc_t, labels), (loc, conf, loc_t, labels))


# ---------------------------------------------------------------------------------------------
# Gradients

def _grads(fn, case, weights=(0.7, 1.3)):
    loc, conf = (t.detach().clone().requires_grad_() for t in case[:2])
    loc_loss, conf_loss = fn(loc, conf, *case[2:])[:2]
    (weights[0] * loc_loss + weights[1] * conf_loss).backward()
    return loc.grad, conf.grad


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("C", [2, 5, 21, 81])
def test_gradients_match_reference(device, gen, dtype, C):
    case = make_case(gen, 3, 700, C, dtype)
    got = _grads(ops.multibox_loss, on(case, device))
    expected = _grads(ref.multibox_loss, [t.double() if t.is_floating_point() else t for t in case])
    for g, e in zip(got, expected):
        assert g.dtype == dtype
        torch.testing.assert_close(g.cpu().double(), e, rtol=RTOL[dtype], atol=ATOL[dtype] * 1e-2)


def test_only_conf_loss_used(device, gen):
    """An unused output gets no gradient (None or zeros): the other still flows."""
    case = on(make_case(gen, 2, 100, 5), device)
    conf = case[1].clone().requires_grad_()
    ops.multibox_loss(case[0], conf, *case[2:])[1].backward()
    conf_ref = case[1].cpu().clone().requires_grad_()
    ref.multibox_loss(case[0].cpu(), conf_ref, *[t.cpu() for t in case[2:]])[1].backward()
    torch.testing.assert_close(conf.grad.cpu(), conf_ref.grad, rtol=1e-11, atol=1e-14)


def test_gradcheck(device, gen):
    loc, conf, loc_t, labels = on(make_case(gen, 2, 9, 3, pos_prob=0.3), device)
    loc.requires_grad_()
    conf.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: ops.multibox_loss(a, b, loc_t, labels, 2.0)[:2], (loc, conf))


def _second_order_case(gen, device):
    loc, conf, loc_t, labels = on(make_case(gen, 2, 9, 3, pos_prob=0.3), device)
    loc_t = loc_t * 0.3 + loc * 0.8  # some |loc - loc_t| < 1, where smooth L1 is curved
    return loc.requires_grad_(), conf.requires_grad_(), loc_t, labels


def test_gradgradcheck(device, gen):
    # the backward is differentiable: second derivatives (mask held, as in the first) in float64
    # against finite differences of the first
    loc, conf, loc_t, labels = _second_order_case(gen, device)
    assert torch.autograd.gradgradcheck(
        lambda a, b: ops.multibox_loss(a, b, loc_t, labels, 2.0)[:2], (loc, conf))


def test_backward_op_gradcheck(device, gen):
    # multibox_loss_backward called directly, its gradients in every input that has one
    loc, conf, loc_t, labels = _second_order_case(gen, device)
    mask = ops.multibox_loss(loc, conf, loc_t, labels, 2.0)[2]
    grads = [torch.tensor(v, dtype=torch.float64, device=device).requires_grad_() for v in (0.7, 1.3)]
    assert torch.autograd.gradcheck(
        lambda gl, gc, a, b: torch.ops.ssd_fast.multibox_loss_backward(gl, gc, a, b, loc_t, labels, mask),
        (*grads, loc, conf))


@pytest.mark.parametrize("wrt", ["conf", "loc", "both"])
def test_second_derivative_is_the_reference_one(device, gen, wrt):
    # g = grad(loss, x, create_graph=True); (g ** 2).sum().backward(): x.grad as the reference's
    loc, conf, loc_t, labels = (t.detach() for t in _second_order_case(gen, device))
    results = []
    for fn, dev in ((ops.multibox_loss, device), (ref.multibox_loss, torch.device("cpu"))):
        xs = [t.to(dev).detach().requires_grad_() for t in (loc, conf)]
        loc_loss, conf_loss, _ = fn(xs[0], xs[1], loc_t.to(dev), labels.to(dev), 2.0)
        wrt_xs = {"loc": xs[:1], "conf": xs[1:], "both": xs}[wrt]
        gs = torch.autograd.grad(0.7 * loc_loss + 1.3 * conf_loss, wrt_xs, create_graph=True)
        sum((g ** 2).sum() for g in gs).backward()
        results.append([None if x.grad is None else x.grad.cpu() for x in xs])
    for got, expected in zip(*results):
        if expected is None:
            assert got is None or (got == 0).all()
        else:
            assert expected.abs().sum() > 0
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_first_order_gradient_is_the_kernel_s_under_create_graph(device, gen):
    # create_graph=True keeps the fused backward's values; only the graph above them is new
    loc, conf, loc_t, labels = _second_order_case(gen, device)
    plain = torch.autograd.grad(sum(ops.multibox_loss(loc, conf, loc_t, labels)[:2]), (loc, conf))
    graph = torch.autograd.grad(sum(ops.multibox_loss(loc, conf, loc_t, labels)[:2]), (loc, conf),
                                create_graph=True)
    assert all(g.requires_grad for g in graph) and not any(g.requires_grad for g in plain)
    for p, g in zip(plain, graph):
        assert torch.equal(p, g.detach())


# ---------------------------------------------------------------------------------------------
# Registration: opcheck, torch.compile

def _opcheck_sample(B, P, C, dtype=torch.float32, grad=False, ratio=3.0):
    loc, conf, loc_t, labels = make_case(torch.Generator().manual_seed(1), B, P, C, dtype,
                                         pos_prob=0.3)
    if grad:
        loc.requires_grad_()
        conf.requires_grad_()
    return [loc, conf, loc_t, labels, ratio]


OPCHECK_SAMPLES = {
    "plain": lambda: _opcheck_sample(2, 70, 5),
    "grad": lambda: _opcheck_sample(2, 70, 5, grad=True),
    "float64_grad": lambda: _opcheck_sample(3, 10, 2, torch.float64, grad=True, ratio=1.0),
    "no_image": lambda: _opcheck_sample(0, 9, 3),
    "no_prior": lambda: _opcheck_sample(2, 0, 3, grad=True),
}


@pytest.mark.parametrize("sample", OPCHECK_SAMPLES)
def test_opcheck(device, sample):
    opcheck(torch.ops.ssd_fast.multibox_loss.default,
                          on(OPCHECK_SAMPLES[sample](), device))


def test_opcheck_backward(device):
    loc, conf, loc_t, labels, ratio = _opcheck_sample(2, 70, 5)
    mask = ops.multibox_loss(loc, conf, loc_t, labels, ratio)[2]
    g = torch.tensor(0.5), torch.tensor(2.0)
    opcheck(torch.ops.ssd_fast.multibox_loss_backward.default,
                          on([*g, loc, conf, loc_t, labels, mask], device))


def _losses(loc, conf, loc_t, labels):
    loc_loss, conf_loss, mask = ops.multibox_loss(loc, conf, loc_t, labels, 3.0)
    return loc_loss + 2 * conf_loss, mask


def _loss_and_grads(fn, loc, conf, loc_t, labels):
    loc, conf = (t.detach().clone().requires_grad_() for t in (loc, conf))
    loss, mask = fn(loc, conf, loc_t, labels)
    loss.backward()  # through the compiled graph's backward: multibox_loss_backward
    return loss, mask, loc.grad, conf.grad


@pytest.mark.parametrize("dynamic", [False, True])
def test_torch_compile_fullgraph(device, gen, dynamic):
    torch._dynamo.reset()
    compiled = torch.compile(_losses, backend="aot_eager", fullgraph=True, dynamic=dynamic)
    for B, P in ([(2, 50), (3, 70)] if dynamic else [(2, 50)]):
        case = on(make_case(gen, B, P, 5, torch.float32, pos_prob=0.2), device)
        for got, expected in zip(_loss_and_grads(compiled, *case), _loss_and_grads(_losses, *case)):
            assert torch.equal(got, expected)


# ---------------------------------------------------------------------------------------------
# Bad input: the C++ checks and the fake kernel raise the same error, naming the argument

def _f(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


def _i(*shape, dtype=torch.int64):
    return torch.zeros(shape, dtype=dtype)


def _args(loc=None, conf=None, loc_t=None, labels=None, ratio=3.0):
    return (_f(2, 5, 4) if loc is None else loc, _f(2, 5, 3) if conf is None else conf,
            _f(2, 5, 4) if loc_t is None else loc_t, _i(2, 5) if labels is None else labels, ratio)


BAD_INPUTS = {
    "conf_int": (_args(conf=_i(2, 5, 3)), RuntimeError,
                 "conf_logits must be float32 or float64, got int64"),
    "conf_half": (_args(_f(2, 5, 4, dtype=torch.float16), _f(2, 5, 3, dtype=torch.float16),
                        _f(2, 5, 4, dtype=torch.float16)), RuntimeError,
                  "conf_logits must be float32 or float64, got float16"),
    "conf_2d": (_args(conf=_f(2, 5)), RuntimeError,
                "conf_logits must have shape [B, P, C] with C >= 2, got [2, 5]"),
    "conf_one_class": (_args(conf=_f(2, 5, 1)), RuntimeError,
                       "conf_logits must have shape [B, P, C] with C >= 2, got [2, 5, 1]"),
    "loc_dtype": (_args(loc=_f(2, 5, 4, dtype=torch.float64)), RuntimeError,
                  "conf_logits and loc must have the same dtype, got float32 and float64"),
    "loc_shape": (_args(loc=_f(2, 5, 3)), RuntimeError,
                  "loc must have shape [B, P, 4] = [2, 5, 4], got [2, 5, 3]"),
    "loc_batch": (_args(loc=_f(1, 5, 4)), RuntimeError,
                  "loc must have shape [B, P, 4] = [2, 5, 4], got [1, 5, 4]"),
    "loc_targets_dtype": (_args(loc_t=_f(2, 5, 4, dtype=torch.float64)), RuntimeError,
                          "conf_logits and loc_targets must have the same dtype, got float32 and "
                          "float64"),
    "loc_targets_shape": (_args(loc_t=_f(2, 4, 4)), RuntimeError,
                          "loc_targets must have shape [B, P, 4] = [2, 5, 4], got [2, 4, 4]"),
    "labels_float": (_args(labels=_f(2, 5)), RuntimeError,
                     "labels must be an integer tensor, got float32"),
    "labels_shape": (_args(labels=_i(2, 4)), RuntimeError,
                     "labels must have shape [B, P] = [2, 5], got [2, 4]"),
    "ratio_negative": (_args(ratio=-1.0), ValueError,
                       "neg_pos_ratio must be a finite number >= 0, got -1"),
    "ratio_nan": (_args(ratio=NAN), ValueError, "neg_pos_ratio must be a finite number >= 0, got nan"),
    "ratio_inf": (_args(ratio=INF), ValueError, "neg_pos_ratio must be a finite number >= 0, got inf"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_raises(device, case):
    args, exc, message = BAD_INPUTS[case]
    with pytest.raises(exc, match=f"^{re.escape('multibox_loss: ' + message)}$"):
        ops.multibox_loss(*on(args, device))


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_fake_kernel_raises_the_same_error(device, case):
    args, exc, _ = BAD_INPUTS[case]
    assert_fake_raises_the_same(lambda d: ops.multibox_loss(*on(args, d)), device, exc)


def _backward_args(g_loc=None, g_conf=None, mask=None):
    loc, conf, loc_t, labels, _ = _args()
    return (_f() if g_loc is None else g_loc, _f() if g_conf is None else g_conf, loc, conf,
            loc_t, labels, _i(2, 5, dtype=torch.bool) if mask is None else mask)


BAD_BACKWARD_INPUTS = {
    "grad_not_0d": (_backward_args(g_loc=_f(1)),
                    "grad_loc_loss must be a 0-dim tensor, got shape [1]"),
    "grad_dtype": (_backward_args(g_conf=_f(dtype=torch.float64)),
                   "conf_logits and grad_conf_loss must have the same dtype, got float32 and float64"),
    "mask_dtype": (_backward_args(mask=_i(2, 5)), "mask must be a bool tensor, got int64"),
    "mask_shape": (_backward_args(mask=_i(2, 4, dtype=torch.bool)),
                   "mask must have shape [B, P] = [2, 5], got [2, 4]"),
}


@pytest.mark.parametrize("case", BAD_BACKWARD_INPUTS)
def test_backward_bad_input_raises(device, case):
    args, message = BAD_BACKWARD_INPUTS[case]
    for dev in (device, torch.device("meta")):
        with pytest.raises(RuntimeError, match=f"^{re.escape('multibox_loss_backward: ' + message)}$"):
            torch.ops.ssd_fast.multibox_loss_backward(*on(args, dev))


def test_mixed_devices_raise(device):
    other = torch.device("meta") if device.type == "cpu" else torch.device("cpu")
    loc, conf, loc_t, labels, _ = on(_args(), device)
    message = (f"multibox_loss: conf_logits and labels must be on the same device, "
               f"got {conf.device} and {other}")
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        ops.multibox_loss(loc, conf, loc_t, labels.to(other))
