"""Every CUDA kernel of ssd_fast, launched at least once on small inputs that still take each
code path (NMS past one 16384-box chunk, ssd_targets past 48 KiB of shared memory,
multiclass_nms' scratch in global memory, the mining radix select with ties, the loss forward
and backward): what scripts/gpu_suite.sh step 2 runs under compute-sanitizer's four tools.

    python3 scripts/gpu_sanitizer_cases.py [cuda|emu]

tests/test_gpu_suite.py runs it on the emulated device, which lists the kernels it launched:
every kernel of csrc/ops/cuda/ must be among them. Outputs are compared with the CPU's, so a
sanitizer run also fails on a wrong result.
"""
import sys

import torch

from ssd_fast import ops


def boxes(g, *shape, scale=1.0):
    c = torch.rand(*shape, 2, generator=g) * scale
    wh = (torch.rand(*shape, 2, generator=g) * 0.3 + 0.02) * scale
    return torch.cat([c - wh / 2, c + wh / 2], -1)


def clustered(g, n, clusters):
    centre = torch.rand(clusters, 2, generator=g)
    which = torch.randint(0, clusters, (n,), generator=g)
    c = centre[which] + torch.randn(n, 2, generator=g) * 0.01
    return torch.cat([c - 0.05, c + 0.05], -1)


def same(got, expected, what):
    got = got if isinstance(got, (tuple, list)) else (got,)
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    for a, b in zip(got, expected):
        if a is None:
            continue
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-6, equal_nan=True, msg=what)


def run(device, on_case=None):
    """Every case on `device`, each compared with the CPU; on_case(name) after each one."""
    g = torch.Generator().manual_seed(0)

    def both(name, fn, *args):
        same(fn(*[a.to(device) if isinstance(a, torch.Tensor) else a for a in args]), fn(*args), name)
        print(f"{name}: ok", flush=True)
        if on_case is not None:
            on_case(name)

    # box_iou_kernel, coder_kernel (encode and decode)
    both("box_iou", ops.box_iou, boxes(g, 2, 300), boxes(g, 2, 40))
    gt, priors = boxes(g, 4, 500), boxes(g, 500)
    both("encode_boxes", ops.encode_boxes, gt, priors)
    both("decode_boxes", ops.decode_boxes, torch.randn(4, 500, 4, generator=g), priors)

    # match_kernel, both instances; ssd_targets past the default 48 KiB of dynamic shared memory
    gt_boxes, gt_labels = boxes(g, 3, 12), torch.randint(1, 5, (3, 12), generator=g)
    gt_labels[2, 6:] = -1
    for mode in ("bipartite", "argmax"):
        both(f"match_priors {mode}", ops.match_priors, gt_boxes, gt_labels, priors, 0.5, mode)
        both(f"ssd_targets {mode}", ops.ssd_targets, gt_boxes, gt_labels, priors, 0.5,
             ops.DEFAULT_VARIANCES, mode)
    many = boxes(g, 1, 1600)
    both("ssd_targets 1600 GTs", ops.ssd_targets, many, torch.ones(1, 1600, dtype=torch.long),
         boxes(g, 64), 0.5, ops.DEFAULT_VARIANCES, "argmax")

    # mining_kernel, with ties in the radix select
    loss = torch.randint(0, 6, (3, 2000), generator=g).float()
    labels = (torch.rand(3, 2000, generator=g) < 0.05).long()
    both("hard_negative_mining", ops.hard_negative_mining, loss, labels, 3.0,
         torch.rand(3, 2000, generator=g), 0.5)

    # multibox_loss forward (prior_ce, mining, image_sums, batch_loss) and backward
    # (count_positives, masked_exp_sum, grad_conf, grad_loc)
    loc, conf = torch.randn(3, 2000, 4, generator=g), torch.randn(3, 2000, 6, generator=g)
    loc_t = torch.randn(3, 2000, 4, generator=g)
    lab = torch.randint(0, 6, (3, 2000), generator=g) * (torch.rand(3, 2000, generator=g) < 0.1)

    def loss_and_grads(loc, conf, loc_t, lab):
        loc, conf = loc.clone().requires_grad_(), conf.clone().requires_grad_()
        l, c, mask = ops.multibox_loss(loc, conf, loc_t, lab)
        (l + 2 * c).backward()
        return l.detach(), c.detach(), mask, loc.grad, conf.grad
    both("multibox_loss forward and backward", loss_and_grads, loc, conf, loc_t, lab)

    # nms and batched_nms past one 16384-box chunk: score_keys, gather_boxes, chunk_mask,
    # chunk_greedy, suppress_by_kept, gather_kept; class_keys, segment_bounds, kept_flags
    nb = clustered(g, 17000, 400)
    scores = torch.rand(17000, generator=g)
    both("nms", ops.nms, nb, scores, 0.5)
    both("batched_nms", ops.batched_nms, nb, scores, torch.randint(0, 7, (17000,), generator=g), 0.5)

    # multiclass_keys, segment_nms and merge_detections with their scratch in shared memory,
    # then in global memory (topk_per_class=-1 over 3000 priors, max_detections=6000);
    # decode_softmax_keys (ssd_postprocess)
    mb, ms = boxes(g, 2, 3000), torch.softmax(torch.randn(2, 3000, 4, generator=g) * 3, -1)
    both("multiclass_nms", ops.multiclass_nms, mb, ms)
    both("multiclass_nms global scratch", ops.multiclass_nms, mb, ms, 0.0, 0.45, -1, 6000, 0)
    both("ssd_postprocess", ops.ssd_postprocess, torch.randn(2, 3000, 4, generator=g) * 0.3,
         torch.randn(2, 3000, 5, generator=g), boxes(g, 3000))


if __name__ == "__main__":
    device = sys.argv[1] if len(sys.argv) > 1 else "cuda"
    if device == "emu":
        import os
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
        import emu_device  # noqa: F401  (the emulated device, torch device "emu")
    run(device)
