"""The ``ssd-fast`` command line."""
import argparse
import json
import math
import os
import sys
import time

import torch


def _bench(args):
    from . import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            sys.exit("ssd-fast bench: --device cuda asked for, but no CUDA device is available")
        devices.remove("cuda")
    ops = args.ops.split(",") if args.ops else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if "cuda" in devices else ""))
    print(bench.HEADER)
    for row in bench.run(devices, ops, args.min_seconds):
        print(bench.format_row(row), flush=True)


# -- demo / train / eval / detect ------------------------------------------------------------

#: The demo's defaults: ssd_tiny at 128 px on the synthetic shapes, sized for 2 CPU cores. Measured
#: at 2400 iterations (VOC07 mAP on 500 test images, one run each, spread ~0.03): AdamW 0.74 where
#: SGD lags far behind; the photometric distortion costs 0.07 here (the objects' colours are random
#: already), expand at p=0.3 gains 0.03; 6 boxes per cell on every map instead of 4/6: -0.01;
#: bfloat16 autocast (where the CPU has it natively) 0.735 at 1.6x the speed; ssd_tiny's stride-4
#: map 0.768; a cosine schedule instead of the step at 80%: 0.722. Workers 0 and 2 threads beat 1
#: worker + 1 thread (137 vs 111 img/s in float32).
DEMO = dict(arch="ssd_tiny", image_size=128, train_n=3000, test_n=500, iterations=3100, batch_size=32,
            optimizer="adamw", lr=4e-3, expand_p=0.3, photometric=False, workers=0)


def _error(command, message, status=2):
    """A user's mistake: one line naming the argument and what is wrong; exit status 2."""
    print(f"ssd-fast {command}: {message}", file=sys.stderr)
    raise SystemExit(status)


def _check_train_args(args):
    """The values that can only ruin a run, refused before anything is built."""
    if args.iterations <= 0:
        _error("train", f"--iterations must be > 0, got {args.iterations}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        _error("train", f"--lr must be a finite number > 0, got {args.lr}")
    if args.warmup < 0:
        _error("train", f"--warmup must be >= 0, got {args.warmup}")
    if args.checkpoint_every <= 0:
        _error("train", f"--checkpoint-every must be > 0, got {args.checkpoint_every}")
    if args.batch_size <= 0:
        _error("train", f"--batch-size must be > 0, got {args.batch_size}")
    if args.workers < 0:
        _error("train", f"--workers must be >= 0, got {args.workers}")
    if args.image_size is not None and args.image_size <= 0:
        _error("train", f"--image-size must be > 0, got {args.image_size}")


def _threads(device, workers):
    """On CPU, leave one core to each DataLoader worker (oversubscription halves speed)."""
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))


def _write_json(path, obj):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def _detections_picture(model, dataset, path, count=8, score_threshold=0.3):
    from .engine.evaluate import detect_dataset
    from .engine.visualize import draw_detections, grid

    subset = torch.utils.data.Subset(dataset, range(min(count, len(dataset))))
    _, dets = detect_dataset(model, subset, batch_size=count)
    tiles = [draw_detections(dataset[i][0], *dets[i], classes=model.classes, score_threshold=score_threshold,
                             scale=max(1, 256 // max(dataset[i][0].shape[:2])))
             for i in range(len(dets))]
    grid(tiles).save(path)


def _demo(args):
    from .data import build_dataset
    from .data.synthetic import CLASSES
    from .engine import TrainConfig, Trainer, evaluate, native_bf16
    from .models import build_model, save_checkpoint

    d = DEMO
    start = time.perf_counter()
    device = torch.device("cpu")
    _threads(device, d["workers"])
    iterations = args.iterations or d["iterations"]
    train = build_dataset(f"synthetic:seed={args.seed},split=train", n=args.train_n or d["train_n"],
                          size=d["image_size"]).cache()
    test = build_dataset(f"synthetic:seed={args.seed},split=test", n=args.test_n or d["test_n"],
                         size=d["image_size"])
    torch.manual_seed(args.seed)
    model = build_model(d["arch"], num_classes=len(CLASSES), image_size=d["image_size"], classes=CLASSES)
    cfg = TrainConfig(iterations=iterations, batch_size=d["batch_size"], optimizer=d["optimizer"], lr=d["lr"],
                      expand_p=d["expand_p"], photometric=d["photometric"],
                      warmup_iters=min(100, iterations // 10), milestones=(int(iterations * 0.8),),
                      workers=d["workers"], seed=args.seed, progress=not args.quiet, amp=native_bf16())
    os.makedirs(args.out, exist_ok=True)
    print(f"ssd-fast demo: {d['arch']} {d['image_size']}px, {len(train)} synthetic training images, "
          f"{iterations} iterations of {cfg.batch_size} on {torch.get_num_threads()} thread(s) + "
          f"{cfg.workers} loader worker(s){', bfloat16 autocast' if cfg.amp else ''} -> {args.out}", flush=True)
    last = Trainer(model, train, cfg, out_dir=args.out).train()
    train_s = time.perf_counter() - start
    model.eval()
    metrics = evaluate(model, test)
    metrics.update(train_seconds=train_s, total_seconds=time.perf_counter() - start,
                   final_loss=last.get("loss"), test_data=repr(test), train_data=repr(train))
    save_checkpoint(os.path.join(args.out, "model.pt"), model, metrics=metrics)
    _write_json(os.path.join(args.out, "metrics.json"), metrics)
    _detections_picture(model, test, os.path.join(args.out, "detections.png"))
    metrics["total_seconds"] = time.perf_counter() - start
    _write_json(os.path.join(args.out, "metrics.json"), metrics)
    print(f"VOC07 mAP@0.5 {metrics['voc07_map50']:.4f}, VOC12 mAP@0.5 {metrics['voc12_map50']:.4f} on "
          f"{metrics['images']} test images; {metrics['total_seconds']:.0f} s in all. Wrote "
          f"{args.out}/model.pt, metrics.json, detections.png")
    return metrics


def _train(args):
    from .data import build_dataset
    from .engine import NonFiniteTraining, TrainConfig, Trainer, evaluate, init_from_env, is_main
    from .models import build_model, load_checkpoint, model_from_config, save_checkpoint

    _check_train_args(args)
    device = init_from_env(args.device)
    _threads(device, args.workers)
    dataset = build_dataset(args.data)
    eval_data = build_dataset(args.eval_data) if args.eval_data else None  # before hours of training
    classes = list(dataset.classes)
    if args.resume:
        if not os.path.isfile(args.resume):
            sys.exit(f"ssd-fast train: --resume {args.resume!r} does not exist")
        config = load_checkpoint(args.resume)["config"]
        model = model_from_config(config)
        if args.arch is not None and args.arch != config["arch"]:
            _error("train", f"--arch {args.arch} differs from the checkpoint's {config['arch']} "
                            f"(--resume {args.resume})")
        if args.image_size is not None and args.image_size != model.image_size[0]:
            _error("train", f"--image-size {args.image_size} differs from the checkpoint's "
                            f"{model.image_size[0]} (--resume {args.resume})")
        if model.num_classes != len(classes):
            sys.exit(f"ssd-fast train: --resume {args.resume!r} has num_classes={model.num_classes}, "
                     f"the data {args.data!r} has {len(classes)} (background included)")
    else:
        arch = args.arch or "ssd_tiny"
        kw = {"image_size": args.image_size or 160} if arch in ("ssdlite", "ssd_tiny") else {}
        torch.manual_seed(args.seed)
        model = build_model(arch, num_classes=len(classes), classes=classes, **kw)
    milestones = [int(m) for m in args.milestones.split(",") if m] if args.milestones else \
        [int(args.iterations * 2 / 3), int(args.iterations * 5 / 6)]
    cfg = TrainConfig(iterations=args.iterations, batch_size=args.batch_size, optimizer=args.optimizer,
                      lr=args.lr, warmup_iters=args.warmup, milestones=milestones, seed=args.seed,
                      workers=args.workers, checkpoint_every=args.checkpoint_every,
                      schedule=args.schedule, amp={"auto": None, "on": True, "off": False}[args.amp],
                      progress=not args.quiet)
    try:
        Trainer(model, dataset, cfg, out_dir=args.out, device=device).train(resume=args.resume)
    except NonFiniteTraining as e:  # no model.pt: the last checkpoint is the last good state
        _error("train", str(e), status=1)
    if is_main():
        save_checkpoint(os.path.join(args.out, "model.pt"), model)
        print(f"wrote {args.out}/model.pt and {args.out}/checkpoint.pt")
    if eval_data is not None:
        metrics = evaluate(model.eval(), eval_data, device=device)
        if is_main():
            _write_json(os.path.join(args.out, "metrics.json"), metrics)
            print(f"VOC07 mAP@0.5 {metrics['voc07_map50']:.4f} on {args.eval_data}")


def _load(path, device):
    from .models import load_model

    if not os.path.isfile(path):
        sys.exit(f"ssd-fast: --checkpoint {path!r} does not exist")
    return load_model(path, device=device)


def _eval(args):
    from .data import build_dataset
    from .engine import evaluate, init_from_env, is_main

    device = init_from_env(args.device)
    _threads(device, 0)
    model = _load(args.checkpoint, device)
    dataset = build_dataset(args.data)
    if len(dataset.classes) != model.num_classes:
        sys.exit(f"ssd-fast eval: the checkpoint {args.checkpoint!r} has num_classes={model.num_classes}, "
                 f"the data {args.data!r} has {len(dataset.classes)} (background included)")
    metrics = evaluate(model, dataset, batch_size=args.batch_size, device=device, coco=args.coco)
    if is_main():
        print(f"VOC07 mAP@0.5 {metrics['voc07_map50']:.4f}  VOC12 mAP@0.5 {metrics['voc12_map50']:.4f}"
              + (f"  COCO AP {metrics['coco_ap']:.4f}  AP50 {metrics['coco_ap50']:.4f}" if args.coco else "")
              + f"  ({metrics['images']} images, {metrics['seconds']:.1f} s)")
        if args.json:
            _write_json(args.json, metrics)
    return metrics


def _detect(args):
    import numpy as np
    from PIL import Image

    from .data import TestTransform
    from .engine.visualize import draw_detections

    model = _load(args.checkpoint, args.device)
    for path in args.images:
        if not os.path.isfile(path):
            sys.exit(f"ssd-fast detect: image {path!r} does not exist")
        out = args.out if args.out and len(args.images) == 1 else \
            os.path.join(args.out or os.path.dirname(path) or ".",
                         os.path.splitext(os.path.basename(path))[0] + "_detections.png")
        if os.path.abspath(out) == os.path.abspath(path):
            sys.exit(f"ssd-fast detect: --out {out!r} would overwrite the input image")
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
        h, w = image.shape[:2]
        x, _ = TestTransform(model.image_size[0])(image, {"boxes": np.zeros((0, 4), np.float32)})
        boxes, scores, labels, num = model.detect(x[None].to(args.device))
        n = int(num[0])
        H, W = model.image_size
        boxes = boxes[0, :n].cpu() * torch.tensor([w / W, h / H, w / W, h / H])
        if os.path.dirname(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
        draw_detections(image, boxes.numpy(), scores[0, :n].cpu().numpy(), labels[0, :n].cpu().numpy(),
                        model.classes, args.score).save(out)
        kept = int((scores[0, :n] >= args.score).sum())
        print(f"{path}: {kept} detection(s) with score >= {args.score} -> {out}")


def build_parser():
    p = argparse.ArgumentParser(prog="ssd-fast", description="Fast SSD: ops, training, evaluation.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="time the ops against torchvision and the references")
    b.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                   help="where to run (default: all available)")
    b.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    b.add_argument("--ops", default="", help="comma-separated op names (default: all)")
    b.add_argument("--min-seconds", type=float, default=0.3,
                   help="time each implementation for at least this long")
    b.set_defaults(func=_bench)

    d = sub.add_parser("demo", help="train ssd_tiny on synthetic shapes (CPU, <= 10 min), evaluate, draw")
    d.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    d.add_argument("--seed", type=int, default=0, help="data and initialisation seed")
    d.add_argument("--iterations", type=int, default=0, help=f"default {DEMO['iterations']}")
    d.add_argument("--train-n", type=int, default=0, help=f"training images (default {DEMO['train_n']})")
    d.add_argument("--test-n", type=int, default=0, help=f"test images (default {DEMO['test_n']})")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_demo)

    t = sub.add_parser("train", help="train a model (torchrun for several processes)")
    t.add_argument("--data", required=True, help="dataset spec, e.g. synthetic:seed=0,n=4000 or voc:ROOT,year=2007,split=trainval")
    t.add_argument("--arch", default=None,
                   help="ssd_tiny (default), ssdlite, ssd300_vgg16 or ssd512_vgg16; with --resume, the "
                        "checkpoint's")
    t.add_argument("--image-size", type=int, default=None,
                   help="input size of ssd_tiny and ssdlite (default 160); with --resume, the checkpoint's")
    t.add_argument("--iterations", type=int, default=1000)
    t.add_argument("--batch-size", type=int, default=32, help="per process")
    t.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"),
                   help="SGD (momentum 0.9) as the paper, or AdamW (faster from scratch on small data)")
    t.add_argument("--lr", type=float, default=0.02)
    t.add_argument("--warmup", type=int, default=100, help="warmup iterations")
    t.add_argument("--milestones", default="", help="comma-separated iterations (default: 2/3 and 5/6)")
    t.add_argument("--schedule", default="multistep", choices=("multistep", "cosine"),
                   help="LR after the warmup: x0.1 at each milestone, or a cosine to 0")
    t.add_argument("--amp", default="auto", choices=("auto", "on", "off"),
                   help="mixed precision: CUDA float16 (auto: on), CPU bfloat16 (auto: off; on pays "
                        "where the CPU has AVX512-BF16 or AMX)")
    t.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=500)
    t.add_argument("--resume", default="", help="a checkpoint.pt to continue from")
    t.add_argument("--out", default="runs/train")
    t.add_argument("--eval-data", default="", help="evaluate on this dataset spec at the end")
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="VOC07/VOC12 mAP@0.5 (and COCO AP) of a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True, help="dataset spec")
    e.add_argument("--json", default="", help="write the metrics here")
    e.add_argument("--coco", action="store_true", help="also COCO AP (pycocotools)")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    e.set_defaults(func=_eval)

    x = sub.add_parser("detect", help="draw a checkpoint's detections on images (PNG)")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("images", nargs="+")
    x.add_argument("--out", default="", help="output PNG (one image) or folder")
    x.add_argument("--score", type=float, default=0.3, help="draw detections scoring at least this")
    x.add_argument("--device", default="cpu")
    x.set_defaults(func=_detect)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", 0) < 0:
        build_parser().error(f"--threads must be >= 0, got {args.threads}")
    return args.func(args)


def console() -> None:
    """The ``ssd-fast`` console script. ``main`` returns what the subcommand computed (metrics, for
    tests and callers); a console script's return value becomes the exit status, so this one
    returns nothing: exit status 0 on success."""
    main()


if __name__ == "__main__":
    console()
